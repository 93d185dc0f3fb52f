"""Exact resume: --seed, RNG states as weights_only data, and a training order that an epoch can replay."""
import random

import numpy as np
import torch

from ..errors import UsageError

SEED_RANGE = 2 ** 32  # numpy's limit
# The workers' seed of rank r comes from generator seed + epoch + r * RANK_STRIDE: torch's CPU generator keeps only
# the low 32 bits of a seed, so the stride must change them (and stay clear of the epochs: 2**20 of them).
RANK_STRIDE = 2 ** 20


def seed_everything(seed, rank=0):
    """Python, numpy (frame sampling, crops, flips) and torch (initialisation, dropout, the loader's order;
    CUDA too). With -j 0 on the CPU this makes a run reproducible. Under torchrun each process seeds with
    seed + rank, so crops, flips and dropout-supernet channels differ between processes (the weights and the
    training order are rank 0's: DDP and the loader broadcast them)."""
    if not 0 <= seed < SEED_RANGE:
        raise UsageError(f'--seed {seed} must be in 0..{SEED_RANGE - 1}')
    seed = (seed + rank) % SEED_RANGE
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_process(seed, rank):
    """--seed: seed_everything. Without it python and numpy start from OS entropy, but torch from the same
    default seed in every process: offset it by the rank so that processes draw different numbers."""
    if seed is not None:
        seed_everything(seed, rank)
    elif rank:
        torch.manual_seed(torch.initial_seed() + rank)


def rng_state(sampler):
    """Every RNG the training consumes, as tensors and plain values (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {'python': [version, torch.tensor(internal, dtype=torch.int64), gauss],
             'numpy': [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             'torch': torch.get_rng_state(),
             'loader_seed': sampler.seed}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state, sampler):
    """Put back what rng_state saved. CUDA states only when the same number of GPUs is visible."""
    try:
        version, internal, gauss = state['python']
        random.setstate((version, tuple(internal.tolist()), gauss))
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state['torch'])
        sampler.seed = int(state['loader_seed'])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise UsageError(f"the checkpoint's RNG states are damaged ({type(e).__name__}: {e}): resume from "
                         "another checkpoint, or drop its 'rng' entry to continue without an exact resume") from None
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def restore_process_rng(states, sampler, rank, world):
    """`states`: the saved RNG states, one per process of the saved run. With as many processes now, each
    takes its own; otherwise rank 0 takes rank 0's and the others only the shared training order's seed
    (their own seeds keep them apart), so only the order is exact."""
    if len(states) == world:
        restore_rng(states[rank], sampler)
    elif rank == 0:
        restore_rng(states[0], sampler)
    else:
        sampler.seed = int(states[0]['loader_seed'])


class EpochSampler(torch.utils.data.Sampler):
    """The training order: a permutation per epoch that depends only on (seed, epoch), like
    DistributedSampler's, so a resumed run replays an epoch's order and can skip the batches already done.

    Under torchrun every process draws the same permutation (rank 0's seed) and takes every `world`-th item
    from position `rank`, after dropping the tail that would leave the processes unequal. Global batch i is
    then items i*B .. (i+1)*B - 1 of the permutation whatever the number of processes, so a run may resume
    on another number of GPUs. `skip` counts this process's items.

    `generator` is also the DataLoader's (its worker seeds), so the loader never draws from torch's
    global RNG: that one is left to the model. The seed itself comes from the global RNG (--seed fixes it).
    The workers' seeds depend on the rank too: worker w of every process would otherwise draw the same crops,
    flips and frame offsets.
    It replaces DataLoader(shuffle=True), whose order comes from the global RNG at the first batch.
    """

    def __init__(self, size, rank=0, world=1):
        self.size = size
        self.rank = rank
        self.world = world
        self.seed = int(torch.randint(0, 2 ** 62, ()))
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch, skip=0):
        """Call before iterating the loader: it draws its worker seed from `generator` first (one process, or
        rank 0: from seed + epoch, as before ranks had seeds of their own)."""
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch + self.rank * RANK_STRIDE)
        self.skip = skip

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.order_generator())
        return iter(order[:len(self) * self.world][self.rank::self.world][self.skip:].tolist())

    def order_generator(self):
        """The epoch's permutation comes after one int64 draw from (seed + epoch), the draw that a DataLoader
        makes from `generator` for its worker seed when an epoch starts. Persistent workers make that draw only
        in the first epoch, so a generator of its own keeps the order independent of the loader, and the same
        as in checkpoints written before persistent workers (whose mid-epoch resume skips by position)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return generator

    def __len__(self):
        return self.size // self.world  # this process's full epoch: the schedule counts iterations from its start
