"""One training epoch and one validation pass, printing the lines the released loop prints."""
import dataclasses
import math
import time

import torch
from torch import nn

from cakes import ops
from cakes.data import normalize_uint8
from cakes.models import num_classes
from cakes.plot import config_figure, describe_config

from . import distributed
from .board import Board, named_cakes_ops
from .distributed import unwrap
from ..errors import UsageError
from .log import RunLog
from .meters import AverageMeter, correct_tensors, read_once
from .precision import autocast
from .preempt import StopRequest
from .schedule import apply_schedule


@dataclasses.dataclass
class Run:
    """What the loops share: the settings, the model and its training state, where to compute and report."""
    args: object
    model: nn.Module
    criterion: nn.Module  # per-sample losses (reduction='none')
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    log: RunLog
    board: Board = dataclasses.field(default_factory=Board)
    stop: StopRequest = None
    costs: list = None  # --reweight latency: per searchable op, {kind: ms} the L1 weights are shares of


def released_meters(losses, top1, top5):
    """The tail of the released `Epoch:` and `Test:` lines: current value (running average) of each."""
    return (f'Loss {losses.val:.4f} ({losses.avg:.4f})\t'
            f'Prec@1 {top1.val:.3f} ({top1.avg:.3f})\t'
            f'Prec@5 {top5.val:.3f} ({top5.avg:.3f})')


def averages(losses, top1, top5):
    """What the progress bar shows."""
    return f'Loss {losses.avg:.4f} Prec@1 {top1.avg:.3f} Prec@5 {top5.avg:.3f}'


def to_device(clip, target, device):
    """uint8 clips cross to the device (a quarter of the float bytes) and are normalised there."""
    return normalize_uint8(clip.to(device, non_blocking=True)), target.to(device, non_blocking=True)


def forward_loss(run, clip, target, model=None):
    """Logits and per-sample losses, under autocast with --amp."""
    with autocast(run.device, run.args.amp):
        output = (model or run.model)(clip)
        return output, run.criterion(output, target)


def backward(run, loss, searchable):
    """Backward, the sparsity term and clipping; with fp16 the scaler scales and unscales. Returns the gradient
    norm as a device tensor (before clipping; None when nothing needs it: no clipping and no fp16)."""
    run.optimizer.zero_grad()
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)  # true gradients for the sparsity term and the clipping (no-op unless fp16)
    if searchable:
        ops.add_sparsity_grad(searchable, run.args.s, run.args.reweight, run.costs)
    if run.args.clip_gradient:
        return nn.utils.clip_grad_norm_(run.model.parameters(), run.args.clip_gradient)
    if run.scaler.is_enabled():
        return nn.utils.get_total_norm([p.grad for p in run.model.parameters() if p.grad is not None])
    return None


def step(run, grad_norm):
    """The optimizer step, after log_clipping. With fp16 it is skipped when the gradients overflowed, then the
    scaler lowers its scale: GradScaler.step would decide that by reading its own flag, a second wait for the
    GPU; the norm already read tells the same (it is finite exactly when every gradient is)."""
    if not run.scaler.is_enabled() or math.isfinite(grad_norm):
        run.optimizer.step()
    run.scaler.update()


def log_clipping(run, total_norm):
    if run.args.clip_gradient and total_norm > run.args.clip_gradient:
        run.log(f'clipping gradient: {total_norm} with coef {run.args.clip_gradient / total_norm}')


def update(run, loss, searchable):
    """backward and step, for a caller that reads nothing else from the step (scripts/benchmark_train.py)."""
    (grad_norm,) = read_once(backward(run, loss, searchable))
    if grad_norm is not None:
        log_clipping(run, grad_norm)
    step(run, grad_norm)


