"""The time of a CAKES op for given branch widths, from its shape's entry in a latency table (cakes.ops.latency):
the time of the plan that cakes.ops.plans would choose for those widths, each plan's time composed of the
table's parts. For many width combinations at once (the time budget weighs every one of an op's).

Plans and what they cost here (t_kind(w): the table's time of one convolution of that kind to w channels):
- branches: the sum of the non-empty branches' t, the concatenation of their outputs, and in eval the BN;
- a merge: per group t of its enclosing kind at the group's width, a concatenation when there are several
  groups, and in train the assembly of each merged group's weights (in eval they are cached, BN folded in);
- stacked: the table's stacked time at the op's total of temporal taps (a kxkxk channel has k, a 1xkxk one 1),
  over k, when the non-empty branches' kernels span k x k spatially.
Only the plans cakes.ops.plans would time are considered (at most COST_LIMIT times the branch form's
multiply-adds, no partial merge as costly as merging everything), and another plan replaces the branch form
only when it is faster by MARGIN, as there.
"""
import math

import torch

from .plans.choice import CAP, COST_LIMIT, MARGIN, MIN_WORK, set_partitions
from .kernels import kernel_shape, kind_of_size


def dense(widths, values, width):
    """Times at every width 0..`width` (0 at 0), linear between the measured `widths`."""
    grid = torch.tensor(widths, dtype=torch.float64)
    times = torch.tensor(values, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64),
                      interpolate(grid, times, torch.arange(1, width + 1, dtype=torch.float64))])


def interpolate(grid, times, at):
    """`times` (measured at the sorted `grid`) linearly interpolated at `at` (clamped to the grid's ends)."""
    upper = torch.searchsorted(grid, at).clamp(1, len(grid) - 1)
    lower = upper - 1
    span = grid[upper] - grid[lower]
    share = ((at - grid[lower]) / span).clamp(0, 1)
    return times[lower] + share * (times[upper] - times[lower])


class OpTimes:
    """One op shape's table entry, ready to price width combinations: `self(widths)` -> ms per row."""

    def __init__(self, shape, entry, train, device='cpu', batch=1):
        self.shape, self.train, self.device = shape, train, device
        # the clips the plans' choice times on (cakes.ops.plans.choice.CAP)
        self.timed_clips = min(batch, CAP.get(device, 1))
        self.ms = {name: dense(entry['stacked_widths' if name == 'stacked' else 'widths'], values, shape.width)
                   for name, values in entry['ms'].items()}
        self.overhead = dict(entry['overhead'])
        self.sizes = [kernel_shape(kind, shape.k)[0] for kind in shape.kinds]

    def __call__(self, widths):
        """Predicted ms of the op for each row of `widths` ((N, n) widths in the op's kind order, summing to C)."""
        widths = torch.as_tensor(widths, dtype=torch.long).reshape(-1, len(self.sizes))
        support = sum((widths[:, i] > 0).long() << i for i in range(widths.shape[1]))
        out = torch.empty(len(widths), dtype=torch.float64)
        for mask in support.unique().tolist():
            rows = support == mask
            out[rows] = self.plan_time([i for i in range(widths.shape[1]) if mask >> i & 1], widths[rows])
        return out

    def conv(self, kind, width):
        return self.ms[kind][width]

    def enclosing(self, group):
        return kind_of_size(tuple(max(self.sizes[i][a] for i in group) for a in range(3)))

    def plan_time(self, members, widths):
        """The chosen plan's ms for rows of `widths` whose non-empty branches are `members`."""
        kinds = self.shape.kinds
        volume = [math.prod(size) for size in self.sizes]
        macs = sum(widths[:, i] * volume[i] for i in members).double()
        branches = sum(self.conv(kinds[i], widths[:, i]) for i in members) + self.overhead[f'cat{len(members)}']
        if not self.train:
            branches = branches + self.overhead['bn']
        if self.device not in CAP:  # no timing set up for the device: the plans' choice keeps the branch form
            return branches
        others = []  # (ms, multiply-adds, a partial merge)
        if len(members) == 1:
            others.append((self.conv(kinds[members[0]], widths[:, members[0]]), macs, False))
        else:
            partitions = set_partitions(members) if len(members) <= 3 else [[members]]
            for groups in partitions:
                if all(len(g) == 1 for g in groups):
                    continue
                others.append((*self.merge_time(groups, widths), len(groups) > 1))
        stacked = self.stacked_time(members, widths)
        if stacked is not None:
            others.append((*stacked, False))
        # merging everything: all C channels at the enclosing kind of every branch
        full = self.shape.width * math.prod(kernel_shape(self.enclosing(members), self.shape.k)[0])
        best = torch.full_like(branches, math.inf)
        for ms, cost, partial in others:
            allowed = cost <= COST_LIMIT[self.device] * macs
            if partial:
                allowed &= cost < 0.95 * full
            best = torch.where(allowed, torch.minimum(best, ms), best)
        # where the plans' choice times nothing it keeps the branch form
        return torch.where((best <= (1 - MARGIN) * branches) & self.timed(macs), best, branches)

    def timed(self, macs):
        """Per row, whether the plans' choice times plans at all (cakes.ops.plans.choice.worth_timing): on a
        device it times on, when the branch form's step does at least MIN_WORK multiply-adds at the timed batch
        (`macs`: per row, the kernels' multiply-adds per input channel and output position)."""
        shape = self.shape
        work = self.timed_clips * macs * shape.in_channels * math.prod(shape.output()) * (3 if self.train else 1)
        return work >= MIN_WORK[self.device]

    def merge_time(self, groups, widths):
        ms, macs = 0.0, 0
        for group in groups:
            kind = self.enclosing(group)
            width = sum(widths[:, i] for i in group)
            ms = ms + self.conv(kind, width)
            macs = macs + width * math.prod(kernel_shape(kind, self.shape.k)[0])
            if self.train and len(group) > 1:
                ms = ms + self.overhead['merge'] * width / self.shape.width
        if len(groups) > 1:
            ms = ms + self.overhead[f'cat{len(groups)}']
        return ms, macs.double()

    def stacked_time(self, members, widths):
        """(ms, multiply-adds) of the stacked plan, or None where the table does not price it."""
        k = self.shape.k
        if 'stacked' not in self.ms or any(max(self.sizes[i][a] for i in members) != k for a in (1, 2)):
            return None
        taps = sum(widths[:, i] * self.sizes[i][0] for i in members)
        grid = torch.arange(self.shape.width + 1, dtype=torch.float64)
        return interpolate(grid, self.ms['stacked'], taps.double() / k), (taps * k * k).double()
