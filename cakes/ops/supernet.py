"""Dropout supernets (CAKES-P search): n full-width branches of which each step uses only C channels."""
import torch
import torch.nn.functional as F
from torch import nn

from . import plans
from .kernels import inflate, make_conv
from .search import kept_channels


class DropoutSupernetOp(nn.Module):
    """Every branch has C filters and `norm` covers all n*C; a forward computes only C of them.

    Training: `split_two` (convst_dropout) keeps C - d filters of branch 1 and d of branch 2, d uniform
    in 0..C; otherwise C filters uniform among all n*C. Evaluation uses the C channels with the largest
    |BN scale|, the ones pruning keeps, so evaluating a supernet previews its pruned network. Kept
    channels stay in supernet order, so `conv3` sees them in the order pruning and finetuning use.
    BN normalises the kept channels with their own statistics and updates only their running stats.
    `k` and `activation` as in CakesOp (without activation `out` is empty).
    """

    def __init__(self, kinds, in_channels, width, stride, split_two=False, k=3, activation=True):
        super().__init__()
        self.kinds = tuple(kinds)
        self.k = k
        self.widths = (width,) * len(kinds)
        self.width = width
        self.split_two = split_two
        self.out_channels = width
        self.convs = nn.ModuleList(nn.Sequential(make_conv(kind, in_channels, width, stride, k)) for kind in kinds)
        self.norm = nn.BatchNorm3d(width * len(kinds))
        self.out = nn.Sequential(*([nn.ReLU(inplace=True)] if activation else []))
        # cakes.ops.plans, not in the state_dict: the plan chosen per key, the policy that chooses (None: CAKES_PLAN)
        self.plans, self.policy = {}, None

    @property
    def bn(self):
        return self.norm

    def sample_channels(self, generator=None):
        """Sorted indices into the n*C supernet channels for one training step."""
        c, n = self.width, len(self.kinds)
        if self.split_two:
            d = int(torch.randint(0, c + 1, (), generator=generator))
            first = torch.randperm(c, generator=generator)[:c - d]
            second = torch.randperm(c, generator=generator)[:d] + c
            return torch.cat([first.sort().values, second.sort().values])
        return torch.randperm(n * c, generator=generator)[:c].sort().values

    def forward(self, x):
        if self.training:  # drawn on the CPU, split there: on the GPU the split would wait for it (a sync)
            index = self.sample_channels()
            locals_ = self.branch_channels(index)
            index, *locals_ = to_device([index, *locals_], x.device)
        else:
            index = kept_channels(self).to(x.device)
            locals_ = self.branch_channels(index)
        y = plans.dropout_outputs(self, x, locals_)
        return self.out(subset_batch_norm(self.norm, y, index))

    def branch_channels(self, index):
        """Each branch's share of the sorted supernet channels `index`, as indices into that branch."""
        w = self.width
        return [index[(index >= b * w) & (index < (b + 1) * w)] - b * w for b in range(len(self.convs))]

    def inflate_from_2d(self, weight2d):
        for kind, branch in zip(self.kinds, self.convs):
            branch[0].weight.data.copy_(inflate(kind, weight2d))


def to_device(indices, device):
    """CPU index tensors on `device` in one copy that does not wait for the device's queue (a plain copy from
    pageable memory would): pinned, then copied asynchronously."""
    if device.type == 'cpu':
        return indices
    flat = torch.cat(indices)
    flat = (flat.pin_memory() if device.type == 'cuda' else flat).to(device, non_blocking=True)
    return list(flat.split([len(i) for i in indices]))


def subset_batch_norm(bn, x, index):
    """BatchNorm over the channels `index` of `bn`, updating only their running statistics."""
    mean, var = bn.running_mean[index], bn.running_var[index]
    y = F.batch_norm(x, mean, var, bn.weight[index], bn.bias[index], bn.training, bn.momentum, bn.eps)
    if bn.training:
        with torch.no_grad():
            bn.running_mean[index] = mean
            bn.running_var[index] = var
            bn.num_batches_tracked += 1
    return y