def train_epoch(run, loader, epoch, start=0):
    """Train `epoch` from batch `start` (a resumed run skips the batches done, in the same order).

    Returns the number of batches done: after the current one as soon as the processes agree to stop.
    """
    args, log = run.args, run.log
    batch_time, data_time, losses, top1, top5 = (AverageMeter() for _ in range(5))
    searchable = unwrap(run.model).cakes_ops() if args.sparsity_regularization else []
    run.model.train()
    loader.sampler.set_epoch(epoch, skip=start * loader.batch_size)
    bar = log.progress(f'Epoch {epoch}', len(loader), start)
    end = time.time()
    done = start
    try:
        for i, (clip, target) in enumerate(loader, start):
            data_time.update(time.time() - end)
            apply_schedule(run.optimizer, args, epoch, i, len(loader))
            clip, target = to_device(clip, target, run.device)
            output, loss = forward_loss(run, clip, target)
            loss = loss.mean()
            counts = correct_tensors(output.detach(), target)
            grad_norm = backward(run, loss, searchable)
            # The step's one wait for the device: the finite check must come before the optimizer step.
            value, correct1, correct5, grad_norm, stop = read_once(loss, *counts, grad_norm, ask_stop(run))
            check_finite(value, epoch, i, len(loader))
            if grad_norm is not None:
                log_clipping(run, grad_norm)
            step(run, grad_norm)
            n = clip.shape[0]
            prec1, prec5 = 100.0 * correct1 / n, 100.0 * correct5 / n
            losses.update(value, n)
            top1.update(prec1, n)
            top5.update(prec5, n)

            batch_time.update(time.time() - end)
            end = time.time()
            lr = run.optimizer.param_groups[-1]['lr']
            run.board.scalars('train', {'loss': value, 'prec1': prec1, 'prec5': prec5, 'lr': lr,
                                        'batch_time': batch_time.val, 'data_time': data_time.val},
                              epoch * len(loader) + i)
            if bar:
                bar.update(i + 1, averages(losses, top1, top5))
            if i % args.print_freq == 0:
                log.step(f"Epoch: [{epoch}][{i}/{len(loader)}], lr: {lr:.5f}\t"
                         f'Time {batch_time.val:.3f} ({batch_time.avg:.3f})\t'
                         f'Data {data_time.val:.3f} ({data_time.avg:.3f})\t'
                         + released_meters(losses, top1, top5))
            done = i + 1
            if run.stop is not None and run.stop.answer(stop):
                break
    finally:
        log.end_progress()
    report_data_problems(loader.dataset, log, 'this epoch')
    return done


def ask_stop(run):
    """Whether to stop after this iteration, as StopRequest.ask gives it (0 when nothing can stop the run)."""
    return run.stop.ask() if run.stop is not None else 0


def check_finite(loss, epoch, iteration, iters):
    """Stop before a NaN/inf loss reaches the weights: nothing is stepped or saved for it."""
    if not math.isfinite(loss):
        raise UsageError(f'loss is {loss} at epoch {epoch}, iteration {iteration}/{iters}: training stopped '
                         'before that step, the last checkpoint is intact; resume it with a lower --lr or '
                         '--clip-gradient')


def report_data_problems(dataset, log, when):
    """One line when frames or videos had to be replaced since the last report (in all processes), then start
    counting anew."""
    corrupt, missing = distributed.all_reduce_sum(list(dataset.problem_counts().values()))
    if corrupt or missing:
        log(f'data problems {when}: {int(corrupt)} corrupt frames (replaced by frame 1), '
            f'{int(missing)} missing videos (replaced)')
    dataset.reset_problem_counts()


def lagging_polls(loader):
    """Validation shards differ by at most one video, so this process may have a batch fewer than rank 0
    (which has the most): it answers rank 0's last stop polls without a batch, keeping the all-reduces paired."""
    most = math.ceil(math.ceil(len(loader.dataset) / distributed.world_size()) / loader.batch_size)
    return most - len(loader)


