"""CAKES: Channel-wise Automatic KErnel Shrinking for efficient 3D networks.

`cakes.create_model(...)` builds a video network (cakes.models.create_model: `create_model(**description)`
rebuilds the network of a checkpoint of main.py). Subpackages: `cakes.ops` (the 3x3 operations and their registry,
search and pruning), `cakes.models` (the I3D ResNet, TemporalModel, ImageNet inflation), `cakes.data`
(Something-Something clips), `cakes.engine` (the training loop and everything a run needs around it),
`cakes.convert` (CAKES on any network with Conv3d + BatchNorm3d layers, in your own training loop), `cakes.cli`
(the command lines' side: main.py's settings, the tools' model flags). Importing `cakes` itself loads nothing
heavy: `cakes.runtime` must run before torch does, so create_model (which loads torch) is imported on first use.
"""
__version__ = '1.1.0'


def __getattr__(name):
    if name == 'create_model':
        from .models.factory import create_model
        return create_model
    raise AttributeError(f"module 'cakes' has no attribute '{name}'")
