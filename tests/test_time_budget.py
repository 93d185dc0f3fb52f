"""Pruning to a time budget: the multiple-choice knapsack against brute force (optimal where it says so, within
its bound always), the released rule whenever it fits, targets out of reach refused with the range in ms,
speedups, width multiples; the same for a network converted by cakes.convert."""
import itertools
import random

import pytest
import torch
from torch import nn

from cakes import convert
from cakes.errors import UsageError
from cakes.ops import CakesOp, knapsack, latency
from cakes.ops.kernels import KINDS
from cakes.ops.latency import LatencyTable, OpShape, Setting
from cakes.ops.search import TimeBudget, prune_config, prune_to_time, width_combinations

pytestmark = pytest.mark.usefixtures('single_thread')
VIDEO = KINDS[:3]


def test_knapsack_is_optimal_with_whole_costs_and_bounded_otherwise():
    rng = random.Random(0)
    for trial in range(40):
        groups = [(torch.tensor([float(rng.randint(1, 9)) for _ in range(rng.randint(1, 5))]),) for _ in range(3)]
        groups = [(cost, torch.tensor([rng.random() for _ in cost])) for (cost,) in groups]
        if trial % 2:  # costs off the units
            groups = [(cost + torch.rand(len(cost)), value) for cost, value in groups]
        budget = rng.randint(4, 24)
        best = max((sum(float(v[i]) for (_, v), i in zip(groups, pick)) for pick in
                    itertools.product(*[range(len(c)) for c, _ in groups])
                    if sum(float(c[i]) for (c, _), i in zip(groups, pick)) <= budget), default=None)
        picks = knapsack.solve(groups, budget, buckets=budget)
        if best is None:
            assert picks is None
            continue
        assert picks.cost <= budget and picks.cost == pytest.approx(sum(float(c[i]) for (c, _), i in
                                                                       zip(groups, picks.index)))
        assert picks.value <= best + 1e-9 <= picks.bound + 2e-9
        if trial % 2 == 0:  # costs in whole units of budget / buckets: nothing is rounded, the optimum is exact
            assert picks.value == pytest.approx(best) and picks.bound == pytest.approx(best)


def test_the_frontier_keeps_only_options_nothing_beats():
    costs = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 4.0, 6.0])
    values = torch.tensor([2.0, 1.0, 0.5, 3.0, 3.0, 4.0, 4.0])  # the last: as good as a cheaper one
    assert knapsack.frontier(costs, values).tolist() == [1, 3, 5]


def test_width_combinations_are_every_split_and_respect_a_multiple():
    rows = width_combinations(3, 6)
    assert len(rows) == 28 and len({tuple(r) for r in rows.tolist()}) == 28 and (rows.sum(1) == 6).all()
    rows = width_combinations(3, 10, multiple=4)  # groups of 4, the 2 left over in one branch
    expected = {r for r in itertools.product(range(11), repeat=3) if sum(r) == 10
                and sum(w % 4 != 0 for w in r) == 1 and all(w % 4 in (0, 2) for w in r)}
    assert {tuple(r) for r in rows.tolist()} == expected
    with pytest.raises(UsageError, match='too many to weigh: give a width multiple'):
        width_combinations(7, 64)


# ---------------------------------------------------------------- prune_to_time on synthetic tables

def supernet_ops(widths, seed=0):
    torch.manual_seed(seed)
    ops = [CakesOp(list(zip(VIDEO, [c] * 3)), 4, 1, search=True) for c in widths]
    with torch.no_grad():
        for op in ops:
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
    return ops


