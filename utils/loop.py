"""One training epoch and one validation pass, printing the released lines (SPEC section 6)."""
import time

import torch
from torch import nn

import ops

from .meters import AverageMeter, accuracy
from .schedule import apply_schedule


def unwrap(model):
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def train_epoch(loader, model, criterion, optimizer, epoch, args, log, device):
    batch_time, data_time, losses, top1, top5 = (AverageMeter() for _ in range(5))
    searchable = unwrap(model).cakes_ops() if args.sparsity_regularization else []
    model.train()
    end = time.time()
    for i, (clip, target) in enumerate(loader):
        data_time.update(time.time() - end)
        apply_schedule(optimizer, args, epoch, i, len(loader))
        clip, target = clip.to(device, non_blocking=True), target.to(device, non_blocking=True)
        output = model(clip)
        loss = criterion(output, target)
        prec1, prec5 = accuracy(output.detach(), target)
        n = clip.shape[0]
        losses.update(loss.item(), n)
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


def validate(loader, model, criterion, args, log, device, best_prec1):
    """Top-1 over the whole list; prints the released summary and the best accuracy before this pass."""
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
    log(f'Testing Results: Prec@1 {top1.avg:.3f} Prec@5 {top5.avg:.3f} Loss {losses.avg:.5f}')
    log()
    log(f'Best Prec@1: {best_prec1:.3f}')
    return top1.avg
