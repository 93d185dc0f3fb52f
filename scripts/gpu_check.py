"""Check a GPU machine before a long run: every visible GPU, each precision, both multi-GPU wrappers.

    CUDA_VISIBLE_DEVICES=0,...,7 python scripts/gpu_check.py

Trains a few steps of a small CAKES123D_P network (ResNet-50, few frames, small crops, dropout 0 so that the
wrappers compute the same function) in fp32, bf16 and fp16 under nn.DataParallel (one GPU: the bare model)
and under torchrun (NCCL, one process per GPU, each taking its share of the same global batch), then a dropout
supernet and a 10-crop evaluation. Checks: the dtype every convolution ran in (what --amp asks for), finite
losses, the wrappers' losses equal within a tolerance per precision, peak GPU memory below 90% of the
smallest GPU's. Then times the eval forward and the train step of conv3d and CAKES123D_P at -b 12 per GPU,
8x224x224, with and without channels_last_3d (scripts/benchmark_model.py). Prints a table; exit status 1
when a check fails, 2 without a GPU. Meant to take a few minutes on one GPU (not yet timed on one).
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.runtime import tune_process  # noqa: E402

tune_process()  # as main.py, before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.conv_config import resolve_conv_config  # noqa: E402
from cakes.data import Views  # noqa: E402
from cakes.engine import distributed  # noqa: E402
from cakes.engine.log import RunLog  # noqa: E402
from cakes.engine.loop import Run, forward_loss, to_device, update  # noqa: E402
from cakes.engine.precision import amp_dtype, grad_scaler  # noqa: E402
from cakes.engine.schedule import make_optimizer  # noqa: E402
from cakes.engine.views import average_views, view_logits  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models import TemporalModel  # noqa: E402

PRECISIONS = ('fp32', 'bf16', 'fp16')
DTYPES = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}
# Relative difference allowed between the wrappers' losses after a few steps (same data, same initial weights:
# only the order of the floating-point sums differs).
TOLERANCE = {'fp32': 1e-3, 'bf16': 3e-2, 'fp16': 1e-2}
MEMORY_SHARE = 0.9
NUM_CLASS = 174


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=3, help='training steps per precision and wrapper')
    p.add_argument('--num_segments', type=int, default=4, help='frames of the checks (timing: 8)')
    p.add_argument('--input_size', type=int, default=112, help='crop size of the checks (timing: 224)')
    p.add_argument('--batch_per_gpu', type=int, default=2, help='clips per GPU in the checks')
    p.add_argument('--timing_batch', type=int, default=12, help='clips per GPU in the timing (-b 12 per GPU)')
    p.add_argument('--repeats', type=int, default=3, help='timed repeats (the fastest is kept)')
    p.add_argument('--no_timing', action='store_true', help='only the checks')
    p.add_argument('--no_torchrun', action='store_true', help='skip the torchrun (DDP, NCCL) runs')
    p.add_argument('--json', action='store_true', help='end with one JSON line holding every row')
    p.add_argument('--worker', default='', help=argparse.SUPPRESS)  # a torchrun process: results to this file
    args = p.parse_args(argv)
    for name in ('steps', 'num_segments', 'input_size', 'batch_per_gpu', 'timing_batch', 'repeats'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name} must be at least 1 (got {getattr(args, name)})')
    if args.input_size < 32:
        raise UsageError(f'--input_size {args.input_size}: give at least 32 (the network downsamples 32x)')
    return args


# The checks: each returns (result text, passed).

def check_dtypes(seen, precision):
    """The convolutions ran in the precision's dtype, all of them."""
    expected = DTYPES[precision]
    found = sorted(seen)
    return ', '.join(found) or 'no convolution ran', found == [expected]


def check_finite(losses):
    text = ' '.join(f'{loss:.4f}' for loss in losses)
    return text, bool(losses) and all(loss == loss and abs(loss) != float('inf') for loss in losses)


def check_agree(losses, other, precision):
    """Per-step losses of two wrappers within the precision's relative tolerance."""
    if len(losses) != len(other) or not losses:
        return f'{len(losses)} and {len(other)} steps', False
    worst = max(abs(a - b) / max(abs(a), abs(b), 1e-12) for a, b in zip(losses, other))
    return f'max relative difference {worst:.2g} (tolerance {TOLERANCE[precision]:g})', worst <= TOLERANCE[precision]


def check_memory(peak, total):
    """Peak allocated bytes (the largest over the GPUs) against the smallest GPU's memory."""
    return f'{peak / 2 ** 30:.2f} GiB of {total / 2 ** 30:.1f} GiB', peak <= MEMORY_SHARE * total


def row(check, wrapper, precision, outcome):
    text, passed = outcome if isinstance(outcome, tuple) else (outcome, None)
    return {'check': check, 'wrapper': wrapper, 'precision': precision, 'result': text,
            'status': '' if passed is None else 'ok' if passed else 'FAIL'}


