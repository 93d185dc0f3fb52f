"""Paths that only GPUs take, run on the CPU: the autocast dtype in DataParallel's replica threads, host
synchronisations per training step, and the loader workers' random numbers, which must differ between
processes and repeat on resume."""
import random
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cakes.configs import RELEASED
import main
from cakes.engine import loop
from cakes.engine.log import RunLog
from cakes.engine.meters import read_once
from cakes.engine.loop import Run
from cakes.engine.precision import grad_scaler
from cakes.engine.resume import EpochSampler
from cakes.engine.schedule import make_optimizer
from cakes.models import TemporalModel

pytestmark = pytest.mark.usefixtures('single_thread')


def small_model(**kwargs):
    torch.manual_seed(0)
    return TemporalModel(174, 2, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P'], dropout=0,
                         **kwargs)


def conv_dtypes(model):
    """The dtypes the model's convolutions produce, appended as they run (from any thread)."""
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda m, inputs, output: seen.append(output.dtype))
    return seen


def test_the_run_s_amp_dtype_holds_in_a_dataparallel_replica_thread():
    # torch's parallel_apply runs each replica in a fresh thread under torch.amp.autocast(device, enabled=...)
    # without a dtype: the thread's default, float16 on CUDA. Entered here as that thread would.
    model = small_model().eval().use_autocast(torch.bfloat16)
    seen = conv_dtypes(model)
    outputs = []

    def replica():
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
            outputs.append(model(torch.randn(1, 6, 32, 32)))

    thread = threading.Thread(target=replica)
    thread.start()
    thread.join()
    assert outputs[0].dtype == torch.bfloat16
    assert seen and set(seen) == {torch.bfloat16}


class Batches(list):
    """A training loader's face, for train_epoch: batches, a sampler to set the epoch of, a dataset to ask."""
    batch_size = 2

    def __init__(self, batches):
        super().__init__(batches)
        self.sampler = EpochSampler(4)
        self.dataset = self

    def problem_counts(self):
        return {'corrupt': 0, 'missing': 0}

    def reset_problem_counts(self):
        pass


class BlockingCopies(TorchDispatchMode):
    """Counts copies from the host to another device that wait for it (a copy without non_blocking)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].device.type == 'cpu':
            device = kwargs.get('device')
            self.count += device is not None and device.type != 'cpu' and not kwargs.get('non_blocking')
        return func(*args, **kwargs)


def meta_run(tmp_path, *flags):
    """A Run on the meta device: tensors without data, so any read of one on the host fails, as a GPU tensor's
    would wait for the GPU."""
    args = main.build_parser().parse_args(['--checkpoint_dir', str(tmp_path), '--num_segments', '2', '-p', '1',
                                           '--warm', '0', *flags])
    device = torch.device('meta')
    with device:
        model = TemporalModel(174, 2, op_code=args.op_code, search=args.search, dropout=0.3)
    return Run(args, model, torch.nn.CrossEntropyLoss(reduction='none').to(device),
               make_optimizer(model, 0.01, 0.9, 1e-4), grad_scaler(device, None), device, RunLog(None, console=False))


@pytest.mark.parametrize('flags', [('--op_code', 'conv1_2_3d_dropout', '--search', '-sr'),
                                   ('--op_code', 'conv1_2_3d', '--search', '-sr', '--reweight')])
def test_a_training_step_waits_for_the_device_once(tmp_path, monkeypatch, flags):
    run = meta_run(tmp_path, *flags)
    reads = []

    def read_once(*values):  # the one read: plausible numbers for the device's
        reads.append(len(values))
        return [1.0 if isinstance(value, torch.Tensor) else value for value in values]

    monkeypatch.setattr(loop, 'read_once', read_once)
    batch = (torch.zeros(2, 6, 32, 32, dtype=torch.uint8), torch.tensor([1, 2]))
    with BlockingCopies() as copies:
        assert loop.train_epoch(run, Batches([batch] * 3), 0) == 3
    assert reads == [5, 5, 5] and copies.count == 0


class ScalarReads(TorchDispatchMode):
    """Counts reads of one tensor element on the host (item, float, int, bool), a wait for a GPU tensor's."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('clip_gradient', [20.0, 0.0])
