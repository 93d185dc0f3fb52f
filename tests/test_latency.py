"""Latency tables: what a table is keyed by, its reuse from the cache and from a file, the errors for a table of
another run or a file that is not one; an op's predicted time from a table (plans, concatenation, BN,
interpolation) and the network's; the branch costs that --reweight latency weighs by. No time measured here
is asserted: the measured tables only have to be well formed."""
import json

import pytest
import torch
from torch import nn

from cakes.errors import UsageError
from cakes.ops import CakesOp, latency
from cakes.ops.kernels import KINDS
from cakes.ops.latency import LatencyTable, OpShape, Setting
from cakes.ops.op_time import dense
from cakes.ops.search import add_sparsity_grad, sparsity_scale

pytestmark = pytest.mark.usefixtures('single_thread')
VIDEO = KINDS[:3]


class Tiny(nn.Module):
    """Two CAKES ops, 4 -> 8 channels and 8 -> 8 at stride 2, a 1x1x1 convolution between them (so that a supernet's
    second op reads 8 channels too), on (B, 4, 2, S, S) clips."""

    def __init__(self, config=None, search=False):
        super().__init__()
        widths = [[8] * 3 if search else [c.get(kind, 0) for kind in VIDEO] for c in (config or [None, None])]
        self.a = CakesOp(list(zip(VIDEO, widths[0])), 4, 1, search=search)
        self.mid = nn.Conv3d(self.a.out_channels, 8, 1)
        self.b = CakesOp(list(zip(VIDEO, widths[1])), 8, 2, search=search)

    def forward(self, x):
        return self.b(self.mid(self.a(x))).mean(dim=(2, 3, 4))


def tiny_shapes(size=8):
    with torch.device('meta'):
        supernet = Tiny(search=True)
    return latency.op_shapes(supernet, torch.zeros(1, 4, 2, size, size, device='meta'))


def tiny_table(setting, path=None, size=8, log=None):
    logs = [] if log is None else log
    return latency.latency_table(tiny_shapes(size), setting, 'Tiny', Tiny, torch.randn(setting.batch, 4, 2, size, size),
                                 path, repeats=1, log=logs.append)


CPU = Setting(torch.device('cpu'))


def test_op_shapes_are_read_off_one_forward():
    a, b = tiny_shapes(8)
    assert a == OpShape(4, (2, 8, 8), (1, 1, 1), 8, VIDEO, 3) and a.output() == (2, 8, 8)
    assert b == OpShape(8, (2, 8, 8), (1, 2, 2), 8, VIDEO, 3) and b.output() == (2, 4, 4)
    assert b.text() == '8x2x8x8 -> 8, stride 1x2x2'
    # a pruned network gives the same shapes as its supernet
    config = [{'kxkxk': 4, '1xkxk': 2, 'kx1x1': 2}, {'kxkxk': 1, '1xkxk': 1, 'kx1x1': 6}]
    assert latency.op_shapes(Tiny(config), torch.zeros(1, 4, 2, 8, 8)) == [a, b]


def test_width_grid_sees_both_ends_of_every_run_of_8():
    assert latency.width_grid(8) == list(range(1, 9))
    grid = latency.width_grid(64)
    assert grid == list(range(1, 17)) + [17, 23, 24, 25, 31, 32, 33, 39, 40, 41, 47, 48, 49, 55, 56, 57, 63, 64]
    assert latency.width_grid(50)[-3:] == [48, 49, 50]  # the op's own width, whatever it is
    assert latency.width_grid(64, ends=False) == list(range(1, 17)) + [24, 32, 40, 48, 56, 64]
    assert latency.timed_kinds(('1xkxk', 'kx1x1')) == ('1xkxk', 'kx1x1', 'kxkxk')  # their merge runs a kxkxk


