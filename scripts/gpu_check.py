"""Check a GPU machine before a long run: every visible GPU, each precision, both multi-GPU wrappers, main.py
itself, and the speed of main.py's default path.

    CUDA_VISIBLE_DEVICES=0,...,7 python scripts/gpu_check.py
    python scripts/gpu_check.py --device cpu    # every stage on the CPU, tiny shapes: no stage breaks unseen

Stages (--stages picks some; each prints rows of one table at the end):
- precision: a few training steps of a small CAKES123D_P network (ResNet-50, few frames, small crops, dropout 0
  so that the wrappers compute the same function) in fp32, bf16 and fp16 under nn.DataParallel over the visible
  GPUs (one GPU: the bare model), then a dropout supernet and a 10-crop evaluation. With --device cpu, threads
  stand in for the replicas of 2 GPUs (ThreadReplicas), so that what runs in DataParallel's replica threads (the
  plan choice under its lock, the model's own autocast, the convolution recorder) runs in threads here too.
- torchrun: the same steps and the supernet under DistributedDataParallel, one process per GPU (NCCL; --device
  cpu: 2 processes, gloo), each on its share of the same global batches; the losses against the precision stage's.
- main: main.py (CAKES_PLAN unset) trains one epoch of a tiny synthetic dataset with validation, then a resume
  trains and validates a second one, which must run the plans its checkpoint holds, choose and time none (it
  runs with the plans' choice refused: a key missing from the checkpoint stops it) and leave them as they were.
  Alone (DataParallel over the GPUs) and under torchrun (validation under DDP; --sync_bn on GPUs).
- timing: scripts/benchmark_model.py's eval forward and train step of conv3d and CAKES123D_P at -b 12 per GPU,
  8x224x224, in the branch form and by plans (NCDHW and channels_last_3d each), cudnn.benchmark as main.py sets
  it; the form main.py runs by default is marked, and the plans chosen are counted per network and mode.

Checks: the dtype every convolution ran in (what --amp asks for), finite losses, the wrappers' losses equal within
a tolerance per precision, peak GPU memory below 90% of the smallest GPU's, main.py's validation and checkpoints.
Every subprocess has a time limit (--timeout): one that runs past it is ended and its stage is a FAIL row; a
stage that raises is a FAIL row too (the traceback goes to stderr) and the other stages still run. Prints the
table and each stage's wall time; exit status 1 when a check fails, 2 without a GPU (and no --device cpu).

Time on one H200: about 3.5 minutes (estimated: not yet run on a GPU; its `stage seconds` line will tell).
- The arithmetic is negligible: the precision stage's 12 training steps and 20 10-crop views at 4x112x112 are
  about 1 TFLOP (CAKES123D_P: 11.5 GFLOPs a clip forward, 3 times that a training step), the timing's timed
  steps at 12x8x224x224 about 160 TFLOP (conv3d: 125 GFLOPs a clip forward): ~1 s at 150 TFLOP/s (30% of
  TF32's rate, which cuDNN's convolutions use by default), 4 s at 40.
- What costs is fixed per process and per new shape. Measured with --device cpu (all stages 87 s, 105 s of CPU
  time, on 2 cores; a main.py process ~4 s to start and import, ~8 s for its tiny epoch): per process ~4 s to start,
  plus ~3 s for CUDA's context and ~5 s for NCCL's on a GPU; a network's first step times its plans (16 ops x
  up to 7 plans x 3 runs on one clip, ~2 ms each when launch-bound: ~1 s a key); with cudnn.benchmark (main.py,
  timing) each new convolution shape is searched (~100 a form x 3 directions x ~20 ms: ~6 s a form's train step).
- Hence: precision ~25 s (5 networks built, plans timed); torchrun ~40 s (start, NCCL, the same work); main
  ~80 s (4 runs of ~20 s: start, CUDA, network, 2 loader workers, 2 steps, validation); timing ~70 s (16 first
  steps of ~4 s on average, then ~5 s of timed steps).
"""
import argparse
import contextlib
import functools
import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cakes.runtime import tune_process  # noqa: E402

