"""The sub-kernel kinds that CAKES mixes, and how each is built, inflated from a 2D 3x3 or shrunk from a 3D kernel.

A kind names its kernel along the axes (D, H, W) of a Conv3d (T, H, W in video): `k` keeps the original
kernel size k with padding k // 2, `1` is size 1 without padding. The video network uses the first three
(k = 3); volumetric networks may use all seven.
"""
import torch
import torch.nn.functional as F
from torch import nn

from cakes.errors import UsageError

K = 3
# Video kinds first, in the order of the released op codes; then the other 2D planes and 1D axes.
KINDS = ('kxkxk', '1xkxk', 'kx1x1', 'kx1xk', 'kxkx1', '1xkx1', '1x1xk')


def kernel_shape(kind, k=K):
    """(kernel size, padding) of `kind` for an original kernel of size k (odd)."""
    if kind not in KINDS:
        raise UsageError(f"unknown kernel kind '{kind}': choose among {', '.join(KINDS)}")
    axes = [a == 'k' for a in kind.split('x')]
    return tuple(k if a else 1 for a in axes), tuple(k // 2 if a else 0 for a in axes)


def kernel_cost(kind, k=K):
    """Multiply-adds per output value and input channel: the kernel volume (27 : 9 : 3 for k = 3)."""
    size, _ = kernel_shape(kind, k)
    return size[0] * size[1] * size[2]


# What the video network's kinds are called in messages (other kinds go by their own name).
VIDEO_KIND_NAMES = {'kxkxk': '3D', '1xkxk': '2D', 'kx1x1': '1D'}
# kind -> (kernel size, padding) at k = 3; the names are the keys of a conv_config dict.
KERNELS = {kind: kernel_shape(kind) for kind in KINDS}
# The weights of the cost-aware sparsity term at k = 3.
KERNEL_COST = {kind: kernel_cost(kind) for kind in KINDS}


class Conv3d(nn.Conv3d):
    """nn.Conv3d (same parameters, same state_dict) with a faster path for channels_last_3d input.

    On the CPU, 3D convolutions return NCDHW whatever their input, so every layer after them would
    pay for format conversions. A kernel with no temporal extent is a 2D convolution of each of the
    B*T frames, and a channels_last_3d tensor already is a channels_last batch of frames: run it as
    one, without a copy, and the output stays channels_last. True 3D kernels convert their output back.
    """

    def forward(self, x):
        if not x.is_contiguous(memory_format=torch.channels_last_3d) or x.is_contiguous():
            return super().forward(x)
        if self.kernel_size[0] == 1 and self.padding[0] == 0 and self.stride[0] == 1:
            b, _, t = x.shape[:3]
            frames = x.transpose(1, 2).flatten(0, 1)
            y = F.conv2d(frames, self.weight.squeeze(2), self.bias, self.stride[1:], self.padding[1:],
                         self.dilation[1:], self.groups)
            return y.unflatten(0, (b, t)).transpose(1, 2)
        return super().forward(x).contiguous(memory_format=torch.channels_last_3d)


def make_conv(kind, in_channels, out_channels, stride, k=K):
    """A bias-free Conv3d of the given kind. An int `stride` is the video network's spatial stride
    (1, s, s); a converted network passes its convolution's 3D stride as a tuple."""
    size, padding = kernel_shape(kind, k)
    stride = (1, stride, stride) if isinstance(stride, int) else tuple(stride)
    return Conv3d(in_channels, out_channels, size, stride=stride, padding=padding, bias=False)


def inflate(kind, weight2d):
    """Turn a 2D 3x3 weight of shape (C, Cin, 1, 3, 3) into the kind's 3D weight (I3D inflation)."""
    if kind == '1xkxk':
        return weight2d.clone()
    if kind == 'kx1x1':
        weight2d = weight2d.sum(dim=(3, 4), keepdim=True)
    return weight2d.repeat(1, 1, K, 1, 1) / K


def shrink(kind, weight3d):
    """The kind's weight from a full (C, Cin, k, k, k) kernel: the kernel summed over the axes that shrink
    (what it computes on an input that is constant along them)."""
    size, _ = kernel_shape(kind, weight3d.shape[2])
    axes = tuple(2 + i for i, s in enumerate(size) if s == 1)
    return weight3d.sum(dim=axes, keepdim=True) if axes else weight3d.clone()


def kind_of_size(size):
    """The kind whose kernel has this size (any k), e.g. (1, 5, 5) -> '1xkxk'."""
    return 'x'.join('1' if s == 1 else 'k' for s in size)
