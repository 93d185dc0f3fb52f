"""Clips per second of the data pipeline in one process, or of the plain PIL pipeline with --reference.

Runs on one thread, as each DataLoader worker does. The last line printed is {"clips_per_s": X}.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cakes.data import DATASETS, build_dataset  # noqa: E402
from cakes.data.reference import pil_item  # noqa: E402
from cakes.cli import run_cli  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--root_path', required=True)
    parser.add_argument('--dataset', choices=DATASETS, default='somethingv1')
    parser.add_argument('--num_segments', type=int, default=8)
    parser.add_argument('--split', choices=('train', 'val'), required=True)
    parser.add_argument('--input_size', type=int, default=224)
    parser.add_argument('--limit', type=int, help='clips to load (default: the whole list)')
    path = parser.add_mutually_exclusive_group()
    path.add_argument('--reference', action='store_true', help='the plain PIL pipeline')
    path.add_argument('--uint8', action='store_true', help='uint8 clips, to be normalised on the device')
    return parser.parse_args(argv)


def clips_per_second(args):
    dataset = build_dataset(args.dataset, args.root_path, args.split, args.num_segments, args.input_size,
                            uint8=args.uint8)
    load = (lambda index: pil_item(dataset, index)) if args.reference else dataset.__getitem__
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    torch.set_num_threads(1)
    np.random.seed(0)
    start = time.perf_counter()
    for index in range(count):
        load(index)
    seconds = time.perf_counter() - start
    path = 'reference PIL' if args.reference else 'uint8' if args.uint8 else 'float'
    print(f'{args.dataset} {args.split}, {path} path: {count} clips in {seconds:.2f} s')
    return count / seconds


def main(argv=None):
    args = parse_args(argv)
    rate = clips_per_second(args)
    print(json.dumps({'clips_per_s': round(rate, 1)}))


if __name__ == '__main__':
    run_cli(main)
