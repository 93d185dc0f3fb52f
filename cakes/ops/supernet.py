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
        self.plans, self.plan_times = {}, {}  # cakes.ops.plans: not in the state_dict

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

    def split_locals(self, index):
        """Per branch, the indices of its filters among the supernet channels `index`."""
        return [index[(index >= b * self.width) & (index < (b + 1) * self.width)] - b * self.width
                for b in range(len(self.convs))]

    def forward(self, x):
        index = self.sample_channels() if self.training else kept_channels(self)
        index = index.to(x.device)
        y = plans.forward_dropout_conv(self, x, self.split_locals(index))
        return self.out(subset_batch_norm(self.norm, y, index))

    def inflate_from_2d(self, weight2d):
        for kind, branch in zip(self.kinds, self.convs):
            branch[0].weight.data.copy_(inflate(kind, weight2d))


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
