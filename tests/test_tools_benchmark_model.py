"""scripts/benchmark_model.py: the ratio table against conv3d, the per-op table and the picture, on tiny sizes."""
import json
import os

import torch

from conftest_data import load_script, run_script


def test_table_per_layer_and_plot(tmp_path):
    picture = tmp_path / 'speed.png'
    result = run_script('benchmark_model', '--table', '--settings', 'conv3d', 'conv1_2_3d:CAKES123D_P',
                        '--impls', 'plain', 'planned_cl', '--batch', '1', '2', '--num_segments', '2',
                        '--input_size', '32', '--repeats', '1', '--per_layer', '--plot', picture, '--json',
                        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = json.loads(lines[-1])
    assert {(r['setting'], r['impl'], r['mode'], r['batch']) for r in rows} == {
        (s, i, m, b) for s in ('conv3d', 'conv1_2_3d:CAKES123D_P') for i in ('plain', 'planned_cl')
        for m in ('eval', 'train') for b in (1, 2)}
    head = lines.index('| setting | FLOPs | limit | eval b1 | eval b2 | train b1 | train b2 |')
    conv3d, cakes = lines[head + 2].split(' | '), lines[head + 3].split(' | ')
    assert conv3d[1:3] == ['1.00', '1.00']
    # each cell: the default form's time over conv3d's fastest form's (so conv3d's own default is at least 1)
    assert all(cell.split()[1] == 'planned_cl' for cell in conv3d[3:] + cakes[3:])
    assert all(float(cell.split()[0]) >= 1.0 for cell in conv3d[3:])
    assert cakes[0] == '| conv1_2_3d:CAKES123D_P' and cakes[1:3] == ['0.70', '0.75']  # FLOPs ratio, limit
    ops = [line for line in lines if line.startswith('base_model.layer')]
    assert len(ops) == 16 * 4  # every CAKES op, per mode and batch
    plans = [line.split()[-4] for line in ops]
    assert all(plan in ('branches', 'stacked') or plan.startswith('merge(') for plan in plans), plans
    assert picture.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # the plans chosen: every CAKES op counted once in a planned form's row (and its printed line); none else
    for r in rows:
        planned = r['setting'] != 'conv3d' and r['impl'] == 'planned_cl'
        assert sum(r['plans'].values()) == (16 if planned else 0)
        if planned:
            line = next(line for line in lines if line.split()[:4] == [r['setting'], r['impl'], r['mode'],
                                                                          str(r['batch'])])
            assert line.endswith(', '.join(f'{plan} {count}' for plan, count in r['plans'].items()))


def test_your_config_py_is_read_as_main_py_reads_it(tmp_path, monkeypatch):
    """--table lists config.py's configs after the released ones, and a setting naming one builds its widths
    (through create_model, as main.py's --conv_config would)."""
    from cakes.complexity import count_flops
    from cakes.configs import RELEASED
    from cakes.models import create_model
    benchmark_model = load_script('benchmark_model')
    mine = [{'kxkxk': w // 4, '1xkxk': w - w // 4} for w in [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3]
    config = tmp_path / 'config.py'
    config.write_text(f'conv_configs = {{"MINE": {mine!r}}}\n')
    monkeypatch.setattr(benchmark_model, 'CONFIG_FILE', str(config))
    args = benchmark_model.parse_args(['--table', '--num_segments', '2', '--input_size', '32', '--impls', 'plain',
                                       '--repeats', '1', '--no_train'])
    released = [f'{benchmark_model.config_op_code(c)}:{key}' for key, c in RELEASED.items()]
    assert 'conv1_2_3d:CAKES123D_P' in released
    assert args.settings == ['conv3d', 'convp3d'] + released + ['convst:MINE']
    [row] = benchmark_model.time_setting('convst:MINE', args, torch.device('cpu'), 1)
    expected = count_flops(create_model(op_code='convst', conv_config=mine, num_segments=2), 2, 32) / 1e9
    assert row['gflops'] == expected != count_flops(create_model(op_code='convst', num_segments=2), 2, 32) / 1e9
