"""Eval-time speed-ups that leave the function unchanged: BN folded into the convolution before it."""
import copy

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_weights

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
                start, bn = 0, module.bn
                for branch, width in zip(module.convs, module.widths):
                    module.out[0] = _fold(branch[0], bn, slice(start, start + width))
                    start += width
    return model


def _fold(conv, bn, channels=slice(None)):
    """Fold the BN's `channels` into all of conv's filters (torch.nn.utils.fuse_conv_bn_weights: with or without
    the BN's affine scale and shift) and return what replaces the BN; a BN without running statistics normalises
    by each batch's own, so it stays."""
    if bn.running_mean is None:
        return bn
    conv.weight, conv.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean[channels], bn.running_var[channels], bn.eps,
        bn.weight[channels] if bn.affine else None, bn.bias[channels] if bn.affine else None)
    return nn.Identity()
