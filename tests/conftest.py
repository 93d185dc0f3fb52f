"""Shared test setup: the repo root on sys.path so `import ops`, `models`, `config` work from any cwd."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope='module')
def single_thread():
    """One intra-op thread for the module: on a small shared machine, two OpenMP threads competing with
    other processes make the CPU convolutions many times slower. Restored afterwards."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
