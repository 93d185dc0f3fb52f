"""Measure the latency table of a video network on the device at hand: per distinct CAKES op shape, the time of
each kernel kind against its width, and the rest of the network (cakes/ops/latency.py), e.g.

    python scripts/latency_table.py --op_code conv1_2_3d --num_segments 8 --input_size 224     # eval, batch 1
    python scripts/latency_table.py --mode train --batch 8 --table train_b8.json --plot train_b8.png

The table is keyed by the device, torch's version, the op shapes, dtype, memory format, mode and batch; it is
written to --table FILE (read from it when it exists), else to the cache folder ($CAKES_LATENCY_CACHE, default
~/.cache/cakes/latency), where later runs of the same key find it. --check_ops N times N width mixes of each op
shape as whole ops, --check_configs CONFIG ... the networks of those configs, beside their predicted time;
--plot draws time against width, one panel per op shape. The process is set up as main.py sets it up
(cakes/runtime.py; on CUDA, cudnn.benchmark on, as a run without --seed).
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
from cakes.conv_config import resolve_conv_config  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.files import write_atomic  # noqa: E402
from cakes.models import DEPTHS  # noqa: E402
from cakes.models.latency import VideoNetwork, full_config  # noqa: E402
from cakes.ops import OP_CODES, op_spec  # noqa: E402
from cakes.ops import latency  # noqa: E402
from cakes.ops.search import width_combinations  # noqa: E402

AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    searchable = [code for code in OP_CODES if op_spec(code).family != 'plain']
    p.add_argument('--op_code', default='conv1_2_3d', choices=searchable)
    p.add_argument('--arch', default='resnet50', choices=list(DEPTHS))
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--num_class', type=int, default=174, help='classes of the classifier (part of the rest)')
    p.add_argument('--batch', type=int, default=1, help='clips per device')
    p.add_argument('--amp', choices=list(AMP), default=None, help='autocast dtype, as main.py --amp')
    p.add_argument('--mode', choices=('eval', 'train'), default='eval',
                   help='eval forward, or train step (forward, input and weight gradients)')
    form = p.add_mutually_exclusive_group()
    form.add_argument('--channels_last', action='store_true', help='default on a CPU, as main.py')
    form.add_argument('--no_channels_last', action='store_true', help='default on a GPU, as main.py')
    p.add_argument('--repeats', type=int, default=3, help='timed rounds; the fastest of each step counts')
    p.add_argument('--table', metavar='FILE.json', default=None,
                   help='read the table from FILE when it exists (measured for this run), else measure and write it')
    p.add_argument('--plot', metavar='FILE.png', default=None, help='draw time against width per op shape')
    p.add_argument('--check_ops', type=int, default=0, metavar='N',
                   help='time N random width mixes of each op shape as whole ops, beside their prediction')
    p.add_argument('--check_configs', nargs='+', default=[], metavar='CONFIG',
                   help='time the networks of these configs (config.py keys or conv_config.txt files) beside their '
                        'predicted time')
    args = p.parse_args(argv)
    for name in ('num_segments', 'input_size', 'num_class', 'batch', 'repeats'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name} must be at least 1')
    return args


def setting_of(args, device):
    channels_last = args.channels_last or (not args.no_channels_last and device.type == 'cpu')
    return latency.Setting(device, args.batch, AMP.get(args.amp), channels_last, args.mode == 'train')


def network_of(args):
    return VideoNetwork(args.op_code, args.arch, args.num_segments, args.input_size, args.num_class)


def check_ops(table, setting, count, repeats, log=print):
    """Per distinct op shape, `count` random width mixes (seeded) timed as whole ops beside their prediction."""
    generator = torch.Generator().manual_seed(0)
    errors = []
    for shape in dict.fromkeys(table.shapes):
        times = next(t for t in table.op_times() if t.shape == shape)
        every = width_combinations(len(shape.kinds), shape.width)
        rows = every[torch.randperm(len(every), generator=generator)[:count]]
        measured = latency.time_ops(shape, setting, rows.tolist(), repeats)
        for widths, predicted, ms in zip(rows.tolist(), times(rows).tolist(), measured):
            errors.append(predicted / ms - 1)
            log(f'  {shape.text():<32} {str(widths):<16} predicted {predicted:8.2f} ms, measured {ms:8.2f} ms '
                f'({predicted / ms - 1:+.1%})')
    if errors:
        log(f'whole ops: prediction off by {sum(abs(e) for e in errors) / len(errors):.1%} on average, at most '
            f'{max(abs(e) for e in errors):.1%}')


def check_configs(table, setting, args, log=print):
    """The networks of the named configs, timed two to a fresh process in alternating rounds (the fastest of
    `repeats` steps each), beside their predicted time."""
    configs = {name: resolve_conv_config(name) for name in args.check_configs}
    predicted = {name: latency.predicted_time(full_config(config, table), table) for name, config in configs.items()}
    measured = network_of(args).measure(configs, setting, args.repeats, per_process=2)
    for name, ms in measured.items():
        log(f'  {name:<24} predicted {predicted[name]:9.1f} ms, measured {ms:9.1f} ms '
            f'({predicted[name] / ms - 1:+.1%})')


def plot(table, path):
    """Time against width of every kind (and the stacked plan), one panel per op shape: the grid's points joined
    by the lines the predictions interpolate on."""
    from matplotlib.figure import Figure
    from cakes.plot import png_bytes
    shapes = list(dict.fromkeys(table.shapes))
    columns = min(len(shapes), 2)
    rows = -(-len(shapes) // columns)
    figure = Figure(figsize=(7 * columns, 3.6 * rows), layout='constrained')
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, shape in zip(axes, shapes):
        entry = table.entry(shape)
        for name, ms in entry['ms'].items():
            widths = entry['stacked_widths' if name == 'stacked' else 'widths']
            ax.plot(widths, ms, '.-', label=name, markersize=4, linewidth=0.8)
        count = table.shapes.count(shape)
        ax.set_title(f'{shape.text()} ({count} op{"s" * (count > 1)})', fontsize=10)
        ax.set_xlabel('output channels of one convolution (width)')
        ax.set_ylabel('ms')
        ax.set_xlim(0, shape.width + 1)
        ax.set_ylim(0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(shapes):]:
        ax.set_visible(False)
    key = table.key
    figure.suptitle(f"{key['network']}: {key['mode']}, batch {key['batch']}, {key['dtype']}, {key['memory_format']}"
                    f"\n{key['device']}, torch {key['torch']}", fontsize=10)
    data = png_bytes(figure)
    write_atomic(path, lambda f: f.write(data))


def main(argv=None):
    args = parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.backends.cudnn.benchmark = device.type == 'cuda'  # as main.py runs a pruned network without --seed
    start = time.perf_counter()
    setting = setting_of(args, device)
    table = network_of(args).table(setting, args.table, args.repeats)
    key = table.key
    print(f"{key['network']}: {key['mode']}, batch {key['batch']}, {key['dtype']}, {key['memory_format']}, "
          f"{key['device']}, torch {key['torch']}")
    print(f'rest of the network {table.rest_ms:.1f} ms; checked on another mix: predicted '
          f"{table.check['predicted_ms']:.1f} ms, measured {table.check['measured_ms']:.1f} ms")
    if args.check_ops:
        check_ops(table, setting, args.check_ops, args.repeats)
    if args.check_configs:
        check_configs(table, setting, args)
    if args.plot:
        plot(table, args.plot)
        print(f'wrote {args.plot}')
    print(f'done in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    run_cli(main)