def stepped_table(ops, seed=0, rest=3.0, whole=False):
    """A table of the ops' shapes with times that step and wiggle with width (whole ms when `whole`)."""
    rng = random.Random(seed)
    shapes = [OpShape(4, (2, 8, 8), (1, 1, 1), op.bn.num_features // 3, VIDEO, 3) for op in ops]
    key = {**Setting(torch.device('cpu')).key(), 'network': 'stepped', 'ops': [latency.shape_json(s) for s in shapes]}
    entries = []
    for shape in dict.fromkeys(shapes):
        widths = latency.width_grid(shape.width)
        ms = {}
        for kind, scale in zip(VIDEO, (9, 3, 1)):
            times = [scale * (1 + (w - 1) // 2) + rng.randint(0, 3) for w in widths]
            ms[kind] = [float(t) if whole else t + rng.random() for t in times]
        entries.append({'shape': latency.shape_json(shape), 'widths': widths, 'ms': ms,
                        'overhead': {'cat1': 0.0, 'cat2': 0.0, 'cat3': 0.0, 'bn': 0.0}})
    return LatencyTable(key, entries, rest)


def kept(op, widths):
    """|BN scale| of each branch's largest `width` channels, summed (by hand)."""
    c = op.bn.num_features // 3
    scale = op.bn.weight.detach().abs()
    return sum(sum(sorted(scale[b * c:(b + 1) * c].tolist(), reverse=True)[:w]) for b, w in enumerate(widths))


def brute_force(ops, table, target):
    """The most kept |BN scale| of any config whose predicted time is at most `target`."""
    options = []
    for op, times in zip(ops, table.op_times()):
        rows = width_combinations(3, times.shape.width)
        options.append(list(zip(rows.tolist(), times(rows).tolist())))
    best = None
    for pick in itertools.product(*options):
        if table.rest_ms + sum(ms for _, ms in pick) <= target:
            value = sum(kept(op, widths) for op, (widths, _) in zip(ops, pick))
            best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_time_budgets_are_optimal_within_their_bound_by_brute_force(seed):
    ops = supernet_ops([4, 5, 4], seed)
    table = stepped_table(ops, seed)
    released = prune_config(ops)
    fastest, slowest = prune_to_time(ops, table, table.predicted_ms(released)).reachable
    for share in (0.15, 0.4, 0.7, 0.95):
        target = fastest + share * (table.predicted_ms(released) - fastest)
        budget = prune_to_time(ops, table, target, buckets=512)
        assert budget.predicted_ms == pytest.approx(table.predicted_ms(budget.config)) and budget.predicted_ms <= target
        assert [sum(w.values()) for w in budget.config] == [4, 5, 4]
        assert budget.kept == pytest.approx(sum(kept(op, [w[k] for k in VIDEO]) for op, w in zip(ops, budget.config)))
        best = brute_force(ops, table, target)
        assert budget.kept <= best + 1e-9 <= budget.bound + 2e-9


def test_with_whole_times_the_budget_is_the_exact_optimum():
    ops = supernet_ops([4, 5], 3)
    table = stepped_table(ops, 3, rest=2.0, whole=True)
    released = table.predicted_ms(prune_config(ops))
    fastest = prune_to_time(ops, table, released).reachable[0]
    for target in range(int(fastest), int(released)):
        budget = prune_to_time(ops, table, float(target), buckets=target - 2)  # units of exactly 1 ms
        assert budget.kept == pytest.approx(brute_force(ops, table, target)) == pytest.approx(budget.bound)


def test_the_released_rule_is_the_answer_whenever_it_fits():
    ops = supernet_ops([5, 4], 4)
    table = stepped_table(ops, 4)
    released = prune_config(ops)
    ms = table.predicted_ms(released)
    budget = prune_to_time(ops, table, ms)
    assert budget == TimeBudget(released, ms, budget.kept, budget.kept, budget.reachable, ms)
    assert budget.kept == pytest.approx(sum(kept(op, [w[k] for k in VIDEO]) for op, w in zip(ops, released)))
    assert prune_config(ops, target_ms=ms, table=table) == released
    below = prune_to_time(ops, table, ms - 1e-6)
    assert below.config != released and below.predicted_ms < ms and below.kept < budget.kept


def test_speedups_are_over_the_released_rule_on_the_same_table():
    ops = supernet_ops([4, 5, 4], 5)
    table = stepped_table(ops, 5)
    released = table.predicted_ms(prune_config(ops))
    fastest = prune_to_time(ops, table, released).reachable[0]
    speedup = released / (fastest + 0.5 * (released - fastest))
    assert prune_to_time(ops, table, speedup=speedup) == prune_to_time(ops, table, released / speedup)
    with pytest.raises(UsageError, match='not both'):
        prune_to_time(ops, table, released, speedup=1.5)


def test_targets_out_of_reach_name_the_range_in_ms():
    ops = supernet_ops([4, 5], 6)
    table = stepped_table(ops, 6)
    groups = [times(width_combinations(3, times.shape.width)) for times in table.op_times()]
    fastest = table.rest_ms + sum(float(g.min()) for g in groups)
    slowest = table.rest_ms + sum(float(g.max()) for g in groups)
    target = fastest - 0.01
    with pytest.raises(UsageError, match=rf'time target {target:.4g} ms is out of reach: .* from {fastest:.4g} ms '
                                         rf'\(the fastest kinds\) to {slowest:.4g} ms .* eval, batch 1'):
        prune_to_time(ops, table, target)
    assert prune_to_time(ops, table, fastest).predicted_ms == pytest.approx(fastest)
    # above the slowest config every config fits: the released rule, which keeps the most
    assert prune_to_time(ops, table, slowest + 0.01).config == prune_config(ops)


def test_a_table_of_another_network_is_refused():
    ops = supernet_ops([4, 5], 7)
    with pytest.raises(UsageError, match=r'measured for another network: 2 ops, op 1 of kinds kxkxk/1xkxk/kx1x1 '
                                         r'keeping 4; this one has 2, op 1 of kxkxk/1xkxk/kx1x1 keeping 5'):
        prune_to_time(ops, stepped_table(supernet_ops([4, 4]), 7), 10.0)


def test_width_multiples_hold_in_time_budgets():
    ops = supernet_ops([8, 10], 8)
    table = stepped_table(ops, 8)
    released = table.predicted_ms(prune_config(ops, multiple=4))
    fastest, _ = prune_to_time(ops, table, released, multiple=4).reachable
    budget = prune_to_time(ops, table, (fastest + released) / 2, multiple=4)
    assert budget.predicted_ms <= (fastest + released) / 2
    for widths, c in zip(budget.config, (8, 10)):
        assert sum(widths.values()) == c and sum(w % 4 != 0 for w in widths.values()) == c % 4 // 2


# ---------------------------------------------------------------- converted networks

class Net(nn.Module):
    """Conv3d + BN pairs at a temporal stride and without: the converted layers' shapes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(2, 6, 3, stride=2, padding=1), nn.BatchNorm3d(6), nn.ReLU())
        self.b = nn.Sequential(nn.Conv3d(6, 5, 3, padding=1), nn.BatchNorm3d(5), nn.ReLU())

    def forward(self, x):
        return self.b(self.a(x)).mean(dim=(2, 3, 4))


@pytest.fixture
def converted(tmp_path, monkeypatch):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path / 'cache'))
    torch.manual_seed(0)
    supernet = convert.to_supernet(Net().eval(), kinds=VIDEO)
    with torch.no_grad():
        for m in supernet.modules():
            if isinstance(m, nn.BatchNorm3d) and m.num_features > 6:
                m.weight.copy_(torch.randn(m.num_features))
    return supernet


def test_converted_networks_prune_to_time_on_a_table_of_their_input(converted, tmp_path):
    x = torch.randn(1, 2, 4, 8, 8)
    table = convert.latency_table(converted, x)  # measured into the cache
    path = str(tmp_path / 'net.json')
    latency.save_table(table, path)
    a, b = table.shapes
    assert (a.in_channels, a.input, a.stride, a.width, a.kinds) == (2, (4, 8, 8), (2, 2, 2), 6, VIDEO)
    assert (b.in_channels, b.input, b.stride, b.width) == (6, (2, 4, 4), (1, 1, 1), 5)
    assert 'stacked' not in table.entry(a)['ms'] and 'stacked' in table.entry(b)['ms']  # a temporal stride
    released = convert.prune_config(converted)
    ms = table.predicted_ms(list(released.values()))
    fastest, _ = prune_to_time([m for m in converted.modules() if hasattr(m, 'kinds')], table, ms).reachable
    target = (fastest + ms) / 2
    config = convert.prune_config(converted, target_ms=target, table=path)
    assert list(config) == list(released) and table.predicted_ms(list(config.values())) <= target
    assert convert.prune_config(converted, target_ms=target, table=table) == config
    assert convert.prune_config(converted, target_ms=target, example_input=x) == config  # the cached table
    assert convert.prune_config(converted, target_ms=ms, example_input=x) == released
    pruned = convert.to_pruned(Net().eval(), config, supernet=converted)
    assert pruned(x).shape == (1, 5)
    with pytest.raises(UsageError, match='give table= .* or example_input='):
        convert.prune_config(converted, target_ms=target)
    with pytest.raises(UsageError, match='not both'):
        convert.prune_config(converted, target_flops=1e6, target_ms=target, table=table)
    with pytest.raises(UsageError, match='out of reach'):
        convert.prune_config(converted, target_ms=fastest / 2, table=table)


def test_converted_sparsity_weighs_by_the_tables_shares(converted):
    x = torch.randn(1, 2, 4, 8, 8)
    table = convert.latency_table(converted, x)
    ops = [m for m in converted.modules() if hasattr(m, 'kinds')]
    for op in ops:
        op.bn.weight.grad = torch.zeros_like(op.bn.weight)
    convert.add_sparsity_grad(converted, 0.5, table=table)
    for op, costs in zip(ops, latency.branch_costs(table)):
        total = sum(costs.values())
        share = torch.cat([torch.full((op.width,), costs[kind] / total) for kind in op.kinds])
        assert op.bn.weight.grad.tolist() == pytest.approx((0.5 * share * op.bn.weight.sign()).tolist())