tune_process()  # as main.py, before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.conv_config import read_user_configs  # noqa: E402
from cakes.data import Views  # noqa: E402
from cakes.data.synthetic import make_synthetic_data  # noqa: E402
from cakes.engine import distributed  # noqa: E402
from cakes.engine.log import RunLog  # noqa: E402
from cakes.engine.loop import Run, forward_loss, to_device, update  # noqa: E402
from cakes.engine.precision import amp_dtype, grad_scaler  # noqa: E402
from cakes.engine.run import channels_last  # noqa: E402
from cakes.engine.schedule import make_optimizer  # noqa: E402
from cakes.engine.views import average_views, view_logits  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models import create_model  # noqa: E402
from cakes.ops import plans  # noqa: E402

PRECISIONS = ('fp32', 'bf16', 'fp16')
DTYPES = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}
# Relative difference allowed between the wrappers' losses after a few steps (same data, same initial weights:
# only the order of the floating-point sums differs).
TOLERANCE = {'fp32': 1e-3, 'bf16': 3e-2, 'fp16': 1e-2}
MEMORY_SHARE = 0.9
NUM_CLASS = 174
CONFIG = 'CAKES123D_P'  # the checks' network and the timing's CAKES one (config.py's, where it replaces it)
STAGES = ('precision', 'torchrun', 'main', 'timing')
CPU_REPLICAS = 2  # threads standing in for GPUs, and torchrun's processes, with --device cpu
# Sizes per device: the checks' frames and crop, the timing's batch per GPU, frames and crop.
SIZES = {'cuda': dict(num_segments=4, input_size=112, timing_batch=12, timing_frames=8, timing_size=224),
         'cpu': dict(num_segments=4, input_size=32, timing_batch=2, timing_frames=4, timing_size=32)}
TIMED_IMPLS = ('plain', 'planned', 'channels_last', 'planned_cl')  # branch form and plans, in both formats
TIMED_SETTINGS = ('conv3d', f'conv1_2_3d:{CONFIG}')
# The resumed main.py runs through this script with the plans' choice refused: an op whose key the checkpoint
# lacks (which would choose, and on a CPU time, a plan) stops the run with this message (on every rank).
RESUME = '--resume_without_choosing'  # then main.py's arguments
NEW_PLAN = 'a plan was chosen in a resume that must run its checkpoint\'s plans'
MAIN = os.path.join(REPO, 'main.py')
CONFIG_FILE = os.path.join(REPO, 'config.py')  # your conv_configs, read as main.py reads them


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'],
                   help='cpu: every stage on the CPU with tiny shapes (threads and gloo stand in for the GPUs)')
    p.add_argument('--stages', nargs='+', default=list(STAGES), choices=STAGES, help='the stages to run (default: all)')
    p.add_argument('--steps', type=int, default=3, help='training steps per precision and wrapper')
    p.add_argument('--num_segments', type=int, default=None, help='frames of the checks (default 4)')
    p.add_argument('--input_size', type=int, default=None, help='crop size of the checks (default 112; cpu: 32)')
    p.add_argument('--batch_per_gpu', type=int, default=2, help='clips per GPU in the checks')
    p.add_argument('--timing_batch', type=int, default=None, help='clips per GPU in the timing (default 12; cpu: 2)')
    p.add_argument('--repeats', type=int, default=3, help='timed repeats (the fastest is kept)')
    p.add_argument('--main_amp', default='fp32', choices=PRECISIONS, help="the main stage's --amp (fp32: none)")
    p.add_argument('--timeout', type=int, default=300, help='seconds each subprocess may run (torchrun, main.py)')
    p.add_argument('--no_timing', action='store_true', help='skip the timing stage')
    p.add_argument('--no_torchrun', action='store_true', help='nothing under torchrun (its stage, main.py under it)')
    p.add_argument('--json', action='store_true', help='end with one JSON line holding every row')
    p.add_argument('--worker', default='', help=argparse.SUPPRESS)  # a torchrun process: results to this file
    p.add_argument('--plans', default='', help=argparse.SUPPRESS)  # its plans per precision (plan_table JSON)
    args = p.parse_args(argv)
    sizes = SIZES[args.device]
    for name, value in sizes.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    for name in ('steps', 'num_segments', 'input_size', 'batch_per_gpu', 'timing_batch', 'repeats', 'timeout'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name} must be at least 1 (got {getattr(args, name)})')
    if args.input_size < 32:
        raise UsageError(f'--input_size {args.input_size}: give at least 32 (the network downsamples 32x)')
    args.configs = read_user_configs(CONFIG_FILE)  # as main.py reads them for --conv_config CAKES123D_P
    args.stages = [s for s in STAGES if s in args.stages and not (s == 'timing' and args.no_timing)
                   and not (s == 'torchrun' and args.no_torchrun)]
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


