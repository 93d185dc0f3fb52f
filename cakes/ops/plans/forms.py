"""The plan forms: other ways of computing a CAKES op's concatenated branch outputs, with the same parameters and
the same state_dict. Each computes what the branch form computes, up to float rounding:

- `Branches`: each branch its own convolution, outputs concatenated (the released form);
- `Merge(groups)`: the branches of each group run as one convolution of their enclosing kernel, the smaller
  kernels zero-padded inside it (a 3x1x1 branch of width 1 inside the 3x3x3 one); a group without temporal
  extent runs as a 2D convolution of the frames when the input is channels_last;
- `Stacked`: every temporal tap of every branch as one 2D convolution of the frames, then shifted sums over
  time, written straight into the output (no format conversion, no concatenation).

A plan's weights are assembled from the branch weights at every forward that needs gradients, so gradients
reach the branch weights as before. In eval without gradients they are assembled once with the BN folded in
(torch.nn.utils.fuse_conv_bn_weights) and kept in `op.folded_weights` until a weight or BN tensor changes.

`str(plan)` is the name checkpoints hold ('branches', 'stacked', 'merge(0+2)', 'merge(0+1+2)'; 'merge()' runs a
one-branch op through the merge executor); `parse` reads it back. `Key` says what a plan was chosen for.
"""
import dataclasses
import math
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import fuse_conv_bn_weights

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def channels_last(x):
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def compute_dtype(x):
    """The dtype the op's convolutions run in: autocast's for a float32 input where autocast is on."""
    kind = x.device.type
    if x.dtype == torch.float32 and kind in ('cpu', 'cuda') and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


@dataclasses.dataclass(frozen=True)
class Key:
    """What a plan is chosen for: the input's shape but its batch size (a smaller last batch takes the plan of
    the others), the dtype the convolutions run in, the device type, the memory format, the op's BN mode (train
    or eval) and whether gradients are on. `str(key)` is its form in checkpoints, e.g.
    'Nx64x8x56x56|float32|cpu|cl|train|grad'."""
    shape: tuple
    dtype: str
    device: str
    layout: str
    training: bool
    grad: bool

    @classmethod
    def of(cls, op, x):
        layout = 'cl' if channels_last(x) else 'contiguous' if x.is_contiguous() else 'strided'
        return cls(tuple(x.shape[1:]), str(compute_dtype(x)).replace('torch.', ''), x.device.type, layout,
                   op.training, torch.is_grad_enabled())

    @property
    def trains(self):
        """A training step's key: every process of a run reaches it at the same step."""
        return self.training and self.grad

    def in_training(self):
        """The training step's key of the same input."""
        return dataclasses.replace(self, training=True, grad=True)

    def __str__(self):
        return '|'.join(['x'.join(['N', *map(str, self.shape)]), self.dtype, self.device, self.layout,
                         'train' if self.training else 'eval', 'grad' if self.grad else 'nograd'])

    @classmethod
    def parse(cls, text):
        parts = text.split('|')
        if len(parts) != 6 or not parts[0].startswith('N') or parts[3] not in ('cl', 'contiguous', 'strided') \
                or parts[4] not in ('train', 'eval') or parts[5] not in ('grad', 'nograd'):
            raise ValueError(f'not a plan key: {text!r}')
        shape = tuple(int(size) for size in parts[0].split('x')[1:])
        return cls(shape, parts[1], parts[2], parts[3], parts[4] == 'train', parts[5] == 'grad')


# ---------------------------------------------------------------- the op's tensors

def branch_weights(op, channels=None):
    """(weights, biases) of the op's branches, read from the modules' attributes (a DataParallel replica's are
    plain tensors, not parameters); `channels`: the filters of each branch to take (a dropout supernet's draw),
    branches left without any dropped."""
    weights, biases = [], []
    for i, branch in enumerate(op.convs):
        w, b = branch[0].weight, branch[0].bias
        if channels is not None:
            if not len(channels[i]):
                continue
            w, b = w[channels[i]], (b[channels[i]] if b is not None else None)
        weights.append(w)
        biases.append(b)
    return weights, biases


def foldable_bn(op):
    """The op's BN when it can be folded into the convolutions (eval statistics, no gradients), else None."""
    bn = op.out[0] if len(op.out) else None
    if (isinstance(bn, BATCH_NORMS) and not bn.training and bn.running_mean is not None
            and not torch.is_grad_enabled()):
        return bn
    return None


