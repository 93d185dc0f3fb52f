"""Clips per second of the whole training step (loading and model) and where its time goes.

    python scripts/benchmark_train.py ROOT --op_code conv1_2_3d --conv_config CAKES123D_P -b 8 -j 8
    python scripts/benchmark_train.py --synthetic 64 --num_segments 4 --input_size 112 -b 4 -j 2 --channels_last

It runs main.py's own loader and training step (uint8 clips normalised on the device, schedule-free SGD
with the released settings) on the training list of ROOT, or on a synthetic dataset of N videos made in a
temporary folder. "waiting for data" is the time the step waits for the loader's next batch, "computing"
the rest: the copy to the device, normalisation, forward, backward and the optimizer step (synchronised on
CUDA). The first --warmup steps (worker start-up, first-call allocations) are not timed.
"""
import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.runtime import tune_process  # noqa: E402

tune_process()  # as main.py runs

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cakes import data  # noqa: E402

import main as training  # noqa: E402
from cakes.data.synthetic import make_synthetic_data  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.engine.distributed import unwrap  # noqa: E402
from cakes.engine.loaders import make_loader  # noqa: E402
from cakes.engine.log import RunLog  # noqa: E402
from cakes.engine.loop import Run, forward_loss, to_device, update  # noqa: E402
from cakes.engine.precision import AMP_DTYPES, grad_scaler  # noqa: E402
from cakes.engine.run import check_batch, place_model  # noqa: E402
from cakes.engine.schedule import make_optimizer  # noqa: E402
from cakes.models import create_model  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('root', nargs='?', help='dataset root (as --root_path of main.py)')
    p.add_argument('--synthetic', type=int, metavar='N', help='make N synthetic training videos in a temp folder')
    p.add_argument('--dataset', default='somethingv1', choices=data.DATASETS)
    p.add_argument('--op_code', default='conv3d')
    p.add_argument('--conv_config', default='', help='a key of conv_configs or a conv_config.txt')
    p.add_argument('--search', action='store_true', help='the supernet of --op_code')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('-b', '--batch', type=int, default=8, help='clips per step')
    p.add_argument('-j', '--workers', type=int, default=4, help='data loader workers')
    p.add_argument('--amp', nargs='?', const='bf16', choices=list(AMP_DTYPES), default=None)
    p.add_argument('--channels_last', action='store_true')
    p.add_argument('--iterations', type=int, default=10, help='timed steps')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    args = p.parse_args(argv)
    if (args.root is None) == (args.synthetic is None):
        raise UsageError('give either a dataset ROOT or --synthetic N')
    if args.iterations < 1 or args.warmup < 0:
        raise UsageError('--iterations must be at least 1 and --warmup at least 0')
    return args


def main_args(args, root, out):
    """main.py's settings for this benchmark (its parser gives every default the training uses) and the widths of
    its conv_config."""
    argv = ['--root_path', root, '--checkpoint_dir', out, '--dataset', args.dataset, '--op_code', args.op_code,
            '--num_segments', str(args.num_segments), '--input_size', str(args.input_size),
            '-b', str(args.batch), '-j', str(args.workers), '--pretrained', 'none', '--warm', '0']
    argv += ['--conv_config', args.conv_config] if args.conv_config else []
    argv += ['--search'] if args.search else []
    argv += ['--amp', args.amp] if args.amp else []
    argv += ['--channels_last' if args.channels_last else '--no_channels_last']  # main.py's CPU default is on
    settings, conv_config, _ = training.parse_settings(argv)
    # The workers asked for, even above the CPUs (main.py would use at most as many): the benchmark measures them.
    return dataclasses.replace(settings, workers=args.workers), conv_config


def batches(loader):
    """The training loader's batches, epoch after epoch."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def measure(args, root, out):
    margs, conv_config = main_args(args, root, out)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_batch(margs.batch_size, gpus)
    num_class = data.num_classes(margs.dataset, root)
    model = create_model(op_code=margs.op_code, conv_config=conv_config, num_class=num_class,
                         num_segments=margs.num_segments, arch=margs.arch, search=margs.search, dropout=margs.dropout)
    model, device = place_model(margs, model, gpus)
    optimizer = make_optimizer(unwrap(model), margs.lr, margs.momentum, margs.weight_decay)
    criterion = nn.CrossEntropyLoss(reduction='none').to(device)
    run = Run(margs, model, criterion, optimizer, grad_scaler(device, margs.amp), device, RunLog(None, console=False))
    model.train()
    stream = batches(make_loader(margs, 'train', margs.batch_size))
    wait = compute = 0.0
    for step in range(args.warmup + args.iterations):
        if step == args.warmup:
            wait = compute = 0.0
        start = time.perf_counter()
        clip, target = next(stream)
        got = time.perf_counter()
        clip, target = to_device(clip, target, device)
        _, loss = forward_loss(run, clip, target)
        update(run, loss.mean(), searchable=[])
        if device.type == 'cuda':
            torch.cuda.synchronize()
        wait += got - start
        compute += time.perf_counter() - got
    steps = args.iterations
    total = wait + compute
    return {'device': str(device), 'threads': torch.get_num_threads(), 'op_code': args.op_code,
            'conv_config': args.conv_config, 'search': args.search, 'num_segments': args.num_segments,
            'input_size': args.input_size, 'batch': args.batch, 'workers': args.workers, 'amp': args.amp,
            'channels_last': args.channels_last, 'iterations': steps, 'clips_per_s': steps * args.batch / total,
            'step_ms': 1e3 * total / steps, 'wait_ms': 1e3 * wait / steps, 'compute_ms': 1e3 * compute / steps,
            'wait_share': wait / total}


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if args.synthetic is not None:
            root = os.path.join(tmp, 'data')
            make_synthetic_data(root, train=args.synthetic, val=1, frames=max(args.num_segments, 8))
        result = measure(args, root, os.path.join(tmp, 'out'))
    print(f"{result['device']}, {result['threads']} threads, {args.op_code}"
          f"{':' + args.conv_config if args.conv_config else ''}, {args.num_segments}x{args.input_size}x"
          f"{args.input_size} clips, batch {args.batch}, -j {args.workers}, amp {args.amp or 'off'}, "
          f"channels_last {'on' if args.channels_last else 'off'}, {args.iterations} steps")
    print(f'{"":<18} {"ms/step":>9} {"share":>7}')
    for label, key, share in (('waiting for data', 'wait_ms', result['wait_share']),
                              ('computing', 'compute_ms', 1 - result['wait_share']),
                              ('whole step', 'step_ms', 1.0)):
        print(f'{label:<18} {result[key]:>9.1f} {100 * share:>6.1f}%')
    print(f"{result['clips_per_s']:.2f} clips/s")
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    run_cli(main)
