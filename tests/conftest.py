"""Shared test setup: the repo root on sys.path so `import cakes`, `main` and `config` work from any cwd."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


PLAN_ENV = 'CAKES_PLAN'  # cakes.ops.plans.ENV, named here so that conftest imports nothing heavy


@pytest.fixture(scope='session', autouse=True)
def branch_form():
    """CAKES ops run their branch form (the released computation) instead of timing the other execution plans
    at each op's first forward: that timing doubles a tiny run's time and makes its numbers depend on the
    machine's load. The tests of the plans set or unset CAKES_PLAN themselves, and so do the processes that
    run as a user's (user_env)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PLAN_ENV, 'branches')
        yield


def user_env(**extra):
    """The environment of a process that runs as a user's: plans measured and chosen, `extra` added."""
    env = {k: v for k, v in os.environ.items() if k != PLAN_ENV}
    return {**env, **extra}


@pytest.fixture(scope='session', autouse=True)
def single_thread():
    """One intra-op thread for every test: on a small shared machine, two OpenMP threads competing with other
    processes make the CPU convolutions many times slower (a tiny search epoch here: 3 times the CPU time).
    Restored afterwards."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def supernet():
    """A 5-class resnet50 conv1_2_3d supernet of 2 frames with random, distinct BN scales (as a search leaves
    them), for the pruning tests; a module may define its own `supernet`."""
    import torch
    from cakes.models import TemporalModel
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code='conv1_2_3d', search=True, dropout=0.3)
    with torch.no_grad():
        for op in model.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features) * 0.5 + 1)
    return model


RUN = 'I3D_somethingv1_resnet50_segment2_'
# main.py on tiny settings: 2 frames of 48x48, batch 2, no workers, no ImageNet weights, no warm-up.
TINY = ['--num_segments', '2', '--input_size', '48', '-b', '2', '-j', '0', '-p', '1', '--pretrained', 'none',
        '--warm', '0']


@pytest.fixture(scope='session')
def data(tmp_path_factory):
    """A tiny synthetic SSV1 dataset (4 training and 3 validation videos) for the command-line tests."""
    from cakes.data.synthetic import make_synthetic_data
    root = str(tmp_path_factory.mktemp('ssv1'))
    make_synthetic_data(root, train=4, val=3, frames=6)
    return root


def run_main(data, out, *extra):
    """main.py in-process on TINY settings; later flags override earlier ones."""
    import main
    from cakes.cli import run_cli
    run_cli(main.main, ['--root_path', data, '--checkpoint_dir', str(out), *TINY, *extra])


def wait_for(path, text, process, timeout=240):
    """Poll a log file until `text` appears in it, while `process` still runs."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.05)
    raise AssertionError(f'{text!r} never appeared in {path}')
