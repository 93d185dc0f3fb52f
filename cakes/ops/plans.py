"""Execution plans of the CAKES ops: other ways of computing the concatenated branch outputs, chosen per op by
timing them once (as cudnn.benchmark does for algorithms), with the same parameters and the same state_dict.

A plan computes exactly what the branch form computes, up to float rounding:
- 'branches': each branch its own convolution, outputs concatenated (the released form);
- 'merge(0+2)', 'merge(0+1+2)', ...: the branches of each '+' group run as one convolution of their enclosing
  kernel, the smaller kernels zero-padded inside it (a 3x1x1 branch of width 1 inside the 3x3x3 one);
  a group without temporal extent runs as a 2D convolution of the frames when the input is channels_last;
- 'stacked': every temporal tap of every branch as one 2D convolution of the frames, then shifted sums
  over time, written straight into the output (no format conversion, no concatenation).
Merged weights are assembled from the branch weights on every forward when gradients are needed, so
gradients reach the branch weights as before; without gradients, in eval, the weights are assembled once
with the BN folded in and cached until a parameter or buffer changes (version counter, storage).

The choice is made at an op's first forward for a key (shape, dtype, device type, memory format, train or
eval, gradients or not) and kept in `op.plans`, a plain dict: not in the state_dict, copied by deepcopy and
shared with nn.DataParallel replicas (shallow copies). CAKES_PLAN=branches turns planning off; CAKES_PLAN=NAME
forces a plan where it applies. Under torch.distributed, rank 0 measures and broadcasts its choice, so every
rank runs the same plan (see `choose`); `plan_table`/`load_plans` carry the choices through checkpoints.
"""
import itertools
import math
import os
import threading
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from cakes.errors import UsageError

ENV = 'CAKES_PLAN'
BRANCHES = 'branches'
STACKED = 'stacked'
_LOCK = threading.RLock()  # one measurement at a time: DataParallel replica threads wait for the first
COST_LIMIT = 1.75  # plans doing more multiply-adds than this times the branches' are not timed
TIMED_ROUNDS = 2  # timed runs of the branches and the finalists, after an untimed one of every plan
FINALIST = 1.3  # plans timed again: within this factor of the fastest first timed run
MARGIN = 0.03  # another plan replaces the branch form when it is faster by at least this fraction
DROPOUT_SPLITS = 2  # sampled channel splits a dropout supernet's rule is measured on


def channels_last(x):
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def plan_key(op, x):
    """The key of a plan: the input's shape but its batch size (plans are timed on one clip, so a smaller last
    batch takes the plan of the others), dtype, device type, memory format, train or eval, gradients or not."""
    fmt = 'cl' if channels_last(x) else 'contiguous' if x.is_contiguous() else 'strided'
    mode = 'train' if op.training else 'eval'
    grad = 'grad' if torch.is_grad_enabled() else 'nograd'
    shape = 'x'.join(['N', *map(str, x.shape[1:])])
    return f"{shape}|{str(x.dtype).replace('torch.', '')}|{x.device.type}|{fmt}|{mode}|{grad}"


# ---------------------------------------------------------------- the plans

def merge_name(groups):
    return 'merge(' + ','.join('+'.join(map(str, g)) for g in groups if len(g) > 1) + ')'


def set_partitions(items):
    """Every partition of `items` into groups (5 for three branches)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first]] + partition
        for i in range(len(partition)):
            yield partition[:i] + [[first] + partition[i]] + partition[i + 1:]


def plan_cost(op, name):
    """Multiply-adds per output position of plan `name` over the branch form's (zero taps count: they run)."""
    sizes = [branch[0].weight.shape[2:] for branch in op.convs]
    widths = [branch[0].weight.shape[0] for branch in op.convs]
    branches = sum(w * math.prod(k) for w, k in zip(widths, sizes))
    if name == STACKED:
        kh, kw = (max(k[a] for k in sizes) for a in (1, 2))
        cost = sum(w * k[0] * kh * kw for w, k in zip(widths, sizes))
    elif name.startswith('merge('):
        cost = sum(sum(widths[i] for i in g) * math.prod(max(sizes[i][a] for i in g) for a in range(3))
                   for g in parse_groups(name, len(sizes)))
    else:
        cost = branches
    return cost / max(branches, 1)


