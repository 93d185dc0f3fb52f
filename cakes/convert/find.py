"""Which 3D convolutions of an arbitrary network CAKES can replace, and why the others stay.

A Conv3d is eligible when its kernel is a cube of odd size k > 1 with padding k // 2 (so every sub-kernel
keeps the output size), groups 1, dilation 1, zero padding, and its output goes only into a BatchNorm3d of
the same width (the supernet's BN takes its place). The data flow comes from torch.fx; a model that fx
cannot trace falls back on nn.Sequential order, which is the only structure that fixes what reads a
module's output.
"""
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from cakes.ops.forward import eval_forward


@dataclass
class Layer:
    name: str              # the convolution's qualified name (the layer name of configs)
    bn: str = None         # the BatchNorm3d that follows it, when eligible
    reason: str = None     # why it stays as it is; None when eligible


class _Tracer(fx.Tracer):
    """Keeps every convolution and BN a single call, subclasses included."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d)) or super().is_leaf_module(m, qualname)


def find_layers(model, example_input=None):
    """A Layer for every Conv3d / ConvTranspose3d of `model`, in registration order."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    try:
        followers = traced_followers(model)
    except Exception as e:  # any tracing failure means the same thing: fall back on the module structure
        followers = sequential_followers(model, f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
        if example_input is not None:
            followers = confirm_by_running(model, followers, example_input)
    registrations = count_registrations(model)
    layers = []
    for name, conv in convs:
        reason = kernel_reason(conv)
        if reason is None and registrations[id(conv)] > 1:
            reason = 'the module is registered more than once'
        bn, follow_reason = followers.get(name, (None, 'never called in the forward pass'))
        reason = reason or follow_reason or bn_reason(conv, model.get_submodule(bn))
        layers.append(Layer(name, bn if reason is None else None, reason))
    return layers


def kernel_reason(conv):
    """Why this convolution cannot be shrunk whatever follows it, or None."""
    if isinstance(conv, nn.ConvTranspose3d):
        return 'transposed convolution'
    size = conv.kernel_size
    if len(set(size)) != 1:
        return f'kernel {size} is not cubic'
    k = size[0]
    if k == 1:
        return 'kernel 1x1x1: nothing to shrink'
    if k % 2 == 0:
        return f'even kernel size {k}: a size-1 axis would change the output size'
    padding = (k // 2,) * 3 if conv.padding == 'same' else tuple(conv.padding)
    checks = [(conv.groups != 1, f'groups {conv.groups}'),
              (tuple(conv.dilation) != (1, 1, 1), f'dilation {tuple(conv.dilation)}'),
              (conv.padding_mode != 'zeros', f"padding mode '{conv.padding_mode}'"),
              (padding != (k // 2,) * 3, f'padding {padding} is not k//2 = {k // 2}')]
    return next((text for failed, text in checks if failed), None)


def bn_reason(conv, bn):
    if bn.num_features != conv.out_channels:
        return f'its BatchNorm3d has {bn.num_features} channels, the convolution {conv.out_channels}'
    if not bn.affine or not bn.track_running_stats:
        return 'its BatchNorm3d has no affine scale or no running statistics'
    return None


def count_registrations(model):
    counts = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    return counts


def traced_followers(model):
    """{conv name: (BN name, None) or (None, reason)} from the torch.fx graph."""
    graph = fx.GraphModule(model, _Tracer().trace(model)).graph
    modules = dict(model.named_modules())
    calls = {}
    for node in graph.nodes:
        if node.op == 'call_module':
            calls[node.target] = calls.get(node.target, 0) + 1
    followers = {}
    for node in graph.nodes:
        if node.op != 'call_module' or not isinstance(modules[node.target], (nn.Conv3d, nn.ConvTranspose3d)):
            continue
        users = list(node.users)
        only = users[0] if len(users) == 1 else None
        if calls[node.target] > 1:
            followers[node.target] = (None, 'called more than once in the forward pass')
        elif (only is not None and only.op == 'call_module' and isinstance(modules[only.target], nn.BatchNorm3d)
              and calls[only.target] == 1):
            followers[node.target] = (only.target, None)
        else:
            goes_to = ', '.join(describe(user, modules) for user in users) or 'nothing'
            followers[node.target] = (None, f'its output goes to {goes_to}, not only to a BatchNorm3d')
    return followers


def describe(node, modules):
    if node.op == 'call_module':
        return f'{node.target} ({type(modules[node.target]).__name__})'
    if node.op == 'output':
        return 'the model output'
    return getattr(node.target, '__name__', str(node.target))


def is_plain_sequential(m):
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def sequential_followers(model, trace_error):
    """Without a graph: a convolution directly followed, inside a plain nn.Sequential, by a BatchNorm3d
    (descending into nested plain Sequentials); anything else is unknown and stays."""
    unknown = f'torch.fx cannot trace the model ({trace_error}) and it is not followed by a BatchNorm3d in an nn.Sequential'
    followers = {name: (None, unknown) for name, m in model.named_modules()
                 if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))}
    for prefix, seq in model.named_modules():
        if not is_plain_sequential(seq):
            continue
        children = list(seq.named_children())
        for (name, child), (next_name, nxt) in zip(children, children[1:]):
            if not isinstance(child, nn.Conv3d):
                continue
            path = f'{prefix}.{next_name}' if prefix else next_name
            while is_plain_sequential(nxt) and len(nxt):
                first, nxt = next(iter(nxt.named_children()))
                path = f'{path}.{first}'
            if isinstance(nxt, nn.BatchNorm3d):
                followers[f'{prefix}.{name}' if prefix else name] = (path, None)
    return followers


def confirm_by_running(model, followers, example_input):
    """Keep a structural pair only if, on `example_input`, the convolution runs once and its BN reads
    exactly its output tensor."""
    seen = {}
    pairs = {conv: bn for conv, (bn, reason) in followers.items() if reason is None}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, []).append((inputs[0], output))
        return hook

    names = list(pairs) + list(pairs.values())
    eval_forward(model, example_input, hooks=[(model.get_submodule(name), record(name)) for name in names])
    for conv, bn in pairs.items():
        runs, bn_runs = seen.get(conv, []), seen.get(bn, [])
        if len(runs) != 1 or len(bn_runs) != 1 or bn_runs[0][0] is not runs[0][1]:
            followers[conv] = (None, f'on the example input, {bn} does not read exactly its one output')
    return followers
