"""Exact resume: --seed, RNG states as weights_only data, and a training order that an epoch can replay."""
import random

import numpy as np
import torch

from .errors import UsageError

SEED_RANGE = 2 ** 32  # numpy's limit


def seed_everything(seed):
    """Python, numpy (frame sampling, crops, flips) and torch (initialisation, dropout, the loader's order;
    CUDA too). With -j 0 on the CPU this makes a run reproducible."""
    if not 0 <= seed < SEED_RANGE:
        raise UsageError(f'--seed {seed} must be in 0..{SEED_RANGE - 1}')
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


class EpochSampler(torch.utils.data.Sampler):
    """The training order: a permutation per epoch that depends only on (seed, epoch), like
    DistributedSampler's, so a resumed run replays an epoch's order and can skip the batches already done.

    `generator` is also the DataLoader's (its worker seeds), so the loader never draws from torch's
    global RNG: that one is left to the model. The seed itself comes from the global RNG (--seed fixes it).
    It replaces DataLoader(shuffle=True), whose order comes from the global RNG at the first batch.
    """

    def __init__(self, size):
        self.size = size
        self.seed = int(torch.randint(0, 2 ** 62, ()))
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch, skip=0):
        """Call before iterating the loader: it draws its worker seed from `generator` first."""
        self.generator.manual_seed(self.seed + epoch)
        self.skip = skip

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=self.generator)[self.skip:].tolist())

    def __len__(self):
        return self.size  # the full epoch: the schedule counts iterations from its start
