"""Time the eval forward and the train step of model settings, per clip, with each implementation.

    python scripts/benchmark_model.py --settings conv3d conv1_2_3d:CAKES123D_P --num_segments 8
    python scripts/benchmark_model.py --table --batch 1 8 --plot speed.png   # every released config vs conv3d

Implementations: `plain` is the straightforward form (NCDHW, one Conv3d per branch, concatenation,
BN, ReLU: the plan policy BRANCH_FORM); `channels_last` runs the same modules in the channels_last_3d memory format;
`planned` and `planned_cl` run each CAKES op by the execution plan it chose at its first forward
(cakes.ops.plans, the default everywhere), NCDHW and channels_last; `folded` (eval only) folds every BN into
the convolution before it (branch form); `onnxruntime` (eval only, CPU) runs the
network as scripts/export_onnx.py exports it (BN folded) in ONNX Runtime, with torch's number of threads.
--table times conv3d, convp3d, the released configs and those of your config.py (read as main.py reads it), and
ends with each one's time in main.py's default form (planned_cl on a CPU) as a ratio to conv3d's fastest form,
beside the FLOPs ratio and the limit 0.15 + 0.85 x FLOPs ratio (convolutions are about 85% of conv3d's time).
A setting's CONV_CONFIG is a released config's name, one of config.py or a conv_config.txt, as main.py's
--conv_config; every network is built by cakes.create_model. --per_layer prints, per CAKES op,
each branch's width, FLOPs, time, GFLOP/s, the plan chosen, and the time of the conv3d network's 3x3x3 op there;
--plot draws time against FLOPs for every setting measured. A planned form's row ends with the plans its ops chose
(how many ops run each).
GFLOP/s counts the FLOPs of the forward (FlopCounterMode) for eval, and three times them for a train step
(forward plus the two gradient convolutions). Runs on CUDA when it is available. The process is set up as
main.py sets it up (cakes/runtime.py: OpenMP threads that spin briefly, a heap kept between steps) unless --untuned.
"""
import argparse
import collections
import copy
import itertools
import json
import os
import sys
import tempfile
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cakes.runtime import tune_process  # noqa: E402

# Both settings must come before torch loads, so before the arguments are parsed.
UNTUNED = '--untuned' in sys.argv
if not UNTUNED:
    tune_process()

import torch  # noqa: E402

from cakes.models import create_model  # noqa: E402
from cakes.models.export import export_onnx, onnx_session  # noqa: E402
from cakes.models.inference import fold_batchnorm  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.complexity import count_flops  # noqa: E402

from cakes.files import write_atomic  # noqa: E402
from cakes.ops import plans  # noqa: E402
from cakes.ops.plan_report import format_table, layer_table  # noqa: E402
from cakes.ops.timing import seconds  # noqa: E402
from cakes.conv_config import conv_configs, read_user_configs  # noqa: E402
from cakes.engine.run import cudnn_modes  # noqa: E402

IMPLS = ('plain', 'channels_last', 'planned', 'planned_cl', 'folded', 'onnxruntime')
EVAL_ONLY = ('folded', 'onnxruntime')
BRANCH_FORM = ('plain', 'channels_last', 'folded')  # run with the plan policy BRANCH_FORM
CHANNELS_LAST = ('channels_last', 'planned_cl', 'folded')
TABLE_IMPLS = ('plain', 'channels_last', 'planned', 'planned_cl')  # the forms main.py can run
BASELINES = ('conv3d', 'convp3d')
CONFIG_FILE = os.path.join(ROOT, 'config.py')  # your conv_configs, read as main.py reads them


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--settings', nargs='+', default=['conv3d', 'conv1_2_3d:CAKES123D_P'],
                   help='OP_CODE, OP_CODE:CONV_CONFIG or OP_CODE:search (a sparsity supernet)')
    p.add_argument('--impls', nargs='+', default=list(IMPLS), choices=IMPLS)
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--batch', type=int, nargs='+', default=[1], help='clips per forward (several: each timed)')
    p.add_argument('--table', action='store_true',
                   help='settings (unless given): conv3d, convp3d, the released configs and those of config.py '
                        f'(op code from its kinds); impls (unless given): {" ".join(TABLE_IMPLS)}; '
                        'ends with the ratio table')
    p.add_argument('--per_layer', action='store_true',
                   help="per CAKES op: each branch's width, FLOPs, time, GFLOP/s and the plan chosen")
    p.add_argument('--plot', metavar='FILE.png', default=None, help='draw time against FLOPs for every setting')
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the fastest is reported (robust to other load)")
    p.add_argument('--no_train', action='store_true', help='time the eval forward only')
    p.add_argument('--json', action='store_true', help='end with one JSON line holding every figure')
    p.add_argument('--untuned', action='store_true',
                   help="a plain Python process: without main.py's process settings (glibc's own heap)")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv
    args.configs = read_user_configs(CONFIG_FILE)  # the released configs' names, and yours, as main.py takes them
    if args.table:  # given --settings or --impls take precedence
        if '--settings' not in given:
            args.settings = list(BASELINES) + [f'{config_op_code(c)}:{key}'
                                               for key, c in conv_configs(args.configs).items()]
        if '--impls' not in given:
            args.impls = list(TABLE_IMPLS)
    return args


