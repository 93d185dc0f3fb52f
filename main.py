"""CAKES: search, prune, retrain and evaluate I3D networks on Something-Something.

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
import dataclasses
import os

from cakes.runtime import tune_process

tune_process()  # before torch loads OpenMP and allocates

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cakes import data
from cakes import ops
from cakes.cli import run_cli
from cakes.conv_config import resolve_conv_config
from cakes.engine import distributed
from cakes.engine.board import Board
from cakes.engine.checkpoint import (link_atomic, load_checkpoint, load_weights, model_state, prune_output_prefix,
                                     released_state, save_atomic, write_text_atomic)
from cakes.engine.class_report import finish_evaluation
from cakes.engine.log import RunLog
from cakes.engine.loop import Run, log_search, log_search_picture, train_epoch, unwrap, validate
from cakes.engine.network_flags import FLAGS as NETWORK_FLAGS, fill_network_flags, not_given
from cakes.engine.precision import AMP_DTYPES, grad_scaler
from cakes.engine.preempt import StopRequest, ignore_stop_signals
from cakes.engine.resume import EpochSampler, restore_process_rng, rng_state, seed_process
from cakes.engine.schedule import make_optimizer
from cakes.engine.views import ViewScorer
from cakes.errors import UsageError
from cakes.models import TemporalModel, describe, read_description
from cakes.models.budget import prune_video_to_budget
from cakes.models.finetune import init_from_supernet
from cakes.plot import describe_config, save_config_picture


def build_parser():
    p = argparse.ArgumentParser(description='CAKES: Channel-wise Automatic KErnel Shrinking for 3D networks')
    p.add_argument('--dataset', default='somethingv1', choices=data.DATASETS)
    p.add_argument('--root_path', default='../', help='dataset root (with or without a trailing /)')
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
    p.add_argument('--reweight', action='store_true', help='cost-aware sparsity weights (27 : 9 : 3)')
    p.add_argument('--finetune', default='', help='supernet checkpoint to initialise the pruned network from')
    # Additions to the released command line.
    p.add_argument('--input_size', type=int, default=224, help='crop size (224 as released; smaller for tests)')
    p.add_argument('--pretrained', default='imagenet',
                   help="'imagenet', 'none' or a torchvision ResNet state_dict file; used only from scratch")
    p.add_argument('--seed', type=int, default=None,
                   help='seed python, numpy and torch: with -j 0 on the CPU the run is reproducible')
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
                        'Default: on when training on a CPU; off on GPUs and for --evaluate')
    p.add_argument('--no_channels_last', action='store_true',
                   help='train on a CPU in the plain (NCDHW) memory format')
    p.add_argument('--sync_bn', action='store_true',
                   help='under torchrun on GPUs, BN statistics over the global batch (SyncBatchNorm) instead of '
                        "each process's share; dropout supernets' searched BN stays per process")
    p.add_argument('--no_tensorboard', action='store_true',
                   help='do not write TensorBoard events (default: CHECKPOINT_DIR/log/RUN_tb/)')
    p.add_argument('--target_gflops', type=float, default=None,
                   help='with --prune: keep C channels per layer trading |BN scale| against FLOPs so that the pruned '
                        'network has at most G GFLOPs at --num_segments and --input_size (default: the released rule)')
    # Testing as the papers test (with --evaluate; SPEC section 9).
    data.add_view_flags(p)
    p.add_argument('--save_scores', default='', metavar='FILE.npz',
                   help='with --evaluate: write video ids, labels and the averaged scores (videos x classes)')
    p.add_argument('--confusion', default='', metavar='FILE.png',
                   help='with --evaluate: draw the row-normalised confusion matrix')
    return p


@dataclasses.dataclass
class Source:
    """The checkpoint that --resume, --prune_model_path (with --prune) or --finetune names, loaded once, its
    description (None: a released checkpoint) and the network flags filled from it."""
    path: str = ''
    checkpoint: dict = None
    description: dict = None
    filled: set = frozenset()

    def take(self, path):
        """The checkpoint at `path`: the one loaded here, handed over once (it may be large), else loaded."""
        if path == self.path and self.checkpoint is not None:
            checkpoint, self.checkpoint = self.checkpoint, None
            return checkpoint
        return load_checkpoint(path)


def parse_args(argv=None):
    """The command line, with the network flags that are not given filled from the description of the
    checkpoint the run starts from, else with their defaults. Returns (args, Source)."""
    parser = build_parser()
    args = parser.parse_args(argv, argparse.Namespace(**not_given(), dropout=None))
    check_combinations(args)
    path = args.prune_model_path if args.prune else (args.finetune or args.resume)
    checkpoint = load_checkpoint(path) if path else None
    description = read_description(checkpoint) if checkpoint is not None else None
    if args.prune and description is not None and not description['search']:
        raise UsageError(f"'{path}' holds a network trained without --search (op code {description['op_code']}): "
                         '--prune reads the checkpoint of a --search supernet')
    filled = fill_network_flags(args, {flag: parser.get_default(flag) for flag in NETWORK_FLAGS}, description)
    if args.dropout is None:  # the checkpoint's own (its classifier layout depends on it), else the default
        args.dropout = parser.get_default('dropout') if description is None else description['dropout']
    return args, Source(path, checkpoint, description, filled)


def check_args(args):
    """Refuse flag combinations that cannot mean what the user wants."""
    check_combinations(args)
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


def check_combinations(args):
    """The checks that do not depend on the network flags: parse_args makes them before it reads a checkpoint."""
    if args.prune and not args.prune_model_path:
        raise UsageError('--prune needs --prune_model_path CKPT, the supernet checkpoint to prune')
    if args.finetune and args.resume:
        raise UsageError('give either --resume (continue a run) or --finetune (start from a supernet), not both')
    if args.reweight and not args.sparsity_regularization:
        raise UsageError('--reweight scales the sparsity term: add -sr')
    if args.target_gflops is not None and (not args.prune or args.target_gflops <= 0):
        raise UsageError('--target_gflops G is the FLOPs budget of --prune: add --prune and give G > 0')
    if args.evaluate and args.prune:
        raise UsageError('give either --evaluate or --prune, not both')
    if given_test_flags(args) and not args.evaluate:
        raise UsageError(f'{given_test_flags(args)[0]} sets how --evaluate tests: add --evaluate (and --resume CKPT)')
    if args.auto_resume and args.resume:
        raise UsageError('give either --resume CKPT or --auto_resume (the run\'s own checkpoint), not both')
    if args.channels_last and args.no_channels_last:
        raise UsageError('give either --channels_last or --no_channels_last, not both')
    if args.sync_bn and not (distributed.launched_by_torchrun() and torch.cuda.is_available()):
        raise UsageError('--sync_bn synchronises BN across the GPU processes of torchrun (SyncBatchNorm needs '
                         'CUDA): launch with torchrun on GPUs, or drop it')


def check_batch(batch_size, gpus):
    """nn.DataParallel splits every batch across the visible GPUs: each needs at least one sample."""
    if batch_size < 1:
        raise UsageError(f'-b {batch_size}: the batch size must be at least 1')
    if batch_size < gpus:
        raise UsageError(f'-b {batch_size} is smaller than the {gpus} visible GPUs (each needs a sample of the '
                         f'batch): raise -b to at least {gpus} or make fewer GPUs visible with CUDA_VISIBLE_DEVICES')


TEST_FLAGS = {'test_crops': 1, 'full_res': False, 'twice_sample': False, 'dense_sample': False, 'softmax': False,
              'save_scores': '', 'confusion': ''}


def given_test_flags(args):
    """The test flags given, as --flags: none means the released validation (one centred clip, centre crop)."""
    return ['--' + name for name, default in TEST_FLAGS.items() if getattr(args, name) != default]


def evaluation_views(args):
    """The test protocol of --evaluate with test flags, or None for the released validation."""
    return data.Views.from_args(args) if args.evaluate and given_test_flags(args) else None


def run_name(args):
    return '_'.join([args.type, args.dataset, args.arch, 'segment%d' % args.num_segments, args.store_name])


def build_model(args, num_class, conv_config, dropout=None, pretrained=None):
    return TemporalModel(num_class, args.num_segments, op_code=args.op_code, search=args.search,
                         conv_config=conv_config, backbone=args.arch,
                         dropout=args.dropout if dropout is None else dropout, pretrained=pretrained)


def prune(args, source):
    """Load the supernet, print its pruned conv_config and write it to ./conv_config.txt and beside the
    supernet checkpoint."""
    state = model_state(source.take(args.prune_model_path))
    classifier = state.get('new_fc.weight', state.get('base_model.fc.weight'))
    if classifier is None:
        raise UsageError(f"'{args.prune_model_path}' has no classifier weights: not a checkpoint of this model")
    model = build_model(args, classifier.shape[0], None, dropout=args.dropout if 'new_fc.weight' in state else 0)
    load_weights(model, state)
    config = ops.prune_config(model.cakes_ops()) if args.target_gflops is None else prune_to_gflops(args, model)
    text = str(config)  # a Python literal of plain ints, as config.py takes it
    print(text)
    prefix = prune_output_prefix(args.prune_model_path)
    # A budget's config has a name of its own: RUN_conv_config.txt stays the one --finetune copies channels for.
    output = prefix + '_conv_config' + ('' if args.target_gflops is None else f'_{args.target_gflops:g}gflops')
    write_pruned_config(text + '\n', output + '.txt')
    name = os.path.basename(prefix) + ('' if args.target_gflops is None else
                                       f'\npruned to at most {args.target_gflops:g} GFLOPs')
    picture = output + '.png'
    save_config_picture([describe_config(name, config, args.num_segments, args.input_size, classifier.shape[0])],
                        picture)
    print(f'kernel mix picture written to {picture}')


def write_pruned_config(text, beside):
    """./conv_config.txt as released (a different config already there is moved to ./conv_config.txt.bak, or
    .bak.1, .bak.2, ... when that is taken: never lost), and the same file beside the supernet checkpoint."""
    released = 'conv_config.txt'
    if os.path.isfile(released):
        with open(released) as f:
            previous = f.read()
        if previous != text:
            backup = free_backup_name(released)
            os.replace(released, backup)
            print(f'moved the previous ./conv_config.txt (another config) to ./{backup}')
    write_text_atomic(released, text)
    print('conv_config written to ./conv_config.txt: paste it into conv_configs in config.py')
    write_text_atomic(beside, text)
    print(f'conv_config also written beside the supernet: {beside}')


def free_backup_name(path):
    backup, n = path + '.bak', 0
    while os.path.exists(backup):
        n += 1
        backup = f'{path}.bak.{n}'
    return backup


def prune_to_gflops(args, model):
    budget = prune_video_to_budget(model, args.target_gflops * 1e9, args.input_size)
    print(f'FLOPs budget {args.target_gflops:g} GFLOPs: pruned network {budget.flops / 1e9:.3f} GFLOPs, '
          f'{args.target_gflops - budget.flops / 1e9:.3f} below the target ({args.num_segments} frames, '
          f'{args.input_size}x{args.input_size}; lambda {budget.lam * 1e9:.4g} per GFLOP'
          + (': the released rule already fits)' if budget.lam == 0 else ')'))
    return budget.config


def pretrained_source(args):
    """ImageNet weights only when training from scratch: resume, evaluate and finetune bring their own."""
    if args.resume or args.evaluate or args.finetune or args.pretrained.lower() == 'none':
        return None
    return args.pretrained


def make_loader(args, split, batch_size, views=None):
    """Validation in list order; training shuffled by an EpochSampler, whose order a resumed run replays.
    Under torchrun each process loads its share (`batch_size` per process): every world-th video of the
    validation list from its rank on (no padding), its shard of the shared training order.

    Clips come as uint8 (a quarter of the bytes through workers, pinned memory and the copy) and are
    normalised on the device. Workers persist across epochs and prefetch; each loader draws its worker seeds
    from a generator of its own, never from torch's global RNG, so that validating does not change the
    random numbers the next epoch trains with (nor does resuming). With a test protocol (`views`) a validation
    sample is every view of a video.
    """
    dataset = data.build_dataset(args.dataset, args.root_path, split, args.num_segments,
                                 input_size=args.input_size, uint8=True, views=views)
    workers = dict(persistent_workers=True, prefetch_factor=4) if args.workers > 0 else {}
    common = dict(batch_size=batch_size, num_workers=args.workers, pin_memory=torch.cuda.is_available(),
                  worker_init_fn=ignore_stop_signals, **workers)
    rank, world = distributed.rank(), distributed.world_size()
    if split == 'val':
        return torch.utils.data.DataLoader(dataset, sampler=range(rank, len(dataset), world),
                                           generator=torch.Generator(), **common)
    if len(dataset) < args.batch_size:
        raise UsageError(f'the training list has {len(dataset)} usable videos, fewer than -b {args.batch_size}: '
                         'not one full batch to train on')
    sampler = EpochSampler(len(dataset), rank, world)
    sampler.seed = distributed.broadcast_int(sampler.seed)  # one order, which the processes share out
    return torch.utils.data.DataLoader(dataset, sampler=sampler, drop_last=True, generator=sampler.generator,
                                       **common)


def checkpoint_path(args):
    return os.path.join(args.checkpoint_dir, 'checkpoint', run_name(args) + '_checkpoint.pth.tar')


def auto_resume(args, log):
    """--auto_resume: the run's own checkpoint when there is one, so that a requeued job continues."""
    path = checkpoint_path(args)
    if not os.path.isfile(path):
        log(f"=> --auto_resume: no checkpoint '{path}' yet, starting fresh")
        return
    args.resume = path
    if args.finetune:
        log(f"=> --auto_resume: '{path}' continues a run that --finetune started; not initialising again")
        args.finetune = ''