def fold(weights, biases, bn):
    """The branch weights and biases with `bn` folded in, each branch taking its slice of the BN's channels."""
    out_w, out_b, start = [], [], 0
    for w, b in zip(weights, biases):
        part = slice(start, start + w.shape[0])
        fw, fb = fuse_conv_bn_weights(w, b, bn.running_mean[part], bn.running_var[part], bn.eps,
                                      bn.weight[part] if bn.affine else None, bn.bias[part] if bn.affine else None)
        out_w.append(fw.detach())
        out_b.append(fb.detach())
        start += w.shape[0]
    return out_w, out_b


def folded_weights(op, plan, bn, x):
    """`plan`'s weights with `bn` folded in, for `x`'s device and dtype: assembled once, again after any of the
    tensors they come from changed (an optimizer step, a loaded state_dict: version counter and storage).
    A nn.DataParallel replica (its weights are not Parameters) assembles them at every forward: its weights are
    fresh copies each time, which CUDA's caching allocator may place where the last ones were (same address,
    version 0) after the originals changed, so no stamp of theirs can tell new weights from old."""
    if not isinstance(op.convs[0][0].weight, nn.Parameter):
        return plan.assemble(*fold(*branch_weights(op), bn))
    sources = [t for branch in op.convs for t in (branch[0].weight, branch[0].bias)] + \
        [bn.running_mean, bn.running_var, bn.weight, bn.bias]
    stamp = tuple((t._version, t.data_ptr()) for t in sources if t is not None)
    key = (str(plan), x.device, x.dtype)
    entry = op.folded_weights.get(key)
    if entry is None or entry[0] != stamp:
        entry = op.folded_weights[key] = (stamp, plan.assemble(*fold(*branch_weights(op), bn)))
    return entry[1]


# ---------------------------------------------------------------- convolutions

