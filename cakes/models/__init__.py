"""The I3D ResNet backbone with swappable 3x3 operations, the clip-level TemporalModel and create_model, the one
way to build it."""
from .imagenet import inflate_resnet, load_imagenet
from .resnet3d import DEPTHS, ResNet3D, block_widths
from .temporal import TemporalModel, num_classes
from .description import describe, read_description
from .factory import create_model
