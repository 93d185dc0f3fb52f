"""The training loop and result table both examples share: a researcher's own loop, with the one line
CAKES adds to it during the search (`convert.add_sparsity_grad` after `backward()`)."""
import time

import torch

from cakes import convert
from cakes.complexity import count_flops, count_params


def fit(model, batches, loss_fn, epochs, lr, sparsity=0.0):
    """SGD (momentum 0.9, cosine schedule) over `batches()` for `epochs`; returns the last loss.
    With `sparsity`, `model` is a supernet and its BN scales get the cost-weighted L1 term."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
    model.train()
    loss = torch.zeros(())
    for _ in range(epochs):
        for x, y in batches():
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            if sparsity:
                convert.add_sparsity_grad(model, sparsity, reweight=True)
            optimizer.step()
        schedule.step()
    return loss.item()


def search_and_prune(model, train, evaluate, kinds, args, log):
    """Train `model`, search a supernet over `kinds`, prune, retrain; returns (before, after) rows of
    (score, params, GFLOPs) and prints each stage. `train(net, epochs, sparsity)`, `evaluate(net)`."""
    start = time.time()
    loss = train(model, args.epochs, 0.0)
    before = evaluate(model), *complexity(model, args.example)
    log(f'original: {args.epochs} epochs, loss {loss:.4f}, {args.metric} {before[0]:.4f} ({time.time() - start:.0f} s)')

    supernet = convert.to_supernet(model, kinds=kinds)
    log('\nconversion:\n' + convert.summary(supernet))
    loss = train(supernet, args.search_epochs, args.s)
    log(f'\nsupernet: {args.search_epochs} epochs, loss {loss:.4f}, {args.metric} in eval (= pruned network) '
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


def complexity(model, example):
    return count_params(model), count_flops(model, example_input=example) / 1e9


def add_search_flags(parser, epochs, search_epochs, retrain_epochs, batch_size, lr):
    parser.add_argument('--epochs', type=int, default=epochs, help='epochs of the original network')
    parser.add_argument('--search_epochs', type=int, default=search_epochs, help='epochs of the supernet')
    parser.add_argument('--retrain_epochs', type=int, default=retrain_epochs, help='epochs of the pruned network')
    parser.add_argument('-b', '--batch_size', type=int, default=batch_size)
    parser.add_argument('--lr', type=float, default=lr)
    parser.add_argument('--s', type=float, default=1e-4, help='sparsity strength on the supernet BN scales')
    parser.add_argument('--config', default='', help='also write the pruned widths (JSON) to this file')
    parser.add_argument('--seed', type=int, default=0)
