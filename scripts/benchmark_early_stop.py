"""A search run for its whole schedule against the same search stopped once its config settled
(--stop_when_stable): the distance curve, the stop epoch, how far apart the two configs are, and the accuracy of
each config after the same retraining. Everything runs through main.py on the CPU, on a synthetic dataset (the
demo's two classes, told apart only by motion direction), e.g.

    python scripts/benchmark_early_stop.py --out early_stop_out

The search is run once: with --stop_when_stable it stops at epoch E and writes its config; the same checkpoint is
then resumed without the flag and trained to the end of the schedule (an exact resume: with --seed and -j 0 the
result equals an uninterrupted run, which tests/test_search_early_stop.py checks) and pruned with --prune. Both
configs are retrained the same way (--finetune from their own supernet, same seed and schedule) and the last
validation of each is compared. One PNG draws both configs beside the distance curve.

What this shows is whether the stop rule stops early on this data and what the early config costs in accuracy
here; it cannot say how many epochs it saves on Something-Something, whose search settles on its own schedule.
"""
import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cakes.cli import run_cli  # noqa: E402
from cakes.data.synthetic import make_synthetic_data  # noqa: E402
from cakes.engine.board import named_cakes_ops  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models import create_model, num_classes, read_description  # noqa: E402
from cakes.models.checkpoint import load_checkpoint, load_weights, model_state  # noqa: E402
from cakes.ops.settling import CHECKPOINT_KEY, SettlingHistory, mask_distance, pruning_masks  # noqa: E402
from cakes.plot import describe_config, save_config_picture  # noqa: E402

RUN = 'I3D_somethingv1_resnet50_segment{frames}_'


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', required=True, help='folder for the data, the runs and the picture (made afresh)')
    p.add_argument('--train', type=int, default=160, help='synthetic training videos (the demo: 160)')
    p.add_argument('--val', type=int, default=48, help='synthetic validation videos (the demo: 48)')
    p.add_argument('--num_segments', type=int, default=4)
    p.add_argument('--input_size', type=int, default=64)
    p.add_argument('--epochs', type=int, default=16, help='the search schedule')
    p.add_argument('--lr_steps', type=float, nargs='+', default=[8, 12], help='the search schedule\'s lr steps')
    p.add_argument('--eps', type=float, default=0.1, help='--stop_when_stable EPS')
    p.add_argument('--stable_for', type=int, default=5, help='--stable_for K')
    p.add_argument('--retrain_epochs', type=int, default=3)
    p.add_argument('--keep', action='store_true', help='keep the checkpoints (supernets: hundreds of MB each)')
    return p.parse_args(argv)


