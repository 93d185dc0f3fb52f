"""Pruning to a time budget against pruning to FLOPs, measured on the device at hand, e.g.

    python scripts/benchmark_time_budget.py --batch 1 --tables tables/          # eval, batch 1, 8 frames of 224
    python scripts/benchmark_time_budget.py --batch 8 --mode train --tables tables/

One conv1_2_3d search supernet (random weights, BN scales drawn uniformly from [0, 1) with --seed), pruned four
ways: (a) the released rule; (b) --target_gflops at --flops_share (0.8) of (a)'s FLOPs; (c) --target_ms at
--time_share (0.9) of (a)'s measured time; (d) --target_ms at (b)'s measured time. For each: measured ms, predicted
ms (the latency table, cakes.ops.latency), GFLOPs and kept |BN scale|, with (c) and (d) beside their targets.
Then the predicted and measured time of the released configs (--configs) on the same table. Every network is
timed in a fresh process with the one it is compared with ((a) with (c), (b) with (d); the released configs two
by two), in alternating rounds, the fastest of --repeats steps after one untimed
(cakes.models.latency.VideoNetwork.measure; many networks in one process run slower than any of them alone). The
table is read from --tables DIR when measured there before, else measured and written there (or to the cache
folder). The process is set up as main.py sets it up (cakes/runtime.py).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.runtime import tune_process  # noqa: E402

tune_process()  # before torch loads, as main.py

import torch  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.configs import RELEASED  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models import create_model  # noqa: E402
from cakes.models.budget import prune_video_to_budget, video_flops  # noqa: E402
from cakes.models.latency import VideoNetwork, full_config  # noqa: E402
from cakes.ops import latency, prune_config  # noqa: E402
from cakes.ops.search import kept_scale, prune_to_time  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--op_code', default='conv1_2_3d')
    p.add_argument('--arch', default='resnet50')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--batch', type=int, default=1, help='clips per device')
    p.add_argument('--mode', choices=('eval', 'train'), default='eval')
    p.add_argument('--seed', type=int, default=0, help="the supernet's BN scales")
    p.add_argument('--flops_share', type=float, default=0.8, help="(b)'s FLOPs budget as a share of (a)'s FLOPs")
    p.add_argument('--time_share', type=float, default=0.9, help="(c)'s time target as a share of (a)'s time")
    p.add_argument('--configs', nargs='*', default=None, metavar='CONFIG',
                   help="released configs to predict and measure too (default: those of the op code's kinds)")
    p.add_argument('--repeats', type=int, default=5,
                   help='timed rounds after one untimed; the fastest step of each network counts')
    p.add_argument('--tables', metavar='DIR', default=None,
                   help='read the latency table from DIR/MODE_bBATCH.json when there, else measure and write it')
    args = p.parse_args(argv)
    for name in ('num_segments', 'input_size', 'batch', 'repeats'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name} must be at least 1')
    return args


def supernet_of(args):
    """The search supernet, its BN scales uniform in [0, 1) from --seed."""
    model = create_model(op_code=args.op_code, num_segments=args.num_segments, arch=args.arch, search=True,
                         dropout=0)
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for op in model.cakes_ops():
            op.bn.weight.copy_(torch.rand(op.bn.num_features, generator=generator))
    return model


def kept(searchable, config):
    return sum(float(kept_scale(op, torch.tensor([[widths.get(kind, 0) for kind in op.kinds]])))
               for op, widths in zip(searchable, config))


def released_configs(args, table):
    """The released configs whose kinds the op code's ops have (all of them by default)."""
    names = args.configs if args.configs is not None else list(RELEASED)
    kinds = set(table.shapes[0].kinds)
    return {name: RELEASED[name] for name in names if {k for b in RELEASED[name] for k in b} <= kinds}


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.backends.cudnn.benchmark = device.type == 'cuda'  # as main.py runs a pruned network without --seed
    setting = latency.Setting(device, args.batch, None, device.type == 'cpu', args.mode == 'train')  # main.py's form
    network = VideoNetwork(args.op_code, args.arch, args.num_segments, args.input_size)
    path = None if args.tables is None else os.path.join(args.tables, f'{args.mode}_b{args.batch}.json')
    if path is not None:
        os.makedirs(args.tables, exist_ok=True)
    table = network.table(setting, path, log=lambda line: print(line, flush=True))
    key = table.key
    print(f"{key['network']}: {key['mode']}, batch {key['batch']}, {key['dtype']}, {key['memory_format']}, "
          f"{key['device']}, torch {key['torch']}; table measured in {table.seconds:.0f} s", flush=True)

    supernet = supernet_of(args)
    searchable = supernet.cakes_ops()
    flops = video_flops(args.op_code, args.arch, args.num_segments, args.input_size)
    configs = {'(a) released rule': prune_config(searchable)}
    target_flops = args.flops_share * flops(configs['(a) released rule'])
    configs['(b) FLOPs budget'] = prune_video_to_budget(supernet, target_flops, args.input_size).config
    first = network.measure(configs, setting, args.repeats, per_process=2)
    targets = {'(c) time budget': args.time_share * first['(a) released rule'],
               '(d) time of (b)': first['(b) FLOPs budget']}
    budgets = {name: prune_to_time(searchable, table, target) for name, target in targets.items()}
    configs.update({name: budget.config for name, budget in budgets.items()})
    released = released_configs(args, table)
    # Two to a fresh process, in alternating rounds: each budget beside the network it is compared with.
    pairs = ['(a) released rule', '(c) time budget', '(b) FLOPs budget', '(d) time of (b)']
    measured = network.measure({**{name: configs[name] for name in pairs}, **released}, setting, args.repeats,
                               per_process=2)

    print(f"(a), (b) measured first: {first['(a) released rule']:.1f} ms, {first['(b) FLOPs budget']:.1f} ms; "
          f'targets (c) {targets["(c) time budget"]:.1f} ms, (d) {targets["(d) time of (b)"]:.1f} ms')
    print(f'{"config":<22} {"measured ms":>12} {"predicted ms":>13} {"error":>7} {"GFLOPs":>8} {"kept |BN|":>10} '
          f'{"target ms":>10} {"/ target":>9}')
    for name, config in {**configs, **released}.items():
        predicted = latency.predicted_time(full_config(config, table), table)
        ms = measured[name]
        scale = f'{kept(searchable, config):10.2f}' if name in configs else f'{"":>10}'
        target = f'{targets[name]:10.1f} {ms / targets[name]:9.3f}' if name in targets else ''
        print(f'{name:<22} {ms:12.1f} {predicted:13.1f} {predicted / ms - 1:+7.1%} {flops(config) / 1e9:8.2f} '
              f'{scale} {target}')
    for name, budget in budgets.items():
        print(f'{name}: optimum within {budget.bound - budget.kept:.4f} of the kept |BN scale| '
              f'({(budget.bound - budget.kept) / budget.bound:.2e} of it)')
    print(f'done in {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
    run_cli(main)
