"""Parameter and FLOP counts as the released models' reference counts take them: torch's FlopCounterMode
over one eval forward of one clip (a multiply-add is 2 FLOPs), and every parameter of the model."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from cakes.errors import UsageError
from cakes.ops import DropoutSupernetOp, plans
from cakes.ops.forward import eval_forward


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def count_flops(model, num_segments=None, input_size=224, example_input=None):
    """FLOPs of one eval forward of a (1, T*3, S, S) clip, or of `example_input` for any other network
    (e.g. one converted by cakes.convert): FlopCounterMode's count, 2 per multiply-add of the convolutions and
    matrix products (BN, activations and pooling count nothing). Runs on the meta device when the model is
    there, which counts the same shapes without computing anything. The CAKES ops run their branch form (plans
    off): the FLOPs of the network as defined, not of a plan's zero-padded kernels.

    A supernet counts what its eval forward computes. A dropout supernet (an op code ending in `_dropout` with
    --search, or cakes.convert.to_supernet) computes only the C channels of each op that pruning would keep now
    (largest |BN scale|), so the count is that of the network pruning would give now (--prune, or
    cakes.convert.to_pruned with prune_config), not of the supernet's n*C channels, and it moves with the BN
    scales; on the meta device, which has no scales, it is refused. A sparsity supernet computes all n*C
    channels: the count is the whole supernet's.
    """
    device = next(model.parameters()).device
    if device.type == 'meta' and any(isinstance(m, DropoutSupernetOp) for m in model.modules()):
        raise UsageError('a dropout supernet counts the channels pruning would keep, read off its BN scales: '
                         'count its FLOPs with the weights on a real device, not on meta')
    if example_input is not None:
        clip = example_input.to(device)
    else:
        clip = torch.zeros(1, num_segments * 3, input_size, input_size, device=device)
    counter = FlopCounterMode(display=False)
    eval_forward(model, clip, plans.off(), counter)
    return counter.get_total_flops()
