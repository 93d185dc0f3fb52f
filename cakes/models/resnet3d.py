"""The I3D ResNet backbone: a 2D ResNet with 3D convolutions, never any temporal stride."""
from torch import nn

from cakes.ops.kernels import Conv3d

DEPTHS = {'resnet50': (3, 4, 6, 3), 'resnet101': (3, 4, 23, 3)}
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


def block_widths(backbone):
    """The width of every bottleneck in network order (the length a conv_config must have)."""
    return [width for width, depth in zip(WIDTHS, DEPTHS[backbone]) for _ in range(depth)]


def pointwise(in_channels, out_channels, stride=1):
    return Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False)


class Bottleneck(nn.Module):
    """1x1x1 -> the swappable 3x3 operation `convT` (owns its BN and ReLU) -> 1x1x1, plus shortcut."""

    def __init__(self, in_channels, width, stride, convT):
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = pointwise(in_channels, width)
        self.bn1 = nn.BatchNorm3d(width)
        self.convT = convT
        self.conv3 = pointwise(convT.out_channels, out_channels)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(pointwise(in_channels, out_channels, stride), nn.BatchNorm3d(out_channels))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(self.convT(y)))
        return self.relu(y.add_(shortcut))  # in place: BN backward needs its input, not its output


class ResNet3D(nn.Module):
    """I3D ResNet. `build_op(index, in_channels, width, stride)` gives bottleneck `index` its 3x3 op.

    The forward ends by folding time into the batch, pooling globally over space and applying `fc`:
    (B, 3, T, H, W) -> (B*T, fc output). Global pooling equals the released AvgPool2d(7) at 224 and
    lets any input size through.
    """

    def __init__(self, backbone, build_op, fc):
        super().__init__()
        self.arch = backbone
        self.conv1 = Conv3d(3, 64, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        in_channels, index = 64, 0
        for layer, (width, depth) in enumerate(zip(WIDTHS, DEPTHS[backbone])):
            blocks = []
            for i in range(depth):
                stride = 2 if layer > 0 and i == 0 else 1
                blocks.append(Bottleneck(in_channels, width, stride, build_op(index, width, width, stride)))
                in_channels, index = width * EXPANSION, index + 1
            setattr(self, f'layer{layer + 1}', nn.Sequential(*blocks))
        self.fc = fc
        self.feature_dim = in_channels
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.transpose(1, 2).flatten(0, 1).mean(dim=(2, 3))
        return self.fc(x)