def main_py(args, out, *flags):
    """main.py with the benchmark's common flags in `out`; returns what it printed (echoed as it runs)."""
    command = [sys.executable, os.path.join(ROOT, 'main.py'), '--root_path', os.path.join(args.out, 'data'),
               '--checkpoint_dir', out, '--num_segments', str(args.num_segments), '--input_size',
               str(args.input_size), '-b', '8', '-j', '0', '-p', '1000', '--pretrained', 'none', '--seed', '0',
               '--op_code', 'conv1_2_3d', *flags]
    print('+ main.py ' + ' '.join(flags), flush=True)
    done = subprocess.run(command, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wanted = ('Search: config', 'search stopped', 'Testing Results', 'error', 'Traceback')
    for line in done.stdout.splitlines():
        if line.startswith(wanted):
            print('    ' + line, flush=True)
    if done.returncode:
        raise UsageError(f'main.py {" ".join(flags)} failed ({done.returncode}):\n{done.stdout[-3000:]}')
    return done.stdout


def search_flags(args):
    return ['--search', '-sr', '--reweight', '--s', '0.0001', '--epochs', str(args.epochs), '--lr', '0.02',
            '--warm', '1', '--lr_steps', *map(str, args.lr_steps)]


def supernet(path):
    checkpoint = load_checkpoint(path)
    model = create_model(**read_description(checkpoint))
    load_weights(model, model_state(checkpoint))
    return model, SettlingHistory.from_state(checkpoint[CHECKPOINT_KEY])


def retrain(args, name, supernet_path, config_path):
    """--finetune the config from its supernet; [(Prec@1, loss)] of its validations."""
    out = os.path.join(args.out, 'retrain_' + name)
    os.makedirs(out)
    printed = main_py(args, out, '--conv_config', config_path, '--finetune', supernet_path, '--epochs',
                      str(args.retrain_epochs), '--lr', '0.01', '--warm', '0', '--lr_steps',
                      str(max(args.retrain_epochs - 1, 1)))
    return [(float(p), float(loss)) for p, loss in
            re.findall(r'^Testing Results: Prec@1 ([\d.]+) Prec@5 [\d.]+ Loss ([\d.]+)', printed, re.M)]


def kernel_mix(config):
    totals = {}
    for widths in config:
        for kind, width in widths.items():
            totals[kind] = totals.get(kind, 0) + width
    kept = sum(totals.values())
    return ' '.join(f'{kind} {100 * width / kept:.1f}%' for kind, width in totals.items())


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    args.out = os.path.abspath(args.out)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    make_synthetic_data(os.path.join(args.out, 'data'), train=args.train, val=args.val)
    run = RUN.format(frames=args.num_segments)
    stopped_dir, full_dir = (os.path.join(args.out, name) for name in ('stopped', 'full'))
    for folder in (stopped_dir, full_dir):
        os.makedirs(folder)
    stopped_ckpt = os.path.join(stopped_dir, 'checkpoint', run + '_checkpoint.pth.tar')
    full_ckpt = os.path.join(full_dir, 'checkpoint', run + '_checkpoint.pth.tar')

    main_py(args, stopped_dir, *search_flags(args), '--stop_when_stable', str(args.eps), '--stable_for',
            str(args.stable_for))
    stopped_config = stopped_ckpt.replace('_checkpoint.pth.tar', '_conv_config.txt')
    if not os.path.isfile(stopped_config):
        print_curve(supernet(stopped_ckpt)[1])
        print(f'the search did not settle within {args.epochs} epochs: nothing to compare (a longer --epochs or '
              'a larger --eps)')
        return
    main_py(args, full_dir, *search_flags(args), '--resume', stopped_ckpt)  # the rest of the schedule
    main_py(args, full_dir, '--search', '--prune', '--prune_model_path', full_ckpt)
    full_config = full_ckpt.replace('_checkpoint.pth.tar', '_conv_config.txt')

    stopped_model, stopped_history = supernet(stopped_ckpt)
    full_model, full_history = supernet(full_ckpt)
    distance = mask_distance(pruning_masks(named_cakes_ops(stopped_model)), pruning_masks(named_cakes_ops(full_model)))
    configs = {name: ast.literal_eval(open(path).read()) for name, path in
               (('stopped', stopped_config), ('full', full_config))}
    accuracy = {name: retrain(args, name, ckpt, path) for name, ckpt, path in
                (('stopped', stopped_ckpt, stopped_config), ('full', full_ckpt, full_config))}

    picture = os.path.join(args.out, 'early_stop.png')
    entries = [describe_config(f'{name}: after {epochs} epochs', configs[name], args.num_segments, args.input_size,
                               num_classes(full_model)) for name, epochs in (('stopped', stopped_history.settled_epoch),
                                                       ('full', args.epochs))]
    judged = full_history.judged_by(args.eps, args.stable_for, args.epochs)  # the curve against the same rule
    save_config_picture(entries, picture, [('full schedule', judged)])
    report(args, full_history, stopped_history, distance, configs, accuracy, picture)
    if not args.keep:
        for folder in (stopped_dir, full_dir, *(os.path.join(args.out, 'retrain_' + n) for n in accuracy)):
            shutil.rmtree(os.path.join(folder, 'checkpoint'), ignore_errors=True)
    print(f'done in {time.time() - started:.0f} s')


def print_curve(history):
    print('distance per validation point (epoch: distance): ' + ', '.join(
        f'{e}: {d:.4f}' for e, d in zip(history.epochs, history.distances)))


def report(args, full_history, stopped_history, distance, configs, accuracy, picture):
    print()
    print(f'synthetic data: {args.train} training, {args.val} validation videos, {args.num_segments} frames of '
          f'{args.input_size}x{args.input_size}; search {args.epochs} epochs, rule EPS {args.eps:g}, K '
          f'{args.stable_for}')
    print_curve(full_history)
    print(stopped_history.stop_text())
    print(f'distance between the stopped and the full config: {distance:.4f} (share of the searchable channels '
          'kept or dropped differently)')
    for name in ('stopped', 'full'):
        print(f'{name} config: kernel mix {kernel_mix(configs[name])}; retrained {args.retrain_epochs} epochs: '
              'Prec@1 (validation loss) per epoch ' + ', '.join(f'{p:.3f} ({loss:.5f})' for p, loss in accuracy[name]))
    print(f'picture: {picture}')


if __name__ == '__main__':
    run_cli(main)
