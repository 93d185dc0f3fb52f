"""CAKES: search, prune, retrain and evaluate I3D networks on Something-Something (and the other datasets of
`--dataset`).

    CUDA_VISIBLE_DEVICES=0,...,7 python main.py --root_path PATH --dataset somethingv1 \
        --checkpoint_dir DIR --type I3D --arch resnet50 --num_segments 8 -b 96 --lr 0.04 --op_code conv1_2_3d ...

On SIGTERM or SIGINT, training finishes its iteration, saves CKPT_DIR/checkpoint/RUN_checkpoint.pth.tar and exits
with 128 + the signal (143 for SIGTERM: not finished, so schedulers requeue). `--resume` (or `--auto_resume` in a
requeued job) continues from the batch it stopped at, with the optimizer and RNG states: with `--seed` and
`-j 0` on the CPU, the result equals an uninterrupted run.

Several GPUs or machines: `torchrun --nnodes N --nproc_per_node G main.py ...` trains with DistributedDataParallel
(NCCL on GPUs, gloo on CPUs), one process per GPU; -b stays the global batch. Rank 0 prints, logs and saves.
"""
import argparse
import os

from cakes.runtime import tune_process

tune_process()  # before torch loads OpenMP and allocates

import torch  # noqa: E402

from cakes import data
from cakes import ops
from cakes.cli import run_cli
from cakes.cli.settings import described_settings, for_this_run, parse_flags
from cakes.conv_config import read_user_configs, resolve_conv_config
from cakes.engine import distributed
from cakes.engine.precision import AMP_DTYPES
from cakes.engine.prune import prune
from cakes.engine.run import Source, run
from cakes.engine.views import evaluation_views, given_test_flags
from cakes.errors import UsageError
from cakes.models import read_description
from cakes.models.checkpoint import load_checkpoint, prune_output_prefix
from cakes.models.finetune import check_supernet
from cakes.ops import settling

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config.py')  # your conv_configs


