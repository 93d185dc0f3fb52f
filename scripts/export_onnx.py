"""Export a trained network to ONNX for inference, and check it against PyTorch with ONNX Runtime.

    python scripts/export_onnx.py --resume CKPT OUT.onnx [--input_size 224]

The exported graph is the eval-mode network with every BN folded into its convolution
(cakes.models.inference), input `clips` (batch, T*3, S, S) float32 normalised as main.py feeds the network
(batch size dynamic), output `logits` (batch, classes). One file, weights inside. The export then runs a random
clip through ONNX Runtime and the PyTorch model and prints their largest difference; above 1e-3 of the largest
logit it fails (exit 1).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cakes import ops  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.cli.model_flags import add_model_flags, load_network  # noqa: E402
from cakes.conv_config import read_user_configs  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models.export import export_onnx, onnx_session  # noqa: E402

TOLERANCE = 1e-3  # relative to the largest logit
CONFIG_FILE = os.path.join(ROOT, 'config.py')  # your conv_configs


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out', metavar='OUT.onnx')
    add_model_flags(p, names=False)
    return p.parse_args(argv)


def largest_difference(model, path, clip):
    """(largest |ONNX Runtime - PyTorch| over the logits, the largest |PyTorch logit|)."""
    with torch.no_grad():
        expected = model(clip).numpy()
    got = onnx_session(path).run(['logits'], {'clips': clip.numpy()})[0]
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


def main(argv=None):
    args = parse_args(argv)
    configs = read_user_configs(CONFIG_FILE) if args.conv_config else None
    model, description, input_size = load_network(args, configs, names=False)
    if ops.op_spec(description['op_code']).family == 'dropout':
        raise UsageError(f"{args.resume} is a dropout supernet ({description['op_code']}), which picks its channels "
                         'from the BN scales as it runs: prune it (main.py --prune) and export the pruned network')
    shape = (description['num_segments'] * 3, input_size, input_size)
    torch.manual_seed(0)
    export_onnx(model, torch.randn(2, *shape), args.out)
    # The unfolded model: the check covers the folding as well as the export, on another batch size.
    difference, scale = largest_difference(model, args.out, torch.randn(1, *shape))
    relative = difference / max(scale, 1e-12)
    print(f'exported {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB, input clips (batch, {shape[0]}, '
          f'{shape[1]}, {shape[2]}), output logits (batch, {description["num_class"]})); ONNX Runtime vs PyTorch: '
          f'largest difference {difference:.3g} ({relative:.3g} of the largest logit)')
    if relative > TOLERANCE:
        print(f'error: ONNX Runtime differs from PyTorch by {relative:.3g} of the largest logit (more than '
              f'{TOLERANCE:g}): do not use {args.out}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