# Settings that may change between a run and its continuation without changing what is trained.
RUN_CONTROL = {'resume', 'auto_resume', 'evaluate', 'epochs', 'start_epoch', 'workers', 'print_freq', 'eval_freq',
               'checkpoint_dir', 'root_path', 'seed', 'finetune', 'pretrained', 'channels_last', 'no_channels_last',
               'no_tensorboard', *TEST_FLAGS}


def resume(args, model, optimizer, log, scaler=None, checkpoint=None, filled=()):
    """The released keys: weights (with or without `module.`), start epoch, best accuracy. A checkpoint of this
    project also restores the optimizer (and the --amp fp16 gradient scaler); its position in the epoch and
    RNG states go back to the caller.

    `checkpoint`: args.resume already loaded; `filled`: the network flags taken from its description.
    Returns (best_prec1, batches of the start epoch already done, RNG states per process or None).
    """
    checkpoint = load_checkpoint(args.resume) if checkpoint is None else checkpoint
    load_weights(unwrap(model), model_state(checkpoint))
    args.start_epoch = int(checkpoint.get('epoch', 0))
    iteration = int(checkpoint.get('iteration', 0))
    full = 'optimizer' in checkpoint
    if full:
        try:
            optimizer.load_state_dict(checkpoint['optimizer'])
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"the optimizer state in '{args.resume}' does not fit this model: {e}") from None
        log_changed_settings(checkpoint.get('args'), args, log, filled)
    if scaler is not None and scaler.is_enabled() and 'scaler' in checkpoint:
        scaler.load_state_dict(checkpoint['scaler'])
    at = f'epoch {args.start_epoch}' + (f', iteration {iteration}' if iteration else '')
    log(f"=> loaded checkpoint '{args.resume}' ({at}" + ('' if full else '; weights only, fresh optimizer') + ')')
    rngs = checkpoint.get('rank_rng') or ([checkpoint['rng']] if 'rng' in checkpoint else None)
    return float(checkpoint.get('best_prec1', 0)), iteration, rngs


