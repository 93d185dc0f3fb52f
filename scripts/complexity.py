"""Print the parameters and FLOPs of a model setting, e.g.
    python scripts/complexity.py --op_code conv1_2_3d --conv_config CAKES123D_P --num_segments 8
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from cakes import ops  # noqa: E402

from cakes.models import create_model  # noqa: E402
from cakes.complexity import count_flops, count_params  # noqa: E402
from cakes.conv_config import read_user_configs  # noqa: E402
from cakes.cli import run_cli  # noqa: E402

CONFIG_FILE = os.path.join(ROOT, 'config.py')  # your conv_configs


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--op_code', default='conv3d', choices=list(ops.OP_CODES))
    p.add_argument('--conv_config', default='', help='a key of config.conv_configs or a conv_config.txt path')
    p.add_argument('--search', action='store_true', help='count the supernet')
    p.add_argument('--arch', default='resnet50', choices=['resnet50', 'resnet101'])
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--num_class', type=int, default=174)
    p.add_argument('--json', action='store_true', help='print only a JSON line {"params": N, "flops": N}')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    configs = read_user_configs(CONFIG_FILE) if args.conv_config else None
    # The meta device counts shapes without computing; a dropout supernet's channel choice needs values.
    with torch.device('cpu' if ops.op_spec(args.op_code).family == 'dropout' else 'meta'):
        model = create_model(op_code=args.op_code, conv_config=args.conv_config, num_class=args.num_class,
                             num_segments=args.num_segments, arch=args.arch, search=args.search, configs=configs)
    params, flops = count_params(model), count_flops(model, args.num_segments, args.input_size)
    if args.json:  # for programs: the JSON line alone
        print(json.dumps({'params': params, 'flops': flops}))
        return
    name = args.op_code + (f' [{args.conv_config}]' if args.conv_config else '') + (' search' if args.search else '')
    print(f'{"setting":<40} {"params (M)":>11} {"GFLOPs":>9}')
    print(f'{name:<40} {params / 1e6:>11.3f} {flops / 1e9:>9.2f}')
    print(f'({args.arch}, {args.num_segments} frames, {args.input_size}x{args.input_size}, {args.num_class} classes)')


if __name__ == '__main__':
    run_cli(main)