def config_op_code(config):
    from cakes.plot import config_op_code as op_code
    return op_code(config)


def prepared(base, impl, train):
    """A copy of `base` in the form `impl`, in train or eval mode."""
    model = fold_batchnorm(base) if impl == 'folded' else copy.deepcopy(base)
    return in_form(impl, model.use_channels_last(impl in CHANNELS_LAST).train(train))


def in_form(impl, model):
    """`model` choosing its plans as `impl` does: the branch form for the branch-form implementations, else the
    default (CAKES_PLAN, timed when unset)."""
    return model.use_plans(plans.BRANCH_FORM if impl in BRANCH_FORM else None)


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


def time_setting(setting, args, device, batch):
    """Best time of each implementation, the implementations interleaved repeat by repeat so that a change
    in the machine's speed during the run affects them all alike. The first (warm-up) step, in which the
    planned forms choose their plans, is reported as `first_s`; cuDNN's benchmark mode searches there too."""
    op_code, _, key = setting.partition(':')
    # cuDNN as main.py sets it for this network (benchmark mode on CUDA unless its shapes change every step)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_modes(
        SimpleNamespace(op_code=op_code, evaluate=False, seed=None))
    torch.manual_seed(0)
    search = key == 'search'  # a sparsity supernet (dropout op codes are supernets anyway)
    base = create_model(op_code=op_code, conv_config=None if search else key, num_segments=args.num_segments,
                        search=search, configs=args.configs).to(device)
    flops = count_flops(base, args.num_segments, args.input_size)
    clip = torch.randn(batch, args.num_segments * 3, args.input_size, args.input_size, device=device)
    rows, models = [], {}
    for train in ((False,) if args.no_train else (False, True)):
        impls = [impl for impl in args.impls if not (impl in EVAL_ONLY and train)]
        with tempfile.TemporaryDirectory() as folder:
            models = {impl: prepared(base, impl, train) for impl in impls if impl != 'onnxruntime'}
            steps = {impl: onnxruntime_step(base, clip, folder) if impl == 'onnxruntime' else
                     step_fn(models[impl], clip, train) for impl in impls}
        first = {impl: seconds(step, device) for impl, step in steps.items()}  # allocations, kernels, plans
        best = dict.fromkeys(impls, float('inf'))
        for _ in range(args.repeats):
            for impl in impls:
                best[impl] = min(best[impl], seconds(steps[impl], device))
        for impl in impls:
            per_clip = best[impl] / batch
            rows.append({'setting': setting, 'impl': impl, 'mode': 'train' if train else 'eval', 'batch': batch,
                         'gflops': flops / 1e9, 'ms_per_clip': per_clip * 1e3, 'first_s': first[impl],
                         'gflops_per_s': flops * (3 if train else 1) / per_clip / 1e9,
                         'plans': plan_counts(models[impl]) if impl in models else {}})
        if args.per_layer and op_code not in BASELINES:
            print_layers(setting, models, clip, train, batch)
    return rows


def plan_counts(model):
    """{plan: how many ops ran it}, most used first, over the keys the model ran (a copy timed in one mode runs
    one key per op); empty for the branch form and networks without CAKES ops."""
    counts = collections.Counter(plan for table in plans.plan_table(model).values() for plan in table.values())
    return dict(counts.most_common())


def format_counts(counts):
    return ', '.join(f'{plan} {count}' for plan, count in counts.items())


def print_layers(setting, models, clip, train, batch):
    """The per-op table of the planned form (channels_last when it was timed)."""
    impl = next((impl for impl in ('planned_cl', 'planned') if impl in models), None)
    if impl is None:
        return
    print(f"-- {setting}, {impl}, {'train step' if train else 'eval'}, batch {batch}: per CAKES op "
          '(train: forward and both gradient convolutions)')
    for line in format_table(layer_table(models[impl], clip, train)):
        print(line)
    models[impl].train(train)


def ratio_table(rows, default):
    """Markdown lines: per setting its FLOPs and time as ratios to conv3d's fastest form (per mode and batch),
    the limit 0.15 + 0.85 x FLOPs ratio; each cell the form main.py runs by default (`default`, when it was
    timed, else the fastest) and, beside it, the branch form's ratio."""
    cells = sorted({(r['mode'], r['batch']) for r in rows}, key=lambda c: (c[0] != 'eval', c[1]))

    def best(setting, mode, batch, impls):
        found = [r for r in rows if (r['setting'], r['mode'], r['batch']) == (setting, mode, batch)
                 and r['impl'] in impls]
        return min(found, key=lambda r: r['ms_per_clip']) if found else None
    settings = list(dict.fromkeys(r['setting'] for r in rows))
    if 'conv3d' not in settings:
        return ['(no ratio table: conv3d was not measured)']
    base_flops = next(r['gflops'] for r in rows if r['setting'] == 'conv3d')
    head = ' | '.join(f'{mode} b{batch}' for mode, batch in cells)
    lines = [f'| setting | FLOPs | limit | {head} |', '| --- ' * (3 + len(cells)) + '|']
    for setting in settings:
        flops = next(r['gflops'] for r in rows if r['setting'] == setting) / base_flops
        values = []
        for mode, batch in cells:
            conv3d = best('conv3d', mode, batch, IMPLS)
            own = best(setting, mode, batch, [default]) or best(setting, mode, batch, IMPLS)
            before = best(setting, mode, batch, BRANCH_FORM)
            text = f"{own['ms_per_clip'] / conv3d['ms_per_clip']:.2f} {own['impl']}"
            if before is not None and before is not own:
                text += f" (branches {before['ms_per_clip'] / conv3d['ms_per_clip']:.2f})"
            values.append(text)
        lines.append(f'| {setting} | {flops:.2f} | {0.15 + 0.85 * flops:.2f} | ' + ' | '.join(values) + ' |')
    return lines


