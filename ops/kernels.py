"""The three sub-kernel kinds that CAKES mixes, and how each is built and inflated from a 2D 3x3."""
import torch
from torch import nn

K = 3
# kind -> (kernel size, padding); the names are the keys of a conv_config dict.
KERNELS = {
    'kxkxk': ((K, K, K), (1, 1, 1)),
    '1xkxk': ((1, K, K), (0, 1, 1)),
    'kx1x1': ((K, 1, 1), (1, 0, 0)),
}
# Multiply-adds per output value, the weights of the cost-aware sparsity term (27 : 9 : 3).
KERNEL_COST = {kind: size[0] * size[1] * size[2] for kind, (size, _) in KERNELS.items()}


def make_conv(kind, in_channels, out_channels, stride):
    """A bias-free Conv3d of the given kind with spatial stride `stride`."""
    size, padding = KERNELS[kind]
    return nn.Conv3d(in_channels, out_channels, size, stride=(1, stride, stride), padding=padding, bias=False)


def inflate(kind, weight2d):
    """Turn a 2D 3x3 weight of shape (C, Cin, 1, 3, 3) into the kind's 3D weight (I3D inflation)."""
    if kind == '1xkxk':
        return weight2d.clone()
    if kind == 'kx1x1':
        weight2d = weight2d.sum(dim=(3, 4), keepdim=True)
    return weight2d.repeat(1, 1, K, 1, 1) / K
