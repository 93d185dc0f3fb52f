"""Time the eval forward and the train step of model settings, per clip, with each implementation.

    python scripts/benchmark_model.py --settings conv3d conv1_2_3d:CAKES123D_P --num_segments 8

Implementations: `plain` is the straightforward form (NCDHW, one Conv3d per branch, concatenation,
BN, ReLU); `channels_last` runs the same modules in the channels_last_3d memory format; `folded`
(eval only) also folds every BN into the convolution before it; `onnxruntime` (eval only, CPU) runs the
network as scripts/export_onnx.py exports it (BN folded) in ONNX Runtime, with torch's number of threads.
GFLOP/s counts the FLOPs of the forward (FlopCounterMode) for eval, and three times them for a train step
(forward plus the two gradient convolutions). Runs on CUDA when it is available. The process is set up as main.py sets it up
(cakes/runtime.py: OpenMP threads that spin briefly, a heap kept between steps) unless --untuned.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.runtime import tune_process  # noqa: E402

# Both settings must come before torch loads, so before the arguments are parsed.
UNTUNED = '--untuned' in sys.argv
if not UNTUNED:
    tune_process()

import torch  # noqa: E402

from cakes.models import TemporalModel  # noqa: E402
from cakes.models.export import export_onnx, onnx_session  # noqa: E402
from cakes.models.inference import fold_batchnorm  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.complexity import count_flops  # noqa: E402
from cakes.conv_config import resolve_conv_config  # noqa: E402

IMPLS = ('plain', 'channels_last', 'folded', 'onnxruntime')
EVAL_ONLY = ('folded', 'onnxruntime')


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--settings', nargs='+', default=['conv3d', 'conv1_2_3d:CAKES123D_P'],
                   help='OP_CODE or OP_CODE:CONV_CONFIG')
    p.add_argument('--impls', nargs='+', default=list(IMPLS), choices=IMPLS)
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--batch', type=int, default=1, help='clips per forward')
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the fastest is reported (robust to other load)")
    p.add_argument('--no_train', action='store_true', help='time the eval forward only')
    p.add_argument('--json', action='store_true', help='end with one JSON line holding every figure')
    p.add_argument('--untuned', action='store_true',
                   help="a plain Python process: without main.py's process settings (glibc's own heap)")
    return p.parse_args(argv)


def seconds(fn, device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - start


def prepared(base, impl, train):
    """A copy of `base` in the form `impl`, in train or eval mode."""
    model = fold_batchnorm(base) if impl == 'folded' else copy.deepcopy(base)
    return model.use_channels_last(impl != 'plain').train(train)


def onnxruntime_step(base, clip, folder):
    """Export `base` (BN folded) into `folder` and return a step running it in ONNX Runtime."""
    path = os.path.join(folder, 'model.onnx')
    export_onnx(base.eval(), torch.cat([clip, clip]), path)
    session, feed = onnx_session(path), {'clips': clip.cpu().numpy()}
    return lambda: session.run(['logits'], feed)


def step_fn(model, clip, train):
    def train_step():
        model.zero_grad(set_to_none=True)
        model(clip).sum().backward()

    def eval_step():
        with torch.no_grad():
            model(clip)
    return train_step if train else eval_step


def time_setting(setting, args, device):
    """Best time of each implementation, the implementations interleaved repeat by repeat so that a change
    in the machine's speed during the run affects them all alike."""
    op_code, _, key = setting.partition(':')
    torch.manual_seed(0)
    base = TemporalModel(174, args.num_segments, op_code=op_code, conv_config=resolve_conv_config(key)).to(device)
    flops = count_flops(base, args.num_segments, args.input_size)
    clip = torch.randn(args.batch, args.num_segments * 3, args.input_size, args.input_size, device=device)
    rows = []
    for train in ((False,) if args.no_train else (False, True)):
        impls = [impl for impl in args.impls if not (impl in EVAL_ONLY and train)]
        with tempfile.TemporaryDirectory() as folder:
            steps = {impl: onnxruntime_step(base, clip, folder) if impl == 'onnxruntime' else
                     step_fn(prepared(base, impl, train), clip, train) for impl in impls}
        for step in steps.values():
            step()  # warm-up: first-call allocations and kernel selection
        best = dict.fromkeys(impls, float('inf'))
        for _ in range(args.repeats):
            for impl in impls:
                best[impl] = min(best[impl], seconds(steps[impl], device))
        for impl in impls:
            per_clip = best[impl] / args.batch
            rows.append({'setting': setting, 'impl': impl, 'mode': 'train' if train else 'eval',
                         'ms_per_clip': per_clip * 1e3, 'gflops_per_s': flops * (3 if train else 1) / per_clip / 1e9})
    return rows


def main(argv=None):
    args = parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'device {device}, {torch.get_num_threads()} threads, {args.num_segments}x{args.input_size}x'
          f'{args.input_size} clips, batch {args.batch}, best of {args.repeats}, '
          f'{"plain Python process" if UNTUNED else "process set up as main.py"}')
    print(f'{"setting":<28} {"impl":<14} {"mode":<6} {"ms/clip":>9} {"GFLOP/s":>8} {"vs plain":>9}')
    rows = []
    for setting in args.settings:
        for row in time_setting(setting, args, device):
            plain = next((r for r in rows + [row] if r['setting'] == setting and r['impl'] == 'plain'
                          and r['mode'] == row['mode']), None)
            ratio = row['ms_per_clip'] / plain['ms_per_clip'] if plain else float('nan')
            row['vs_plain'] = ratio
            rows.append(row)
            print(f"{setting:<28} {row['impl']:<14} {row['mode']:<6} {row['ms_per_clip']:>9.1f} "
                  f"{row['gflops_per_s']:>8.1f} {ratio:>9.3f}", flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == '__main__':
    run_cli(main)
