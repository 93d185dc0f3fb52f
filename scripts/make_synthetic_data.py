"""Write a small dataset (two classes told apart only by motion direction) under ROOT, in the SSV1 layout or
the one --layout names."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.data.lists import LAYOUTS  # noqa: E402
from cakes.data.synthetic import make_synthetic_data  # noqa: E402
from cakes.cli import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('root', help='dataset root, to pass as --root_path')
    parser.add_argument('--train', type=int, default=200, help='training videos')
    parser.add_argument('--val', type=int, default=50, help='validation videos')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frames', type=int, default=8, help='frames per video')
    parser.add_argument('--layout', default='somethingv1', choices=list(LAYOUTS),
                        help='the --dataset whose layout to write (custom: ROOT/train.txt, val.txt, classes.txt)')
    parser.add_argument('--videos', action='store_true', help='video files instead of frame folders (layouts '
                        'with a video folder, and custom)')
    args = parser.parse_args(argv)
    make_synthetic_data(args.root, train=args.train, val=args.val, seed=args.seed, frames=args.frames,
                        layout=args.layout, videos=args.videos)
    print(f'wrote {args.train} training and {args.val} validation videos in the {args.layout} layout under '
          f'{args.root}')


if __name__ == '__main__':
    run_cli(main)
