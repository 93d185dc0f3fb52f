"""What the search reads off a searchable op: its BN-scale sparsity term and the channels pruning keeps."""
import torch

from .kernels import kernel_cost


def branch_blocks(op):
    """(kind, start, width) of each branch's consecutive block of BN channels."""
    start, blocks = 0, []
    for kind, width in zip(op.kinds, op.widths):
        blocks.append((kind, start, width))
        start += width
    return blocks


def sparsity_scale(op, reweight):
    """Per-channel factor of the L1 term: 1, or the branch's share of the kernel cost (27 : 9 : 3)."""
    scale = torch.ones(op.bn.num_features, device=op.bn.weight.device)
    if reweight:
        total = sum(kernel_cost(kind, op.k) for kind in op.kinds)
        for kind, start, width in branch_blocks(op):
            scale[start:start + width] = kernel_cost(kind, op.k) / total
    return scale


def add_sparsity_grad(searchable_ops, strength, reweight):
    """Add the subgradient of strength * |BN scale| (cost-weighted) to every searchable op's BN."""
    with torch.no_grad():
        for op in searchable_ops:
            weight = op.bn.weight
            weight.grad.add_(strength * sparsity_scale(op, reweight) * torch.sign(weight))


def kept_indices(scale, num_branches):
    """Sorted indices of the channels pruning keeps: the total / n largest |BN scale|.

    The released rule keeps every channel at or above the (total / n)-th largest value; with ties that
    could keep more, so ties are broken towards the earlier channel and exactly total / n are kept.
    """
    return top_indices(scale, scale.numel() // num_branches)


def top_indices(scale, count):
    """Sorted indices of the `count` largest |scale|, ties towards the earlier channel."""
    order = torch.sort(scale.detach().abs(), descending=True, stable=True).indices
    return order[:count].sort().values


def kept_channels(op):
    return kept_indices(op.bn.weight, len(op.kinds))


def pruned_widths(op):
    """{kind: kept channels in the branch} in the op's branch order."""
    index = kept_channels(op)
    return {kind: int(((index >= start) & (index < start + width)).sum()) for kind, start, width in branch_blocks(op)}


def prune_config(searchable_ops):
    return [pruned_widths(op) for op in searchable_ops]
