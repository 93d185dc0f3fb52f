"""The I3D ResNet backbone with swappable 3x3 operations, and the clip-level TemporalModel."""
from .imagenet import inflate_resnet, load_imagenet
from .resnet3d import DEPTHS, ResNet3D, block_widths
from .temporal import TemporalModel
from .description import build_from_description, describe, read_description
