"""Replacements for the bottleneck's 3x3 convolution, chosen by op code."""
from .cakes import CakesOp
from .kernels import KERNEL_COST, KERNELS
from .plain import PlainOp
from .registry import CAKES_OPS, OP_CODES, check_config, op_factory, op_spec, pruned_op_code
from .supernet import DropoutSupernetOp
from .search import add_sparsity_grad, kept_channels, prune_config
