"""Parameter and FLOP counts with the SPEC's convention (FlopCounterMode over one eval forward)."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from cakes.ops import plans


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def count_flops(model, num_segments=None, input_size=224, example_input=None):
    """FLOPs of one eval forward of a (1, T*3, S, S) clip, or of `example_input` for any other network
    (e.g. one converted by cakes.convert). Runs on the meta device when the model is there, which counts
    the same shapes without computing anything. The CAKES ops run their branch form (plans off): the FLOPs of
    the network as defined, not of a plan's zero-padded kernels."""
    device = next(model.parameters()).device
    if example_input is not None:
        clip = example_input.to(device)
    else:
        clip = torch.zeros(1, num_segments * 3, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), plans.off(), FlopCounterMode(display=False) as counter:
        model(clip)
    model.train(was_training)
    return counter.get_total_flops()
