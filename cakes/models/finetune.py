"""`--finetune`: start a pruned network from the channels of a supernet that pruning keeps."""
import torch

from cakes.ops import CakesOp
from cakes.ops.kernels import kind_of_size
from cakes.ops.search import kept_indices, top_indices
from cakes.errors import UsageError

from .checkpoint import check_own_layout, is_supernet, load_weights, model_state

BN_ENTRIES = ('weight', 'bias', 'running_mean', 'running_var')


def check_supernet(checkpoint, description, path):
    """--finetune reads a --search supernet (its description says so, else its layout: a dropout supernet's ops
    keep a BN of their own, a sparsity supernet's conv3 reads all its branches' channels); a pruned or plain
    network has no channels to choose from."""
    if description is not None:
        if description['search']:
            return
        network = f"op code {description['op_code']}" + (' with a conv_config' if description['conv_config'] else '')
    else:
        state = model_state(checkpoint)
        check_own_layout(state, f"'{path}'")
        if any('.convT.norm.' in k for k in state) or is_supernet(state):
            return
        network = 'no description'
    raise UsageError(f"'{path}' holds a trained network ({network}), not a --search supernet: --finetune starts a "
                     'pruned network from the channels a supernet keeps; give the checkpoint of the --search run '
                     f'it was pruned from, or --resume {path} to continue training it')


def init_from_supernet(model, supernet_state):
    """Load `supernet_state` (a sparsity or dropout supernet, no `module.` prefix) into the pruned `model`.

    For every CAKES op: each branch takes the kept filters of the supernet branch of the same kind, the
    BN the kept entries, and conv3 the matching input columns (a dropout supernet's conv3 already reads
    C channels, the kept ones in order). Everything else is copied as it is.
    """
    state = dict(supernet_state)
    dropout = any('.convT.norm.' in k for k in state)
    for name, op in model.named_modules():
        if isinstance(op, CakesOp):
            _take_kept(state, name, op, dropout)
    load_weights(model, state)


def _take_kept(state, name, op, dropout):
    bn = f'{name}.norm.' if dropout else f'{name}.out.0.'
    if bn + 'weight' not in state:
        raise UsageError(f'--finetune checkpoint has no supernet BN {bn}weight: give a checkpoint of a '
                         '--search run (sparsity or dropout supernet)')
    branches = []
    while f'{name}.convs.{len(branches)}.0.weight' in state:
        branches.append(state.pop(f'{name}.convs.{len(branches)}.0.weight'))
    kinds = [kind_of_size(w.shape[2:]) for w in branches]
    width = branches[0].shape[0]
    scale = state[bn + 'weight']
    released = kept_indices(scale, len(branches))
    picks, budget = [], False
    for j, (kind, planned) in enumerate(zip(op.kinds, op.widths)):
        if kind not in kinds:
            raise UsageError(f'--finetune: {name} has a {kind} branch that the supernet lacks: '
                             'use the op code the supernet was searched with')
        b = kinds.index(kind)
        local = released[(released >= b * width) & (released < (b + 1) * width)] - b * width
        if len(local) != planned:
            if dropout:  # its conv3 reads the released rule's channels only
                found = {k: int(((released >= i * width) & (released < (i + 1) * width)).sum())
                         for i, k in enumerate(kinds)}
                raise UsageError(f'--finetune: {name} keeps {found} in the dropout supernet but --conv_config '
                                 f'gives {dict(zip(op.kinds, op.widths))}: a dropout supernet starts only the '
                                 'config that --prune wrote by the released rule')
            # A budget's config (FLOPs, time, --width_multiple): the branch's own largest |BN scale|, as the
            # budget valued it.
            local, budget = top_indices(scale[b * width:(b + 1) * width].abs(), planned), True
        state[f'{name}.convs.{j}.0.weight'] = branches[b][local]
        picks.append(local + b * width)
    kept = torch.cat(picks) if budget else released
    for entry in BN_ENTRIES:
        state[f'{name}.out.0.{entry}'] = state.pop(bn + entry)[kept]
    state[f'{name}.out.0.num_batches_tracked'] = state.pop(bn + 'num_batches_tracked')
    if not dropout:
        conv3 = name.rsplit('.', 1)[0] + '.conv3.weight'
        state[conv3] = state[conv3][:, kept]
