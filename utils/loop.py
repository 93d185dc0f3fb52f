"""One training epoch and one validation pass, printing the released lines (SPEC section 6)."""
import math
import time

import torch
from torch import nn

import ops

from .errors import UsageError
from .meters import AverageMeter, accuracy
from .schedule import apply_schedule


def unwrap(model):
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def train_epoch(loader, model, criterion, optimizer, epoch, args, log, device, start=0, stop=None):
    """Train `epoch` from batch `start` (a resumed run skips the batches done, in the same order).

    Returns the number of batches done: after the current one as soon as `stop` records a signal.
    """
    batch_time, data_time, losses, top1, top5 = (AverageMeter() for _ in range(5))
    searchable = unwrap(model).cakes_ops() if args.sparsity_regularization else []
    model.train()
    loader.sampler.set_epoch(epoch, skip=start * loader.batch_size)
    end = time.time()
    done = start
    for i, (clip, target) in enumerate(loader, start):
        data_time.update(time.time() - end)
        apply_schedule(optimizer, args, epoch, i, len(loader))
        clip, target = clip.to(device, non_blocking=True), target.to(device, non_blocking=True)
        output = model(clip)
        loss = criterion(output, target)
        value = loss.item()
        check_finite(value, epoch, i, len(loader))
        prec1, prec5 = accuracy(output.detach(), target)
        n = clip.shape[0]
        losses.update(value, n)
        top1.update(prec1, n)
        top5.update(prec5, n)

        optimizer.zero_grad()
        loss.backward()
        if searchable:
            ops.add_sparsity_grad(searchable, args.s, args.reweight)
        if args.clip_gradient:
            total_norm = float(nn.utils.clip_grad_norm_(model.parameters(), args.clip_gradient))
            if total_norm > args.clip_gradient:
                log(f'clipping gradient: {total_norm} with coef {args.clip_gradient / total_norm}')
        optimizer.step()

        batch_time.update(time.time() - end)
        end = time.time()
        if i % args.print_freq == 0:
            log(f"Epoch: [{epoch}][{i}/{len(loader)}], lr: {optimizer.param_groups[-1]['lr']:.5f}\t"
                f'Time {batch_time.val:.3f} ({batch_time.avg:.3f})\t'
                f'Data {data_time.val:.3f} ({data_time.avg:.3f})\t'
                f'Loss {losses.val:.4f} ({losses.avg:.4f})\t'
                f'Prec@1 {top1.val:.3f} ({top1.avg:.3f})\t'
                f'Prec@5 {top5.val:.3f} ({top5.avg:.3f})')
        done = i + 1
        if stop is not None and stop.signum:
            break
    report_data_problems(loader.dataset, log, 'this epoch')
    return done


def check_finite(loss, epoch, iteration, iters):
    """Stop before a NaN/inf loss reaches the weights: nothing is stepped or saved for it."""
    if not math.isfinite(loss):
        raise UsageError(f'loss is {loss} at epoch {epoch}, iteration {iteration}/{iters}: training stopped '
                         'before that step, the last checkpoint is intact; resume it with a lower --lr or '
                         '--clip-gradient')


def report_data_problems(dataset, log, when):
    """One line when frames or videos had to be replaced since the last report, then start counting anew."""
    counts = dataset.problem_counts()
    if any(counts.values()):
        log(f"data problems {when}: {counts['corrupt_frames']} corrupt frames (replaced by frame 1), "
            f"{counts['missing_videos']} missing videos (replaced)")
    dataset.reset_problem_counts()


def validate(loader, model, criterion, args, log, device, best_prec1, stop=None):
    """Top-1 over the whole list; prints the released summary and the best accuracy before this pass.

    Returns None, without a summary, when `stop` records a signal: the caller saves and exits.
    """
    batch_time, losses, top1, top5 = (AverageMeter() for _ in range(4))
    model.eval()
    end = time.time()
    with torch.no_grad():
        for i, (clip, target) in enumerate(loader):
            clip, target = clip.to(device, non_blocking=True), target.to(device, non_blocking=True)
            output = model(clip)
            loss = criterion(output, target)
            prec1, prec5 = accuracy(output, target)
            n = clip.shape[0]
            losses.update(loss.item(), n)
            top1.update(prec1, n)
            top5.update(prec5, n)
            batch_time.update(time.time() - end)
            end = time.time()
            if i % args.print_freq == 0:
                log(f'Test: [{i}/{len(loader)}]\t'
                    f'Time {batch_time.val:.3f} ({batch_time.avg:.3f})\t'
                    f'Loss {losses.val:.4f} ({losses.avg:.4f})\t'
                    f'Prec@1 {top1.val:.3f} ({top1.avg:.3f})\t'
                    f'Prec@5 {top5.val:.3f} ({top5.avg:.3f})')
            if stop is not None and stop.signum:
                return None
    report_data_problems(loader.dataset, log, 'in validation')
    log(f'Testing Results: Prec@1 {top1.avg:.3f} Prec@5 {top5.avg:.3f} Loss {losses.avg:.5f}')
    log()
    log(f'Best Prec@1: {best_prec1:.3f}')
    return top1.avg