def log_changed_settings(saved, args, log, filled=()):
    """Settings given differently from the checkpoint's run (those `filled` from its description are its own:
    a conv_config filled as widths was a key or a file name there)."""
    if not isinstance(saved, dict):
        return
    changed = [f'{k} {saved[k]!r} -> {v!r}' for k, v in vars(args).items()
               if k in saved and k not in RUN_CONTROL and k not in filled and saved[k] != v]
    if changed:
        log('=> settings differ from the checkpoint\'s run: ' + ', '.join(changed))


def save(args, model, optimizer, sampler, epoch, iteration, best_prec1, scaler=None, description=None):
    """RUN_checkpoint.pth.tar with the released keys ('epoch': where training continues) and, for an exact
    resume, 'iteration' (batches of that epoch done), 'optimizer', 'rng' and 'args' (plain data only), with
    --amp fp16 'scaler', and the network's 'description' (cakes.models.description). Under torchrun every
    process calls it (rank 0 writes) and 'rank_rng' holds every process's RNG states ('rng' is rank 0's)."""
    rngs = distributed.gather(rng_state(sampler))
    state = {'epoch': epoch, 'arch': args.arch, 'state_dict': released_state(unwrap(model)),
             'best_prec1': best_prec1, 'iteration': iteration, 'optimizer': optimizer.state_dict(),
             'rng': rngs[0], 'args': dict(vars(args))}
    if len(rngs) > 1:
        state['rank_rng'] = rngs
    if scaler is not None and scaler.is_enabled():
        state['scaler'] = scaler.state_dict()
    if description is not None:
        state['description'] = description
    path = checkpoint_path(args)
    if distributed.is_main():
        save_atomic(state, path)
    return path


