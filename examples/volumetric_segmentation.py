"""CAKES on a network no one here wrote: MONAI's 3D UNet (batch norm) segmenting synthetic volumes.

Train the UNet, convert its Conv3d + BatchNorm3d pairs into dropout supernets over all seven kernel
kinds, search in this script's own loop (cost-weighted sparsity on the BN scales), prune, retrain the
pruned network from the supernet's kept channels, and print Dice, parameters and GFLOPs before and after.
Needs MONAI (`pip install monai`, or `pip install -e .[volumetric]`). A few minutes on two CPU cores:

    python examples/volumetric_segmentation.py
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cakes import convert  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from search_loop import add_search_flags, check_search_flags, fit, search_and_prune  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=32, help='volume side in voxels (a multiple of 4)')
    p.add_argument('--train', type=int, default=16, help='training volumes')
    p.add_argument('--val', type=int, default=8, help='validation volumes')
    add_search_flags(p, epochs=12, search_epochs=12, retrain_epochs=8, batch_size=4, lr=0.05)
    args = check_search_flags(p.parse_args(argv))
    if min(args.size, args.train, args.val, args.batch_size) < 1 or args.size % 4:
        raise UsageError('--size must be a positive multiple of 4; --train, --val and -b at least 1')
    return args


def volumes(count, size, rng):
    """(count, 1, S, S, S) noisy images of spheres and their (count, S, S, S) masks."""
    from monai.data.synthetic import create_test_image_3d
    pairs = [create_test_image_3d(size, size, size, num_objs=4, rad_max=size // 4, rad_min=2, noise_max=0.5,
                                  num_seg_classes=1, random_state=rng) for _ in range(count)]
    images = torch.from_numpy(np.stack([image for image, _ in pairs])).float().unsqueeze(1)
    masks = torch.from_numpy(np.stack([mask for _, mask in pairs])).long()
    return images, masks


def batches(images, masks, batch_size, shuffle):
    order = torch.randperm(len(images)) if shuffle else torch.arange(len(images))
    for i in range(0, len(images), batch_size):
        yield images[order[i:i + batch_size]], masks[order[i:i + batch_size]]


def dice(model, data):
    """Mean foreground Dice of the argmax segmentation over the validation volumes."""
    from monai.metrics import DiceMetric
    metric = DiceMetric(include_background=False)
    model.eval()
    with torch.no_grad():
        for image, mask in batches(*data, 4, shuffle=False):
            pred = F.one_hot(model(image).argmax(1), 2).movedim(-1, 1)
            metric(pred, F.one_hot(mask, 2).movedim(-1, 1))
    return float(metric.aggregate())


def main(argv=None):
    args = parse_args(argv)
    try:
        from monai.losses import DiceCELoss
        from monai.networks.nets import UNet
    except ImportError:
        raise UsageError('this example needs MONAI: pip install monai (or pip install -e .[volumetric])') from None
    torch.manual_seed(args.seed)
    rng = np.random.RandomState(args.seed)
    train_data, val_data = volumes(args.train, args.size, rng), volumes(args.val, args.size, rng)
    model = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
                 num_res_units=2, norm='batch')
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def train(net, epochs, sparsity, until=None):
        return fit(net, lambda: batches(*train_data, args.batch_size, shuffle=True),
                   lambda logits, mask: dice_ce(logits, mask.unsqueeze(1)), epochs, args.lr, sparsity, until)

    args.metric, args.example = 'Dice', torch.zeros(1, 1, args.size, args.size, args.size)
    return search_and_prune(model, train, lambda net: dice(net, val_data), convert.KINDS, args, print)


if __name__ == '__main__':
    run_cli(main)
