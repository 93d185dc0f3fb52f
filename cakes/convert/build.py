"""Replace the eligible convolution + BN pairs of any network: by dropout supernets to search, by CAKES ops
of chosen widths to train the result. The convolution's place takes the op (conv and BN in one), the
BN's place an nn.Identity, so the network's own forward keeps working and nothing else changes."""
import copy

import torch
from torch import nn

from cakes.errors import UsageError
from cakes.ops import CakesOp, DropoutSupernetOp
from cakes.ops.kernels import KINDS, kernel_shape, shrink
from cakes.ops.search import top_indices

from .find import find_layers

VIDEO_KINDS = ('kxkxk', '1xkxk', 'kx1x1')
BN_VECTORS = ('weight', 'bias', 'running_mean', 'running_var')


def to_supernet(model, kinds=VIDEO_KINDS, example_input=None):
    """A copy of `model` whose eligible Conv3d + BatchNorm3d pairs are dropout supernets over `kinds`.

    Each branch starts from the original kernel (summed over the axes its kind shrinks), all C filters
    each; the supernet BN is the original BN tiled over the branches. `example_input` is only needed
    when torch.fx cannot trace the model: it then confirms the pairs found by module structure.
    """
    kinds = check_kinds(kinds)
    net = copy.deepcopy(model)
    net.cakes_layers = layers = checked_layers(model, example_input)
    for layer in converted(layers):
        conv, bn = net.get_submodule(layer.name), net.get_submodule(layer.bn)
        op = DropoutSupernetOp(kinds, conv.in_channels, conv.out_channels, conv.stride, k=conv.kernel_size[0],
                               activation=False)
        with torch.no_grad():
            for kind, branch in zip(kinds, op.convs):
                branch[0].weight.copy_(shrink(kind, conv.weight))
            load_bn(op.norm, folded_bn(conv, bn), torch.arange(conv.out_channels).repeat(len(kinds)), bn)
        replace(net, layer, op, conv)
    return net


def to_pruned(model, config, supernet=None, example_input=None):
    """A copy of `model` whose converted layers are CAKES ops of the widths in `config`
    ({layer: {kind: width}}, width-0 branches left out, BN included, no activation added).

    Without `supernet`, branch after branch takes the next filters of the original kernel, shrunk to its
    kind, and the original BN. With the `supernet` that `config` was pruned from, the network is a copy
    of it in which each branch keeps the supernet branch's channels of largest |BN scale|: in eval mode it
    computes what the supernet computes.
    """
    layers = checked_layers(model, example_input)
    check_config(config, converted(layers), model)
    return pruned_copy(model if supernet is None else supernet, layers, config, supernet is not None)


def pruned_copy(source, layers, config, from_supernet):
    """to_pruned without the checks: a copy of `source` (the original model, or the supernet when
    `from_supernet`) with CAKES ops of the `config` widths in the converted `layers`."""
    net = copy.deepcopy(source)
    net.cakes_layers = layers
    for layer in converted(layers):
        branches = [(kind, width) for kind, width in config[layer.name].items() if width > 0]
        if not from_supernet:
            conv, bn = net.get_submodule(layer.name), net.get_submodule(layer.bn)
            op = pruned_from_original(conv, bn, branches)
        else:
            conv = net.get_submodule(layer.name)
            op = pruned_from_supernet(layer.name, conv, branches)
        replace(net, layer, op, conv)
    return net


def check_kinds(kinds):
    kinds = tuple(kinds)
    for kind in kinds:
        kernel_shape(kind)  # raises the UsageError naming an unknown kind
    if not kinds or len(set(kinds)) != len(kinds):
        raise UsageError(f'kinds {kinds} must name at least one kernel kind, each once (among {", ".join(KINDS)})')
    return kinds


def converted(layers):
    return [layer for layer in layers if layer.reason is None]


def checked_layers(model, example_input):
    """All the model's 3D convolutions (find_layers); a UsageError when none is eligible."""
    layers = find_layers(model, example_input)
    if not converted(layers):
        why = '; '.join(f'{layer.name}: {layer.reason}' for layer in layers[:3]) or 'it has no Conv3d'
        raise UsageError(f'{type(model).__name__} has no eligible layer (a cubic odd-size Conv3d with padding k//2 '
                         f'followed only by its BatchNorm3d): {why}')
    return layers


