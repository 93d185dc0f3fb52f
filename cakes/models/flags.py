"""The network flags of main.py and the tools (--op_code, --conv_config, --arch, --num_segments, --search): a
flag that is not given takes the value of the checkpoint's description (`cakes.models.description`), else its
default; a flag that is given must agree with the description."""
import os

from cakes.conv_config import resolve_conv_config
from cakes.errors import UsageError
from cakes.ops import pruned_op_code

from .checkpoint import check_own_layout, prune_output_prefix
from .description import plain_config

FLAGS = ('op_code', 'conv_config', 'arch', 'num_segments', 'search')
# main.py's defaults, for tools that take these flags without main.py's parser (cakes.models.loading).
RELEASED = {'op_code': 'conv3d', 'conv_config': '', 'arch': 'resnet50', 'num_segments': 8, 'search': False}


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


def not_given():
    """The values parse_args starts from, so that a flag left out stays None (argparse keeps what a
    namespace already holds instead of the default)."""
    return dict.fromkeys(FLAGS)


def described_network(description, finetune):
    """The flag values a description gives. For --finetune (a supernet's description): the pruned network,
    whose op code is the supernet's without `_dropout`, with no --search; its widths are not in the supernet."""
    network = {flag: description[flag] for flag in FLAGS}
    network['conv_config'] = network['conv_config'] or ''
    if finetune:
        network.update(op_code=pruned_op_code(network['op_code']), search=False)
        del network['conv_config']
    return network


def fill_network_flags(args, defaults, description):
    """Fill the flags that are None in `args` from `description` (None: a released checkpoint, or no
    checkpoint) or else `defaults`; refuse a given flag that disagrees. Returns the names filled from the
    description."""
    # Tools that only run a network (cakes.models.loading) have neither --finetune nor --prune.
    finetune = bool(getattr(args, 'finetune', '')) and not getattr(args, 'prune', False)
    network = described_network(description, finetune) if description is not None else {}
    filled = set()
    for flag, theirs in network.items():
        ours = getattr(args, flag)
        if ours is None:
            setattr(args, flag, theirs)
            filled.add(flag)
        elif disagrees(flag, ours, theirs):
            raise UsageError(f'{shown(flag, ours)} disagrees with the checkpoint ({flag} {theirs_shown(flag, theirs)}'
                             f'{conv_config_difference(ours, theirs) if flag == "conv_config" else ""}): '
                             'drop the flag or use another checkpoint')
    if finetune and args.conv_config is None:
        beside = prune_output_prefix(args.finetune) + '_conv_config.txt'
        if os.path.isfile(beside):  # what --prune wrote for this supernet
            args.conv_config = beside
    for flag in FLAGS:
        if getattr(args, flag) is None:
            setattr(args, flag, defaults[flag])
    return filled


def disagrees(flag, ours, theirs):
    if flag == 'conv_config':  # a key or a file given, widths described: compare the widths
        return (plain_config(resolve_conv_config(ours)) or '') != theirs
    return ours != theirs


def shown(flag, value):
    return f'--{flag}' if flag == 'search' else f'--{flag} {value}'


def theirs_shown(flag, value):
    if flag == 'conv_config':
        return 'none' if not value else f'of {len(value)} blocks'
    return value


def conv_config_difference(ours, theirs):
    """The first block whose widths differ, when both have widths."""
    ours = plain_config(resolve_conv_config(ours))
    if not ours or not theirs or len(ours) != len(theirs):
        return ''
    block = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    return f'; block {block}: {theirs[block]} there, {ours[block]} in the flag\'s'
