"""The training loop and result table both examples share: a researcher's own loop, with what CAKES adds to it
during the search: `convert.add_sparsity_grad` after `backward()`, and after each epoch `monitor.update`, which
measures how far the config pruning would choose has moved and, with --stop_when_stable, ends the search once
it has settled."""
import time

import torch

from cakes import convert
from cakes.complexity import count_flops, count_params
from cakes.ops.settling import check_stop_rule


def fit(model, batches, loss_fn, epochs, lr, sparsity=0.0, until=None):
    """SGD (momentum 0.9, cosine schedule) over `batches()` for `epochs`; returns the last loss.
    With `sparsity`, `model` is a supernet and its BN scales get the cost-weighted L1 term.
    `until(epochs done)`, called after each epoch, ends training early when it returns True."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
    model.train()
    loss = torch.zeros(())
    for epoch in range(epochs):
        for x, y in batches():
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            if sparsity:
                convert.add_sparsity_grad(model, sparsity, reweight=True)
            optimizer.step()
        schedule.step()
        if until is not None and until(epoch + 1):
            break
    return loss.item()


def search_and_prune(model, train, evaluate, kinds, args, log):
    """Train `model`, search a supernet over `kinds`, prune, retrain; returns (before, after) rows of
    (score, params, GFLOPs) and prints each stage. `train(net, epochs, sparsity, until=None)` (see `fit`),
    `evaluate(net)`."""
    start = time.time()
    loss = train(model, args.epochs, 0.0)
    before = evaluate(model), *complexity(model, args.example)
    log(f'original: {args.epochs} epochs, loss {loss:.4f}, {args.metric} {before[0]:.4f} ({time.time() - start:.0f} s)')

    supernet = convert.to_supernet(model, kinds=kinds)
    log('\nconversion:\n' + convert.summary(supernet))
    monitor = convert.StopWhenSettled(supernet, eps=args.stop_when_stable, patience=args.stable_for,
                                      epochs=args.search_epochs)
    loss = train(supernet, args.search_epochs, args.s, settling(monitor, log))
    log(monitor.history.stop_text())
    searched = monitor.history.mask_epoch or 0  # the epochs trained: fewer when the search stopped early
    log(f'\nsupernet: {searched} epochs, loss {loss:.4f}, {args.metric} in eval (= pruned network) '
        f'{evaluate(supernet):.4f} ({time.time() - start:.0f} s)')

    config = convert.prune_config(supernet)
    if args.config:
        convert.save_config(config, args.config)
    log('\npruned widths:')
    for name, widths in config.items():
        log(f'  {name}: ' + ', '.join(f'{kind} {w}' for kind, w in widths.items()))
    pruned = convert.to_pruned(model, config, supernet=supernet)
    loss = train(pruned, args.retrain_epochs, 0.0)
    after = evaluate(pruned), *complexity(pruned, args.example)
    log(f'pruned: {args.retrain_epochs} epochs, loss {loss:.4f}, {args.metric} {after[0]:.4f} ({time.time() - start:.0f} s)')

    log(f'\n{"":10}{args.metric:>9}{"params":>12}{"GFLOPs":>9}   (one input of shape {tuple(args.example.shape[1:])})')
    for label, (score, params, gflops) in (('original', before), ('CAKES', after)):
        log(f'{label:10}{score:9.4f}{params:12,}{gflops:9.4f}')
    log(f'total time {time.time() - start:.0f} s')
    return before, after


def settling(monitor, log):
    """After each search epoch: how far the config moved since the last epoch; True once it has settled (never
    without a stop rule)."""
    def settled(epoch):
        stop = monitor.update(epoch)
        if monitor.distance is not None:
            log(f'search epoch {epoch}: {100 * monitor.distance:.2f}% of the channels changed kept/dropped state')
        return stop
    return settled


def complexity(model, example):
    return count_params(model), count_flops(model, example_input=example) / 1e9


def add_search_flags(parser, epochs, search_epochs, retrain_epochs, batch_size, lr):
    parser.add_argument('--epochs', type=int, default=epochs, help='epochs of the original network')
    parser.add_argument('--search_epochs', type=int, default=search_epochs, help='epochs of the supernet')
    parser.add_argument('--retrain_epochs', type=int, default=retrain_epochs, help='epochs of the pruned network')
    parser.add_argument('-b', '--batch_size', type=int, default=batch_size)
    parser.add_argument('--lr', type=float, default=lr)
    parser.add_argument('--s', type=float, default=1e-4, help='sparsity strength on the supernet BN scales')
    parser.add_argument('--stop_when_stable', type=float, nargs='?', const=0.1, default=None, metavar='EPS',
                        help='end the search once fewer than this share of channels (default 0.1) changed state '
                             'at --stable_for epochs in a row')
    parser.add_argument('--stable_for', type=int, default=5, metavar='K', help='see --stop_when_stable')
    parser.add_argument('--config', default='', help='also write the pruned widths (JSON) to this file')
    parser.add_argument('--seed', type=int, default=0)


def check_search_flags(args):
    """The stop rule's flags, checked before anything trains."""
    check_stop_rule(args.stop_when_stable, args.stable_for, '--stop_when_stable', '--stable_for')
    return args
