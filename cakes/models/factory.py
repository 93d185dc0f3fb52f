"""create_model: the one way to build a video network. Its keywords are the fields of a checkpoint's description,
so that `create_model(**description)` rebuilds the network a checkpoint holds; its defaults are main.py's flags'."""
import inspect

from cakes import ops
from cakes.conv_config import resolve_conv_config
from cakes.errors import UsageError

from .description import DESCRIBED_ONLY
from .resnet3d import DEPTHS
from .temporal import TemporalModel


def create_model(op_code='conv3d', conv_config=None, num_class=174, num_segments=8, arch='resnet50', search=False,
                 dropout=0.3, pretrained=None, configs=None, **described):
    """The TemporalModel these fields describe, with random weights unless `pretrained` says otherwise.

    op_code: the 3x3 operation of every block (cakes.ops.OP_CODES). conv_config: the branch widths of a CAKES
    network: a released config's name (CAKES123D_P, ...), a name of `configs` (your conv_configs, e.g. those of
    config.py), the path of a conv_config.txt that --prune wrote, or the list of {kind: width} itself; None:
    equal widths. num_class: classes (174: Something-Something V1). num_segments: frames per clip.
    arch: 'resnet50' or 'resnet101'. search: the supernet of a CAKES op code (a dropout op code is always one).
    dropout: before the classifier; 0 is the released layout without `new_fc`. pretrained: None (random),
    'imagenet' (torchvision's weights, inflated to 3D) or the path of a torchvision ResNet state_dict.
    The description's other fields (class_names, input_size) are accepted and build nothing.
    """
    unknown = sorted(set(described) - set(DESCRIBED_ONLY))
    if unknown:
        raise UsageError(f"create_model has no argument '{unknown[0]}': its arguments are "
                         f"{', '.join(arguments())} and a description's {', '.join(DESCRIBED_ONLY)}")
    ops.op_spec(op_code)  # an unknown op code names the known ones
    if arch not in DEPTHS:
        raise UsageError(f"unknown arch '{arch}': choose one of {', '.join(DEPTHS)}")
    for name, value in (('num_class', num_class), ('num_segments', num_segments)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f'{name} must be an integer of at least 1, not {value!r}')
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise UsageError(f'dropout {dropout} is a probability: give a value from 0 to 1')
    class_names = described.get('class_names')
    if class_names is not None and len(class_names) != num_class:
        raise UsageError(f'{len(class_names)} class names for {num_class} classes: give one name per class')
    widths = resolve_conv_config(conv_config, configs)
    if search and widths is not None:
        raise UsageError('conv_config sets the widths of a pruned network; a search supernet has every channel')
    return TemporalModel(num_class, num_segments, op_code=op_code, search=search, conv_config=widths, backbone=arch,
                         dropout=dropout, pretrained=weights_source(pretrained))


def weights_source(pretrained):
    """None, False or 'none': random weights; True or 'imagenet': torchvision's; else a state_dict file."""
    if pretrained is None or pretrained is False or str(pretrained).lower() == 'none':
        return None
    return 'imagenet' if pretrained is True else pretrained


def arguments():
    return list(inspect.signature(create_model).parameters)[:-1]


def defaults():
    """create_model's defaults, {argument: value}: the released network, which main.py's flags build when
    none is given (a released checkpoint without a description was trained with them unless its flags say)."""
    return {name: parameter.default for name, parameter in inspect.signature(create_model).parameters.items()
            if parameter.default is not inspect.Parameter.empty}