def check_format(config, where='config'):
    """{layer name: {known kind: non-negative int}}; fitting a model is checked by to_pruned."""
    if not isinstance(config, dict) or not config:
        raise UsageError(f'{where} must be a non-empty {{layer name: {{kind: width}}}} dict (a JSON object in a file)')
    for name, entry in config.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{where} layer '{name}': {entry!r} must map kernel kinds to widths")
        for kind, width in entry.items():
            if kind not in KINDS:
                raise UsageError(f"{where} layer '{name}': unknown kernel kind '{kind}' (choose among {', '.join(KINDS)})")
            if not isinstance(width, int) or isinstance(width, bool) or width < 0:
                raise UsageError(f"{where} layer '{name}': width {width!r} of '{kind}' must be a non-negative integer")
    return config


def check_config(config, layers, model):
    """`config` must name exactly the eligible layers, each with known kinds whose widths sum to C."""
    check_format(config)
    names = [layer.name for layer in layers]
    extra = [name for name in config if name not in names]
    if extra:
        raise UsageError(f"config layer '{extra[0]}' is not a converted layer of {type(model).__name__} "
                         f"(those are: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")
    for name in names:
        if name not in config:
            raise UsageError(f"config has no entry for layer '{name}': give its widths, e.g. from prune_config")
        width, entry = model.get_submodule(name).out_channels, config[name]
        if sum(entry.values()) != width:
            raise UsageError(f"config layer '{name}': widths {entry} sum to {sum(entry.values())}, "
                             f"not to the layer's {width} output channels")


def pruned_from_original(conv, bn, branches):
    op = CakesOp(branches, conv.in_channels, conv.stride, k=conv.kernel_size[0], activation=False)
    with torch.no_grad():
        start = 0
        for (kind, width), branch in zip(branches, op.convs):
            branch[0].weight.copy_(shrink(kind, conv.weight[start:start + width]))
            start += width
        load_bn(op.bn, folded_bn(conv, bn), torch.arange(conv.out_channels), bn)
    return op


def pruned_from_supernet(name, supernet_op, branches):
    """Each branch keeps its width's channels of largest |BN scale| in the supernet branch of its kind,
    in supernet order (exactly the channels the supernet evaluates with when the widths are pruning's)."""
    if not isinstance(supernet_op, DropoutSupernetOp):
        raise UsageError(f"supernet layer '{name}' is a {type(supernet_op).__name__}, not a supernet op: give "
                         'the network that to_supernet returned for this model')
    missing = [kind for kind, _ in branches if kind not in supernet_op.kinds]
    if missing:
        raise UsageError(f"config layer '{name}': kind '{missing[0]}' is not a branch of the supernet "
                         f"({', '.join(supernet_op.kinds)})")
    branches = sorted(branches, key=lambda kw: supernet_op.kinds.index(kw[0]))
    conv0, c = supernet_op.convs[0][0], supernet_op.width
    op = CakesOp(branches, conv0.in_channels, conv0.stride, k=supernet_op.k, activation=False)
    kept = []
    with torch.no_grad():
        for (kind, width), branch in zip(branches, op.convs):
            b = supernet_op.kinds.index(kind)
            local = top_indices(supernet_op.norm.weight[b * c:(b + 1) * c].detach().abs(), width)
            branch[0].weight.copy_(supernet_op.convs[b][0].weight[local])
            kept.append(local + b * c)
        norm = supernet_op.norm
        load_bn(op.bn, {entry: getattr(norm, entry) for entry in BN_VECTORS}, torch.cat(kept), norm)
    return op


def folded_bn(conv, bn):
    """The BN's vectors with the convolution's bias folded into the running mean (exact: a BN subtracts
    the batch mean in training, and in eval (x + b - m) equals (x - (m - b)))."""
    vectors = {entry: getattr(bn, entry) for entry in BN_VECTORS}
    if conv.bias is not None:
        vectors['running_mean'] = bn.running_mean - conv.bias
    return vectors


def load_bn(target, vectors, index, source):
    """target BN = vectors[index], with the eps, momentum and batch count of the `source` BN."""
    for entry, value in vectors.items():
        getattr(target, entry).copy_(value[index])
    target.num_batches_tracked.copy_(source.num_batches_tracked)
    target.eps, target.momentum = source.eps, source.momentum


def replace(net, layer, op, old):
    """The op where the convolution was (same device, dtype and mode), an nn.Identity where its BN was."""
    weight = next(old.parameters())
    net.set_submodule(layer.name, op.to(device=weight.device, dtype=weight.dtype).train(old.training))
    net.set_submodule(layer.bn, nn.Identity())