def pad_to(weight, size):
    """Zero-pad a (C, Cin, kd, kh, kw) kernel, centred, to `size`."""
    pads = []
    for have, want in zip(reversed(weight.shape[2:]), reversed(size)):
        pads += [(want - have) // 2] * 2
    return F.pad(weight, pads) if any(pads) else weight


def enclosing(weights):
    return tuple(max(w.shape[2 + a] for w in weights) for a in range(3))


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


# ---------------------------------------------------------------- the plans

class Plan:
    """A way of computing a CAKES op's concatenated branch outputs. Subclasses say how the weights are
    assembled (`assemble`) and run (`run`), and what they cost (`cost`)."""

    def applies(self, op):
        return True

    def within(self, kept):
        """This plan for the branches `kept` only (a dropout supernet's draw may leave branches empty)."""
        return self

    def outputs(self, op, x, channels=None):
        """The op's concatenated branch outputs; `channels`: a dropout supernet's filters per branch. Gradients
        reach the branch weights."""
        weights, biases = branch_weights(op, channels)
        plan = self
        if channels is not None:
            plan = self.within([i for i, c in enumerate(channels) if len(c)])
        return plan.run(x, plan.assemble(weights, biases), op.convs[0][0].stride)

    def forward(self, op, x):
        """A CakesOp's forward: the branch outputs, then `op.out`; in eval without gradients the BN folded into
        the plan's cached weights, then what follows the BN."""
        bn = foldable_bn(op)
        if bn is None:
            return op.out(self.outputs(op, x))
        return op.out[1:](self.run(x, folded_weights(op, self, bn, x), op.convs[0][0].stride))


@dataclasses.dataclass(frozen=True)
class Branches(Plan):
    """Each branch its own convolution, by the op's own modules, outputs concatenated: the released form."""

    def __str__(self):
        return 'branches'

    def cost(self, sizes, widths):
        return 1.0

    def outputs(self, op, x, channels=None):
        if channels is None:
            return torch.cat([branch(x) for branch in op.convs], dim=1)
        # a dropout supernet's kept filters, by F.conv3d as the released code runs them
        return torch.cat([F.conv3d(x, branch[0].weight[c], None, branch[0].stride, branch[0].padding)
                          for branch, c in zip(op.convs, channels) if len(c)], dim=1)

    def forward(self, op, x):
        return op.out(self.outputs(op, x))


@dataclasses.dataclass(frozen=True)
class Merge(Plan):
    """`groups`: tuples of two or more branch indices, each run as one convolution; a branch in no group runs
    alone (`Merge(())` runs each branch alone, through the executor's own memory-format handling)."""
    groups: tuple = ()

    def __str__(self):
        return 'merge(' + ','.join('+'.join(map(str, g)) for g in self.groups) + ')'

    def partition(self, n):
        """Every branch of n in a group, groups in order of their first branch: ((0, 2), (1,)) for merge(0+2)."""
        covered = {i for g in self.groups for i in g}
        return sorted(list(self.groups) + [(i,) for i in range(n) if i not in covered], key=lambda g: g[0])

    def applies(self, op):
        return all(i < len(op.convs) for g in self.groups for i in g)

    def within(self, kept):
        groups = (tuple(kept.index(i) for i in g if i in kept) for g in self.groups)
        return Merge(tuple(g for g in groups if len(g) > 1))

    def cost(self, sizes, widths):
        merged = sum(sum(widths[i] for i in g) * math.prod(max(sizes[i][a] for i in g) for a in range(3))
                     for g in self.partition(len(sizes)))
        return merged / max(sum(w * math.prod(k) for w, k in zip(widths, sizes)), 1)

    def assemble(self, weights, biases):
        """[(group, weight, bias, widths)] per group: the group's kernels padded to their enclosing size and
        concatenated."""
        built = []
        for group in self.partition(len(weights)):
            size = enclosing([weights[i] for i in group])
            weight = torch.cat([pad_to(weights[i], size) for i in group]) if len(group) > 1 else \
                pad_to(weights[group[0]], size)
            bias = None
            if any(biases[i] is not None for i in group):
                bias = torch.cat([biases[i] if biases[i] is not None else weights[i].new_zeros(weights[i].shape[0])
                                  for i in group])
            built.append((group, weight, bias, [weights[i].shape[0] for i in group]))
        return built

    def run(self, x, built, stride):
        outputs = {}
        for group, weight, bias, widths in built:
            y = run_conv(x, weight, bias, stride, tuple(s // 2 for s in weight.shape[2:]))
            start = 0
            for i, width in zip(group, widths):
                outputs[i] = y if len(group) == 1 else y[:, start:start + width]
                start += width
        if len(built) == 1:  # one group holds every branch, in order
            return y
        y = torch.cat([outputs[i] for i in range(len(outputs))], dim=1)
        # torch.cat may fall back to the contiguous format when one part has a single channel
        return y.contiguous(memory_format=torch.channels_last_3d) if channels_last(x) else y


@dataclasses.dataclass(frozen=True)
class Stacked(Plan):
    """Every temporal tap of every branch as one 2D convolution of the frames, then shifted sums over time."""

    def __str__(self):
        return 'stacked'

    def applies(self, op):
        return op.convs[0][0].stride[0] == 1

    def cost(self, sizes, widths):
        kh, kw = (max(k[a] for k in sizes) for a in (1, 2))
        return sum(w * k[0] * kh * kw for w, k in zip(widths, sizes)) / \
            max(sum(w * math.prod(k) for w, k in zip(widths, sizes)), 1)

    def assemble(self, weights, biases):
        """All taps as one 2D kernel of the enclosing spatial size: [branch 0 tap 0, tap 1, ..., branch 1 ...];
        only the centre tap carries a branch's bias (it is added once per output)."""
        kh, kw = enclosing(weights)[1:]
        taps = [pad_to(w, (w.shape[2], kh, kw)).permute(2, 0, 1, 3, 4).flatten(0, 1) for w in weights]
        weight = torch.cat(taps) if len(taps) > 1 else taps[0]
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

    def run(self, x, built, stride):
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


BRANCHES = Branches()
STACKED = Stacked()
MERGE_NAME = re.compile(r'merge\((\d+(\+\d+)+(,\d+(\+\d+)+)*)?\)')


def parse(name):
    """The plan named `name` (`str(plan)`); ValueError for any other text."""
    if name == str(BRANCHES):
        return BRANCHES
    if name == str(STACKED):
        return STACKED
    if MERGE_NAME.fullmatch(name):
        inner = name[len('merge('):-1]
        return Merge(tuple(tuple(sorted(int(i) for i in g.split('+'))) for g in inner.split(',') if g))
    raise ValueError(f'not a plan: {name!r}')