def plot(rows, path):
    """Time per clip against GFLOPs per clip: one panel per mode and batch, one series per implementation."""
    from matplotlib.figure import Figure
    from cakes.plot import png_bytes
    modes = sorted({r['mode'] for r in rows}, key=lambda m: m != 'eval')
    batches = sorted({r['batch'] for r in rows})
    figure = Figure(figsize=(6.5 * len(batches), 4.8 * len(modes)), layout='constrained')
    axes = figure.subplots(len(modes), len(batches), squeeze=False)
    for (i, mode), (j, batch) in itertools.product(enumerate(modes), enumerate(batches)):
        ax = axes[i][j]
        cell = [r for r in rows if (r['mode'], r['batch']) == (mode, batch)]
        for impl in dict.fromkeys(r['impl'] for r in cell):
            points = [r for r in cell if r['impl'] == impl]
            ax.plot([r['gflops'] for r in points], [r['ms_per_clip'] for r in points], 'o', label=impl, alpha=0.8)
        for n, setting in enumerate(dict.fromkeys(r['setting'] for r in cell)):
            fastest = min((r for r in cell if r['setting'] == setting), key=lambda r: r['ms_per_clip'])
            ax.annotate(setting.partition(':')[2] or setting, (fastest['gflops'], fastest['ms_per_clip']),
                        textcoords='offset points', xytext=(4, -11 if n % 2 else 4), fontsize=8)
        base = [r for r in cell if r['setting'] == 'conv3d']
        if base:  # the goal: conv3d's time scaled as 0.15 + 0.85 x the FLOPs ratio
            fast = min(base, key=lambda r: r['ms_per_clip'])
            xs = [min(r['gflops'] for r in cell), fast['gflops']]
            ax.plot(xs, [fast['ms_per_clip'] * (0.15 + 0.85 * x / fast['gflops']) for x in xs], '--', color='grey',
                    label='limit 0.15 + 0.85 x FLOPs ratio')
        ax.set_xlabel('GFLOPs per clip (forward)')
        ax.set_ylabel('ms per clip')
        ax.set_title(f"{'eval forward' if mode == 'eval' else 'train step'}, batch {batch}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    data = png_bytes(figure)
    write_atomic(path, lambda f: f.write(data))


def main(argv=None):
    args = parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'device {device}, {torch.get_num_threads()} threads, {args.num_segments}x{args.input_size}x'
          f'{args.input_size} clips, batch {" and ".join(map(str, args.batch))}, best of {args.repeats}, '
          f'{"plain Python process" if UNTUNED else "process set up as main.py"}')
    print(f'{"setting":<28} {"impl":<14} {"mode":<6} {"batch":>5} {"ms/clip":>9} {"GFLOP/s":>8} {"vs plain":>9} '
          f'{"first s":>8}  plans (ops)')
    rows = []
    for batch in args.batch:
        for setting in args.settings:
            for row in time_setting(setting, args, device, batch):
                plain = next((r for r in rows + [row] if r['setting'] == setting and r['impl'] == 'plain'
                              and r['mode'] == row['mode'] and r['batch'] == batch), None)
                ratio = row['ms_per_clip'] / plain['ms_per_clip'] if plain else float('nan')
                row['vs_plain'] = ratio
                rows.append(row)
                print(f"{setting:<28} {row['impl']:<14} {row['mode']:<6} {batch:>5} {row['ms_per_clip']:>9.1f} "
                      f"{row['gflops_per_s']:>8.1f} {ratio:>9.3f} {row['first_s']:>8.2f}  {format_counts(row['plans'])}"
                      .rstrip(), flush=True)
    if args.table:
        default = 'planned' if device.type == 'cuda' else 'planned_cl'  # what main.py runs (engine.run)
        print(f'time per clip as a ratio to conv3d in its fastest form, {default} (the default) beside the branch '
              'form; limit = 0.15 + 0.85 x FLOPs ratio')
        for line in ratio_table(rows, default):
            print(line)
    if args.plot:
        plot(rows, args.plot)
        print(f'wrote {args.plot}')
    if args.json:
        print(json.dumps(rows))


if __name__ == '__main__':
    run_cli(main)