# The convolutions' dtypes, from every thread.

CONVOLUTIONS = ('conv2d', 'conv3d')  # nn.Conv3d, the ops and their plans (frames as a 2D batch) call these


@contextlib.contextmanager
def conv_dtypes():
    """The dtypes of every convolution's output while the body runs, from any thread (DataParallel runs its
    replicas in threads): F.conv3d and F.conv2d are replaced by recording wrappers, then restored."""
    seen, lock = set(), threading.Lock()
    originals = {name: getattr(F, name) for name in CONVOLUTIONS}

    def recorder(original):
        def recording(*args, **kwargs):
            output = original(*args, **kwargs)
            with lock:
                seen.add(str(output.dtype).replace('torch.', ''))
            return output
        return recording

    for name, original in originals.items():
        setattr(F, name, recorder(original))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(F, name, original)


# DataParallel's replica threads, where torch has no CPU DataParallel.

def replicate(module, count):
    """What torch.nn.parallel.replicate makes, on the CPU: per replica a shallow copy of every module (its
    attributes shared, so `op.plans` is the original's dict), without Parameters: a replica's parameters are
    views of the original ones (gradients reach them, `parameters()` is empty), its buffers the original's in
    replica 0 (where DataParallel keeps the BN statistics) and copies in the others."""
    modules = list(module.modules())
    index = {id(m): i for i, m in enumerate(modules)}
    replicas = []
    for j in range(count):
        copies = [m._replicate_for_data_parallel() for m in modules]
        for m, copy in zip(modules, copies):
            for key, child in m._modules.items():
                copy._modules[key] = None if child is None else copies[index[id(child)]]
            for key, param in m._parameters.items():
                if param is None:
                    copy._parameters[key] = None
                else:
                    setattr(copy, key, param.view_as(param))
            for key, buffer in m._buffers.items():
                if buffer is not None:
                    setattr(copy, key, buffer if j == 0 else buffer.clone())
        replicas.append(copies[0])
    return replicas


class ThreadReplicas(nn.Module):
    """nn.DataParallel's forward on the CPU: the batch cut as DataParallel cuts it (torch.chunk), each part run
    by its replica in a thread of its own under autocast entered with CUDA's default dtype, float16 (as torch's
    parallel_apply enters it: the thread's default), the outputs concatenated in order."""

    def __init__(self, module, count):
        super().__init__()
        self.module = module
        self.count = count

    def forward(self, x):
        parts = x.chunk(self.count)
        replicas = replicate(self.module, len(parts))
        grad, amp = torch.is_grad_enabled(), torch.is_autocast_enabled('cpu')
        outputs, errors = [None] * len(parts), []

        def work(i):
            try:
                torch.set_grad_enabled(grad)
                with torch.autocast('cpu', dtype=torch.float16, enabled=amp):
                    outputs[i] = replicas[i](parts[i])
            except Exception as e:  # raised again in the calling thread, as parallel_apply does
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(parts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        with torch.autocast('cpu', enabled=False):  # a gather, not an op autocast would cast
            return torch.cat(outputs)


WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel, ThreadReplicas)


# What runs on the devices.

