"""main.py's time budget and --reweight latency: the flags and their one-line errors, --prune --target_ms on a
synthetic latency table of the video network (the config within the predicted time, the figures printed, the
files written beside the supernet), a table of another run or a file that is not one refused, and the search's
L1 weights as each kind's share of the table's time. No measured time is asserted."""
import dataclasses
import json

import pytest
import torch

import main
from cakes.cli import run_cli
from cakes.engine import latency as engine_latency
from cakes.engine.prune import budget_names, prune_to_time
from cakes.models import create_model
from cakes.ops import latency, prune_config
from cakes.ops.search import sparsity_scale

pytestmark = pytest.mark.usefixtures('single_thread')
FRAMES, SIZE = 2, 32
BASE = ['--root_path', 'unused', '--checkpoint_dir', 'unused', '--op_code', 'conv1_2_3d', '--search',
        '--num_segments', str(FRAMES), '--input_size', str(SIZE)]
# each kind's time per channel in the synthetic table: a 3x3x3 channel costs 4 of a 1x3x3 one, 8 of a 3x1x1 one
PER_CHANNEL = {'kxkxk': 0.04, '1xkxk': 0.01, 'kx1x1': 0.005}


def refused(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(main.main, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize('flags, message', [
    (['--target_ms', '40'], '--target_ms T is the time budget of --prune: add --prune'),
    (['--prune', '--prune_model_path', 'x', '--target_ms', '0'], 'give a value > 0'),
    (['--prune', '--prune_model_path', 'x', '--target_speedup', '-1'], '--target_speedup S is the time budget'),
    (['--prune', '--prune_model_path', 'x', '--target_ms', '40', '--target_speedup', '2'], 'not both'),
    (['--prune', '--prune_model_path', 'x', '--target_ms', '40', '--target_gflops', '30'],
     'or --target_gflops, not both'),
    (['--prune', '--prune_model_path', 'x', '--latency_mode', 'train'], 'say what --target_ms/--target_speedup time'),
    (['--prune', '--prune_model_path', 'x', '--target_ms', '4', '--latency_batch', '0'], 'give B >= 1'),
    (['--latency_table', 't.json'], '--latency_table FILE is read by'),
    (['--reweight', 'latency'], '--reweight scales the sparsity term: add -sr'),
])
def test_time_budget_flags_refuse_what_cannot_be_meant(flags, message, capsys):
    assert message in refused(BASE + flags, capsys)


def test_reweight_alone_keeps_its_released_meaning():
    settings = main.parse_settings(BASE + ['-sr', '--reweight'])[0]
    assert settings.reweight is True  # sparsity_scale's released 27 : 9 : 3, untouched
    assert main.parse_settings(BASE + ['-sr', '--reweight', 'latency'])[0].reweight == 'latency'
    assert main.parse_settings(BASE + ['-sr'])[0].reweight is False


def settings(*flags):
    return main.parse_settings(BASE + list(flags))[0]


def pruning(**fields):
    """--prune's settings with these time-budget fields (no checkpoint read: the supernet is in memory)."""
    return dataclasses.replace(settings(), prune=True, prune_model_path='RUN_checkpoint.pth.tar', **fields)


def write_table(args, num_class, path, mode='eval', batch=1):
    """A synthetic table of the video network of `args` in main.py's setting: each kind linear in width
    (PER_CHANNEL), flat overheads, no stacked plan, a rest of 5 ms."""
    network = engine_latency.video_network(args, num_class)
    setting = engine_latency.run_setting(args, torch.device('cpu'), batch, mode == 'train')
    shapes = network.shapes()
    entries = []
    for shape in dict.fromkeys(shapes):
        widths = latency.width_grid(shape.width)
        entries.append({'shape': latency.shape_json(shape), 'widths': widths, 'stacked_widths': widths,
                        'overhead': {'cat1': 0.01, 'cat2': 0.01, 'cat3': 0.01, 'bn': 0.02, 'merge': 0.1},
                        'ms': {kind: [PER_CHANNEL[kind] * w for w in widths]
                               for kind in latency.timed_kinds(shape.kinds)}})
    table = latency.LatencyTable(latency.table_key(shapes, setting, network.text()), entries, 5.0)
    latency.save_table(table, str(path))
    return table


@pytest.fixture(scope='module')
def supernet():
    model = create_model(op_code='conv1_2_3d', num_class=3, num_segments=FRAMES, search=True, dropout=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for op in model.cakes_ops():
            op.bn.weight.copy_(torch.rand(op.bn.num_features, generator=generator))
    return model


def test_prune_to_a_time_target_on_the_table_prints_and_returns_a_config_within_it(supernet, tmp_path, capsys):
    path = tmp_path / 'table.json'
    table = write_table(settings(), 3, path)
    released = table.predicted_ms([{k: w.get(k, 0) for k in ('kxkxk', '1xkxk', 'kx1x1')}
                                   for w in prune_config(supernet.cakes_ops())])
    target = 0.9 * released
    args = pruning(target_ms=target, latency_table=str(path))
    config = prune_to_time(args, supernet, 3)
    assert [sum(w.values()) for w in config] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert latency.predicted_time(config, table) <= target
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f'latency table: {path}')
    assert out[1].startswith(f'time budget {target:.4g} ms: eval, batch 1, float32, channels_last, ')
    pruned, rest = out[2].split(), out[3].split()
    assert pruned[:2] == ['pruned:', 'predicted'] and float(pruned[2]) <= target and pruned[4] == 'measured'
    assert rest[:3] == ['released:', 'predicted', f'{released:.2f}'] and 'GFLOPs' in out[3]
    # a speedup is over the released rule on the same table
    args = dataclasses.replace(args, target_ms=None, target_speedup=released / target)
    assert prune_to_time(args, supernet, 3) == config


def test_a_table_of_another_run_or_no_table_is_refused_in_one_line(supernet, tmp_path):
    path = tmp_path / 'table.json'
    write_table(settings(), 3, path, batch=2)
    args = pruning(target_ms=50.0, latency_table=str(path))
    with pytest.raises(Exception, match=r"was measured for batch per device 2, this run needs 1: give a table"):
        prune_to_time(args, supernet, 3)
    data = json.loads(path.read_text())
    data['key'].update(batch=1, device='Another CPU (64 threads)')
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match=r'measured for device Another CPU \(64 threads\), this run needs'):
        prune_to_time(args, supernet, 3)
    path.write_text('{"format": "something else"}')
    with pytest.raises(Exception, match=r"is not a latency table \(no 'format'"):
        prune_to_time(args, supernet, 3)


def test_a_target_below_the_fastest_config_names_the_range(supernet, tmp_path):
    path = tmp_path / 'table.json'
    table = write_table(settings(), 3, path)
    fastest = table.predicted_ms([{'kxkxk': 0, '1xkxk': 0, 'kx1x1': s.width} for s in table.shapes])
    args = pruning(target_ms=1.0, latency_table=str(path))
    with pytest.raises(Exception, match=rf'time target 1 ms is out of reach: .* from {fastest:.4g} ms \(the fastest '
                                        r'kinds\) to .* ms \(the slowest\).*give a target in that range'):
        prune_to_time(args, supernet, 3)


def test_reweight_latency_weighs_each_kind_by_its_share_of_the_tables_time(supernet, tmp_path):
    path = tmp_path / 'train.json'
    args = settings('-sr', '--reweight', 'latency', '--latency_table', str(path))
    write_table(args, 3, path, mode='train', batch=2)
    costs = engine_latency.search_costs(args, 3, torch.device('cpu'), 2, log=lambda line: None)
    assert costs[0] == pytest.approx({'kxkxk': 0.04 * 64, '1xkxk': 0.01 * 64, 'kx1x1': 0.005 * 64})
    op = supernet.cakes_ops()[0]
    shares = [0.04 / 0.055] * 64 + [0.01 / 0.055] * 64 + [0.005 / 0.055] * 64  # hand-computed: 8 : 2 : 1
    assert sparsity_scale(op, 'latency', costs[0]).tolist() == pytest.approx(shares)
    assert engine_latency.weights_text(costs) == '16 ops 0.73/0.18/0.09 (kxkxk/1xkxk/kx1x1)'
    with pytest.raises(Exception, match='was measured for mode train, this run needs eval|batch per device 2, '
                                        'this run needs 1'):
        engine_latency.search_costs(args, 3, torch.device('cpu'), 1, log=lambda line: None)


def test_a_time_budgets_files_and_picture_are_named_by_its_target(tmp_path):
    args = pruning(target_ms=40.0)
    assert budget_names(args) == ('_40ms', '\npruned to at most 40 ms predicted (eval, batch 1)')
    args = dataclasses.replace(args, target_ms=None, target_speedup=1.5, latency_mode='train', latency_batch=8)
    assert budget_names(args) == ('_1.5x', "\npruned to the released rule's time / 1.5 predicted (train, batch 8)")


def test_a_table_prices_networks_of_its_op_shapes_only(tmp_path):
    from cakes.configs import RELEASED
    from cakes.models.latency import VideoNetwork, predicted_ms
    table = write_table(settings(), 174, tmp_path / 'table.json')
    config = RELEASED['CAKES12D_C']  # 1xkxk and 3x1x1 only: a conv1_2_3d network without 3D channels
    expected = 5.0 + sum(0.01 * w.get('1xkxk', 0) + 0.005 * w.get('kx1x1', 0) + 0.03 for w in config)
    assert predicted_ms(config, table, VideoNetwork('conv1_2d', frames=FRAMES, input_size=SIZE)) == \
        pytest.approx(expected)
    with pytest.raises(Exception, match=r'measured for TemporalModel resnet50 conv1_2_3d, 2 frames of 32x32, 174 '
                                        r'classes, not TemporalModel resnet50 conv1_2_3d, 4 frames'):
        predicted_ms(config, table, VideoNetwork('conv1_2_3d', frames=4, input_size=SIZE))