def keep_copies(path, epoch, is_best):
    """RUN_best.pth.tar on a new best accuracy, RUN_epochN.pth.tar every 5 epochs (rank 0): hard links to the
    checkpoint file just written (copies where links cannot be made)."""
    if not distributed.is_main():
        return
    prefix = prune_output_prefix(path)
    if is_best:
        link_atomic(path, prefix + '_best.pth.tar')
    if epoch % 5 == 0:
        link_atomic(path, prefix + '_epoch%d.pth.tar' % epoch)


def stop_run(stop, log, path, epoch, iteration):
    """After a stop signal: one line saying where the run stopped and how to continue, then exit."""
    log(f"{stop.name}: stopped at epoch {epoch}, iteration {iteration}; saved '{path}': continue with "
        f'--resume {path} (or --auto_resume)')
    distributed.barrier()  # no process ends (which makes torchrun end the others) before rank 0 has saved
    raise SystemExit(stop.exit_status)


def train(run, loaders, best_prec1, start_iteration, description=None):
    """The epochs from args.start_epoch. On SIGTERM/SIGINT (to any process): finish the iteration (or abandon
    validation, which a resumed run repeats), save where training is, exit 128 + signal. Every checkpoint
    holds `description`."""
    args = run.args
    train_loader, val_loader = loaders
    sampler = train_loader.sampler
    iters = len(train_loader)
    # The released loop does not validate dropout supernets during their search.
    validates = ops.op_spec(args.op_code).family != 'dropout'

    def save_at(epoch, iteration):
        return save(args, run.model, run.optimizer, sampler, epoch, iteration, best_prec1, run.scaler, description)

    with StopRequest(distributed.all_reduce_max if distributed.active() else None).installed() as stop:
        run.stop = stop
        for epoch in range(args.start_epoch, args.epochs):
            done = train_epoch(run, train_loader, epoch, start_iteration)
            start_iteration = 0
            if stop.poll():
                stop_run(stop, run.log, save_at(epoch, done), epoch, done)
            last_step = (epoch + 1) * iters - 1  # TensorBoard: per-epoch points at the epoch's last iteration
            log_search(run, last_step)
            if (epoch + 1) % args.eval_freq and epoch != args.epochs - 1:
                continue
            log_search_picture(run, epoch + 1, last_step)
            prec1 = validate(run, val_loader, best_prec1, last_step) if validates else 0.0
            if prec1 is None:
                stop_run(stop, run.log, save_at(epoch, done), epoch, done)
            is_best = prec1 > best_prec1
            best_prec1 = max(prec1, best_prec1)
            path = save_at(epoch + 1, 0)
            keep_copies(path, epoch + 1, is_best)
            if stop.poll() and epoch + 1 < args.epochs:
                stop_run(stop, run.log, path, epoch + 1, 0)


