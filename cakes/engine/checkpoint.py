"""The checkpoints of a training run: where they go, what they hold (the released keys and, for an exact resume,
the optimizer, the position in the epoch and the RNG states), resuming from them, and the copies kept."""
import dataclasses
import glob
import os
import time

from cakes.errors import UsageError
from cakes.files import link_atomic, save_atomic
from cakes.models import read_description
from cakes.models.checkpoint import (layout_hint, load_checkpoint, load_weights, model_state, prune_output_prefix,
                                     released_state)
from cakes.models.description import NETWORK
from cakes.ops import plans
from cakes.ops.settling import CHECKPOINT_KEY as HISTORY_KEY

from . import distributed
from .distributed import unwrap
from .resume import rng_state
from .views import TEST_FLAGS


def run_name(args):
    return '_'.join([args.type, args.dataset, args.arch, 'segment%d' % args.num_segments, args.store_name])


def checkpoint_path(args):
    return os.path.join(args.checkpoint_dir, 'checkpoint', run_name(args) + '_checkpoint.pth.tar')


def check_overwrite(args, description, layout):
    """Before a training run writes anything: a checkpoint already at its path (of another network, or of this one
    but not resumed) would be overwritten. Refuse in one line naming both networks and the ways out, or with
    --overwrite move the earlier run's files aside. `layout`: {key: shape} of this run's network, to recognise
    a checkpoint without a description (released format). Returns the line to log, or None."""
    path = checkpoint_path(args)
    if not os.path.isfile(path) or args.resume and os.path.abspath(args.resume) == os.path.abspath(path):
        return None
    existing = load_checkpoint(path)
    theirs = read_description(existing)
    if theirs is not None:
        same, named = same_network(theirs, description), network_name(theirs)
    else:
        state = model_state(existing)
        same = {k: tuple(v.shape) for k, v in state.items()} == layout
        named = 'a checkpoint without a description' + layout_hint(state)
    if args.overwrite:
        return move_run_aside(args)
    if same:
        raise UsageError(f"'{path}' already holds a checkpoint of this network (epoch {existing.get('epoch', '?')}), "
                         f'which this run would overwrite: continue it with --resume {path} (or --auto_resume), start '
                         'afresh with --overwrite (moves its files aside), or give another --store_name or '
                         '--checkpoint_dir')
    raise UsageError(f"'{path}' already holds a checkpoint of another network ({named}), which this run "
                     f'({network_name(description)}) would overwrite: give this run another --store_name or '
                     f'--checkpoint_dir, continue that run with --resume {path}, or move it aside with --overwrite')


def same_network(a, b):
    return all(a.get(field) == b.get(field) for field in NETWORK)


def network_name(description):
    """e.g. 'conv1_2_3d --search supernet, resnet50, 8 frames, 174 classes'."""
    kind = ' --search supernet' if description['search'] else (' with a conv_config' if description['conv_config']
                                                                else '')
    return (f"{description['op_code']}{kind}, {description['arch']}, {description['num_segments']} frames, "
            f"{description['num_class']} classes")


def move_run_aside(args):
    """--overwrite: the run's checkpoints, log and TensorBoard events moved to CHECKPOINT_DIR/overwritten/RUN-TIME/
    (rank 0; the others wait), where nothing is lost."""
    name = run_name(args)
    aside = os.path.join(args.checkpoint_dir, 'overwritten', f'{name}-{time.strftime("%Y%m%d-%H%M%S")}')
    if distributed.is_main():
        run = glob.escape(name)
        patterns = [('checkpoint', run + '_checkpoint.pth.tar'), ('checkpoint', run + '_best.pth.tar'),
                    ('checkpoint', run + '_epoch*.pth.tar'), ('log', run + '.csv'), ('log', run + '_tb')]
        for folder, pattern in patterns:
            for found in glob.glob(os.path.join(glob.escape(os.path.join(args.checkpoint_dir, folder)), pattern)):
                os.makedirs(os.path.join(aside, folder), exist_ok=True)
                os.replace(found, os.path.join(aside, folder, os.path.basename(found)))
    distributed.barrier()
    return f"=> --overwrite: the earlier run's checkpoints and logs moved to '{aside}'"


