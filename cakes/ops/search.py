"""What the search reads off a searchable op: its BN-scale sparsity term and the channels pruning keeps
(by |BN scale|, or to a FLOPs budget, or to a time budget on a latency table)."""
import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from cakes.errors import UsageError

from . import knapsack, plans
from .forward import eval_forward
from .kernels import VIDEO_KIND_NAMES, kernel_cost


def branch_blocks(op):
    """(kind, start, width) of each branch's consecutive block of BN channels."""
    start, blocks = 0, []
    for kind, width in zip(op.kinds, op.widths):
        blocks.append((kind, start, width))
        start += width
    return blocks


def sparsity_scale(op, reweight, costs=None):
    """Per-channel factor of the L1 term: 1, or the branch's share of the op's cost: by default the kernel cost
    (27 : 9 : 3); with `costs` ({kind: cost}, e.g. cakes.ops.latency.branch_costs: each kind's measured time at
    all the op's C channels) the share of those."""
    scale = torch.ones(op.bn.num_features, device=op.bn.weight.device)
    if reweight:
        cost = costs or {kind: kernel_cost(kind, op.k) for kind in op.kinds}
        total = sum(cost[kind] for kind in op.kinds)
        for kind, start, width in branch_blocks(op):
            scale[start:start + width] = cost[kind] / total
    return scale


def add_sparsity_grad(searchable_ops, strength, reweight, costs=None):
    """Add the subgradient of strength * |BN scale| (cost-weighted) to every searchable op's BN; `costs`: per op
    the {kind: cost} that `sparsity_scale` weighs by (None: the kernel costs)."""
    with torch.no_grad():
        for op, cost in zip(searchable_ops, costs or [None] * len(searchable_ops)):
            weight = op.bn.weight
            weight.grad.add_(strength * sparsity_scale(op, reweight, cost) * torch.sign(weight))