def build_parser():
    p = argparse.ArgumentParser(description='CAKES: Channel-wise Automatic KErnel Shrinking for 3D networks')
    p.add_argument('--dataset', default='somethingv1', choices=data.DATASETS)
    p.add_argument('--root_path', default='../', help='dataset root (with or without a trailing /)')
    data.add_dataset_flags(p)
    p.add_argument('--store_name', default='', help='suffix of the run name')
    p.add_argument('--type', default='I3D', choices=['I3D'])
    p.add_argument('--arch', default='resnet50', choices=['resnet50', 'resnet101'])
    p.add_argument('--num_segments', type=int, default=8, help='frames per clip')
    p.add_argument('--alpha', type=int, default=4, help='accepted for command compatibility; unused by I3D')
    p.add_argument('--beta', type=int, default=2, help='accepted for command compatibility; unused by I3D')
    p.add_argument('--epochs', type=int, default=70)
    p.add_argument('-b', '--batch-size', type=int, default=24,
                   help='total over all GPUs (under torchrun: over all processes, each takes b / processes)')
    p.add_argument('--lr', '--learning-rate', type=float, default=0.01)
    p.add_argument('--lr_steps', type=float, nargs='+', default=[50, 60], help='epochs of x0.1 decay')
    p.add_argument('--dropout', '--dp', type=float, default=0.3)
    p.add_argument('--warm', type=float, default=5, help='warm-up epochs')
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--weight_decay', '--wd', type=float, default=3e-4)
    p.add_argument('--clip-gradient', '--gd', type=float, default=20)
    p.add_argument('--print-freq', '-p', type=int, default=20, help='iterations between printed lines')
    p.add_argument('--eval-freq', '-ef', type=int, default=1, help='epochs between validations')
    p.add_argument('-j', '--workers', type=int, default=16, help='data loader workers')
    p.add_argument('--resume', default='', help='checkpoint to continue from (weights, epoch, best_prec1; '
                   'from this project also the optimizer, the position in the epoch and the RNG states)')
    p.add_argument('-e', '--evaluate', action='store_true', help='validate once and exit')
    p.add_argument('--start-epoch', type=int, default=0)
    p.add_argument('--checkpoint_dir', required=True, help='logs and checkpoints go below it')
    p.add_argument('--op_code', default='conv3d', help='one of ' + ', '.join(ops.OP_CODES))
    p.add_argument('-sr', '--sparsity-regularization', action='store_true', help='L1 on the CAKES BN scales')
    p.add_argument('--s', type=float, default=1e-4, help='sparsity strength')
    p.add_argument('--conv_config', default='', help='a key of conv_configs in config.py, or a conv_config.txt')
    p.add_argument('--search', action='store_true', help='build the supernet')
    p.add_argument('--prune', action='store_true', help='write the pruned conv_config of a supernet and exit')
    p.add_argument('--prune_model_path', default='', help='the supernet checkpoint to prune')
    p.add_argument('--reweight', nargs='?', const=True, default=False, choices=['latency'],
                   help="cost-aware sparsity weights: 27 : 9 : 3 (--reweight, as released), or each kind's share of "
                        'the time measured on this device at the run\'s shapes (--reweight latency)')
    p.add_argument('--finetune', default='', help='supernet checkpoint to initialise the pruned network from')
    # Additions to the released command line.
    p.add_argument('--input_size', type=int, default=224,
                   help="crop size (224 as released; smaller for tests); with a checkpoint that describes its network, "
                        "default: the size it was trained at")
    p.add_argument('--pretrained', default='imagenet',
                   help="'imagenet', 'none' or a torchvision ResNet state_dict file; used only from scratch")
    p.add_argument('--seed', type=int, default=None,
                   help='seed python, numpy and torch: with -j 0 on the CPU the run is reproducible')
    p.add_argument('--overwrite', action='store_true',
                   help="start afresh where CHECKPOINT_DIR already holds this run's checkpoint: the earlier run's "
                        'checkpoints and logs are moved to CHECKPOINT_DIR/overwritten/ (never deleted)')
    p.add_argument('--auto_resume', action='store_true',
                   help="continue from this run's own CKPT_DIR/checkpoint/RUN_checkpoint.pth.tar when it exists, "
                        'else start fresh (for jobs that get requeued)')
    p.add_argument('--amp', nargs='?', const='bf16', choices=list(AMP_DTYPES), default=None,
                   help='mixed precision: convolutions and matmuls in bfloat16 (--amp or --amp bf16; CPUs and '
                        'GPUs from Ampere on) or float16 with a gradient scaler (--amp fp16, older GPUs); about '
                        'half the activation memory and faster on tensor cores; numbers differ at that precision')
    p.add_argument('--channels_last', action='store_true',
                   help='run the model in the channels_last_3d memory format: same results, faster (2 CPU cores, '
                        'CAKES123D_P: ~0.83 of the model train step time, ~0.80 of eval; ~0.73 of a whole step). '
                        'Default: on on a CPU (training and --evaluate); off on GPUs')
    p.add_argument('--no_channels_last', action='store_true',
                   help='run on a CPU in the plain (NCDHW) memory format')
    p.add_argument('--sync_bn', action='store_true',
                   help='under torchrun on GPUs, BN statistics over the global batch (SyncBatchNorm) instead of '
                        "each process's share; dropout supernets' searched BN stays per process")
    p.add_argument('--no_tensorboard', action='store_true',
                   help='do not write TensorBoard events (default: CHECKPOINT_DIR/log/RUN_tb/)')
    p.add_argument('--target_gflops', type=float, default=None,
                   help='with --prune: keep C channels per layer trading |BN scale| against FLOPs so that the pruned '
                        'network has at most G GFLOPs at --num_segments and --input_size (default: the released rule); '
                        'in a --search run: the config whose settling is measured')
    p.add_argument('--width_multiple', type=int, default=1, metavar='M',
                   help='with --prune: as many channels per block, every branch width a multiple of M (8 for tensor '
                        'cores, 16 for AVX-512), chosen by |BN scale| within each branch; combines with '
                        '--target_gflops (default 1: the released rule); in a --search run: as for --target_gflops')
    p.add_argument('--target_ms', type=float, default=None, metavar='T',
                   help='with --prune: keep C channels per layer, choosing the kinds that keep the most |BN scale| '
                        'with the pruned network predicted to take at most T ms on this device: an eval forward of '
                        'one clip at --num_segments and --input_size in the form main.py runs it (--latency_batch, '
                        '--latency_mode for others); a latency table is measured first (minutes) and cached')
    p.add_argument('--target_speedup', type=float, default=None, metavar='S',
                   help="with --prune: as --target_ms, at the released rule's predicted time over S")
    p.add_argument('--latency_batch', type=int, default=1, metavar='B',
                   help='with --target_ms/--target_speedup: the time of B clips per device (default 1)')
    p.add_argument('--latency_mode', choices=['eval', 'train'], default='eval',
                   help='with --target_ms/--target_speedup: the time of an eval forward (default) or of a train step')
    p.add_argument('--latency_table', default='', metavar='FILE.json',
                   help='with --target_ms/--target_speedup or --reweight latency: read the latency table from FILE '
                        'when it exists (it must be measured for this run), else measure it and write it there')
    p.add_argument('--stop_when_stable', type=float, nargs='?', const=settling.EPS, default=None, metavar='EPS',
                   help='with --search: end the search once the config pruning would choose has settled, its '
                        'distance between validation points (the share of searchable channels kept or dropped '
                        f'differently) below EPS at --stable_for points in a row (EPS default {settling.EPS:g}); '
                        "it saves its checkpoint and writes the config beside it as --prune does. Default: the "
                        'released schedule')
    p.add_argument('--stable_for', type=int, default=settling.PATIENCE, metavar='K',
                   help=f'with --stop_when_stable: how many distances in a row below EPS (default {settling.PATIENCE})')
    # Testing as the papers test (with --evaluate): several clips and crops per video.
    data.add_view_flags(p)
    p.add_argument('--save_scores', default='', metavar='FILE.npz',
                   help='with --evaluate: write video ids, labels and the averaged scores (videos x classes)')
    p.add_argument('--confusion', default='', metavar='FILE.png',
                   help='with --evaluate: draw the row-normalised confusion matrix')
    return p


