"""Eval-time speed-ups that leave the function unchanged: BN folded into the convolution before it."""
import copy

import torch
from torch import nn

from cakes.ops import CakesOp, PlainOp

from .resnet3d import Bottleneck, ResNet3D


def fold_batchnorm(model):
    """A copy of `model` for inference in which every BN that follows a convolution is folded into it.

    Dropout supernets keep their BN (the channels they use depend on the BN scales). The copy computes
    the same function in eval mode; its state_dict differs, so save the original, not the copy.
    """
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, ResNet3D):
                module.bn1 = _fold(module.conv1, module.bn1)
            elif isinstance(module, Bottleneck):
                module.bn1 = _fold(module.conv1, module.bn1)
                module.bn3 = _fold(module.conv3, module.bn3)
                if module.downsample is not None:
                    module.downsample[1] = _fold(module.downsample[0], module.downsample[1])
            elif isinstance(module, PlainOp):
                last = len(module.kinds) - 1
                module.op[last + 1] = _fold(module.op[last], module.op[last + 1])
            elif isinstance(module, CakesOp):
                start = 0
                for branch, width in zip(module.convs, module.widths):
                    _fold(branch[0], module.bn, slice(start, start + width))
                    start += width
                module.out[0] = nn.Identity()
    return model


def _fold(conv, bn, channels=slice(None)):
    """Scale conv's filters by the BN's gamma / sigma (of `channels`) and give it the BN's shift as bias."""
    scale = bn.weight[channels] / torch.sqrt(bn.running_var[channels] + bn.eps)
    shift = bn.bias[channels] - bn.running_mean[channels] * scale
    conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.clone())
    else:
        conv.bias.mul_(scale).add_(shift)
    return nn.Identity()