def test_a_table_is_keyed_by_the_run_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path / 'cache'))
    table = tiny_table(CPU)
    key = table.key
    assert key['device'] == latency.device_name(CPU.device) and key['torch'] == torch.__version__
    assert (key['dtype'], key['memory_format'], key['mode'], key['batch'], key['network']) == \
        ('float32', 'contiguous', 'eval', 1, 'Tiny')
    assert [latency.shape_from_json(s) for s in key['ops']] == tiny_shapes()
    a, b = table.entries
    assert a['widths'] == b['widths'] == a['stacked_widths'] == list(range(1, 9))
    assert set(a['ms']) == set(b['ms']) == {*VIDEO, 'stacked'}
    assert set(a['overhead']) == {'cat1', 'cat2', 'cat3', 'bn'}
    assert all(len(ms) == 8 and min(ms) > 0 for ms in a['ms'].values())
    assert set(table.check) == {'measured_ms', 'predicted_ms', 'base_ms'}
    cached = list((tmp_path / 'cache').iterdir())
    assert len(cached) == 1

    def measure(*args, **kwargs):
        raise AssertionError('measured again')
    with monkeypatch.context() as m:
        m.setattr(latency, 'measure_table', measure)
        assert tiny_table(CPU).to_json() == table.to_json()
    train = tiny_table(Setting(torch.device('cpu'), batch=2, train=True))  # another key: measured anew
    assert (train.key['mode'], train.key['batch']) == ('train', 2)
    assert set(train.entries[0]['overhead']) == {'cat1', 'cat2', 'cat3', 'merge'}
    assert len(list((tmp_path / 'cache').iterdir())) == 2


def test_a_table_file_of_another_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path / 'cache'))
    path = str(tmp_path / 'table.json')
    table = tiny_table(CPU, path)
    assert latency.load_table(path).to_json() == table.to_json()
    assert not (tmp_path / 'cache').exists()  # an explicit file is the only one written
    with pytest.raises(UsageError, match=r"'.*table.json' was measured for batch per device 1, this run needs 2"):
        tiny_table(Setting(torch.device('cpu'), batch=2), path)
    with pytest.raises(UsageError, match=r'measured for op shapes 2 ops, op 0 4x2x8x8 -> 8, this run needs 2 ops, '
                                         r'op 0 4x2x16x16 -> 8'):
        tiny_table(CPU, path, size=16)
    data = json.loads(open(path).read())
    data['key']['device'] = 'Some GPU'
    (tmp_path / 'gpu.json').write_text(json.dumps(data))
    with pytest.raises(UsageError, match=r'measured for device Some GPU, this run needs .*: give a table measured'):
        tiny_table(CPU, str(tmp_path / 'gpu.json'))


@pytest.mark.parametrize('content, why', [
    ('not json', 'not JSON'), ('{"a": 1}', "no 'format'"), ('[1, 2]', "no 'format'"),
    ('{"format": "cakes latency table", "version": 99}', 'version 99'),
    ('{"format": "cakes latency table", "version": 2, "key": {}}', 'malformed'),
])
def test_a_file_that_is_not_a_table_is_refused(tmp_path, content, why):
    path = tmp_path / 'table.json'
    path.write_text(content)
    with pytest.raises(UsageError, match=rf"'.*table.json' is not a latency table \({why}.*scripts/latency_table.py"):
        latency.load_table(str(path))
    with pytest.raises(UsageError, match='not found'):
        latency.load_table(str(tmp_path / 'missing.json'))


def test_a_broken_cache_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    table = tiny_table(CPU)
    cached = next(tmp_path.iterdir())
    cached.write_text('{"format": "cakes latency table"')
    logs = []
    assert tiny_table(CPU, log=logs).key == table.key
    assert any('unusable, measuring again' in line for line in logs)
    assert latency.load_table(str(cached)).key == table.key


# ---------------------------------------------------------------- predictions on synthetic tables

SHAPE = OpShape(8, (2, 8, 8), (1, 1, 1), 8, VIDEO, 3)
OVERHEAD = {'cat1': 0.1, 'cat2': 0.1, 'cat3': 0.1, 'bn': 0.2, 'merge': 0.8}


def synthetic(ms, shapes=(SHAPE,), rest=10.0, mode='eval', overhead=OVERHEAD):
    """A table whose entry for each shape has ms[name](w) at every width of the grid."""
    key = {**CPU.key(), 'mode': mode, 'network': 'synthetic', 'ops': [latency.shape_json(s) for s in shapes]}
    entries = []
    for shape in dict.fromkeys(shapes):
        widths = {'conv': latency.width_grid(shape.width), 'stacked': latency.width_grid(shape.width, ends=False)}
        entries.append({'shape': latency.shape_json(shape), 'widths': widths['conv'],
                        'stacked_widths': widths['stacked'], 'overhead': dict(overhead),
                        'ms': {name: [f(w) for w in widths['stacked' if name == 'stacked' else 'conv']]
                               for name, f in ms.items()}})
    return LatencyTable(key, entries, rest)


