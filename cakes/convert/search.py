"""Search a converted network in your own loop, and what it yields: {layer name: {kind: width}}."""
import json
import os

from cakes.files import write_text_atomic
from cakes.errors import UsageError
from cakes.ops import DropoutSupernetOp
from cakes.ops import latency, search

from .budget import converted_table, prune_converted_to_budget, prune_converted_to_time
from .build import check_format


def supernet_ops(supernet):
    """[(layer name, op)] of a network from to_supernet, in network order."""
    ops = [(name, m) for name, m in supernet.named_modules() if isinstance(m, DropoutSupernetOp)]
    if not ops:
        raise UsageError(f'{type(supernet).__name__} has no supernet op: give the network that '
                         'cakes.convert.to_supernet returned')
    return ops


def add_sparsity_grad(supernet, strength, reweight=True, table=None):
    """Call after loss.backward(): add strength * sign(scale) (times the branch's share of the kernel cost
    with `reweight`, or with a latency `table` its share of the measured time: see `latency_table`) to the
    gradient of every supernet BN scale."""
    names, ops = zip(*supernet_ops(supernet))
    if any(op.bn.weight.grad is None for op in ops):
        raise UsageError('supernet BN scales have no gradient: call add_sparsity_grad after loss.backward()')
    costs = None
    if table is not None:
        table = latency.load_table(table) if isinstance(table, (str, os.PathLike)) else table
        search.check_table_ops(ops, table.shapes)
        costs = latency.branch_costs(table)
    search.add_sparsity_grad(ops, strength, reweight, costs)


def latency_table(supernet, example_input, mode='eval', amp=None, channels_last=False, path=None):
    """The latency table of the supernet's pruned networks on `example_input` (its device and batch): per
    converted layer's shape, each kind's time against its width, and the rest of the network
    (cakes.ops.latency), for `mode` 'eval' or 'train' (a step with input and weight gradients), autocast in
    `amp` (a dtype, or None), channels_last_3d or not. Read from `path` when that exists (it must have been
    measured so), from the cache ($CAKES_LATENCY_CACHE, default ~/.cache/cakes/latency) when measured before;
    else measured and written there."""
    names, ops = zip(*supernet_ops(supernet))
    return converted_table(supernet, names, ops, example_input, mode, amp, channels_last, path)


def prune_config(supernet, target_flops=None, example_input=None, width_multiple=1, target_ms=None, table=None):
    """The widths pruning keeps in every layer: the project's rule (the C largest |BN scale| of n*C), or with
    `target_flops` the budget rule, choosing them so that the pruned network (to_pruned) has at most that
    many FLOPs on `example_input` (cakes.complexity.count_flops) and as close to it as channels allow.
    With `target_ms` the time budget: the most |BN scale| kept with the pruned network's predicted time at
    most that many ms on a latency `table` (`latency_table`, or its file), or on one measured on
    `example_input` (eval) when no table is given (cakes.ops.search.prune_to_time).
    `width_multiple` M: as many channels per layer, every branch width a multiple of M (8 for tensor cores,
    16 for AVX-512; a layer whose width M does not divide gives the rest to one branch), the channels of
    largest |BN scale| within each branch (cakes.ops.search.grouped_indices)."""
    names, ops = zip(*supernet_ops(supernet))
    if target_ms is not None:
        if target_flops is not None:
            raise UsageError('give prune_config target_flops or target_ms, not both')
        budget = prune_converted_to_time(supernet, names, ops, target_ms, table, example_input, width_multiple)
        return dict(zip(names, budget.config))
    if target_flops is None:
        return dict(zip(names, search.prune_config(ops, multiple=width_multiple)))
    if example_input is None:
        raise UsageError('prune_config(supernet, target_flops=...) counts FLOPs on an input: give example_input, '
                         'e.g. a batch of one of your inputs')
    budget = prune_converted_to_budget(supernet, names, ops, target_flops, example_input, width_multiple)
    return dict(zip(names, budget.config))


def save_config(config, path):
    """Write the config as JSON, atomically."""
    check_format(config)
    write_text_atomic(path, json.dumps(config, indent=1))


def load_config(path):
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file '{path}' not found: write it with cakes.convert.save_config") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file '{path}' is not JSON ({e}): write it with cakes.convert.save_config") from None
    return check_format(config, f"config file '{path}'")