def candidates(op, x=None, limit=None):
    """Plan names that apply to `op` (on input `x`), 'branches' first; with `limit`, only those worth timing:
    at most `limit` times the branch form's multiply-adds, and not a partial merge costing as much as merging
    everything (which runs fewer, larger convolutions)."""
    names = all_plans(op, x)
    if limit is None:
        return names
    everything = merge_name([list(range(len(op.convs)))])
    full = plan_cost(op, everything) if everything in names else float('inf')
    return [n for n in names if plan_cost(op, n) <= limit
            and not (n.startswith('merge(') and n != everything and plan_cost(op, n) >= 0.95 * full)]


def all_plans(op, x=None):
    n = len(op.convs)
    names = [BRANCHES]
    if n > 1:
        partitions = list(set_partitions(list(range(n)))) if n <= 3 else [[list(range(n))]]
        names += sorted({merge_name(p) for p in partitions if any(len(g) > 1 for g in p)}, key=len)
    elif n == 1:
        names.append('merge()')  # one branch: the executor's own layout handling
    if op.convs and op.convs[0][0].stride[0] == 1 and (x is None or x.dim() == 5):
        names.append(STACKED)
    return names


def parse_groups(name, n):
    """'merge(0+2)' -> [[0, 2], [1]] (groups in order of their first branch)."""
    inner = name[len('merge('):-1]
    merged = [sorted(int(i) for i in g.split('+')) for g in inner.split(',') if g]
    covered = {i for g in merged for i in g}
    groups = merged + [[i] for i in range(n) if i not in covered]
    return sorted(groups, key=lambda g: g[0])