def evaluate(args, loop, loader, best_prec1, views):
    """--evaluate: the released validation, or under a test protocol the views' average, then per-class
    accuracy, the scores file and the confusion matrix."""
    if views is None:
        validate(loop, loader, best_prec1)
        return
    scorer = ViewScorer(views, args.softmax, loader.batch_size)
    validate(loop, loader, best_prec1, scorer=scorer)
    finish_evaluation(scorer, loader, data.class_names(args.dataset, args.root_path), loop.log,
                      args.save_scores, args.confusion)


def place_model(args, model, gpus):
    """Memory format and SyncBN first (DDP registers the parameters as they are), then the device and the
    wrapper: DDP under torchrun, nn.DataParallel over the visible GPUs as released, else the bare model on
    the CPU. Returns (model, device)."""
    if channels_last(args):
        model.use_channels_last()
    if gpus or distributed.active() and torch.cuda.is_available():
        # Benchmark mode picks algorithms by timing, so results vary between runs: not with --seed.
        torch.backends.cudnn.benchmark = args.seed is None
        torch.backends.cudnn.deterministic = args.seed is not None
    if distributed.active():
        if args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device = distributed.device()
        # Dropout supernets leave branches unused in a step, differently in each process.
        unused = ops.op_spec(args.op_code).family == 'dropout'
        model = nn.parallel.DistributedDataParallel(model.to(device), device_ids=[device] if gpus else None,
                                                    find_unused_parameters=unused)
        return model, device
    if gpus:
        return nn.DataParallel(model.to('cuda')), torch.device('cuda')
    return model, torch.device('cpu')


