"""Pruning a video supernet (TemporalModel) to a FLOPs budget: the generic rule of cakes.ops.search with the
per-channel costs and the FLOPs of the pruned network counted at the run's frames and input size."""
import torch

from cakes.complexity import count_flops
from cakes.ops import pruned_op_code
from cakes.ops.search import channel_costs, prune_to_budget

from .factory import create_model
from .temporal import num_classes


def clip(num_segments, input_size, device='meta'):
    return torch.zeros(1, num_segments * 3, input_size, input_size, device=device)


def video_costs(op_code, arch, num_segments, input_size=224):
    """{kind: FLOPs of one channel} per CAKES layer of the video network, from its CAKES supernet on meta."""
    with torch.device('meta'):
        supernet = create_model(op_code=pruned_op_code(op_code), num_class=2, num_segments=num_segments, arch=arch,
                                search=True)
    return channel_costs(supernet, clip(num_segments, input_size), supernet.cakes_ops())


def video_flops(op_code, arch, num_segments, input_size=224, num_class=174):
    """config -> FLOPs of the pruned TemporalModel (complexity counter, meta device)."""
    def flops(config):
        with torch.device('meta'):
            model = create_model(op_code=pruned_op_code(op_code), conv_config=config, num_class=num_class,
                                 num_segments=num_segments, arch=arch)
        return count_flops(model, num_segments, input_size)
    return flops


def prune_video_to_budget(supernet, target_flops, input_size=224, multiple=1):
    """The Budget (config, counted FLOPs, lam, reachable range) of a TemporalModel supernet at its frames
    (a range error in GFLOPs, the unit of --target_gflops); branch widths multiples of `multiple`."""
    arch, frames = supernet.base_model.arch, supernet.num_segments
    costs = video_costs(supernet.op_code, arch, frames, input_size)
    flops = video_flops(supernet.op_code, arch, frames, input_size, num_classes(supernet))
    return prune_to_budget(supernet.cakes_ops(), costs, flops, target_flops, unit='GFLOPs', multiple=multiple,
                           counted_at=f'{frames} frames of {input_size}x{input_size}')