def pad_to(weight, size):
    """Zero-pad a (C, Cin, kd, kh, kw) kernel, centred, to `size`."""
    pads = []
    for have, want in zip(reversed(weight.shape[2:]), reversed(size)):
        pads += [(want - have) // 2] * 2
    return F.pad(weight, pads) if any(pads) else weight


def run_conv(x, weight, bias, stride, padding):
    """One Conv3d as cakes.ops.kernels.Conv3d runs it: frames as a 2D batch when channels_last and no time
    extent; the output in the input's memory format."""
    cl = channels_last(x)
    if cl and weight.shape[2] == 1 and stride[0] == 1 and padding[0] == 0:
        b, t = x.shape[0], x.shape[2]
        frames = x.transpose(1, 2).flatten(0, 1)
        y = F.conv2d(frames, weight.squeeze(2), bias, stride[1:], padding[1:])
        return y.unflatten(0, (b, t)).transpose(1, 2)
    y = F.conv3d(x, weight, bias, stride, padding)
    return y.contiguous(memory_format=torch.channels_last_3d) if cl else y


def enclosing(weights):
    return tuple(max(w.shape[2 + a] for w in weights) for a in range(3))


def group_weights(weights, biases, group):
    size = enclosing([weights[i] for i in group])
    weight = torch.cat([pad_to(weights[i], size) for i in group]) if len(group) > 1 else pad_to(weights[group[0]], size)
    bias = None
    if any(biases[i] is not None for i in group):
        bias = torch.cat([biases[i] if biases[i] is not None else weights[i].new_zeros(weights[i].shape[0])
                          for i in group])
    return weight, bias


def build_merge(name, weights, biases):
    groups = parse_groups(name, len(weights))
    return [(group, *group_weights(weights, biases, group)) for group in groups]


def run_merge(x, built, widths, stride):
    outputs = {}
    for group, weight, bias in built:
        y = run_conv(x, weight, bias, stride, tuple(s // 2 for s in weight.shape[2:]))
        start = 0
        for i in group:
            outputs[i] = y if len(group) == 1 else y[:, start:start + widths[i]]
            start += widths[i]
    if len(built) == 1:  # one group holds every branch, in order
        return y
    y = torch.cat([outputs[i] for i in range(len(widths))], dim=1)
    # torch.cat may fall back to the contiguous format when one part has a single channel
    return y.contiguous(memory_format=torch.channels_last_3d) if channels_last(x) else y


def build_stacked(weights, biases):
    """All taps as one 2D kernel of the enclosing spatial size: [branch 0 tap 0, tap 1, ..., branch 1 ...]."""
    kh, kw = enclosing(weights)[1:]
    taps = [pad_to(w, (w.shape[2], kh, kw)).permute(2, 0, 1, 3, 4).flatten(0, 1) for w in weights]
    weight = torch.cat(taps) if len(taps) > 1 else taps[0]
    # only the centre tap carries a branch's bias (it is added once per output)
    bias = None
    if any(b is not None for b in biases):
        parts = []
        for w, b in zip(weights, biases):
            t, c = w.shape[2], w.shape[0]
            zeros = w.new_zeros(t, c)
            if b is not None:
                zeros = torch.cat([zeros[:t // 2], b.unsqueeze(0), zeros[t // 2 + 1:]])
            parts.append(zeros.flatten())
        bias = torch.cat(parts)
    return weight, bias, tuple((w.shape[0], w.shape[2]) for w in weights)


def run_stacked(x, built, stride):
    weight, bias, layout = built
    b, t = x.shape[0], x.shape[2]
    frames = x.transpose(1, 2).flatten(0, 1)
    y = F.conv2d(frames, weight, bias, stride[1:], (weight.shape[2] // 2, weight.shape[3] // 2))
    y = y.unflatten(0, (b, t))  # (B, T, taps, H', W')
    fmt = torch.channels_last_3d if channels_last(x) else torch.contiguous_format
    out = torch.empty(b, sum(c for c, _ in layout), t, *y.shape[3:], dtype=y.dtype, device=y.device,
                      memory_format=fmt).transpose(1, 2)
    start, col = 0, 0
    for c, taps in layout:
        p = taps // 2
        target = out[:, :, col:col + c]
        target.copy_(y[:, :, start + p * c:start + (p + 1) * c])
        for j in range(taps):
            shift = j - p
            if shift == 0 or abs(shift) >= t:
                continue
            tap = y[:, :, start + j * c:start + (j + 1) * c]
            if shift > 0:
                target[:, :t - shift] += tap[:, shift:]
            else:
                target[:, -shift:] += tap[:, :t + shift]
        start, col = start + taps * c, col + c
    return out.transpose(1, 2)


def build(name, weights, biases):
    return build_stacked(weights, biases) if name == STACKED else build_merge(name, weights, biases)


def execute(name, x, built, widths, stride):
    return run_stacked(x, built, stride) if name == STACKED else run_merge(x, built, widths, stride)


# ---------------------------------------------------------------- the ops' side

def branch_weights(op, locals_=None):
    """(weights, biases, widths) of the op's non-empty branches; `locals_` selects each branch's filters."""
    weights, biases = [], []
    for i, branch in enumerate(op.convs):
        conv = branch[0]
        w, b = conv.weight, conv.bias
        if locals_ is not None:
            if not len(locals_[i]):
                continue
            w, b = w[locals_[i]], (b[locals_[i]] if b is not None else None)
        weights.append(w)
        biases.append(b)
    return weights, biases, [w.shape[0] for w in weights]


def foldable_bn(op):
    """The op's BN when it can be folded into the convolutions (eval statistics, no gradients)."""
    bn = op.out[0] if len(op.out) else None
    if (isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and not torch.is_grad_enabled()):
        return bn
    return None


def folded(weights, biases, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    out_w, out_b, start = [], [], 0
    for w, b in zip(weights, biases):
        s = scale[start:start + w.shape[0]]
        out_w.append(w * s.view(-1, 1, 1, 1, 1))
        out_b.append(shift[start:start + w.shape[0]] + (b * s if b is not None else 0))
        start += w.shape[0]
    return out_w, out_b


def stamp(op):
    return tuple((t._version, t.data_ptr()) for t in itertools.chain(op.parameters(), op.buffers()))


def cakes_conv(op, x, name):
    """The CakesOp's concatenated branch outputs by plan `name` (gradients flow to the branch weights)."""
    if name == BRANCHES:
        return torch.cat([branch(x) for branch in op.convs], dim=1)
    weights, biases, widths = branch_weights(op)
    return execute(name, x, build(name, weights, biases), widths, op.convs[0][0].stride)


def cakes_folded_forward(op, x, name, bn):
    """Eval without gradients: the plan's weights with the BN folded in, cached; then what follows the BN."""
    cache = op.__dict__.setdefault('_plan_weights', {})
    key, now = (name, str(x.device), x.dtype), stamp(op)
    entry = cache.get(key)
    if entry is None or entry[0] != now:
        weights, biases, widths = branch_weights(op)
        weights, biases = folded(weights, biases, bn)
        entry = cache[key] = (now, build(name, weights, biases), widths)
    y = execute(name, x, entry[1], entry[2], op.convs[0][0].stride)
    return op.out[1:](y)


def cakes_forward(op, x, name):
    if name == BRANCHES:
        return op.out(cakes_conv(op, x, name))
    bn = foldable_bn(op)
    if bn is not None:
        return cakes_folded_forward(op, x, name, bn)
    return op.out(cakes_conv(op, x, name))


def dropout_conv(op, x, locals_, name):
    """A dropout supernet's convolutions of the kept filters `locals_` (per branch), concatenated."""
    if name == BRANCHES:
        outputs = []
        for i, branch in enumerate(op.convs):
            if len(locals_[i]):
                conv = branch[0]
                outputs.append(F.conv3d(x, conv.weight[locals_[i]], None, conv.stride, conv.padding))
        return torch.cat(outputs, dim=1)
    weights, biases, widths = branch_weights(op, locals_)
    stride = op.convs[0][0].stride
    if name != STACKED:  # the groups refer to the supernet's branches; keep only the non-empty ones
        kept = [i for i in range(len(op.convs)) if len(locals_[i])]
        groups = [[kept.index(i) for i in g if i in kept] for g in parse_groups(name, len(op.convs))]
        name = merge_name([g for g in groups if g])
    return execute(name, x, build(name, weights, biases), widths, stride)


# ---------------------------------------------------------------- choosing

def forced_plan(op, x):
    forced = os.environ.get(ENV, '')
    if not forced:
        return None
    names = candidates(op, x)
    if forced == BRANCHES or forced in names:
        return forced
    if forced.startswith('merge(') or forced == STACKED:
        return BRANCHES  # where the forced plan does not apply
    raise UsageError(f"unknown {ENV}='{forced}': give 'branches', 'stacked' or a merge plan such as 'merge(0+1+2)'")


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def stateless(op):
    """No BN of the op moves its statistics in a forward: the whole op may be timed."""
    return not any(m.training for m in op.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def step_fn(op, x, name, conv, grad):
    """What is timed: the conv part, forward and backward when gradients are on (torch.autograd.grad: no
    .grad is touched). An op whose BN is in eval mode is timed whole (its BN folded or not)."""
    if conv is None:
        if not grad and stateless(op):
            return lambda: cakes_forward(op, x, name)
        conv = lambda x, n: cakes_conv(op, x, n)  # noqa: E731
    inputs = ([x] if x.requires_grad else []) + [p for p in op.parameters() if p.requires_grad]
    if not grad or not inputs:
        return lambda: conv(x, name)

    def step():
        y = conv(x, name)
        torch.autograd.grad(y, inputs, torch.ones_like(y), allow_unused=True)
    return step


def measure(op, x, names, convs):
    """{plan: [seconds of each of `convs`]} (functions of (input, plan name); None: the CakesOp itself).

    On the first clip of the batch only (time per clip hardly depends on the batch, so choosing costs the same
    at any batch): one untimed run of every plan (the library sets up its shapes then, so a first run says
    little), one timed run of each, then TIMED_ROUNDS - 1 more, in alternating order so that no plan always
    runs after the same one, of the branch form and the plans within FINALIST of the fastest; each keeps its
    fastest run per function.
    """
    grad = torch.is_grad_enabled()
    x = x[:1]
    x = x.detach().requires_grad_(x.requires_grad) if grad else x
    steps = {name: [step_fn(op, x, name, conv, grad) for conv in convs] for name in names}

    def run(name):
        return [timed(step, x.device) for step in steps[name]]
    for name in names:
        run(name)
    times = {name: run(name) for name in names}
    for r in range(1, TIMED_ROUNDS):
        best = min(map(sum, times.values()))
        finalists = [n for n in names if n == BRANCHES or sum(times[n]) <= FINALIST * best]
        for name in (finalists[::-1] if r % 2 else finalists):
            times[name] = [min(a, b) for a, b in zip(times[name], run(name))]
    return times


def fastest(times):
    """The plan of least total time in `times` (from measure), but the branch form unless that plan beats it by
    MARGIN on every function timed (each channel draw of a dropout supernet): within timing noise, or faster
    for one draw and not another, a plan is not worth the risk of being slower."""
    name = min(times, key=lambda n: sum(times[n]))
    if BRANCHES in times and any(t > (1 - MARGIN) * b for t, b in zip(times[name], times[BRANCHES])):
        return BRANCHES
    return name


def distributed():
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def choose(op, x, key, convs):
    """The plan for `key`: forced; or measured, under torch.distributed by rank 0 only and broadcast.

    Under torch.distributed only an op's first training key is measured and agreed on: every rank reaches it
    at the same step (DDP steps in lock-step). A later new training key takes that plan, and so does
    evaluation (each rank evaluates its own shard, possibly none, so no collective may wait there), or the
    branch form before any training step: no rank waits for another, and all ranks run the same plans.
    Plans loaded from a checkpoint (load_plans) are the same everywhere.
    """
    with _LOCK:
        name = op.plans.get(key) or forced_plan(op, x)
        if name is None and distributed():
            mode = key.rsplit('|', 2)[1:]
            name = next((v for k, v in op.plans.items() if k.rsplit('|', 2)[1:] == mode), None)
            if name is None and mode != ['train', 'grad']:
                name = next((v for k, v in op.plans.items() if k.endswith('|train|grad')), BRANCHES)
        if name is None:
            if not distributed() or torch.distributed.get_rank() == 0:
                times = measure(op, x, candidates(op, x, COST_LIMIT), convs)
                name = fastest(times)
                op.__dict__.setdefault('plan_times', {})[key] = times
            if distributed():
                box = [name]
                torch.distributed.broadcast_object_list(box, src=0)
                name = box[0]
        op.plans[key] = name
        return name


def planning_off(x):
    """The branch form, nothing timed: CAKES_PLAN=branches; a graph being traced or exported (ONNX); a
    dispatch mode active (FlopCounterMode counts FLOPs per branch module); shapes only (meta tensors)."""
    return (os.environ.get(ENV) == BRANCHES or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or x.device.type == 'meta' or _get_current_dispatch_mode() is not None)


def forward_cakes(op, x):
    """CakesOp.forward: the plan of this key, chosen at its first forward."""
    if planning_off(x):
        return cakes_forward(op, x, BRANCHES)
    key = plan_key(op, x)
    name = op.plans.get(key) or choose(op, x, key, [None])
    return cakes_forward(op, x, name)


def forward_dropout_conv(op, x, locals_):
    """A dropout supernet's convolutions: one plan per key (widths change every step, so the plan is the
    one fastest over DROPOUT_SPLITS splits sampled at the first forward, from a generator of its own)."""
    if planning_off(x):
        return dropout_conv(op, x, locals_, BRANCHES)
    key = plan_key(op, x)
    name = op.plans.get(key)
    if name is None:
        if op.training:
            generator = torch.Generator().manual_seed(0)
            draw = type(op).sample_channels  # the class's own: not an instance's wrapper of the step's draw
            splits = [op.branch_channels(draw(op, generator)) for _ in range(DROPOUT_SPLITS)]
        else:
            splits = [locals_]
        splits = [[i.to(x.device) for i in s] for s in splits]
        name = choose(op, x, key, [lambda x, n, s=s: dropout_conv(op, x, s, n) for s in splits])
    return dropout_conv(op, x, locals_, name)


# ---------------------------------------------------------------- export, load, broadcast, report

def planned_ops(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(getattr(m, 'plans', None), dict)]


def plan_table(model):
    """{module name: {key: plan name}}: plain data, for checkpoints (torch.load weights_only=True)."""
    model = getattr(model, 'module', model)
    return {name: dict(m.plans) for name, m in planned_ops(model) if m.plans}


def load_plans(model, table):
    """Give the ops of `model` the plans of `table` (from plan_table); unknown names are ignored."""
    model = getattr(model, 'module', model)
    for name, m in planned_ops(model):
        m.plans.clear()
        m.plans.update({str(k): str(v) for k, v in (table or {}).get(name, {}).items()})
    return model


def broadcast_plans(model):
    """Every rank takes rank 0's plans (a no-op outside torch.distributed)."""
    if distributed():
        box = [plan_table(model)]
        torch.distributed.broadcast_object_list(box, src=0)
        load_plans(model, box[0])
    return model
