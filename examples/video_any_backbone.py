"""CAKES on any video backbone: torchvision's R3D-18 on the synthetic Something-Something V1 data.

The clips come through the project's own data pipeline (cakes.data.build_dataset: TSN sampling, crops,
flips with label swaps); the network is torchvision's, untouched. Train it, convert its 3x3x3 Conv3d +
BatchNorm3d pairs into dropout supernets over the three video kinds (kxkxk, 1xkxk, kx1x1), search in this
script's own loop, prune, retrain, and print accuracy, parameters and GFLOPs before and after:

    python examples/video_any_backbone.py
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from cakes import convert  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.data import build_dataset  # noqa: E402
from cakes.data.lists import LAYOUTS  # noqa: E402
from cakes.data.synthetic import make_synthetic_data  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from search_loop import add_search_flags, check_search_flags, fit, search_and_prune  # noqa: E402


class ClipModel(nn.Module):
    """The pipeline's (B, T*3, H, W) batches as the (B, 3, T, H, W) clips torchvision's video nets read."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x.unflatten(1, (-1, 3)).transpose(1, 2))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default='', help='an SSV1 dataset root, written with synthetic data when it has none (default: a temporary folder)')
    p.add_argument('--train', type=int, default=96, help='training videos written')
    p.add_argument('--val', type=int, default=48, help='validation videos written')
    p.add_argument('--num_segments', type=int, default=4)
    p.add_argument('--input_size', type=int, default=32)
    p.add_argument('-j', '--workers', type=int, default=0)
    add_search_flags(p, epochs=6, search_epochs=8, retrain_epochs=6, batch_size=8, lr=0.01)
    args = check_search_flags(p.parse_args(argv))
    if min(args.train, args.val, args.batch_size, args.num_segments, args.input_size) < 1:
        raise UsageError('--train, --val, -b, --num_segments and --input_size must be at least 1')
    return args


def accuracy(model, loader):
    """Top-1 accuracy in percent over the validation list."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for clip, label in loader:
            correct += int((model(clip).argmax(1) == label).sum())
            total += len(label)
    return 100.0 * correct / total


def run(args, root):
    from torchvision.models.video import r3d_18
    if not os.path.exists(os.path.join(root, LAYOUTS['somethingv1'].category)):
        make_synthetic_data(root, train=args.train, val=args.val, seed=args.seed)
    sets = {split: build_dataset('somethingv1', root, split, args.num_segments, args.input_size)
            for split in ('train', 'val')}
    loaders = {split: torch.utils.data.DataLoader(data, args.batch_size, shuffle=split == 'train',
                                                  num_workers=args.workers, drop_last=split == 'train')
               for split, data in sets.items()}
    model = ClipModel(r3d_18(weights=None, num_classes=174))

    def train(net, epochs, sparsity, until=None):
        return fit(net, lambda: loaders['train'], F.cross_entropy, epochs, args.lr, sparsity, until)

    args.metric = 'Prec@1'
    args.example = torch.zeros(1, args.num_segments * 3, args.input_size, args.input_size)
    return search_and_prune(model, train, lambda net: accuracy(net, loaders['val']), convert.VIDEO_KINDS, args, print)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # the pipeline's crops, flips and frame offsets
    if args.data:
        return run(args, args.data)
    with tempfile.TemporaryDirectory() as root:
        return run(args, root)


if __name__ == '__main__':
    run_cli(main)
