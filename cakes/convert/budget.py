"""Pruning a network converted by cakes.convert to a FLOPs budget: the generic rule of cakes.ops.search with the
per-channel costs and the pruned network's FLOPs counted on the user's example input; or to a time budget on a
latency table of the network measured on that input. The networks counted
are built from the supernet alone (it keeps its layer list), on the meta device (shapes only, no compute)
unless the network's forward needs values."""
import copy
import dataclasses
import os
from collections import Counter

import torch
from torch import nn

from cakes.complexity import count_flops
from cakes.errors import UsageError
from cakes.ops import latency
from cakes.ops.search import channel_costs, prune_to_budget, prune_to_time

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


def converted_shapes(supernet, names, ops, example_input):
    """The op shape of each converted layer (cakes.ops.latency.OpShape, the supernet's kinds), from a pruned copy
    run on the meta device (or for real when its forward needs values)."""
    probe = dict(zip(names, probe_configs(ops)[0]))
    try:
        net = pruned_copy(meta_copy(supernet), supernet.cakes_layers, probe, from_supernet=True)
        shapes = latency.op_shapes(net, example_input.to('meta'))
    except Exception:  # a forward that needs values (`if x.sum() > 0`) cannot run on meta
        net = pruned_copy(supernet, supernet.cakes_layers, probe, from_supernet=True)
        shapes = latency.op_shapes(net, example_input)
    return [dataclasses.replace(shape, kinds=tuple(op.kinds)) for shape, op in zip(shapes, ops)]


def converted_table(supernet, names, ops, example_input, mode='eval', amp=None, channels_last=False, path=None,
                    repeats=3, log=print):
    """The latency table of the converted network on `example_input`'s device and batch (cakes.ops.latency):
    read from `path` when it exists, from the cache when measured before, else measured."""
    if mode not in ('eval', 'train'):
        raise UsageError(f"mode '{mode}' must be 'eval' (a forward without gradients) or 'train' (a train step)")
    setting = latency.Setting(example_input.device, example_input.shape[0], amp, channels_last, mode == 'train')

    def build(config):
        net = pruned_copy(supernet, supernet.cakes_layers, dict(zip(names, config)), from_supernet=True)
        return net.to(memory_format=torch.channels_last_3d) if channels_last else net
    network = (f'{type(supernet).__name__} with {len(names)} converted layers, input '
               f"{'x'.join(map(str, example_input.shape[1:]))}")
    shapes = converted_shapes(supernet, names, ops, example_input)
    return latency.latency_table(shapes, setting, network, build, example_input, path, repeats, log)


def prune_converted_to_time(supernet, names, ops, target_ms, table, example_input=None, multiple=1):
    """The TimeBudget (cakes.ops.search.prune_to_time) of the supernet on `table` (a LatencyTable or the path of
    one), or on a table measured on `example_input` (eval, float32, as it comes) when there is none."""
    if table is None:
        if example_input is None:
            raise UsageError('prune_config(supernet, target_ms=...) predicts time on a latency table: give table= '
                             '(cakes.convert.latency_table) or example_input= to measure one')
        table = converted_table(supernet, names, ops, example_input)
    elif isinstance(table, (str, os.PathLike)):
        table = latency.load_table(table)
    return prune_to_time(ops, table, target_ms, multiple=multiple)
