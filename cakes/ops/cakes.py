"""CAKES: the output channels of a 3x3 operation shared among 3D, 2D and 1D sub-kernel branches."""
from torch import nn

from . import plans
from .kernels import inflate, make_conv


class CakesOp(nn.Module):
    """Branches that all read the input; outputs concatenated in branch order, then `out` = (BN, ReLU).

    `k` is the original kernel size; `activation=False` leaves the ReLU out (`out` = (BN,)), for
    networks converted by cakes.convert where whatever followed the BN still follows.

    `branches` is a list of (kind, width). Branches of width 0 are left out, so the ModuleList index
    of a later branch shifts, as in the released checkpoints. In a supernet (`search`) every branch has
    the block's full width and each one starts from all the 2D filters; otherwise branch i takes the
    next `width_i` 2D filters.
    """

    def __init__(self, branches, in_channels, stride, search=False, k=3, activation=True):
        super().__init__()
        kept = [(kind, width) for kind, width in branches if width > 0]
        self.kinds = tuple(kind for kind, _ in kept)
        self.widths = tuple(width for _, width in kept)
        self.search = search
        self.k = k
        self.out_channels = sum(self.widths)
        self.convs = nn.ModuleList(nn.Sequential(make_conv(kind, in_channels, width, stride, k)) for kind, width in kept)
        relu = [nn.ReLU(inplace=True)] if activation else []
        self.out = nn.Sequential(nn.BatchNorm3d(self.out_channels), *relu)
        # cakes.ops.plans, none of it in the state_dict: the plan chosen per key, the policy that chooses (None:
        # CAKES_PLAN), a plan's weights with the BN folded in (eval)
        self.plans, self.policy, self.folded_weights = {}, None, {}

    @property
    def bn(self):
        return self.out[0]

    def forward(self, x):
        """What the branches, concatenated, then `out` compute, by the op's fastest plan (cakes.ops.plans)."""
        return plans.forward(self, x)

    def inflate_from_2d(self, weight2d):
        start = 0
        for kind, width, branch in zip(self.kinds, self.widths, self.convs):
            begin = 0 if self.search else start
            branch[0].weight.data.copy_(inflate(kind, weight2d[begin:begin + width]))
            start += width
