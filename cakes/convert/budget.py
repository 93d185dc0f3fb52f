"""Pruning a network converted by cakes.convert to a FLOPs budget: the generic rule of cakes.ops.search with the
per-channel costs and the pruned network's FLOPs counted on the user's example input. The networks counted
are built from the supernet alone (it keeps its layer list), on the meta device (shapes only, no compute)
unless the network's forward needs values."""
import copy
from collections import Counter

import torch
from torch import nn

from cakes.complexity import count_flops
from cakes.ops.search import channel_costs, prune_to_budget

from .build import pruned_copy


def prune_converted_to_budget(supernet, names, ops, target_flops, example_input, multiple=1):
    """The Budget (config as a list in `names` order, counted FLOPs, lam, reachable range) of the supernet
    whose DropoutSupernetOps `ops` sit at `names`."""
    try:
        costs, flops = counters(meta_copy(supernet), names, ops, example_input.to('meta'))
    except Exception:  # a forward that needs values (`if x.sum() > 0`) cannot run on meta: count for real
        costs, flops = counters(supernet, names, ops, example_input)
    return prune_to_budget(ops, costs, flops, target_flops, multiple=multiple)


def counters(shell, names, ops, x):
    """The per-op channel costs, counted on probe networks, and config -> FLOPs of the pruned network, both
    built from `shell` (the supernet or its meta copy; never changed) on its device."""
    device = next(shell.parameters()).device

    def pruned(config):
        with torch.device(device):
            return pruned_copy(shell, shell.cakes_layers, dict(zip(names, config)), from_supernet=True)

    def flops(config):
        return count_flops(pruned(config), example_input=x)

    costs = [{} for _ in ops]
    for probe in probe_configs(ops):
        net = pruned(probe)
        for cost, counted in zip(costs, channel_costs(net, x, [net.get_submodule(name) for name in names])):
            cost.update(counted)
    return costs, flops


def probe_configs(ops):
    """Configs that between them give every branch of every op at least one channel, to count its cost:
    in round r channel j of an op goes to kind (r * C + j) mod n, so one round when C >= n."""
    rounds = max(-(-len(op.kinds) // op.width) for op in ops)
    return [[probe_widths(op, r) for op in ops] for r in range(rounds)]


def probe_widths(op, r):
    share = Counter(op.kinds[(r * op.width + j) % len(op.kinds)] for j in range(op.width))
    return {kind: share[kind] for kind in op.kinds}


def meta_copy(module):
    """A copy of `module` with every tensor on the meta device, without copying (or keeping) their data."""
    memo = {id(b): torch.empty_like(b, device='meta') for b in module.buffers()}
    memo.update({id(p): nn.Parameter(torch.empty_like(p, device='meta'), p.requires_grad)
                 for p in module.parameters()})
    return copy.deepcopy(module, memo)
