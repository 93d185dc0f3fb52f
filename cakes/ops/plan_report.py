"""Where a network's CAKES ops spend their time: per op, each branch's width, FLOPs, time and GFLOP/s, and the
plan the op chose (cakes.ops.plans) with its time against the branch form's and against one 3x3x3 convolution of
all its filters (what the conv3d network runs there). For scripts/benchmark_model.py
--per_layer."""
import math

import torch

from . import plans, timing
from .search import kept_channels


def planned_inputs(model, clip):
    """{op: its input} from one forward of `model` on `clip` (plans chosen as the forward goes)."""
    inputs, handles = {}, []
    for _, op in plans.planned_ops(model):
        handles.append(op.register_forward_pre_hook(lambda m, args: inputs.setdefault(m, args[0].detach())))
    try:
        model(clip)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def conv_flops(conv, x, width):
    """FLOPs (2 per multiply-add) of `width` filters of `conv` on `x`."""
    out = [math.floor((size + 2 * p - k) / s) + 1
           for size, k, s, p in zip(x.shape[2:], conv.kernel_size, conv.stride, conv.padding)]
    return 2 * x.shape[0] * width * math.prod(out) * conv.in_channels * math.prod(conv.kernel_size)


def op_locals(op, x):
    """A dropout supernet's filters per branch as a step would use them (a seeded draw in training, the kept
    channels in eval); None for a CAKES op (all of them)."""
    if not hasattr(op, 'branch_channels'):
        return None
    index = type(op).sample_channels(op, torch.Generator().manual_seed(0)) if op.training else kept_channels(op)
    return [i.to(x.device) for i in op.branch_channels(index)]


def op_rows(name, op, x, train):
    """One row per op: branches (kind, width, GFLOPs, ms, GFLOP/s), plan chosen, plan ms, branches ms: each the
    convolutions alone (timing.op_step, forward and both gradients when `train`), best of 3 after a warm-up."""
    with torch.set_grad_enabled(train):
        plan = op.plans.get(plans.Key.of(op, x), plans.BRANCHES)
    x = x.detach().requires_grad_(train)
    locals_ = op_locals(op, x)

    def ms(fn, inputs):
        return timing.best_seconds(timing.train_step(fn, inputs) if train else fn, x.device) * 1e3
    branches = []
    with torch.set_grad_enabled(train):
        for i, (kind, branch) in enumerate(zip(op.kinds, op.convs)):
            conv = branch[0]
            width = conv.out_channels if locals_ is None else len(locals_[i])
            if not width:
                continue
            weight = conv.weight if locals_ is None else conv.weight[locals_[i]]
            branch_ms = ms(lambda c=conv, w=weight: plans.run_conv(x, w, c.bias, c.stride, c.padding),
                           [x, conv.weight])
            flops = conv_flops(conv, x, width) * (3 if train else 1)
            branches.append({'kind': kind, 'width': width, 'gflops': flops / 1e9, 'ms': branch_ms,
                             'gflops_per_s': flops / branch_ms / 1e6})
        # the conv3d network's op at this place: one 3x3x3 convolution of all the op's filters
        conv = op.convs[0][0]
        full = torch.randn(sum(b['width'] for b in branches), conv.in_channels, 3, 3, 3, device=x.device,
                           dtype=x.dtype, requires_grad=train)
        full_ms = ms(lambda: plans.run_conv(x, full, None, conv.stride, (1, 1, 1)), [x, full])
    whole = {form: timing.best_seconds(timing.op_step(op, x, form, train, locals_, convs_only=True), x.device) * 1e3
             for form in dict.fromkeys([plan, plans.BRANCHES])}
    return {'op': name, 'branches': branches, 'plan': str(plan), 'plan_ms': whole[plan],
            'branches_ms': whole[plans.BRANCHES], 'full_ms': full_ms, 'gflops': sum(b['gflops'] for b in branches)}


def layer_table(model, clip, train):
    """Per CAKES op of `model` (in the mode `train`), the figures of `op_rows`, the op's actual input shape."""
    model.train(train)
    with torch.set_grad_enabled(train):
        inputs = planned_inputs(model, clip)
    names = {op: name for name, op in plans.planned_ops(model)}
    return [op_rows(names[op], op, x, train) for op, x in inputs.items()]


def format_table(rows):
    """Text lines of `layer_table` rows; `3x3x3 ms` is the time of the conv3d network's op at the same place."""
    lines = [f"{'op':<28} {'branch':<7} {'width':>5} {'GFLOPs':>7} {'ms':>7} {'GFLOP/s':>8}  "
             "plan (ms, branches ms, 3x3x3 ms)"]
    for row in rows:
        for i, b in enumerate(row['branches']):
            tail = (f"  {row['plan']} ({row['plan_ms']:.1f}, {row['branches_ms']:.1f}, {row['full_ms']:.1f})"
                    if i == 0 else '')
            lines.append(f"{row['op'] if i == 0 else '':<28} {b['kind']:<7} {b['width']:>5} {b['gflops']:>7.3f} "
                         f"{b['ms']:>7.2f} {b['gflops_per_s']:>8.1f}{tail}")
    return lines