def build(args, op_code='conv1_2_3d', search=False, precision='fp32'):
    """The check network, the same weights in every process (seed 0), its forward in the run's dtype."""
    torch.manual_seed(0)
    model = create_model(op_code=op_code, conv_config=None if search else CONFIG, num_class=NUM_CLASS,
                         num_segments=args.num_segments, search=search, dropout=0, configs=args.configs)
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
    inner = model.module if isinstance(model, WRAPPERS) else model
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
        scores = average_views(view_logits(model.eval(), clips, device, amp,
                                           chunk=args.batch_per_gpu * replicas(args)))
    return scores, seen


def on_gpus(args):
    return args.device == 'cuda'


def replicas(args):
    """The GPUs the checks run on (DataParallel's replicas, torchrun's processes), or the CPU's stand-ins."""
    return torch.cuda.device_count() if on_gpus(args) else CPU_REPLICAS


def wrapper_name(args):
    if not on_gpus(args):
        return 'replica threads'
    return 'DataParallel' if replicas(args) > 1 else 'one GPU'


def wrap(model, args):
    """nn.DataParallel over the GPUs (one GPU: the bare model); threads standing in for it on the CPU."""
    if not on_gpus(args):
        return ThreadReplicas(model, replicas(args))
    return nn.DataParallel(model.cuda()) if replicas(args) > 1 else model.cuda()


def reset_memory(args):
    for d in range(torch.cuda.device_count() if on_gpus(args) else 0):
        torch.cuda.reset_peak_memory_stats(d)


def memory_row(args, check, wrapper, precision, peak=None):
    """Peak memory against the smallest GPU's (`peak`: given, else this process's largest over its GPUs);
    no row on the CPU."""
    if not on_gpus(args):
        return []
    gpus = range(torch.cuda.device_count())
    peak = max(torch.cuda.max_memory_allocated(d) for d in gpus) if peak is None else peak
    smallest = min(torch.cuda.get_device_properties(d).total_memory for d in gpus)
    return [row(check, wrapper, precision, check_memory(peak, smallest))]


SLOW = 10  # a lower precision this many times slower than float32 on the CPU is not run (its training would crawl)


@functools.lru_cache(maxsize=None)
def cpu_supports(dtype):
    """This CPU trains in `dtype`: a convolution's forward and backward under autocast give that dtype and take at
    most SLOW times the float32 time (oneDNN runs the float16 backward by a reference path on CPUs without
    AMX-FP16: 100-200 times slower on one with AVX-512 FP16; older torch autocasts neither)."""
    def step(amp):
        x = torch.randn(2, 32, 4, 8, 8, requires_grad=True)
        w = torch.randn(32, 32, 3, 3, 3, requires_grad=True)
        start = time.perf_counter()
        with torch.autocast('cpu', dtype=dtype, enabled=amp):
            y = F.conv3d(x, w, padding=1)
        y.float().sum().backward()
        return time.perf_counter() - start, y.dtype

    try:
        runs = {amp: [step(amp) for _ in range(2)] for amp in (False, True)}  # the first of each sets up
    except RuntimeError:
        return False
    reference, (seconds, output) = runs[False][1][0], runs[True][1]
    return output == dtype and seconds <= SLOW * reference


def precision_supported(precision, args):
    if precision == 'fp32':
        return True
    if on_gpus(args):
        return precision != 'bf16' or torch.cuda.is_bf16_supported()
    return cpu_supports(amp_dtype(precision))


def unsupported_row(precision, wrapper, args):
    where = 'this GPU' if on_gpus(args) else f'this CPU (missing, or over {SLOW}x slower than fp32)'
    return row('precision', wrapper, precision, (f'not supported by {where}', None))


def supernet_precision(args):
    return 'bf16' if precision_supported('bf16', args) else 'fp16'


