"""Parameter and FLOP counts as the released models' reference counts take them: torch's FlopCounterMode
over one eval forward of one clip (a multiply-add is 2 FLOPs), and every parameter of the model."""
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def count_flops(model, num_segments=None, input_size=224, example_input=None):
    """FLOPs of one eval forward of a (1, T*3, S, S) clip, or of `example_input` for any other network
    (e.g. one converted by cakes.convert). Runs on the meta device when the model is there, which counts
    the same shapes without computing anything."""
    device = next(model.parameters()).device
    if example_input is not None:
        clip = example_input.to(device)
    else:
        clip = torch.zeros(1, num_segments * 3, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clip)
    model.train(was_training)
    return counter.get_total_flops()