# Settings that may change between a run and its continuation without changing what is trained.
RUN_CONTROL = {'resume', 'auto_resume', 'evaluate', 'epochs', 'start_epoch', 'workers', 'print_freq', 'eval_freq',
               'checkpoint_dir', 'root_path', 'seed', 'finetune', 'pretrained', 'channels_last', 'no_channels_last',
               'no_tensorboard', 'overwrite', 'stop_when_stable', 'stable_for', *TEST_FLAGS}
# Settings that an evaluation does not use (training's own, and the name of the run's files): it does the same
# whatever they are.
UNUSED_BY_EVALUATION = {'lr', 'lr_steps', 'warm', 'momentum', 'weight_decay', 'clip_gradient', 'batch_size',
                        'dropout', 'sparsity_regularization', 's', 'reweight', 'sync_bn', 'store_name'}


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where training continues: the epoch, the batches of it already done, the best Prec@1 so far and the RNG
    states to restore (one per process of the saved run; None: as the run starts them) and, in a search, how its
    config settled so far (cakes.ops.settling; None: no history)."""
    epoch: int = 0
    iteration: int = 0
    best_prec1: float = 0.0
    rngs: list = None
    search_history: dict = None


def resume(args, model, optimizer, log, scaler=None, checkpoint=None, filled=()):
    """The released keys: weights (with or without `module.`), start epoch, best accuracy. A checkpoint of this
    project also restores the optimizer (and the --amp fp16 gradient scaler), and says where in the epoch it
    stopped and the RNG states, which the caller restores when its loaders exist.

    `checkpoint`: args.resume already loaded; `filled`: the network flags taken from its description.
    Returns the Progress saved.
    """
    checkpoint = load_checkpoint(args.resume) if checkpoint is None else checkpoint
    load_weights(unwrap(model), model_state(checkpoint))
    epoch = int(checkpoint.get('epoch', 0))
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
    if isinstance(checkpoint.get('plans'), dict):  # before the first forward: the run's own plans, bit-exact
        plans.load_plans(unwrap(model), checkpoint['plans'])
    at = f'epoch {epoch}' + (f', iteration {iteration}' if iteration else '')
    log(f"=> loaded checkpoint '{args.resume}' ({at}" + ('' if full else '; weights only, fresh optimizer') + ')')
    rngs = checkpoint.get('rank_rng') or ([checkpoint['rng']] if 'rng' in checkpoint else None)
    return Progress(epoch, iteration, float(checkpoint.get('best_prec1', 0)), rngs, checkpoint.get(HISTORY_KEY))


def log_changed_settings(saved, args, log, filled=()):
    """Settings given differently from the checkpoint's run, those that matter to what this run does (not
    training's own when it evaluates; those `filled` from its description are its own: a conv_config filled as
    widths was a key or a file name there)."""
    if not isinstance(saved, dict):
        return
    ignored = RUN_CONTROL | (UNUSED_BY_EVALUATION if args.evaluate else set()) | set(filled)
    changed = [f'{k} {saved[k]!r} -> {v!r}' for k, v in vars(args).items()
               if k in saved and k not in ignored and saved[k] != v]
    if changed:
        log('=> settings differ from the checkpoint\'s run: ' + ', '.join(changed))


def save(args, model, optimizer, sampler, epoch, iteration, best_prec1, scaler=None, description=None,
         search_history=None):
    """RUN_checkpoint.pth.tar with the released keys ('epoch': where training continues) and, for an exact
    resume, 'iteration' (batches of that epoch done), 'optimizer', 'rng', 'args' and 'plans' (the execution
    plans the CAKES ops chose, cakes.ops.plans; plain data only), with
    --amp fp16 'scaler', the network's 'description' (cakes.models.description) and a search's settling
    history, 'search_history' (cakes.ops.settling: plain data). Under torchrun every
    process calls it (rank 0 writes) and 'rank_rng' holds every process's RNG states ('rng' is rank 0's)."""
    rngs = distributed.gather(rng_state(sampler))
    state = {'epoch': epoch, 'arch': args.arch, 'state_dict': released_state(unwrap(model)),
             'best_prec1': best_prec1, 'iteration': iteration, 'optimizer': optimizer.state_dict(),
             'rng': rngs[0], 'args': dict(vars(args)), 'plans': plans.plan_table(unwrap(model))}
    if len(rngs) > 1:
        state['rank_rng'] = rngs
    if scaler is not None and scaler.is_enabled():
        state['scaler'] = scaler.state_dict()
    if description is not None:
        state['description'] = description
    if search_history is not None:
        state[HISTORY_KEY] = search_history
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
