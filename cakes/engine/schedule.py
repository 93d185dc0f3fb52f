"""Parameter groups and the learning-rate schedule of the released training loop (its warm-up and step quirks included)."""
import torch
from torch import nn

# name, lr_mult, decay_mult, in the released order.
GROUPS = (('first_conv_weight', 1, 1), ('first_conv_bias', 2, 0), ('normal_weight', 1, 1),
          ('normal_bias', 2, 0), ('BN scale/shift', 1, 0))


def param_groups(model):
    """The five groups: the first three convolutions met, other conv/linear weights, linear biases, BNs."""
    params = {name: [] for name, _, _ in GROUPS}
    convs_seen = 0
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            convs_seen += 1
            first = convs_seen <= 3
            params['first_conv_weight' if first else 'normal_weight'].append(m.weight)
            if m.bias is not None:
                params['first_conv_bias' if first else 'normal_bias'].append(m.bias)
        elif isinstance(m, nn.Linear):
            params['normal_weight'].append(m.weight)
            if m.bias is not None:
                params['normal_bias'].append(m.bias)
        elif isinstance(m, (nn.BatchNorm3d, nn.SyncBatchNorm)):  # SyncBatchNorm: --sync_bn
            params['BN scale/shift'] += [m.weight, m.bias]
        elif len(list(m.parameters(recurse=False))):
            raise TypeError(f'{type(m).__name__} has parameters that no optimizer group takes')
    return [{'params': params[name], 'lr_mult': lr_mult, 'decay_mult': decay_mult, 'name': name}
            for name, lr_mult, decay_mult in GROUPS]


def make_optimizer(model, lr, momentum, weight_decay):
    """SGD over the five groups, every group at the base lr and decay (multipliers not applied yet)."""
    return torch.optim.SGD(param_groups(model), lr, momentum=momentum, weight_decay=weight_decay)


def scheduled(args, epoch, iteration, iters_per_epoch):
    """(lr, weight_decay) per group in effect at `iteration` of `epoch`, or None to leave them as they are.

    Warm-up (epoch < warm) ramps every group from 0.01 towards `lr` per iteration, multipliers not
    applied. At epoch == warm the released loop changes nothing (a quirk kept for faithful numbers);
    after it, step decay with the groups' multipliers. `--warm 0` means step decay from the first step.
    """
    if epoch < args.warm:
        step = epoch * iters_per_epoch + iteration + 1
        lr = 0.01 + (args.lr - 0.01) * step / (iters_per_epoch * args.warm + 1e-8)
        return [(lr, args.weight_decay)] * len(GROUPS)
    if epoch == args.warm and args.warm > 0:
        return None
    decay = 0.1 ** sum(1 for step in args.lr_steps if epoch >= step)
    return [(args.lr * decay * lr_mult, args.weight_decay * decay_mult) for _, lr_mult, decay_mult in GROUPS]


def apply_schedule(optimizer, args, epoch, iteration, iters_per_epoch):
    values = scheduled(args, epoch, iteration, iters_per_epoch)
    if values is not None:
        for group, (lr, weight_decay) in zip(optimizer.param_groups, values):
            group['lr'], group['weight_decay'] = lr, weight_decay
