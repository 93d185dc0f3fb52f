"""DistributedDataParallel under torchrun: one process per GPU (or per CPU process with gloo), rank 0 speaks.

Every helper is a no-op without a process group, so the single-process paths call them unconditionally.
"""
import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError

TORCHRUN_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def unwrap(model):
    """The network inside the wrapper that spreads it over devices (DistributedDataParallel, nn.DataParallel)."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def launched_by_torchrun():
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


@contextlib.contextmanager
def session():
    """A process group from torchrun's environment (NCCL on GPUs, gloo on CPUs) for the `with` body, or none."""
    if not launched_by_torchrun():
        yield
        return
    if torch.cuda.is_available():
        local_rank = int(os.environ['LOCAL_RANK'])
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f'LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} visible GPUs: give '
                             'torchrun --nproc_per_node at most the number of GPUs')
        torch.cuda.set_device(local_rank)
        dist.init_process_group('nccl', device_id=torch.device('cuda', local_rank))
    else:
        dist.init_process_group('gloo')
    try:
        yield
    finally:
        dist.destroy_process_group()


def active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    return rank() == 0


def device():
    """This process's device: its own GPU under torchrun with CUDA, else the CPU."""
    return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')


def _collective_device():
    return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def process_batch(batch_size):
    """-b is the global batch: each of the world_size processes takes an equal share."""
    world = world_size()
    if batch_size % world:
        raise UsageError(f'-b {batch_size} (the global batch) does not divide among the {world} processes: '
                         f'use a multiple of {world}')
    return batch_size // world


def all_reduce_sum(values):
    """Element-wise sums over the processes of a list of numbers (float64: counts and loss sums stay exact)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_max(value):
    """The largest of every process's integer (0 when none has one)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def agree_max(value):
    """all_reduce_max without waiting for the result: a 0-d tensor on the collective device, which the caller
    reads with its other numbers (torch.full writes it on the device: no blocking copy from the host)."""
    tensor = torch.full((), value, dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_int(value):
    """Rank 0's integer everywhere (e.g. the seed of the shared training order)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.broadcast(tensor, 0)
    return int(tensor.item())


def broadcast_buffers(model):
    """Rank 0's BN running statistics everywhere: each process updated its own while training, and validation
    must evaluate the model that rank 0 saves."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def gather(obj):
    """[obj of rank 0, obj of rank 1, ...] on every process (plain data and tensors)."""
    if not active():
        return [obj]
    objects = [None] * world_size()
    dist.all_gather_object(objects, obj)
    return objects


@contextlib.contextmanager
def local_rank0_first():
    """The body runs in each machine's first process, then in the others (e.g. a download into a cache)."""
    first = int(os.environ.get('LOCAL_RANK', 0)) == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def barrier():
    if active():
        dist.barrier()