def kept_indices(scale, num_branches, cost=None, lam=0.0, multiple=1):
    """Sorted indices of the channels pruning keeps: the total / n largest |BN scale|.

    The released rule keeps every channel at or above the (total / n)-th largest value; with ties that
    could keep more, so ties are broken towards the earlier channel and exactly total / n are kept.
    With a FLOPs budget the key is |BN scale| - lam * cost (`cost`: FLOPs of each channel); lam = 0 is
    the rule above, bit for bit. With `multiple` > 1 every branch keeps a multiple of it (`grouped_indices`).
    """
    key = scale.detach().abs()
    if lam:
        key = key.double().cpu() - lam * cost
    if multiple > 1:
        return grouped_indices(key, num_branches, scale.numel() // num_branches, multiple)
    return top_indices(key, scale.numel() // num_branches)


def top_indices(key, count):
    """Sorted indices of the `count` largest values of `key`, ties towards the earlier channel."""
    order = torch.sort(key, descending=True, stable=True).indices
    return order[:count].sort().values


def grouped_indices(key, num_branches, count, multiple):
    """Sorted indices of `count` channels of the n equal branches of `key`, every branch keeping a multiple of
    `multiple` channels, its largest keys (ties towards the earlier channel), with the largest total key.

    Groups of `multiple` go one at a time to the branch whose next group has the largest sum (ties towards
    the earlier branch): a branch's groups, its keys in descending order, never sum to more than the one
    before, so this is the best choice. When `multiple` does not divide `count`, the count % multiple channels
    left over go, last, to the branch whose next ones have the largest sum: that branch alone is not a
    multiple.
    """
    branches = key.reshape(num_branches, -1)
    width = branches.shape[1]
    orders = [torch.sort(branch, descending=True, stable=True).indices for branch in branches]
    sums = [torch.cat([torch.zeros(1, dtype=torch.float64), branch[order].double().cumsum(0)])
            for branch, order in zip(branches, orders)]
    taken = [0] * num_branches
    groups, rest = divmod(count, multiple)
    for size in [multiple] * groups + ([rest] if rest else []):
        room = [b for b in range(num_branches) if taken[b] + size <= width]
        best = max(room, key=lambda b: float(sums[b][taken[b] + size] - sums[b][taken[b]]))
        taken[best] += size
    return torch.cat([order[:n] + b * width for b, (order, n) in enumerate(zip(orders, taken))]).sort().values


def channel_cost(op, costs):
    """FLOPs of each of the op's BN channels, from `costs` = {kind: FLOPs of one channel of that branch}."""
    return torch.cat([torch.full((width,), float(costs[kind]), dtype=torch.float64)
                      for kind, _, width in branch_blocks(op)])


def kept_channels(op, costs=None, lam=0.0, multiple=1):
    cost = channel_cost(op, costs) if lam else None
    return kept_indices(op.bn.weight, len(op.kinds), cost, lam, multiple)


def count_kept(index, blocks):
    """{kind: how many of the kept channels `index` fall in the branch} for (kind, start, width) blocks."""
    return {kind: int(((index >= start) & (index < start + width)).sum()) for kind, start, width in blocks}


def pruned_widths(op, costs=None, lam=0.0, multiple=1):
    """{kind: kept channels in the branch} in the op's branch order."""
    return count_kept(kept_channels(op, costs, lam, multiple), branch_blocks(op))


SMALL_SCALE = 0.01  # a |BN scale| below this share of the largest in its op is small: a channel being switched off


def search_summary(searchable_ops):
    """One line on where a search stands: per kernel kind, the share of its BN channels whose |scale| is small
    (below SMALL_SCALE of the largest |scale| in the same op), and the kernel mix pruning would choose now (each
    kind's share of the kept channels, all ops together)."""
    small, channels, kept = Counter(), Counter(), Counter()
    for op in searchable_ops:
        scale = op.bn.weight.detach().abs().float().cpu()
        is_small = scale < SMALL_SCALE * scale.max()
        for kind, start, width in branch_blocks(op):
            small[kind] += int(is_small[start:start + width].sum())
            channels[kind] += width
        kept.update(pruned_widths(op))

    names = {kind: VIDEO_KIND_NAMES.get(kind, kind) for kind in channels}
    small_shares = ' '.join(f'{names[kind]} {small[kind] / channels[kind]:.0%}' for kind in channels)
    kept_shares = ' '.join(f'{names[kind]} {kept[kind] / sum(kept.values()):.0%}' for kind in channels)
    return (f"Search: channels of small |BN scale| (< {SMALL_SCALE:.0%} of their layer's largest) {small_shares}; "
            f'the kernel mix pruning would keep now {kept_shares}')


def check_multiple(multiple):
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise UsageError(f'width multiple {multiple!r} must be a whole number >= 1 (1: the released rule; 8 suits '
                         'tensor cores, 16 AVX-512)')
    return multiple


def prune_config(searchable_ops, target_flops=None, costs=None, flops=None, multiple=1, target_ms=None, table=None):
    """The pruned widths of every op: the released rule, or with `target_flops` the budget rule
    (see `prune_to_budget` for `costs` and `flops`), or with `target_ms` the time budget on a latency `table`
    (`prune_to_time`); with `multiple` every branch width a multiple of it."""
    if target_ms is not None:
        return prune_to_time(searchable_ops, table, target_ms, multiple=multiple).config
    if target_flops is None:
        return [pruned_widths(op, multiple=check_multiple(multiple)) for op in searchable_ops]
    return prune_to_budget(searchable_ops, costs, flops, target_flops, multiple=multiple).config


def channel_costs(model, example_input, searchable_ops):
    """[{kind: FLOPs of one output channel of that branch}] per op, from one counted forward of `model`
    (put it and the input on the meta device: shapes only, nothing computed). The ops must run their
    branches as modules (CakesOp); for a dropout supernet pass the CAKES supernet of the same shapes."""
    names = {id(m): name for name, m in model.named_modules()}
    root = type(model).__name__
    counter = FlopCounterMode(display=False)  # counts per module, so per branch
    eval_forward(model, example_input, plans.off(), counter)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return [{kind: counts.get(f'{root}.{names[id(branch)]}', 0) / width
             for kind, width, branch in zip(op.kinds, op.widths, op.convs)} for op in searchable_ops]


@dataclass
class Budget:
    config: list          # {kind: width} per op
    flops: int            # of the pruned network, counted
    lam: float            # the multiplier of FLOPs in the key |BN scale| - lam * FLOPs
    reachable: tuple      # (fewest, most) FLOPs: all channels of the cheapest / costliest kind


def prune_to_budget(searchable_ops, costs, flops, target_flops, unit=None, multiple=1, counted_at=''):
    """Keep C channels per op maximising the kept |BN scale| - lam * their FLOPs, lam found by bisection: when
    the released rule's network costs more than `target_flops`, the smallest lam > 0 whose pruned network fits
    (at most `target_flops`); when it costs less, the most negative lam that still fits (costlier kernels, so
    that the budget is spent); lam = 0 (the released rule) when no other config fits better.

    `costs`: per op {kind: FLOPs of one channel} (`channel_costs`); `flops(config)`: the FLOPs of the pruned
    network with that config. The pruned network's FLOPs are affine in the widths (the layer after each op
    reads its C channels whatever their kinds), so bisection uses `flops` only to fix the constant and checks
    the final config with it. The FLOPs never go up as lam rises; with distinct scales one step of it trades
    one channel for one of another kind, so the result is within one channel trade of the target.
    A target out of reach is a UsageError giving the range in `unit` (default: the one that fits it) and the
    input it was counted at (`counted_at`, e.g. '8 frames of 224x224').
    With `multiple` every branch width is a multiple of it (`grouped_indices`): the same rule over groups of
    channels, within one trade of a group of channels of the target.
    """
    check_multiple(multiple)
    kept = [op.bn.weight.numel() // len(op.kinds) for op in searchable_ops]
    scales = [op.bn.weight.detach().abs().double().cpu() for op in searchable_ops]
    channel = [channel_cost(op, cost) for op, cost in zip(searchable_ops, costs)]

    def choose(lam):
        if not lam:
            return prune_config(searchable_ops, multiple=multiple)
        return [count_kept(kept_indices(scale, len(op.kinds), cost, lam, multiple), branch_blocks(op))
                for op, scale, cost in zip(searchable_ops, scales, channel)]

    def linear(config):
        return sum(w * cost[kind] for widths, cost in zip(config, costs) for kind, w in widths.items())

    def fits(lam):
        return offset + linear(choose(lam)) <= target_flops

    released = choose(0.0)
    offset = flops(released) - linear(released)
    fewest = offset + sum(c * min(cost.values()) for c, cost in zip(kept, costs))
    most = offset + sum(c * max(cost.values()) for c, cost in zip(kept, costs))
    if not fewest <= target_flops <= most:
        unit = unit or flops_unit(fewest)
        raise UsageError(f'FLOPs target {flops_text(target_flops, unit)} is out of reach: keeping C channels per '
                         f'layer costs from {flops_text(fewest, unit)} (all of the cheapest kind) to '
                         f'{flops_text(most, unit)} (all of the costliest)'
                         + (f' at {counted_at}' if counted_at else '') + '; give a target in that range')
    if not fits(0.0):
        low, high = 0.0, 1.0 / max(max(cost.values()) for cost in costs)
        while not fits(high):
            low, high = high, high * 2
        lam = bisect(fits, low, high)
    else:
        lam = spend(fits, scales, costs)
        if choose(lam) == released:  # no trade towards costlier kernels fits: the released rule
            lam = 0.0
    config = choose(lam)
    counted = flops(config)
    if counted != round(offset + linear(config)):
        raise RuntimeError(f'pruned FLOPs {counted} are not affine in the branch widths (predicted '
                           f'{offset + linear(config):.0f}): the per-channel costs do not fit this network')
    return Budget(config, counted, lam, (round(fewest), round(most)))


def bisect(fits, low, high):
    """The smallest lam (to 12 digits) that fits, between `low`, which does not, and `high`, which does (the
    FLOPs never go up as lam rises)."""
    while high - low > 1e-12 * max(abs(low), abs(high)):
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def spend(fits, scales, costs):
    """Under the budget at lam = 0: the most negative lam whose network still fits. Below `edge` the key orders
    every op's channels by cost alone (all of the costliest kind)."""
    gaps = [a - b for cost in costs for a in cost.values() for b in cost.values() if a > b]
    if not gaps:  # every kind costs the same: nothing to spend
        return 0.0
    edge = -2 * (1 + max(float(scale.max()) for scale in scales)) / min(gaps)
    return edge if fits(edge) else bisect(fits, edge, 0.0)


FLOPS_UNITS = {'GFLOPs': 1e9, 'MFLOPs': 1e6, 'kFLOPs': 1e3}


def flops_unit(flops):
    """The largest unit of which `flops` is at least one (GFLOPs at video sizes, MFLOPs for small volumes)."""
    return next((unit for unit, scale in FLOPS_UNITS.items() if flops >= scale), 'kFLOPs')


def flops_text(flops, unit):
    return f'{flops / FLOPS_UNITS[unit]:.3f} {unit}'


# ---------------------------------------------------------------- the time budget

COMBINATIONS_LIMIT = 2_000_000  # width combinations of one op priced at once


@dataclass
class TimeBudget:
    config: list          # {kind: width} per op
    predicted_ms: float   # of the pruned network, on the table
    kept: float           # the kept |BN scale|, summed over the ops
    bound: float          # no config within the target keeps more (the optimum lies in [kept, bound])
    reachable: tuple      # (fastest, slowest) predicted ms keeping C channels per op
    released_ms: float    # the released rule's config, predicted on the same table


def width_combinations(n, width, multiple=1):
    """(N, n): every way of keeping `width` channels in n branches, each a multiple of `multiple` but for one
    branch, which takes the width % multiple channels left over (as `grouped_indices` keeps them)."""
    groups, rest = divmod(width, multiple)
    count = math.comb(groups + n - 1, n - 1) * (n if rest else 1)
    if count > COMBINATIONS_LIMIT:
        raise UsageError(f'{count} width combinations of {n} kinds in {width} channels are too many to weigh: give a '
                         f'width multiple (about {math.ceil(width / (COMBINATIONS_LIMIT ** (1 / (n - 1))))} or more)')
    rows, left = torch.zeros(1, 0, dtype=torch.long), torch.tensor([groups])
    for _ in range(n - 1):  # each branch in turn takes 0..left groups
        counts = left + 1
        taken = torch.arange(int(counts.sum())) - (counts.cumsum(0) - counts).repeat_interleave(counts)
        rows = torch.cat([rows.repeat_interleave(counts, 0), taken[:, None]], 1)
        left = left.repeat_interleave(counts) - taken
    rows = torch.cat([rows, left[:, None]], 1) * multiple
    if rest:
        rows = torch.cat([rows + rest * torch.eye(n, dtype=torch.long)[b] for b in range(n)])
    return rows


def kept_scale(op, rows):
    """The kept |BN scale| of each row of branch widths: each branch keeps its channels of largest |BN scale|."""
    n = len(op.kinds)
    branches = op.bn.weight.detach().abs().double().cpu().reshape(n, -1)
    sums = torch.cat([torch.zeros(n, 1, dtype=torch.float64),
                      branches.sort(dim=1, descending=True).values.cumsum(1)], 1)
    return sum(sums[b, rows[:, b]] for b in range(n))


def check_table_ops(searchable_ops, shapes):
    """The ops must be the table's: as many, of the same kinds and C."""
    ours = [(tuple(op.kinds), op.bn.num_features // len(op.kinds)) for op in searchable_ops]
    theirs = [(shape.kinds, shape.width) for shape in shapes]
    if ours != theirs:
        i = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise UsageError(f'the latency table was measured for another network: {len(theirs)} ops'
                         + (f', op {i} of kinds {"/".join(theirs[i][0])} keeping {theirs[i][1]}' if i < len(theirs)
                            else '') + f'; this one has {len(ours)}'
                         + (f', op {i} of {"/".join(ours[i][0])} keeping {ours[i][1]}' if i < len(ours) else ''))


def prune_to_time(searchable_ops, table, target_ms=None, speedup=None, multiple=1, buckets=4096):
    """Keep C channels per op, choosing each op's branch widths so that the kept |BN scale| is the most with the
    network's predicted time (cakes.ops.latency.predicted_time on `table`) at most `target_ms`, or at most the
    released rule's predicted time over `speedup`.

    Time is a step function of width, so this is the multiple-choice knapsack it is (cakes.ops.knapsack): per
    op, every width combination (`width_combinations`, multiples of `multiple`) priced by the table; the
    result's `bound` says how far from the optimum it can be. The released rule, when it fits, is the answer
    (it keeps the most). A target below the fastest config is a UsageError giving the reachable range in ms.
    """
    check_multiple(multiple)
    check_table_ops(searchable_ops, table.shapes)
    released = prune_config(searchable_ops, multiple=multiple)
    released_ms = table.predicted_ms(released)
    if (target_ms is None) == (speedup is None):
        raise UsageError('give a time target in ms or a speedup over the released rule, not both')
    if speedup is not None:
        if speedup <= 0:
            raise UsageError(f'speedup {speedup:g} must be > 0 (2: half the released rule\'s time)')
        target_ms = released_ms / speedup
    rows, groups = [], []
    for op, times in zip(searchable_ops, table.op_times()):
        rows.append(width_combinations(len(op.kinds), times.shape.width, multiple))
        groups.append((times(rows[-1]), kept_scale(op, rows[-1])))
    fastest = table.rest_ms + sum(float(ms.min()) for ms, _ in groups)
    slowest = table.rest_ms + sum(float(ms.max()) for ms, _ in groups)
    if target_ms < fastest:  # above the slowest every config fits: the released rule is the answer
        key = table.key
        raise UsageError(f'time target {target_ms:.4g} ms is out of reach: keeping C channels per op takes from '
                         f'{fastest:.4g} ms (the fastest kinds) to {slowest:.4g} ms (the slowest), predicted for '
                         f"{key['device']}, {key['mode']}, batch {key['batch']}; give a target in that range")
    kept = sum(float(kept_scale(op, torch.tensor([[w[kind] for kind in op.kinds]])))
               for op, w in zip(searchable_ops, released))
    if released_ms <= target_ms:
        return TimeBudget(released, released_ms, kept, kept, (fastest, slowest), released_ms)
    picks = knapsack.solve(groups, target_ms - table.rest_ms, buckets)
    config = [dict(zip(op.kinds, r[i].tolist())) for op, r, i in zip(searchable_ops, rows, picks.index)]
    return TimeBudget(config, table.rest_ms + picks.cost, picks.value, picks.bound, (fastest, slowest), released_ms)
