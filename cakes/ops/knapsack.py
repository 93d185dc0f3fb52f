"""The multiple-choice knapsack of a time budget: one option per group (an op's width combinations), the most
total value (kept |BN scale|) with the total cost (predicted time) at most the budget.

Costs are step functions of width, neither affine nor monotone, so no multiplier on cost orders the options
(the FLOPs budget's bisection); this is solved exactly up to a discretisation of cost whose effect is bounded:
each group's options are cut to its Pareto frontier (no cheaper option of at least the same value), then a
dynamic programme over the budget cut into `buckets` units runs twice: with costs rounded up to whole units
(every pick it finds fits the budget: the solution) and rounded down (a relaxation: no pick within the budget
is worth more than its optimum: the bound). The optimum lies between the two; when they agree it is exact.
"""
import math
from dataclasses import dataclass

import torch

CHUNK = 1 << 22  # options x capacities evaluated at once in the programme


@dataclass
class Picks:
    index: list     # per group, the index of the option taken
    value: float    # their total value
    cost: float     # their total cost (exact)
    bound: float    # no pick within the budget is worth more


def frontier(costs, values):
    """Indices of the options that no other beats (cheaper, or as cheap, with at least the same value), by
    ascending cost and so ascending value."""
    order = torch.argsort(values, descending=True, stable=True)
    order = order[torch.argsort(costs[order], stable=True)]
    ranked = values[order]
    previous = torch.cat([torch.full((1,), -math.inf, dtype=ranked.dtype), ranked.cummax(0).values[:-1]])
    return order[ranked > previous]


def programme(units, values, capacity):
    """Best total value at every capacity 0..`capacity` taking one option per group (integer `units` of cost,
    `values` per option, per group), and per group the option taken at each capacity."""
    best = torch.zeros(capacity + 1, dtype=torch.float64)  # no group yet: nothing spent, nothing gained
    taken = []
    reach = torch.arange(capacity + 1)
    for cost, value in zip(units, values):
        top = torch.full_like(best, -math.inf)
        pick = torch.zeros(capacity + 1, dtype=torch.long)
        rows = max(1, CHUNK // (capacity + 1))
        for start in range(0, len(cost), rows):
            left = reach[None, :] - cost[start:start + rows, None]
            score = torch.where(left >= 0, best[left.clamp(min=0)] + value[start:start + rows, None], -math.inf)
            chunk_top, chunk_pick = score.max(0)
            better = chunk_top > top
            top = torch.where(better, chunk_top, top)
            pick = torch.where(better, chunk_pick + start, pick)
        best = top
        taken.append(pick)
    return best, taken


def solve(groups, budget, buckets=4096):
    """The options (index per group) of the most total value with total cost at most `budget`, or None when even
    the cheapest ones cost more. `groups`: (costs, values) float tensors per group."""
    fronts = [frontier(cost, value) for cost, value in groups]
    costs = [cost[f].double() for (cost, _), f in zip(groups, fronts)]
    values = [value[f].double() for (_, value), f in zip(groups, fronts)]
    cheapest = sum(float(c[0]) for c in costs)
    if cheapest > budget:
        return None
    unit = budget / buckets
    up = [dedupe(torch.ceil(c / unit).long(), v) for c, v in zip(costs, values)]
    down = [dedupe(torch.floor(c / unit).long(), v) for c, v in zip(costs, values)]
    bound, _ = programme([u for u, _, _ in down], [v for _, v, _ in down], buckets)
    best, taken = programme([u for u, _, _ in up], [v for _, v, _ in up], buckets)
    if best[-1] == -math.inf:  # rounding up left no room: the cheapest options fit all the same
        index = [0] * len(groups)
    else:
        index, spare = [], buckets
        for (units, _, kept), pick in zip(reversed(up), reversed(taken)):
            option = int(pick[spare])
            index.append(int(kept[option]))
            spare -= int(units[option])
        index.reverse()
    value = sum(float(v[i]) for v, i in zip(values, index))
    cost = sum(float(c[i]) for c, i in zip(costs, index))
    return Picks([int(f[i]) for f, i in zip(fronts, index)], value, cost, max(float(bound[-1]), value))


def dedupe(units, values):
    """(units, values, positions) keeping, of options of equal units, the last (of most value: the frontier
    ascends in value)."""
    last = torch.ones(len(units), dtype=torch.bool)
    last[:-1] = units[1:] != units[:-1]
    positions = torch.nonzero(last).flatten()
    return units[positions], values[positions], positions