def data_parallel_checks(args):
    """Each precision under nn.DataParallel (or its stand-in): rows, and per precision the losses and the plans
    chosen (plans.plan_table)."""
    wrapper = wrapper_name(args)
    rows, losses, tables = [], {}, {}
    device = torch.device(args.device)
    for precision in PRECISIONS:
        if not precision_supported(precision, args):
            rows.append(unsupported_row(precision, wrapper, args))
            continue
        model = wrap(build(args, precision=precision), args)
        reset_memory(args)
        losses[precision], seen = train_steps(model, device, precision,
                                              batches(args, args.steps, args.batch_per_gpu * replicas(args)))
        tables[precision] = plans.plan_table(model)
        rows += [row('conv dtypes', wrapper, precision, check_dtypes(seen, precision)),
                 row('losses', wrapper, precision, check_finite(losses[precision])),
                 *memory_row(args, 'peak memory', wrapper, precision)]
    rows += supernet_and_eval_checks(args, wrapper, device)
    return rows, losses, tables


def supernet_and_eval_checks(args, wrapper, device):
    """A dropout supernet's steps (its sampled widths change every step) and a 10-crop evaluation, in bf16
    where the device has it, else fp16."""
    precision = supernet_precision(args)
    model = wrap(build(args, 'conv1_2_3d_dropout', True, precision), args)
    losses, seen = train_steps(model, device, precision,
                               batches(args, args.steps, args.batch_per_gpu * replicas(args)))
    rows = [row('supernet dtypes', wrapper, precision, check_dtypes(seen, precision)),
            row('supernet losses', wrapper, precision, check_finite(losses))]
    reset_memory(args)
    scores, seen = ten_crop_scores(wrap(build(args, precision=precision), args), device, precision, args)
    finite = bool(torch.isfinite(scores).all())
    rows += [row('10-crop dtypes', wrapper, precision, check_dtypes(seen, precision)),
             row('10-crop scores', wrapper, precision, (f'{tuple(scores.shape)} finite' if finite else 'not finite',
                                                         finite)),
             *memory_row(args, '10-crop memory', wrapper, precision)]
    return rows


def ddp(model, device, unused=False):
    return nn.parallel.DistributedDataParallel(model.to(device), device_ids=[device] if device.type == 'cuda' else None,
                                               find_unused_parameters=unused)


def torchrun_worker(args):
    """One torchrun process: each precision, then the dropout supernet, under DDP on its share of the global
    batches; rank 0 writes the losses (averaged over the processes), dtypes and peak memory to args.worker.
    The precisions run the plans of args.plans (those the DataParallel checks chose), so that their losses
    differ from DataParallel's by the wrapper alone; the supernet's are timed here (by rank 0, broadcast)."""
    with distributed.session():
        rank, world, device = distributed.rank(), distributed.world_size(), distributed.device()
        tables, results = {}, {}
        if args.plans:
            with open(args.plans) as f:
                tables = json.load(f)

        def steps(name, model, precision):
            share = [(clip.chunk(world)[rank], target.chunk(world)[rank]) for clip, target in
                     batches(args, args.steps, args.batch_per_gpu * world)]
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            losses, seen = train_steps(model, device, precision, share,
                                       lambda loss: distributed.all_reduce_sum([loss])[0] / world)
            peaks = distributed.gather(torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else 0)
            results[name] = {'precision': precision, 'losses': losses, 'peak': max(peaks),
                             'dtypes': sorted(set().union(*distributed.gather(sorted(seen))))}

        for precision in PRECISIONS:
            if precision_supported(precision, args):
                model = plans.load_plans(build(args, precision=precision), tables.get(precision))
                steps(precision, ddp(model, device), precision)
        precision = supernet_precision(args)
        # A dropout supernet leaves branches unused in a step, differently in each process (as main.py wraps it).
        steps('supernet', ddp(build(args, 'conv1_2_3d_dropout', True, precision), device, unused=True), precision)
        if rank == 0:
            with open(args.worker, 'w') as f:
                json.dump(results, f)


# Subprocesses, each with a time limit.