def test_fp16_skips_the_step_of_overflowed_gradients_without_a_second_wait(clip_gradient):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    args = SimpleNamespace(clip_gradient=clip_gradient, s=0.0, reweight=False)
    run = SimpleNamespace(args=args, model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                          scaler=torch.amp.GradScaler('cpu', init_scale=1e38), log=print)
    before = model.weight.detach().clone()
    with ScalarReads() as reads:
        grad_norm = loop.backward(run, 100 * model(torch.ones(4, 3)).sum(), [])
        (norm,) = read_once(grad_norm)  # what train_epoch reads with the loss
        loop.step(run, norm)
    assert reads.count == 0 and norm == float('inf')
    assert torch.equal(model.weight, before) and run.scaler.get_scale() == pytest.approx(0.5e38)  # skipped, scale backed off
    run.scaler.update(1.0)
    loop.update(run, model(torch.ones(4, 3)).sum(), [])
    assert not torch.equal(model.weight, before)  # a finite step is taken


class Draws(torch.utils.data.Dataset):
    """What a training transform draws in a loader worker: numpy, python and torch random numbers."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.tensor([np.random.rand(), random.random(), torch.rand(()).item()], dtype=torch.float64)


def worker_draws(rank, world=2, seed=11):
    """One epoch of rank `rank`'s loader as make_loader builds it (one worker): the order's items, the draws."""
    sampler = EpochSampler(len(Draws()), rank, world)
    sampler.seed = seed  # broadcast from rank 0
    sampler.set_epoch(1)
    loader = torch.utils.data.DataLoader(Draws(), batch_size=2, sampler=sampler, generator=sampler.generator,
                                         num_workers=1)
    return list(sampler), torch.cat(list(loader))


def test_loader_workers_draw_their_own_numbers_in_each_process_and_again_on_resume():
    (order0, draws0), (order1, draws1) = worker_draws(0), worker_draws(1)
    assert sorted(order0 + order1) == list(range(8))  # one shared order, split
    assert not (draws0[:, None] == draws1[None]).any()  # no number drawn in both processes
    assert torch.equal(worker_draws(1)[1], draws1)  # a resumed process draws the same again


class ReplicaThreadDataParallel(torch.nn.Module):
    """nn.DataParallel without GPUs: its forward runs the wrapped module in a fresh thread under an autocast
    that names no dtype, as torch's parallel_apply runs each replica (there the thread's default is float16)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        outputs = []

        def replica():
            with torch.autocast('cpu', dtype=torch.float16):
                outputs.append(self.module(x))

        thread = threading.Thread(target=replica)
        thread.start()
        thread.join()
        return outputs[0]


@pytest.mark.parametrize('flags, benchmark', [(['--op_code', 'conv1_2_3d_dropout', '--search'], False),
                                              (['--op_code', 'conv1_2_3d', '--search'], True),
                                              (['--op_code', 'conv1_2_3d_dropout', '--search', '--seed', '1'], False)])
def test_on_gpus_cudnn_benchmarks_only_where_the_shapes_stay_and_the_model_keeps_the_amp_dtype(
        tmp_path, monkeypatch, flags, benchmark):
    from cakes.engine import run as engine
    moved = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.nn.Module, 'to', lambda self, *args, **kwargs: moved.append(args) or self)
    monkeypatch.setattr(torch.nn, 'DataParallel', ReplicaThreadDataParallel)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', not benchmark)
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', False)
    args = main.build_parser().parse_args(['--checkpoint_dir', str(tmp_path), '--amp', *flags])
    torch.manual_seed(0)
    model, device = engine.place_model(args, TemporalModel(174, 2, op_code=args.op_code, search=True), 8)
    assert torch.backends.cudnn.benchmark is benchmark and device.type == 'cuda'
    assert torch.backends.cudnn.deterministic is ('--seed' in flags)
    assert isinstance(model, ReplicaThreadDataParallel) and moved == [('cuda',)]
    # DataParallel's replicas run in bf16 (the first test), not in their thread's float16
    seen = conv_dtypes(model.module)
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 6, 32, 32))
    assert logits.dtype == torch.bfloat16 and seen and set(seen) == {torch.bfloat16}


def test_a_batch_that_leaves_gpus_idle_under_dataparallel_is_named():
    from cakes.engine.run import idle_gpus_note
    assert [len(share) for share in torch.arange(20).chunk(8)] == [3] * 6 + [2]  # how DataParallel cuts
    assert idle_gpus_note(20, 8) == ('=> -b 20 over 8 GPUs: nn.DataParallel cuts it into 7 shares of at most 3 '
                                     'clips, so 1 GPU(s) stay idle; a multiple of 8 uses them all')
    assert '6 shares of at most 2' in idle_gpus_note(12, 8)
    assert idle_gpus_note(96, 8) is None and idle_gpus_note(15, 8) is None and idle_gpus_note(5, 0) is None