def channels_last(args):
    """--channels_last or --no_channels_last; else on when training on a CPU (faster on every CPU measured),
    off for --evaluate (the plain form prints the released numbers to the last digit) and on GPUs (not
    measured there)."""
    if args.channels_last or args.no_channels_last:
        return args.channels_last
    return not args.evaluate and not torch.cuda.is_available()


def make_board(args, iters, start_iteration):
    """TensorBoard events under CHECKPOINT_DIR/log/RUN_tb/ from rank 0; a resumed run purges the points that
    the interrupted one wrote past where it continues."""
    if args.no_tensorboard or not distributed.is_main():
        return Board()
    return Board(os.path.join(args.checkpoint_dir, 'log', run_name(args) + '_tb'),
                 purge_step=args.start_epoch * iters + start_iteration)


def main(argv=None):
    args, source = parse_args(argv)
    check_args(args)
    # Filled from a description: the widths themselves.
    conv_config = args.conv_config if isinstance(args.conv_config, list) else resolve_conv_config(args.conv_config)
    with distributed.session():
        if args.prune:
            return prune(args, source) if distributed.is_main() else None
        return run(args, conv_config, source)


def check_classes(source, class_names, args):
    """A described network was trained on as many classes as the dataset's category.txt lists."""
    described = source.description['num_class']
    if described != len(class_names):
        raise UsageError(f"'{source.path}' holds a network for {described} classes but the {args.dataset} "
                         f'category.txt under {args.root_path} lists {len(class_names)}: give the --dataset and '
                         '--root_path it was trained on')


def run(args, conv_config, source=None):
    source = source or Source()
    if distributed.active():
        check_batch(args.batch_size, 0)
        batch_size, gpus = distributed.process_batch(args.batch_size), int(torch.cuda.is_available())
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check_batch(args.batch_size, gpus)
        batch_size = args.batch_size
    seed_process(args.seed, distributed.rank())

    main_process = distributed.is_main()
    log = RunLog(os.path.join(args.checkpoint_dir, 'log', run_name(args) + '.csv') if main_process else None,
                 console=main_process)
    if args.auto_resume:
        auto_resume(args, log)
    class_names = data.class_names(args.dataset, args.root_path)
    described = source.description is not None and source.path in (args.resume, args.finetune)
    if described:
        check_classes(source, class_names, args)
    with distributed.local_rank0_first():  # one ImageNet download per machine, the others read the cache
        model = build_model(args, len(class_names), conv_config, pretrained=pretrained_source(args))
    if args.finetune:
        init_from_supernet(model, model_state(source.take(args.finetune)))
        log(f"=> initialised from the kept channels of supernet '{args.finetune}'")

    model, device = place_model(args, model, gpus)
    optimizer = make_optimizer(unwrap(model), args.lr, args.momentum, args.weight_decay)
    scaler = grad_scaler(device, args.amp)
    best_prec1, start_iteration, rngs = (resume(args, model, optimizer, log, scaler, source.take(args.resume),
                                                source.filled if source.path == args.resume else ())
                                         if args.resume else (0.0, 0, None))
    criterion = nn.CrossEntropyLoss(reduction='none').to(device)  # per sample: validation sums them exactly
    loop = Run(args, model, criterion, optimizer, scaler, device, log)
    views = evaluation_views(args)
    val_loader = make_loader(args, 'val', batch_size, views)
    if args.evaluate:
        evaluate(args, loop, val_loader, best_prec1, views)
        return

    train_loader = make_loader(args, 'train', batch_size)
    if rngs is not None:  # last: building the model and the loaders drew from them
        restore_process_rng(rngs, train_loader.sampler, distributed.rank(), distributed.world_size())
    description = describe(args.op_code, args.search, conv_config, args.arch, args.num_segments, args.dropout,
                           class_names)
    loop.board = make_board(args, len(train_loader), start_iteration)
    try:
        train(loop, (train_loader, val_loader), best_prec1, start_iteration, description)
    finally:
        loop.board.close()


if __name__ == '__main__':
    run_cli(main)