def run_command(command, timeout, env=None):
    """(exit status, stdout, stderr) of `command`, run in a session of its own so that a timeout (or this process
    stopping) ends all of its processes, torchrun's workers too. Exit status None: it ran past `timeout` s."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return None, out, err
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


# main.py's one-line error, or an exception's last line (a torchrun worker's prefixed with its rank)
ERROR_LINE = re.compile(r'^(\[rank\d+\]:\s*)?(error: |[\w.]*(Error|Exception)\b)')


def failure(status, err, timeout):
    """What a failed subprocess says: its time limit, or its exit status and the line naming its error."""
    if status is None:
        return f'timed out after {timeout} s'
    lines = err.strip().splitlines()
    named = [line for line in lines if ERROR_LINE.match(line.strip()) and 'ChildFailedError' not in line]
    return f"exit {status}: {(named or lines or ['no output'])[-1].strip()[:160]}"


def torchrun_command(processes):
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}']


def torchrun_checks(args, dp):
    """torchrun with one process per GPU: its rows, and its losses against the DataParallel ones (`dp`: the
    precision stage's losses and plans per precision, empty when it did not run)."""
    dp_losses = dp.get('losses', {})
    with tempfile.TemporaryDirectory() as folder:
        out, tables = os.path.join(folder, 'results.json'), os.path.join(folder, 'plans.json')
        with open(tables, 'w') as f:
            json.dump(dp.get('plans', {}), f)
        command = torchrun_command(replicas(args)) + [
            os.path.abspath(__file__), '--worker', out, '--plans', tables, '--device', args.device,
            '--steps', str(args.steps),
            '--num_segments', str(args.num_segments), '--input_size', str(args.input_size),
            '--batch_per_gpu', str(args.batch_per_gpu)]
        # torchrun gives each worker one OpenMP thread; on the CPU they get this process's count, so that the
        # convolutions sum in the same order and fp32 losses agree to rounding (with 1 against 2 threads they
        # drift apart by ~1e-3 within 3 steps of these tiny shapes, over the tolerance).
        env = {**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())} if not on_gpus(args) else None
        status, _, err = run_command(command, args.timeout, env)
        if status != 0 or not os.path.isfile(out):
            return [row('torchrun', 'torchrun', '-', (failure(status, err, args.timeout), False))]
        with open(out) as f:
            results = json.load(f)
    rows = []
    for name in PRECISIONS:
        if name not in results:
            rows.append(unsupported_row(name, 'torchrun', args))
            continue
        result = results[name]
        rows += [row('conv dtypes', 'torchrun', name, check_dtypes(result['dtypes'], name)),
                 row('losses', 'torchrun', name, check_finite(result['losses'])),
                 *memory_row(args, 'peak memory', 'torchrun', name, result['peak'])]
        if name in dp_losses:
            rows.append(row('losses agree', f'{wrapper_name(args)} vs torchrun', name,
                            check_agree(dp_losses[name], result['losses'], name)))
    supernet = results['supernet']
    rows += [row('supernet dtypes', 'torchrun', supernet['precision'],
                 check_dtypes(supernet['dtypes'], supernet['precision'])),
             row('supernet losses', 'torchrun', supernet['precision'], check_finite(supernet['losses']))]
    return rows


# main.py itself: an epoch, then a resume that reuses the checkpoint's plans.

def main_checks(args):
    """main.py on a tiny synthetic dataset (a partial last validation batch; under torchrun, unequal validation
    shards): alone (nn.DataParallel over the GPUs), then under torchrun."""
    precision = args.main_amp
    if not precision_supported(precision, args):
        return [unsupported_row(precision, 'main.py', args)]
    clips = args.batch_per_gpu * replicas(args)
    runs = [(wrapper_name(args) if on_gpus(args) else 'one process', [], [])]
    if not args.no_torchrun:
        runs.append(('torchrun', torchrun_command(replicas(args)), ['--sync_bn'] if on_gpus(args) else []))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, 'data')
        make_synthetic_data(root, train=2 * clips, val=clips + 1, frames=8)
        for name, launcher, extra in runs:
            out = os.path.join(folder, name.replace(' ', '_'))
            flags = ['--root_path', root, '--checkpoint_dir', out, *main_flags(args, clips), *extra]
            rows += epoch_and_resume(args, launcher, flags, out, name, precision)
    return rows


