"""CAKES on any 3D network: convert its Conv3d + BatchNorm3d pairs, search in your own loop, prune, retrain.

    supernet = to_supernet(model, kinds=KINDS)            # every eligible layer a dropout supernet
    monitor = StopWhenSettled(supernet, eps=0.1, patience=5)
    ... train: loss.backward(); add_sparsity_grad(supernet, 1e-4); optimizer.step()
    ... after each epoch: if monitor.update(epoch + 1): break   # the config has settled
    config = prune_config(supernet)                       # {layer: {kind: width}}
    config = prune_config(supernet, target_flops=F, example_input=x)  # or at most F FLOPs on x
    config = prune_config(supernet, target_ms=T, example_input=x)     # or at most T ms predicted, measured on x
    pruned = to_pruned(model, config, supernet=supernet)  # eval: the supernet's eval function
"""
from cakes.ops.kernels import KINDS

from .build import VIDEO_KINDS, to_pruned, to_supernet
from .find import find_layers
from .report import summary
from .search import add_sparsity_grad, latency_table, load_config, prune_config, save_config
from .settling import StopWhenSettled

__all__ = ['KINDS', 'VIDEO_KINDS', 'to_supernet', 'to_pruned', 'find_layers', 'summary', 'add_sparsity_grad',
           'prune_config', 'latency_table', 'save_config', 'load_config', 'StopWhenSettled']