def parse_settings(argv=None):
    """The run's settings, built once and then only read: the flags, where those of the network left out take the
    values of the description of the checkpoint the run starts from (else their defaults), checked. Returns
    (Settings, the widths of its conv_config, Source: that checkpoint, loaded once)."""
    flags, given = parse_flags(build_parser, argv)
    check_combinations(flags)
    path = flags.prune_model_path if flags.prune else (flags.finetune or flags.resume)
    checkpoint = load_checkpoint(path) if path else None
    description = read_description(checkpoint) if checkpoint is not None else None
    if flags.prune and description is not None and not description['search']:
        raise UsageError(f"'{path}' holds a network trained without --search (op code {description['op_code']}): "
                         '--prune reads the checkpoint of a --search supernet')
    if flags.finetune and not flags.prune:
        check_supernet(checkpoint, description, path)
    configs = read_user_configs(CONFIG_FILE) if flags.conv_config else None  # only a run that names a config reads it
    settings, filled = described_settings(flags, given, description, configs)
    check_args(settings)
    settings, notes = for_this_run(settings, given)
    conv_config = resolve_conv_config(settings.conv_config, configs)
    return settings, conv_config, Source(path, checkpoint, description, filled, tuple(notes))


def check_args(args):
    """The combinations that depend on the network flags, once they are known (filled from a checkpoint)."""
    spec = ops.op_spec(args.op_code)
    if spec.family == 'dropout' and not args.search:
        raise UsageError(f"--op_code {args.op_code} is a dropout supernet: add --search")
    if args.prune and (not args.search or spec.family == 'plain'):
        raise UsageError('--prune reads a supernet: give --search and the CAKES op code it was searched with')
    if args.search and args.conv_config:
        raise UsageError('--conv_config sets the widths of a searched network; a --search supernet has none')
    if args.search and args.finetune:
        raise UsageError('--finetune initialises a pruned network: drop --search')
    if args.finetune and not args.conv_config:
        raise UsageError('--finetune needs --conv_config, the widths pruning found for that supernet (without it, '
                         f"the file --prune writes beside the supernet: {prune_output_prefix(args.finetune)}"
                         "_conv_config.txt)")
    if (args.sparsity_regularization or args.reweight) and spec.family == 'plain':
        raise UsageError(f'-sr/--reweight act on CAKES BN scales; --op_code {args.op_code} has none')
    if args.stop_when_stable is not None and not (args.search and not args.prune and not args.evaluate):
        raise UsageError('--stop_when_stable ends a search when its config has settled: give it to a --search '
                         'training run (not --prune or --evaluate)')
    if (args.target_gflops is not None or args.width_multiple != 1) and not (args.prune or args.search):
        raise UsageError('--target_gflops G and --width_multiple M choose the config of a supernet: add --prune (or '
                         '--search, where they choose the config whose settling is measured)')