def main_flags(args, clips):
    flags = ['--op_code', 'conv1_2_3d', '--conv_config', CONFIG, '--num_segments', str(args.num_segments),
             '--input_size', str(args.input_size), '-b', str(clips), '-p', '1', '--pretrained', 'none',
             '--warm', '0', '-j', '2' if on_gpus(args) else '0']
    if args.main_amp != 'fp32':
        flags += ['--amp', args.main_amp]
    if importlib.util.find_spec('tensorboardX') is None:
        flags.append('--no_tensorboard')
    return flags


def epoch_and_resume(args, launcher, flags, out, wrapper, precision):
    """Rows of one epoch with validation and of its resume: the resumed epoch must run the checkpoint's plans,
    choose and time none (the resume runs main.py through this script's RESUME mode) and leave the checkpoint's
    plans as they were. `launcher`: torchrun's command, or none; `flags`: main.py's."""
    env = {k: v for k, v in os.environ.items() if k != plans.ENV}  # main.py's default: plans timed
    status, stdout, err = run_command((launcher or [sys.executable]) + [MAIN, *flags, '--epochs', '1'],
                                      args.timeout, env)
    saved = saved_checkpoint(out)
    if status != 0 or saved is None:
        return [row('main.py epoch', wrapper, precision, (failure(status, err, args.timeout), False))]
    state = torch.load(saved, map_location='cpu', weights_only=True)
    chosen = state.get('plans') or {}
    tested = testing_results(stdout)
    rows = [row('main.py epoch', wrapper, precision,
                (f"{tested or 'no validation'}; plans of {len(chosen)} ops saved",
                 tested is not None and state.get('epoch') == 1 and bool(chosen)))]
    resume = [os.path.abspath(__file__), RESUME, *flags, '--epochs', '2', '--resume', saved]
    status, stdout, err = run_command((launcher or [sys.executable]) + resume, args.timeout, env)
    if status != 0:  # with a plan chosen, the error line says NEW_PLAN
        return rows + [row('main.py resume', wrapper, precision, (failure(status, err, args.timeout), False))]
    resumed = torch.load(saved, map_location='cpu', weights_only=True)
    tested = testing_results(stdout)
    same = resumed.get('plans') == chosen
    text = (f"{tested or 'no validation'}; " + ('the checkpoint\'s plans run, none chosen' if same else
                                               'the plans changed'))
    return rows + [row('main.py resume', wrapper, precision,
                       (text, same and tested is not None and resumed.get('epoch') == 2))]


@contextlib.contextmanager
def refusing_new_plans():
    """Inside, an op choosing the plan of a key it has none for (cakes.ops.plans.choice.choose: the forced plan,
    the branch form where timing cannot tell, else the timed fastest) raises an error saying NEW_PLAN."""
    from cakes.ops.plans import choice
    original = choice.choose

    def refuse(op, x, key, *args, **kwargs):
        raise RuntimeError(f'{NEW_PLAN} (key {key})')
    choice.choose = refuse
    try:
        yield
    finally:
        choice.choose = original


def resume_without_choosing(argv):
    """main.py's main on `argv`, refusing to choose a plan."""
    spec = importlib.util.spec_from_file_location('cakes_main', MAIN)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with refusing_new_plans():
        return run_cli(script.main, argv)


def saved_checkpoint(out):
    found = glob.glob(os.path.join(out, 'checkpoint', '*_checkpoint.pth.tar'))
    return found[0] if len(found) == 1 else None


def testing_results(stdout):
    """main.py's validation summary, shortened: 'Prec@1 50.000 Prec@5 100.000 Loss 1.13563'."""
    lines = [line for line in stdout.splitlines() if line.startswith('Testing Results: ')]
    return lines[-1][len('Testing Results: '):] if lines else None


# The speed of main.py's default path.

