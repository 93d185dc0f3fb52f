"""The data loaders of a run: validation in list order, training in an EpochSampler's resumable order; under
torchrun each process loads its share."""
import os

import torch

from cakes import data
from cakes.errors import UsageError

from . import distributed
from .preempt import end_workers_at_exit, ignore_stop_signals
from .resume import EpochSampler


def make_loader(args, split, batch_size, views=None):
    """Validation in list order; training shuffled by an EpochSampler, whose order a resumed run replays.
    Under torchrun each process loads its share (`batch_size` per process): every world-th video of the
    validation list from its rank on (no padding), its shard of the shared training order.

    Clips come as uint8 (a quarter of the bytes through workers, pinned memory and the copy) and are
    normalised on the device. Workers persist across epochs and prefetch; each loader draws its worker seeds
    from a generator of its own, never from torch's global RNG, so that validating does not change the
    random numbers the next epoch trains with (nor does resuming). With a test protocol (`views`) a validation
    sample is every view of a video, and `batch_size` counts views (Views.videos_per_batch): a batch's memory
    stays that of -b clips (or of one video's views, when they are more) whatever the protocol. --dense_sample in
    training: dense clips (random start; validation the middle one); with --evaluate it is the ten-clip test
    protocol of `views`.
    """
    dataset = data.build_dataset(args.dataset, args.root_path, split, args.num_segments, input_size=args.input_size,
                                 uint8=True, views=views, dense=args.dense_sample and not args.evaluate,
                                 **data.dataset_options(args))
    workers = dict(persistent_workers=True, prefetch_factor=4) if args.workers > 0 else {}
    if args.workers > 0:
        end_workers_at_exit()
    if views is not None:
        batch_size = views.videos_per_batch(batch_size)
    common = dict(batch_size=batch_size, num_workers=args.workers, pin_memory=torch.cuda.is_available(),
                  worker_init_fn=ignore_stop_signals, **workers)
    rank, world = distributed.rank(), distributed.world_size()
    if split == 'val':
        return torch.utils.data.DataLoader(dataset, sampler=range(rank, len(dataset), world),
                                           generator=torch.Generator(), **common)
    if len(dataset) < args.batch_size:
        raise UsageError(f'the training list has {len(dataset)} usable videos, fewer than -b {args.batch_size}: '
                         'not one full batch to train on')
    sampler = EpochSampler(len(dataset), rank, world)
    sampler.seed = distributed.broadcast_int(sampler.seed)  # one order, which the processes share out
    return torch.utils.data.DataLoader(dataset, sampler=sampler, drop_last=True, generator=sampler.generator,
                                       **common)


def usable_cpus():
    """The CPUs this process may run on (its affinity mask: taskset, cgroups' cpusets), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def cap_workers(workers, given=True):
    """-j above the CPUs the process may use only adds processes that wait for a CPU (and DataLoader's warning):
    use at most that many. Returns (the workers, the line that says so, or None: also when -j was not given,
    its default being nobody's choice)."""
    cpus = usable_cpus()
    if workers <= cpus:
        return workers, None
    return cpus, (f'=> -j {workers}: this process may use {cpus} CPUs, loading with {cpus} workers' if given else
                  None)