LINEAR = {'kxkxk': lambda w: 3.0 * w, '1xkxk': lambda w: 1.0 * w, 'kx1x1': lambda w: w / 3}


def predicted(table, *widths):
    return latency.predicted_time([dict(zip(VIDEO, w)) for w in widths], table)


def test_branch_times_add_up_with_the_concatenation_and_the_bn():
    table = synthetic(LINEAR)  # merges only add multiply-adds here, and no stacked plan is priced
    assert predicted(table, (4, 2, 2)) == pytest.approx(10 + 12 + 2 + 2 / 3 + 0.1 + 0.2)
    assert predicted(table, (0, 8, 0)) == pytest.approx(10 + 8)  # one branch: 'merge()', BN folded, no copy
    train = synthetic(LINEAR, mode='train')
    assert predicted(train, (4, 2, 2)) == pytest.approx(10 + 12 + 2 + 2 / 3 + 0.1)  # BN runs in every plan


def test_a_merge_that_beats_the_branches_by_the_margin_is_the_op_time():
    slow_1d = {**LINEAR, 'kx1x1': lambda w: 5 + w / 3}  # a narrow 3x1x1 convolution costs much
    table = synthetic(slow_1d)
    branches = 18 + 1 + 5 + 1 / 3 + 0.1 + 0.2
    # merge(0+2): the 3x1x1 channel inside the 3x3x3 ones: t(7) + t_2D(1) + concatenation of two
    assert predicted(table, (6, 1, 1)) == pytest.approx(10 + 21 + 1 + 0.1) and 21 + 1 + 0.1 < 0.97 * branches
    # in train the merged weights are assembled at every step: 7 of the 8 channels of the measured assembly
    train = synthetic(slow_1d, mode='train')
    assert predicted(train, (6, 1, 1)) == pytest.approx(10 + 21 + 1 + 0.1 + 0.8 * 7 / 8)
    # within the margin the branch form stays (plans.fastest): 22.1 ms merged against 22.43 ms
    close = synthetic({**slow_1d, 'kx1x1': lambda w: 2.8 + w / 3})
    assert predicted(close, (6, 1, 1)) == pytest.approx(10 + 18 + 1 + 2.8 + 1 / 3 + 0.3)
    # a partial merge costing as much as merging everything is not timed (merge(1+2): 1xkxk and kx1x1 as kxkxk)
    dip = synthetic({'kxkxk': lambda w: 6.0 if w == 4 else 3.0 * w, '1xkxk': lambda w: 5 + w,
                     'kx1x1': lambda w: 5 + w / 3})
    assert predicted(dip, (4, 2, 2)) == pytest.approx(10 + 6 + 7 + 5 + 2 / 3 + 0.3)  # not 6 + 6 + 0.1
    # a merge of more than COST_LIMIT times the multiply-adds is never timed, so never chosen
    cheap_3d = {**slow_1d, 'kxkxk': lambda w: 0.01 * w}
    assert predicted(synthetic(cheap_3d), (1, 0, 7)) == pytest.approx(10 + 0.01 + 5 + 7 / 3 + 0.1 + 0.2)


def test_on_cuda_an_op_below_the_plans_minimum_work_keeps_the_branch_form():
    slow_1d = {**LINEAR, 'kx1x1': lambda w: 5 + w / 3}
    table = synthetic(slow_1d)
    table.key['device_type'] = 'cuda'  # the plans' choice times nothing below MIN_WORK multiply-adds on CUDA
    assert predicted(table, (6, 1, 1)) == pytest.approx(10 + 18 + 1 + 5 + 1 / 3 + 0.3)
    table = synthetic(slow_1d)
    table.key['device_type'] = 'mps'  # nor on a device it has no timing for
    assert predicted(table, (6, 1, 1)) == pytest.approx(10 + 18 + 1 + 5 + 1 / 3 + 0.3)


def test_the_stacked_plan_is_priced_at_its_temporal_taps():
    table = synthetic({**LINEAR, 'stacked': lambda w: 1.0 * w})
    # 4 kxkxk channels (3 taps each) and 4 1xkxk (1 tap): 16 taps, as 16 / 3 kxkxk channels of the table
    assert predicted(table, (4, 4, 0)) == pytest.approx(10 + 16 / 3)
    # without a k x k spatial kernel (3x1x1 only) the table does not price it
    assert predicted(table, (0, 0, 8)) == pytest.approx(10 + 8 / 3)