def load_benchmark_model():
    path = os.path.join(REPO, 'scripts', 'benchmark_model.py')
    spec = importlib.util.spec_from_file_location('benchmark_model', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_form():
    """The form main.py runs without flags: plans, channels_last_3d where engine.run turns it on."""
    return 'planned_cl' if channels_last(SimpleNamespace(channels_last=False, no_channels_last=False)) else 'planned'


def timing_rows(args):
    """benchmark_model's eval forward and train step at -b timing_batch on one device, with cudnn.benchmark as
    main.py sets it for the network (benchmark_model sets it); the plans the planned forms chose, counted per
    network and mode."""
    benchmark_model = load_benchmark_model()
    frames, size, batch = args.timing_frames, args.timing_size, args.timing_batch
    settings = SimpleNamespace(impls=list(TIMED_IMPLS), num_segments=frames, input_size=size, repeats=args.repeats,
                               no_train=False, per_layer=False, configs=args.configs)
    default, shape = default_form(), f'{batch}x{frames}x{size}x{size}'
    rows = []
    for setting in TIMED_SETTINGS:
        op_code, _, config = setting.partition(':')
        for timed in benchmark_model.time_setting(setting, settings, torch.device(args.device), batch):
            form = timed['impl'] + (" (main.py's)" if timed['impl'] == default else '')
            rows.append(row(f"{timed['mode']} ms/clip", f'{config or op_code} {form}', 'fp32',
                            f"{timed['ms_per_clip']:.2f} ({shape}; first step {timed['first_s']:.1f} s)"))
            if timed.get('plans'):
                rows.append(row('plans chosen', f"{config or op_code} {timed['impl']} {timed['mode']}", 'fp32',
                                benchmark_model.format_counts(timed['plans'])))
    return rows


# The stages.

def run_stage(name, fn, times):
    """The stage's rows; a stage that raises is one FAIL row (traceback on stderr), so the others still run."""
    start = time.perf_counter()
    try:
        return fn()
    except Exception as e:
        traceback.print_exc()
        return [row(name, '-', '-', (f'{type(e).__name__}: {e}'.splitlines()[0][:160], False))]
    finally:
        times[name] = time.perf_counter() - start


def stop_on_sigterm():
    """SIGTERM (a time limit's, a scheduler's) ends this process through Python, so that run_command ends the
    subprocess it waits for instead of leaving it running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [RESUME]:
        return resume_without_choosing(argv[1:])
    args = parse_args(argv)
    if not on_gpus(args):
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # this process, its subprocesses and main.py's rules: the CPU
    elif not torch.cuda.is_available():
        raise UsageError('no GPU visible (torch.cuda.is_available() is False): run gpu_check.py on the GPU '
                         'machine, with CUDA_VISIBLE_DEVICES naming the GPUs the run will use (or --device cpu)')
    if args.worker:
        return torchrun_worker(args)
    stop_on_sigterm()
    torch.backends.cudnn.benchmark = False  # the shapes change (dropout supernet); timing below sets it
    print(f'{replicas(args)} GPU(s): {torch.cuda.get_device_name(0)}; torch {torch.__version__}' if on_gpus(args)
          else f'CPU, {CPU_REPLICAS} threads and processes standing in for GPUs; torch {torch.__version__}', flush=True)
    rows, times, dp = [], {}, {}

    def precision_stage():
        rows, dp['losses'], dp['plans'] = data_parallel_checks(args)
        return rows
    stages = {'precision': precision_stage, 'torchrun': lambda: torchrun_checks(args, dp),
              'main': lambda: main_checks(args), 'timing': lambda: timing_rows(args)}
    for stage in args.stages:
        rows += run_stage(stage, stages[stage], times)
        print(f'{stage}: {times[stage]:.0f} s', flush=True)
    print(format_table(rows))
    print('stage seconds: ' + ', '.join(f'{stage} {seconds:.0f}' for stage, seconds in times.items())
          + f'; total {sum(times.values()):.0f}')
    bad = failed(rows)
    print(f'{len(bad)} check(s) failed' if bad else 'all checks passed')
    if args.json:
        print(json.dumps(rows))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