def format_table(rows):
    """Aligned columns, one row per line, a header first."""
    columns = ('check', 'wrapper', 'precision', 'result', 'status')
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    lines = ['  '.join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ['  '.join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return '\n'.join(lines)


def failed(rows):
    return [r for r in rows if r['status'] == 'FAIL']


# What runs on the GPUs.

@contextlib.contextmanager
def conv_dtypes():
    """The dtypes of every 3D convolution's output while the body runs, from any thread (DataParallel runs
    its replicas in threads; dropout supernets call F.conv3d themselves, nn.Conv3d calls it too)."""
    seen, lock, original = set(), threading.Lock(), F.conv3d

    def recording(*args, **kwargs):
        output = original(*args, **kwargs)
        with lock:
            seen.add(str(output.dtype).replace('torch.', ''))
        return output

    F.conv3d = recording
    try:
        yield seen
    finally:
        F.conv3d = original


def build(args, op_code='conv1_2_3d', search=False, precision='fp32'):
    """The check network, the same weights in every process (seed 0), its forward in the run's dtype."""
    torch.manual_seed(0)
    conv_config = None if search else resolve_conv_config('CAKES123D_P')
    model = TemporalModel(NUM_CLASS, args.num_segments, op_code=op_code, search=search, conv_config=conv_config,
                          dropout=0)
    return model.use_autocast(amp_dtype(None if precision == 'fp32' else precision))


def batches(args, count, clips):
    """Fixed uint8 clips and labels: every wrapper trains on the same global batches."""
    generator = torch.Generator().manual_seed(1)
    shape = (clips, args.num_segments * 3, args.input_size, args.input_size)
    return [(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
             torch.randint(0, NUM_CLASS, (clips,), generator=generator)) for _ in range(count)]


def train_steps(model, device, precision, data, average=None):
    """The training loop's step (engine.loop) on each batch: the losses and the convolutions' dtypes.
    `average`: the mean of a loss over the processes (torchrun), else the loss itself."""
    amp = None if precision == 'fp32' else precision
    settings = SimpleNamespace(amp=amp, clip_gradient=20.0, s=0.0, reweight=False)
    inner = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    run = Run(settings, model.train(), nn.CrossEntropyLoss(reduction='none').to(device),
              make_optimizer(inner, 0.01, 0.9, 3e-4), grad_scaler(device, amp), device, RunLog(None, console=False))
    losses = []
    with conv_dtypes() as seen:
        for clip, target in data:
            clip, target = to_device(clip, target, device)
            _, loss = forward_loss(run, clip, target)
            loss = loss.mean()
            losses.append(float(loss.detach()) if average is None else average(float(loss.detach())))
            update(run, loss, [])
    return losses, seen


def ten_crop_scores(model, device, precision, args, videos=2):
    """A 10-crop evaluation of `videos` synthetic videos (one clip each) at the check size: finite scores."""
    views = Views(crops=10)
    frames = torch.randint(0, 256, (args.num_segments, 3, args.input_size * 2, args.input_size * 3),
                           dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    clips = torch.stack([views.transform(frames, args.input_size)] * videos)
    amp = None if precision == 'fp32' else precision
    with torch.no_grad(), conv_dtypes() as seen:
        scores = average_views(view_logits(model.eval(), clips, device, amp, chunk=args.batch_per_gpu * gpus()))
    return scores, seen


def gpus():
    return torch.cuda.device_count()


def reset_memory():
    for d in range(gpus()):
        torch.cuda.reset_peak_memory_stats(d)


def peak_memory():
    return max(torch.cuda.max_memory_allocated(d) for d in range(gpus()))


def smallest_memory():
    return min(torch.cuda.get_device_properties(d).total_memory for d in range(gpus()))


def precision_supported(precision):
    return precision != 'bf16' or torch.cuda.is_bf16_supported()


def data_parallel_checks(args):
    """Each precision under nn.DataParallel (the bare model on one GPU): rows, and the losses per precision."""
    wrapper = 'DataParallel' if gpus() > 1 else 'one GPU'
    rows, losses = [], {}
    device = torch.device('cuda')
    for precision in PRECISIONS:
        if not precision_supported(precision):
            rows.append(row('precision', wrapper, precision, ('not supported by this GPU', None)))
            continue
        model = build(args, precision=precision).cuda()
        model = nn.DataParallel(model) if gpus() > 1 else model
        reset_memory()
        losses[precision], seen = train_steps(model, device, precision,
                                              batches(args, args.steps, args.batch_per_gpu * gpus()))
        rows += [row('conv dtypes', wrapper, precision, check_dtypes(seen, precision)),
                 row('losses', wrapper, precision, check_finite(losses[precision])),
                 row('peak memory', wrapper, precision, check_memory(peak_memory(), smallest_memory()))]
    rows += supernet_and_eval_checks(args, wrapper, device)
    return rows, losses


def supernet_and_eval_checks(args, wrapper, device):
    """A dropout supernet's steps (its sampled widths change every step) and a 10-crop evaluation, in bf16
    where the GPU has it, else fp16."""
    precision = 'bf16' if precision_supported('bf16') else 'fp16'
    wrap = (lambda m: nn.DataParallel(m)) if gpus() > 1 else (lambda m: m)
    model = wrap(build(args, 'conv1_2_3d_dropout', True, precision).cuda())
    losses, seen = train_steps(model, device, precision, batches(args, args.steps, args.batch_per_gpu * gpus()))
    rows = [row('supernet dtypes', wrapper, precision, check_dtypes(seen, precision)),
            row('supernet losses', wrapper, precision, check_finite(losses))]
    reset_memory()
    scores, seen = ten_crop_scores(wrap(build(args, precision=precision).cuda()), device, precision, args)
    finite = bool(torch.isfinite(scores).all())
    rows += [row('10-crop dtypes', wrapper, precision, check_dtypes(seen, precision)),
             row('10-crop scores', wrapper, precision, (f'{tuple(scores.shape)} finite' if finite else 'not finite',
                                                         finite)),
             row('10-crop memory', wrapper, precision, check_memory(peak_memory(), smallest_memory()))]
    return rows


def torchrun_worker(args):
    """One torchrun process: each precision under DDP on its share of the global batches; rank 0 writes the
    losses (averaged over the processes), dtypes and peak memory to args.worker."""
    with distributed.session():
        rank, world, device = distributed.rank(), distributed.world_size(), distributed.device()
        results = {}
        for precision in PRECISIONS:
            if not precision_supported(precision):
                continue
            model = nn.parallel.DistributedDataParallel(build(args, precision=precision).to(device),
                                                        device_ids=[device])
            share = [(clip.chunk(world)[rank], target.chunk(world)[rank]) for clip, target in
                     batches(args, args.steps, args.batch_per_gpu * world)]
            torch.cuda.reset_peak_memory_stats(device)
            losses, seen = train_steps(model, device, precision, share,
                                       lambda loss: distributed.all_reduce_sum([loss])[0] / world)
            peaks = distributed.gather(torch.cuda.max_memory_allocated(device))
            results[precision] = {'losses': losses, 'dtypes': sorted(set().union(*distributed.gather(sorted(seen)))),
                                  'peak': max(peaks)}
        if rank == 0:
            with open(args.worker, 'w') as f:
                json.dump(results, f)


def torchrun_checks(args, dp_losses):
    """torchrun with one process per GPU: its rows, and its losses against the DataParallel ones."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, 'results.json')
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={gpus()}',
                   os.path.abspath(__file__), '--worker', out, '--steps', str(args.steps),
                   '--num_segments', str(args.num_segments), '--input_size', str(args.input_size),
                   '--batch_per_gpu', str(args.batch_per_gpu)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode or not os.path.isfile(out):
            last = (done.stderr.strip().splitlines() or ['no output'])[-1]
            return [row('torchrun', 'torchrun', '-', (f'exit {done.returncode}: {last[:120]}', False))]
        with open(out) as f:
            results = json.load(f)
    rows = []
    for precision, result in results.items():
        rows += [row('conv dtypes', 'torchrun', precision, check_dtypes(result['dtypes'], precision)),
                 row('losses', 'torchrun', precision, check_finite(result['losses'])),
                 row('peak memory', 'torchrun', precision, check_memory(result['peak'], smallest_memory()))]
        if precision in dp_losses:
            rows.append(row('losses agree', 'DP vs torchrun', precision,
                            check_agree(dp_losses[precision], result['losses'], precision)))
    return rows


def timing_rows(args):
    """benchmark_model's eval forward and train step at -b timing_batch on one GPU, 8x224x224."""
    import benchmark_model
    settings = SimpleNamespace(impls=['plain', 'channels_last'], num_segments=8, input_size=224,
                               batch=args.timing_batch, repeats=args.repeats, no_train=False)
    rows = []
    for setting in ('conv3d', 'conv1_2_3d:CAKES123D_P'):
        for timed in benchmark_model.time_setting(setting, settings, torch.device('cuda')):
            rows.append(row(f"{timed['mode']} ms/clip", f"{setting.split(':')[-1]} {timed['impl']}", 'fp32',
                            f"{timed['ms_per_clip']:.2f} ({args.timing_batch}x8x224x224 on one GPU)"))
    return rows


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise UsageError('no GPU visible (torch.cuda.is_available() is False): run gpu_check.py on the GPU '
                         'machine, with CUDA_VISIBLE_DEVICES naming the GPUs the run will use')
    if args.worker:
        return torchrun_worker(args)
    torch.backends.cudnn.benchmark = False  # the shapes change (dropout supernet); timing below sets it
    print(f'{gpus()} GPU(s): {torch.cuda.get_device_name(0)}; torch {torch.__version__}', flush=True)
    rows, dp_losses = data_parallel_checks(args)
    if not args.no_torchrun:
        rows += torchrun_checks(args, dp_losses)
    if not args.no_timing:
        torch.backends.cudnn.benchmark = True  # fixed shapes: as a plain network's run would time them
        rows += timing_rows(args)
    print(format_table(rows))
    bad = failed(rows)
    print(f'{len(bad)} check(s) failed' if bad else 'all checks passed')
    if args.json:
        print(json.dumps(rows))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