def test_widths_between_the_grid_are_interpolated():
    times = dense([1, 2, 4, 8], [1.0, 2.0, 10.0, 6.0], 8)
    assert times.tolist() == pytest.approx([0, 1, 2, 6, 10, 9, 8, 7, 6])
    shape = OpShape(8, (2, 8, 8), (1, 1, 1), 40, ('kxkxk',), 3)
    table = synthetic({'kxkxk': lambda w: w * w}, shapes=(shape,))
    times = table.op_times()[0].ms['kxkxk']
    assert times[20].item() == pytest.approx(17 ** 2 + (23 ** 2 - 17 ** 2) * 3 / 6)
    assert times[24].item() == 24 ** 2


def test_the_network_time_is_the_rest_plus_each_op():
    other = OpShape(8, (2, 8, 8), (1, 2, 2), 8, VIDEO, 3)
    table = synthetic(LINEAR, shapes=(SHAPE, other, SHAPE), rest=5.0)
    config = [dict(zip(VIDEO, w)) for w in ((4, 2, 2), (8, 0, 0), (0, 8, 0))]
    # (8, 0, 0): folding the BN saves less than the margin of 24.3 ms, so the branch form stays
    assert latency.predicted_time(config, table) == pytest.approx(5 + 14.96667 + 24.3 + 8, abs=1e-4)
    assert len(table.entries) == 2 and table.op_times()[0] is table.op_times()[2]
    with pytest.raises(UsageError, match='config has 2 ops but the latency table 3'):
        latency.predicted_time(config[:2], table)
    with pytest.raises(UsageError, match=r'config op 1: .* must be of the kinds kxkxk, 1xkxk, kx1x1 and sum to 8'):
        latency.predicted_time([config[0], {'kxkxk': 7}, config[2]], table)


# ---------------------------------------------------------------- --reweight latency

def test_latency_weights_are_each_kinds_share_of_its_time_at_all_channels():
    table = synthetic({'kxkxk': lambda w: 3.75 * w, '1xkxk': lambda w: 1.5 * w, 'kx1x1': lambda w: 0.75 * w})
    costs = latency.branch_costs(table)
    assert costs == [{'kxkxk': 30.0, '1xkxk': 12.0, 'kx1x1': 6.0}]
    op = CakesOp(list(zip(VIDEO, [8] * 3)), 8, 1, search=True)
    shares = [30 / 48] * 8 + [12 / 48] * 8 + [6 / 48] * 8
    assert sparsity_scale(op, True, costs[0]).tolist() == pytest.approx(shares)
    assert sparsity_scale(op, False, costs[0]).tolist() == [1.0] * 24
    # the released weights stay the default, exactly: 27 : 9 : 3
    assert sparsity_scale(op, True).tolist() == torch.tensor([27 / 39] * 8 + [9 / 39] * 8 + [3 / 39] * 8).tolist()
    with torch.no_grad():
        op.bn.weight.copy_(torch.linspace(-1, 1, 24))
    op.bn.weight.grad = torch.zeros(24)
    add_sparsity_grad([op], 0.1, True, costs)
    assert op.bn.weight.grad.tolist() == pytest.approx((0.1 * torch.tensor(shares) * op.bn.weight.sign()).tolist())


# ---------------------------------------------------------------- whole networks

def test_networks_are_timed_in_fresh_processes_of_the_group_size(monkeypatch):
    from cakes.configs import RELEASED
    from cakes.models.latency import VideoNetwork

    def here(*args):
        raise AssertionError('timed in this process')
    monkeypatch.setattr(latency, 'network_step', here)  # a spawned process imports its own
    network = VideoNetwork('conv1_2_3d', frames=2, input_size=32)
    names = ['CAKES12D_P', 'CAKES23D_C', 'CAKES123D_P']
    measured = network.measure({name: RELEASED[name] for name in names}, Setting(torch.device('cpu')), repeats=1,
                               per_process=2)
    assert list(measured) == names and all(ms > 0 for ms in measured.values())
    with pytest.raises(AssertionError, match='timed in this process'):
        network.measure({names[0]: RELEASED[names[0]]}, Setting(torch.device('cpu')), repeats=1)
