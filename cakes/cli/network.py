"""The network flags of main.py and the tools (--op_code, --conv_config, --arch, --num_segments, --search) against
the description of the checkpoint they start from (cakes.models.description): a flag left out takes the
description's value; a flag given must agree with it."""
import os

from cakes.conv_config import resolve_conv_config
from cakes.errors import UsageError
from cakes.models.checkpoint import prune_output_prefix
from cakes.models.description import NETWORK, plain_config
from cakes.ops import pruned_op_code

# The description's fields that a flag gives: --dropout is taken from a description but never compared (a continued
# run may change it), and the classes are the dataset's.
FLAGS = tuple(field for field in NETWORK if field not in ('dropout', 'num_class'))


def network_flags(given, description, configs=None, finetune=''):
    """The network flags' values: `given` ({flag: value} of those on the command line), each checked against
    `description` (None: a released checkpoint, or none), and those the description gives for the others. For
    `finetune` (the supernet's path): the pruned network's, and a --conv_config left out is the file --prune
    wrote beside the supernet when it is there. `configs`: your conv_configs, for a --conv_config name.
    Returns ({flag: value}, the names taken from the description)."""
    described = described_flags(description, finetune) if description is not None else {}
    for flag, theirs in described.items():
        if flag in given and disagrees(flag, given[flag], theirs, configs):
            ours = given[flag]
            raise UsageError(f'{shown(flag, ours)} disagrees with the checkpoint ({flag} {theirs_shown(flag, theirs)}'
                             f'{conv_config_difference(ours, theirs, configs) if flag == "conv_config" else ""}): '
                             'drop the flag or use another checkpoint')
    values = {**described, **given}
    if finetune and 'conv_config' not in values:
        beside = prune_output_prefix(finetune) + '_conv_config.txt'
        if os.path.isfile(beside):  # what --prune wrote for this supernet
            values['conv_config'] = beside
    return values, set(described) - set(given)


def described_flags(description, finetune):
    """The flag values a description gives. For --finetune (a supernet's description): the pruned network,
    whose op code is the supernet's without `_dropout`, with no --search; its widths are not in the supernet."""
    network = {flag: description[flag] for flag in FLAGS}
    network['conv_config'] = network['conv_config'] or ''
    if finetune:
        network.update(op_code=pruned_op_code(network['op_code']), search=False)
        del network['conv_config']
    return network


def disagrees(flag, ours, theirs, configs):
    if flag == 'conv_config':  # a name or a file given, widths described: compare the widths
        return (plain_config(resolve_conv_config(ours, configs)) or '') != theirs
    return ours != theirs


def shown(flag, value):
    return f'--{flag}' if flag == 'search' else f'--{flag} {value}'


def theirs_shown(flag, value):
    if flag == 'conv_config':
        return 'none' if not value else f'of {len(value)} blocks'
    return value


def conv_config_difference(ours, theirs, configs):
    """The first block whose widths differ, when both have widths."""
    ours = plain_config(resolve_conv_config(ours, configs))
    if not ours or not theirs or len(ours) != len(theirs):
        return ''
    block = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    return f'; block {block}: {theirs[block]} there, {ours[block]} in the flag\'s'