def validate(run, loader, best_prec1, step=None, scorer=None):
    """Top-1 over the whole list; prints the released summary and the best accuracy before this pass.
    With a `scorer` (views.ViewScorer: the loader gives every view of each video) a video's score is its views'
    average, and one line before the summary names the test protocol.

    Under torchrun each process evaluates its shard of the list (no video twice, none padded in) and the
    summary sums loss, correct@1, correct@5 and videos over the processes: the numbers of one process.
    The lines before it show rank 0's shard. Returns None, without a summary, when the processes agree to
    stop: the caller saves and exits.
    """
    args, log = run.args, run.log
    batch_time, losses, top1, top5 = (AverageMeter() for _ in range(4))
    # DDP's forward syncs buffers with processes whose shard may end a batch earlier: run the module itself,
    # with rank 0's BN statistics, i.e. the model rank 0 saves.
    model = run.model.module if isinstance(run.model, nn.parallel.DistributedDataParallel) else run.model
    distributed.broadcast_buffers(model)
    model.eval()
    totals = [0.0, 0, 0, 0]  # loss * n, correct@1, correct@5, n
    bar = log.progress('Test', len(loader))
    end = time.time()
    try:
        with torch.no_grad():
            for i, (clip, target) in enumerate(loader):
                if scorer is None:
                    clip, target = to_device(clip, target, run.device)
                    output, loss = forward_loss(run, clip, target, model)
                else:
                    output, loss = scorer(run, model, clip, target)
                loss_sum, loss_mean, correct1, correct5, stop = read_once(
                    loss.double().sum(), loss.mean(), *correct_tensors(output, target), ask_stop(run))
                n = clip.shape[0]
                totals = [a + b for a, b in zip(totals, [loss_sum, correct1, correct5, n])]
                losses.update(loss_mean, n)
                top1.update(100.0 * correct1 / n, n)
                top5.update(100.0 * correct5 / n, n)
                batch_time.update(time.time() - end)
                end = time.time()
                if bar:
                    bar.update(i + 1, averages(losses, top1, top5))
                if i % args.print_freq == 0:
                    log.step(f'Test: [{i}/{len(loader)}]\t'
                             f'Time {batch_time.val:.3f} ({batch_time.avg:.3f})\t'
                             + released_meters(losses, top1, top5))
                if run.stop is not None and run.stop.answer(stop):
                    return None
            for _ in range(lagging_polls(loader) if run.stop is not None else 0):
                if run.stop.poll():
                    return None
    finally:
        log.end_progress()
    report_data_problems(loader.dataset, log, 'in validation')
    loss_sum, correct1, correct5, n = distributed.all_reduce_sum(totals)
    prec1, prec5, loss = 100.0 * correct1 / n, 100.0 * correct5 / n, loss_sum / n
    run.board.scalars('val', {'prec1': prec1, 'prec5': prec5, 'loss': loss}, step)
    if scorer is not None:
        log(scorer.describe())
    log(f'Testing Results: Prec@1 {prec1:.3f} Prec@5 {prec5:.3f} Loss {loss:.5f}')
    log()
    log(f'Best Prec@1: {best_prec1:.3f}')
    return prec1


def log_search(run, step):
    """In a search, the |BN scale| histograms and the widths pruning would choose now, per CAKES layer."""
    if run.args.search:
        run.board.search(named_cakes_ops(unwrap(run.model)), step)


def log_search_picture(run, epochs_done, step):
    """In a search, the picture --prune draws (cakes.plot) for the widths pruning would choose now, at the run's
    frames and input size: at every validation point (every eval-freq epochs and the last one; dropout
    supernets, which skip validation, at the same points)."""
    if run.args.search:  # and on the console and in the log: how sparse the search is getting
        run.log(ops.search.search_summary(unwrap(run.model).cakes_ops()))
    if not (run.args.search and run.board.writer):
        return
    model = unwrap(run.model)
    config = ops.prune_config(model.cakes_ops())
    name = f"pruning after {epochs_done} epoch{'s' if epochs_done != 1 else ''}"
    entry = describe_config(name, config, run.args.num_segments, run.args.input_size, num_classes(model))
    run.board.figure('prune/conv_config', config_figure([entry]), step)
