"""TemporalModel: the clip-level classifier wrapped around the I3D backbone."""
import torch
from torch import nn

from cakes import ops

from .imagenet import load_imagenet
from .resnet3d import DEPTHS, ResNet3D, block_widths


def num_classes(model):
    """The classes a TemporalModel predicts: its classifier's outputs."""
    classifier = model.new_fc if hasattr(model, 'new_fc') else model.base_model.fc
    return classifier.out_features


def new_classifier(in_features, num_class):
    fc = nn.Linear(in_features, num_class)
    nn.init.normal_(fc.weight, 0, 0.001)
    nn.init.zeros_(fc.bias)
    return fc


class TemporalModel(nn.Module):
    """(B, T*3, H, W) clips -> (B, num_class) logits, averaged over the T frame predictions.

    With dropout > 0, `base_model.fc` is the Dropout and `new_fc` the classifier; with dropout 0,
    `base_model.fc` is the classifier (the released layouts).
    `pretrained`: None (random init), a path to a torchvision ResNet state_dict, or 'imagenet'.
    """

    def __init__(self, num_class, num_segments, op_code='conv3d', search=False, conv_config=None,
                 backbone='resnet50', dropout=0.3, pretrained=None):
        super().__init__()
        if backbone not in DEPTHS:
            raise ValueError(f"unknown backbone '{backbone}': choose one of {', '.join(DEPTHS)}")
        if conv_config is not None:
            ops.check_config(op_code, conv_config, block_widths(backbone))
        self.num_segments = num_segments
        self.op_code = op_code
        self.channels_last = False
        self.amp_dtype = None
        build_op = ops.op_factory(op_code, search=search, conv_config=conv_config)
        feature_dim = 512 * 4
        fc = nn.Dropout(p=dropout) if dropout > 0 else new_classifier(feature_dim, num_class)
        self.base_model = ResNet3D(backbone, build_op, fc)
        if dropout > 0:
            self.new_fc = new_classifier(feature_dim, num_class)
        if pretrained is not None:
            load_imagenet(self.base_model, backbone, pretrained)

    def use_channels_last(self, enabled=True):
        """Run in the channels_last_3d memory format (same function; faster on CPU and tensor cores)."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last_3d if enabled else torch.contiguous_format)

    def use_autocast(self, dtype):
        """Run the forward under autocast in `dtype` (None: as the caller's context says). nn.DataParallel
        re-enters autocast in each replica's thread without a dtype, which there means the thread's default
        (float16 on CUDA): entering it here keeps the run's dtype whatever wraps the model."""
        self.amp_dtype = dtype
        return self

    def use_plans(self, policy):
        """How the CAKES ops choose their execution plans: a cakes.ops.plans.Policy (TIMED, BRANCH_FORM, a forced
        plan), or None for the CAKES_PLAN environment variable. DataParallel's replicas share it."""
        ops.plans.use_policy(self, policy)
        return self

    def forward(self, x):
        if self.amp_dtype is None:
            return self._forward(x)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            return self._forward(x)

    def _forward(self, x):
        b = x.shape[0]
        x = x.view(b, self.num_segments, 3, *x.shape[2:]).transpose(1, 2)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.base_model(x)
        if hasattr(self, 'new_fc'):
            x = self.new_fc(x)
        return x.view(b, self.num_segments, -1).mean(dim=1)

    def cakes_ops(self):
        """The searchable 3x3 operations (CAKES ops and dropout supernets) in network order."""
        return [m for m in self.modules() if isinstance(m, (ops.CakesOp, ops.DropoutSupernetOp))]
