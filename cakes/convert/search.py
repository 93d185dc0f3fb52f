"""Search a converted network in your own loop, and what it yields: {layer name: {kind: width}}."""
import json
import os
import tempfile

from cakes.errors import UsageError
from cakes.ops import DropoutSupernetOp
from cakes.ops import search
from cakes.ops.kernels import KINDS


def supernet_ops(supernet):
    """[(layer name, op)] of a network from to_supernet, in network order."""
    ops = [(name, m) for name, m in supernet.named_modules() if isinstance(m, DropoutSupernetOp)]
    if not ops:
        raise UsageError(f'{type(supernet).__name__} has no supernet op: give the network that '
                         'cakes.convert.to_supernet returned')
    return ops


def add_sparsity_grad(supernet, strength, reweight=True):
    """Call after loss.backward(): add strength * sign(scale) (times the branch's share of the kernel cost
    with `reweight`) to the gradient of every supernet BN scale."""
    ops = [op for _, op in supernet_ops(supernet)]
    if any(op.bn.weight.grad is None for op in ops):
        raise UsageError('supernet BN scales have no gradient: call add_sparsity_grad after loss.backward()')
    search.add_sparsity_grad(ops, strength, reweight)


def prune_config(supernet):
    """The widths pruning keeps in every layer (the project's rule: the C largest |BN scale| of n*C)."""
    names, ops = zip(*supernet_ops(supernet))
    return dict(zip(names, search.prune_config(ops)))


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


def save_config(config, path):
    """Write the config as JSON, atomically."""
    check_format(config)
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile('w', dir=folder, suffix='.tmp', delete=False) as f:
        json.dump(config, f, indent=1)
    os.replace(f.name, path)


def load_config(path):
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file '{path}' not found: write it with cakes.convert.save_config") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file '{path}' is not JSON ({e}): write it with cakes.convert.save_config") from None
    return check_format(config, f"config file '{path}'")
