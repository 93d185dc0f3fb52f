"""CAKES: Channel-wise Automatic KErnel Shrinking for efficient 3D networks.

Subpackages: `cakes.ops` (the 3x3 operations and their registry, search and pruning), `cakes.models` (the I3D
ResNet, TemporalModel, ImageNet inflation), `cakes.data` (Something-Something clips), `cakes.engine` (the
training loop and everything a run needs around it), `cakes.convert` (CAKES on any network with Conv3d +
BatchNorm3d layers, in your own training loop). Importing `cakes` itself loads nothing heavy:
`cakes.runtime` must run before torch does.
"""
__version__ = '1.1.0'
