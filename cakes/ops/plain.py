"""The baselines: one 3D, 2D or (2+1)D convolution followed by BN and ReLU, under `op`."""
from torch import nn

from .kernels import inflate, make_conv


class PlainOp(nn.Module):
    """`op` = Sequential(conv..., BN, ReLU). Several kinds are chained (P3D: 1xkxk then kx1x1)."""

    def __init__(self, kinds, in_channels, width, stride):
        super().__init__()
        convs = [make_conv(kinds[0], in_channels, width, stride)]
        convs += [make_conv(kind, width, width, 1) for kind in kinds[1:]]
        self.kinds = tuple(kinds)
        self.out_channels = width
        self.op = nn.Sequential(*convs, nn.BatchNorm3d(width), nn.ReLU(inplace=True))

    @property
    def bn(self):
        return self.op[len(self.kinds)]

    def forward(self, x):
        return self.op(x)

    def inflate_from_2d(self, weight2d):
        """The first conv takes the 2D kernel; later ones (P3D's temporal conv) keep their init."""
        self.op[0].weight.data.copy_(inflate(self.kinds[0], weight2d))
