"""The summary of a conversion: every 3D convolution, what became of it, and why the others stayed."""
from cakes.ops import CakesOp, DropoutSupernetOp

from .find import find_layers


def summary(model, example_input=None):
    """One line per Conv3d / ConvTranspose3d: converted (with its branches) or skipped (with the reason).
    On an unconverted model it tells which layers to_supernet would convert."""
    layers = getattr(model, 'cakes_layers', None) or find_layers(model, example_input)
    width = max(len(layer.name) for layer in layers) if layers else 0
    lines = []
    for layer in layers:
        if layer.reason is not None:
            lines.append(f'skipped    {layer.name:<{width}}  {layer.reason}')
            continue
        op = model.get_submodule(layer.name)
        if isinstance(op, (CakesOp, DropoutSupernetOp)):
            branches = ', '.join(f'{kind} {w}' for kind, w in zip(op.kinds, op.widths))
            what = 'supernet' if isinstance(op, DropoutSupernetOp) else 'CAKES op'
            lines.append(f'converted  {layer.name:<{width}}  + {layer.bn} -> {what} {branches}')
        else:
            lines.append(f'eligible   {layer.name:<{width}}  + {layer.bn}')
    converted = sum(layer.reason is None for layer in layers)
    done = 'converted' if hasattr(model, 'cakes_layers') else 'eligible'
    lines.append(f'{converted} of {len(layers)} 3D convolutions {done}')
    return '\n'.join(lines)
