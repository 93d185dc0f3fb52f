"""scripts/latency_table.py on tiny shapes: a table measured, written, read back by a later run, drawn, checked
against whole ops and whole networks; a table of another run or a file that is not one refused in one line."""
import os

from conftest_data import run_script
from cakes.ops import latency

TINY = ['--num_segments', '2', '--input_size', '32', '--repeats', '1']


def test_measure_reuse_plot_and_refuse(tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', latency.CACHE_ENV: str(tmp_path / 'cache')}
    path, picture = tmp_path / 'table.json', tmp_path / 'table.png'
    result = run_script('latency_table', *TINY, '--table', path, '--plot', picture, '--check_ops', '1', env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith('op shape ') for line in lines) == 7  # ResNet-50's distinct op shapes
    assert lines[0].startswith('op shape 1/7 64x2x8x8 -> 64: kxkxk, 1xkxk, kx1x1 at 34 widths, stacked at 22, in ')
    assert sum(line.startswith('  ') and 'predicted' in line for line in lines) == 7  # one mix per op shape
    assert any(line.startswith('whole ops: prediction off by') for line in lines)
    table = latency.load_table(str(path))
    assert table.key['network'] == 'TemporalModel resnet50 conv1_2_3d, 2 frames of 32x32, 174 classes'
    assert (table.key['mode'], table.key['batch'], table.key['memory_format']) == ('eval', 1, 'channels_last')
    assert len(table.shapes) == 16 and len(table.entries) == 7
    assert picture.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not (tmp_path / 'cache').exists()

    again = run_script('latency_table', *TINY, '--table', path, '--check_configs', 'CAKES123D_P', 'CAKES12D_C',
                       env=env)
    assert again.returncode == 0, again.stderr
    assert f'latency table: {path} (measured in' in again.stdout and 'op shape' not in again.stdout
    checked = [line.split() for line in again.stdout.splitlines() if line.startswith('  CAKES')]
    assert [line[0] for line in checked] == ['CAKES123D_P', 'CAKES12D_C'] and all(
        line[1] == 'predicted' and line[4] == 'measured' for line in checked)

    other = run_script('latency_table', *TINY, '--table', path, '--batch', '2', env=env)
    assert other.returncode == 2 and other.stderr.startswith(f"error: latency table '{path}' was measured for batch "
                                                             'per device 1, this run needs 2')
    (tmp_path / 'bad.json').write_text('{"key": 1}')
    bad = run_script('latency_table', *TINY, '--table', tmp_path / 'bad.json', env=env)
    assert bad.returncode == 2 and 'is not a latency table' in bad.stderr and len(bad.stderr.splitlines()) == 1
