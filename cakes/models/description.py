"""What network a checkpoint holds, stored in it as plain data so that it can be rebuilt without flags.

A description is a dict of plain Python values (it loads with `weights_only=True`):
op_code, search, conv_config (the widths themselves, a list of {kind: width} or None), arch, num_segments,
dropout, num_class and class_names (the lines of category.txt, in label order), and input_size, the crop size it
was trained at (descriptions written before it was kept have none: 224, the released size).
"""
from cakes.errors import UsageError

from .checkpoint import check_own_layout

KEY = 'description'  # where a checkpoint keeps it
# What a network is built from (create_model's arguments): two networks with equal values have one layout.
NETWORK = ('op_code', 'search', 'conv_config', 'arch', 'num_segments', 'dropout', 'num_class')
FIELDS = NETWORK + ('class_names',)  # what every description holds
DESCRIBED_ONLY = ('class_names', 'input_size')  # the fields that build nothing


RELEASED_INPUT_SIZE = 224


def describe(op_code, search, conv_config, arch, num_segments, dropout, class_names, input_size=RELEASED_INPUT_SIZE,
             num_class=None):
    """The description of a TemporalModel built with these arguments, classes named by `class_names`, trained on
    crops of `input_size`. `class_names` None (a tool that prints no names): `num_class` classes, unnamed; such a
    description is never saved."""
    return {'op_code': str(op_code), 'search': bool(search), 'conv_config': plain_config(conv_config),
            'arch': str(arch), 'num_segments': int(num_segments), 'dropout': float(dropout),
            'num_class': len(class_names) if class_names is not None else int(num_class),
            'class_names': None if class_names is None else [str(name) for name in class_names],
            'input_size': int(input_size)}


def input_size(description):
    """The crop size a described network was trained at; without a description (None), the released 224."""
    return RELEASED_INPUT_SIZE if description is None else int(description.get('input_size', RELEASED_INPUT_SIZE))


def plain_config(conv_config):
    """A conv_config as plain ints (a config may come from a file or from tensors)."""
    if conv_config is None:
        return None
    return [{str(kind): int(width) for kind, width in block.items()} for block in conv_config]


def read_description(checkpoint):
    """The description stored in a loaded checkpoint dict, or None for released checkpoints (they have none)."""
    description = checkpoint.get(KEY) if isinstance(checkpoint, dict) else None
    if description is None:
        return None
    missing = [field for field in FIELDS if field not in description]
    if not isinstance(description, dict) or missing:
        raise UsageError(f'the checkpoint\'s description lacks {", ".join(missing) or "its fields"}: '
                         'give the model flags (--op_code, --conv_config, --arch, --num_segments, --search)')
    return description


CLASSIFIERS = ('new_fc.weight', 'base_model.fc.weight')  # --dropout > 0, --dropout 0


def checkpoint_classes(state, source):
    """How many classes the classifier of a state_dict (`module.` keys or not) predicts: the number of classes
    of a network built from a released checkpoint, which does not say it otherwise."""
    for key in CLASSIFIERS:
        for name in (key, 'module.' + key):
            if name in state and getattr(state[name], 'dim', lambda: 0)() == 2:
                return int(state[name].shape[0])
    check_own_layout(state, f"'{source}'")
    raise UsageError(f"'{source}' has no classifier weights (new_fc.weight or base_model.fc.weight): not a "
                     'checkpoint of this model')


def check_classes(classes, names, source, names_source, fix='give the category.txt of the dataset it was trained on'):
    """A network of `classes` classes is named by the lines of `names_source` (a category.txt)."""
    if classes != len(names):
        raise UsageError(f"'{source}' holds a network for {classes} classes but {names_source} lists {len(names)}: "
                         + fix)