def check_combinations(args):
    """Refuse flag combinations that cannot mean what the user wants: those that do not depend on the network
    flags, checked before a checkpoint is read (the others: check_args)."""
    if args.prune and not args.prune_model_path:
        raise UsageError('--prune needs --prune_model_path CKPT, the supernet checkpoint to prune')
    if args.finetune and args.resume:
        raise UsageError('give either --resume (continue a run) or --finetune (start from a supernet), not both')
    if args.reweight and not args.sparsity_regularization:
        raise UsageError('--reweight scales the sparsity term: add -sr')
    if args.target_gflops is not None and args.target_gflops <= 0:
        raise UsageError('--target_gflops G is a FLOPs budget: give G > 0')
    if args.width_multiple < 1:
        raise UsageError('--width_multiple M makes the branch widths that --prune chooses multiples of M: give M >= 1')
    check_time_budget(args)
    settling.check_stop_rule(args.stop_when_stable, args.stable_for, '--stop_when_stable', '--stable_for')
    if args.stable_for != settling.PATIENCE and args.stop_when_stable is None:
        raise UsageError('--stable_for K is how many distances in a row --stop_when_stable waits for: add '
                         '--stop_when_stable [EPS]')
    if args.evaluate and args.prune:
        raise UsageError('give either --evaluate or --prune, not both')
    test_only = [flag for flag in given_test_flags(args) if flag != '--dense_sample']  # which also trains densely
    if test_only and not args.evaluate:
        raise UsageError(f'{test_only[0]} sets how --evaluate tests: add --evaluate (and --resume CKPT)')
    evaluation_views(args)  # refuses a protocol that cannot be run (--twice_sample with --dense_sample)
    if args.evaluate and not args.resume and not args.auto_resume:
        raise UsageError('--evaluate scores a trained network: give --resume CKPT, the checkpoint to evaluate')
    if args.auto_resume and args.resume:
        raise UsageError('give either --resume CKPT or --auto_resume (the run\'s own checkpoint), not both')
    if args.overwrite and (args.auto_resume or args.evaluate or args.prune):
        raise UsageError('--overwrite starts a training run afresh: not with --auto_resume, --evaluate or --prune')
    if args.channels_last and args.no_channels_last:
        raise UsageError('give either --channels_last or --no_channels_last, not both')
    if args.sync_bn and not (distributed.launched_by_torchrun() and torch.cuda.is_available()):
        raise UsageError('--sync_bn synchronises BN across the GPU processes of torchrun (SyncBatchNorm needs '
                         'CUDA): launch with torchrun on GPUs, or drop it')


def check_time_budget(args):
    """The flags of a time budget and of --reweight latency."""
    timed = args.target_ms is not None or args.target_speedup is not None
    for flag, value in (('--target_ms T', args.target_ms), ('--target_speedup S', args.target_speedup)):
        if value is not None and (not args.prune or value <= 0):
            raise UsageError(f'{flag} is the time budget of --prune: add --prune and give a value > 0')
    if args.target_ms is not None and args.target_speedup is not None:
        raise UsageError('give either --target_ms or --target_speedup, not both')
    if timed and args.target_gflops is not None:
        raise UsageError('give either a time budget (--target_ms, --target_speedup) or --target_gflops, not both')
    if not timed and (args.latency_batch != 1 or args.latency_mode != 'eval'):
        raise UsageError('--latency_batch and --latency_mode say what --target_ms/--target_speedup time: add one')
    if args.latency_batch < 1:
        raise UsageError('--latency_batch B is the clips per device of the time budget: give B >= 1')
    if args.latency_table and not timed and args.reweight != 'latency':
        raise UsageError('--latency_table FILE is read by --target_ms/--target_speedup and --reweight latency: add '
                         'one of them')


def main(argv=None):
    settings, conv_config, source = parse_settings(argv)
    with distributed.session():
        if settings.prune:
            return prune(settings, source) if distributed.is_main() else None
        return run(settings, conv_config, source)


if __name__ == '__main__':
    run_cli(main)
