"""One registry of op codes and the one factory that decides which 3x3 operation each block gets."""
from dataclasses import dataclass

from cakes.errors import UsageError

from .cakes import CakesOp
from .plain import PlainOp
from .supernet import DropoutSupernetOp


@dataclass(frozen=True)
class OpSpec:
    family: str        # 'plain', 'cakes' or 'dropout'
    kinds: tuple       # branch kinds in branch order (for 'plain': the chained convolutions)


OP_CODES = {
    'conv3d': OpSpec('plain', ('kxkxk',)),
    'conv2d': OpSpec('plain', ('1xkxk',)),
    'convp3d': OpSpec('plain', ('1xkxk', 'kx1x1')),
    'convst': OpSpec('cakes', ('kxkxk', '1xkxk')),
    'conv1_2d': OpSpec('cakes', ('1xkxk', 'kx1x1')),
    'conv1_2_3d': OpSpec('cakes', ('kxkxk', '1xkxk', 'kx1x1')),
    'convst_dropout': OpSpec('dropout', ('kxkxk', '1xkxk')),
    'conv1_2d_dropout': OpSpec('dropout', ('1xkxk', 'kx1x1')),
    'conv1_2_3d_dropout': OpSpec('dropout', ('kxkxk', '1xkxk', 'kx1x1')),
}
CAKES_OPS = tuple(code for code, spec in OP_CODES.items() if spec.family == 'cakes')


def op_spec(op_code):
    if op_code not in OP_CODES:
        raise UsageError(f"unknown op code '{op_code}': choose one of {', '.join(OP_CODES)}")
    return OP_CODES[op_code]


def cakes_op_code(kinds):
    """The CAKES op code whose branches are `kinds` in branch order, or None."""
    return next((code for code in CAKES_OPS if OP_CODES[code].kinds == tuple(kinds)), None)


def pruned_op_code(op_code):
    """The op code of the network a supernet prunes to (a dropout supernet's CAKES op)."""
    return op_code[:-len('_dropout')] if op_spec(op_code).family == 'dropout' else op_code


def default_widths(width, n):
    """Without search or config: branches 2..n get width // n each, branch 1 the rest."""
    return [width - (n - 1) * (width // n)] + [width // n] * (n - 1)


def check_config(op_code, conv_config, block_widths):
    """A config must have one dict per block, the op's branch names, widths summing to the block width."""
    spec = op_spec(op_code)
    if spec.family != 'cakes':
        raise UsageError(f"--conv_config applies to the CAKES op codes ({', '.join(CAKES_OPS)}), not '{op_code}'")
    if len(conv_config) != len(block_widths):
        raise UsageError(f"conv_config has {len(conv_config)} blocks but the network has {len(block_widths)}: "
                         "give one dict per bottleneck in network order")
    for i, (entry, width) in enumerate(zip(conv_config, block_widths)):
        if not isinstance(entry, dict) or set(entry) - set(spec.kinds):
            raise UsageError(f"conv_config block {i}: {entry!r} must map the branch names of '{op_code}' "
                             f"({', '.join(spec.kinds)}) to widths")
        widths = [entry.get(kind, 0) for kind in spec.kinds]
        if any(not isinstance(w, int) or w < 0 for w in widths) or sum(widths) != width:
            raise UsageError(f"conv_config block {i}: widths {entry!r} must be non-negative integers "
                             f"summing to the block width {width}")


def op_factory(op_code, search=False, conv_config=None):
    """Return `build(index, in_channels, width, stride)`, the 3x3 operation of bottleneck `index`.

    Dropout op codes are supernets whatever `search` says; `search` only matters for CAKES op codes.
    """
    spec = op_spec(op_code)

    def build(index, in_channels, width, stride):
        if spec.family == 'plain':
            return PlainOp(spec.kinds, in_channels, width, stride)
        if spec.family == 'dropout':
            return DropoutSupernetOp(spec.kinds, in_channels, width, stride, split_two=op_code == 'convst_dropout')
        if search:
            widths = [width] * len(spec.kinds)
        elif conv_config is not None:
            widths = [conv_config[index].get(kind, 0) for kind in spec.kinds]
        else:
            widths = default_widths(width, len(spec.kinds))
        return CakesOp(list(zip(spec.kinds, widths)), in_channels, stride, search=search)

    return build
