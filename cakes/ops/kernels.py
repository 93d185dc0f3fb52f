"""The three sub-kernel kinds that CAKES mixes, and how each is built and inflated from a 2D 3x3."""
import torch
import torch.nn.functional as F
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


def make_conv(kind, in_channels, out_channels, stride):
    """A bias-free Conv3d of the given kind with spatial stride `stride`."""
    size, padding = KERNELS[kind]
    return Conv3d(in_channels, out_channels, size, stride=(1, stride, stride), padding=padding, bias=False)


def inflate(kind, weight2d):
    """Turn a 2D 3x3 weight of shape (C, Cin, 1, 3, 3) into the kind's 3D weight (I3D inflation)."""
    if kind == '1xkxk':
        return weight2d.clone()
    if kind == 'kx1x1':
        weight2d = weight2d.sum(dim=(3, 4), keepdim=True)
    return weight2d.repeat(1, 1, K, 1, 1) / K
