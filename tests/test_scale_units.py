"""Scale-out pieces in one process: sharded training order, stop agreement, batch split, progress bar,
TensorBoard events, mixed precision and the gradient scaler's checkpoint state, the training benchmark."""
import json
import os
import random

import numpy as np
import pytest
import torch

from cakes.configs import RELEASED
import main
from conftest import run_main
from conftest_data import load_script
from conftest_scale import Terminal, histograms, read_events, scalars
from cakes.engine import checkpoint as engine_checkpoint
from cakes.models import TemporalModel
from cakes.engine import distributed
from cakes.cli import run_cli
from cakes.errors import UsageError
from cakes.engine.log import RunLog
from cakes.engine.preempt import StopRequest
from cakes.progress import ProgressBar
from cakes.engine.resume import EpochSampler, restore_process_rng, rng_state

pytestmark = pytest.mark.usefixtures('single_thread')
RUN = 'I3D_somethingv1_resnet50_segment2_'


def shards(size, world, epoch=0, skip=0, seed=7):
    samplers = [EpochSampler(size, rank, world) for rank in range(world)]
    for sampler in samplers:
        sampler.seed = seed
        sampler.set_epoch(epoch, skip)
    return [list(sampler) for sampler in samplers]


def test_shards_split_the_one_order_so_that_global_batches_do_not_depend_on_the_process_count():
    (order,) = shards(11, 1)
    assert sorted(order) == list(range(11))
    per_process, world = 2, 2  # -b 4 over 2 processes
    ranks = shards(11, world)
    assert [len(r) for r in ranks] == [5, 5] and len(EpochSampler(11, 1, 2)) == 5  # the tail is dropped
    assert not set(ranks[0]) & set(ranks[1])
    for i in range(2):  # global batch i is the same videos as with one process and -b 4
        together = ranks[0][i * per_process:(i + 1) * per_process] + ranks[1][i * per_process:(i + 1) * per_process]
        assert sorted(together) == sorted(order[i * 4:(i + 1) * 4])
    # A resumed epoch skips this process's share of the batches done.
    assert shards(11, world, skip=per_process) == [r[per_process:] for r in ranks]
    assert shards(11, world, epoch=1) != ranks


@pytest.fixture
def global_rngs():
    """Python's, numpy's and torch's global RNG states, put back after the test."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])


def saved_process_states(sampler, seeds):
    """rng_state of each process of a saved run, process r having seeded its RNGs with seeds[r]."""
    states = []
    for seed in seeds:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        sampler.seed = seed
        states.append(rng_state(sampler))
    return states


def next_draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_states_go_back_per_process_or_only_the_shared_order(global_rngs):
    states = saved_process_states(EpochSampler(4), [5, 9])  # a run of 2 processes with distinct states
    draws = []
    for seed in (5, 9):
        saved_process_states(EpochSampler(4), [seed])
        draws.append(next_draws())
    # The same process count: each rank takes its own states, its order's seed and its RNGs.
    for rank in (0, 1):
        other = EpochSampler(4)
        restore_process_rng(states, other, rank, 2)
        assert other.seed == [5, 9][rank] and next_draws() == draws[rank]
    # Another process count: rank 0 takes rank 0's states; rank 1 only the order's seed, which every process
    # shares (rank 0's), and keeps its own RNGs.
    other = EpochSampler(4)
    restore_process_rng(states, other, 0, 3)
    assert other.seed == 5 and next_draws() == draws[0]
    saved_process_states(EpochSampler(4), [123])  # rank 1 of the new run, seeded on its own
    mine = next_draws()
    saved_process_states(EpochSampler(4), [123])
    restore_process_rng(states, other, 1, 3)
    assert other.seed == 5 and next_draws() == mine


def test_the_global_batch_must_divide_among_the_processes(monkeypatch):
    assert distributed.process_batch(4) == 4  # no process group: one process
    monkeypatch.setattr(distributed, 'world_size', lambda: 3)
    assert distributed.process_batch(6) == 2
    with pytest.raises(UsageError, match=r'-b 4 \(the global batch\) does not divide among the 3 processes'):
        distributed.process_batch(4)


def test_every_process_stops_when_any_one_got_the_signal():
    assert StopRequest().poll() is False
    other_got_sigterm = StopRequest(agree=lambda mine: max(mine, 15))
    assert other_got_sigterm.poll() and other_got_sigterm.exit_status == 143
    assert StopRequest(agree=lambda mine: 0).poll() is False


def test_sync_bn_is_gpu_only(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main.main, ['--checkpoint_dir', str(tmp_path), '--sync_bn'])
    assert exit_info.value.code == 2
    assert 'torchrun' in capsys.readouterr().err


def test_progress_bar_shows_the_eta_on_one_line():
    stream = Terminal()
    bar = ProgressBar('Epoch 3', 4, stream=stream)
    bar.update(1, 'Loss 1.0000')
    bar.update(2, 'Loss 0.5000')
    bar.finish()
    text = stream.getvalue()
    assert text.count('\n') == 1 and text.count('\r') == 2
    assert '\rEpoch 3 [############............] 2/4 ETA 0:00:00 Loss 0.5000' in text


def cli(data, out, *extra):
    run_main(data, out, '--epochs', '1', '--seed', '0', *extra)


def test_a_search_on_a_terminal_shows_a_bar_logs_the_released_lines_and_writes_tensorboard(data, tmp_path,
                                                                                            monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr('sys.stdout', terminal)
    cli(data, tmp_path, '--op_code', 'conv1_2_3d', '--search', '-sr', '--reweight')
    shown = terminal.getvalue()
    assert '\rEpoch 0 [' in shown and ' 2/2 ETA ' in shown and '\rTest [' in shown
    assert 'Epoch: [0][' not in shown and 'Test: [' not in shown and 'Testing Results: ' in shown
    log = open(tmp_path / 'log' / f'{RUN}.csv').read()
    assert 'Epoch: [0][0/2]' in log and 'Epoch: [0][1/2]' in log and 'Test: [0/2]' in log and '\r' not in log

    events = read_events(tmp_path / 'log' / f'{RUN}_tb')
    found = scalars(events)
    for tag in ('loss', 'prec1', 'prec5', 'lr', 'batch_time', 'data_time'):
        assert [step for step, _ in found[f'train/{tag}']] == [0, 1]
    assert found['train/lr'][0][1] == pytest.approx(0.01)
    val = {tag: found[f'val/{tag}'] for tag in ('prec1', 'prec5', 'loss')}
    assert [steps for steps, _ in val['prec1']] == [1]  # the epoch's last iteration
    assert f"Prec@1 {val['prec1'][0][1]:.3f}" in log
    histos = histograms(events)
    assert len(histos) == 16 and histos['bn_scale/layer3.2'].num == 3 * 256
    widths = {kind: found[f'prune/layer3.2/{kind}'][0][1] for kind in ('kxkxk', '1xkxk', 'kx1x1')}
    assert sum(widths.values()) == 256


def test_no_tensorboard_writes_no_events(data, tmp_path, capsys):
    cli(data, tmp_path, '--no_tensorboard')
    assert os.listdir(tmp_path / 'log') == [f'{RUN}.csv']


def test_bf16_autocast_logits_are_close_to_float32():
    torch.manual_seed(0)
    model = TemporalModel(174, 4, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P']).eval()
    clip = torch.randn(2, 12, 64, 64)
    with torch.no_grad():
        exact = model(clip)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(clip)
    assert low.dtype == torch.bfloat16
    assert (low.float() - exact).abs().max() <= 0.03 * exact.abs().max()  # bf16 keeps 8 bits of mantissa


def test_amp_and_channels_last_train_with_a_finite_loss(data, tmp_path, capsys):
    # 4 frames: oneDNN's bf16 Conv3d weight gradient is wrong for 2 frames and a temporal kernel of 3.
    cli(data, tmp_path, '--amp', '--channels_last', '--num_segments', '4', '--op_code', 'conv1_2_3d',
        '--conv_config', 'CAKES123D_P')
    printed = capsys.readouterr().out
    losses = [float(line.split('\tLoss ')[1].split()[0]) for line in printed.splitlines() if line.startswith('Epoch')]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    assert 'Testing Results: ' in printed and 'nan' not in printed
    saved = torch.load(tmp_path / 'checkpoint' / 'I3D_somethingv1_resnet50_segment4__checkpoint.pth.tar',
                       weights_only=True)
    assert saved['args']['amp'] == 'bf16' and 'scaler' not in saved  # bf16 needs no loss scaling


def test_the_fp16_gradient_scaler_state_is_saved_and_resumed(tmp_path):
    from cakes.engine.schedule import make_optimizer
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    optimizer = make_optimizer(model, 0.1, 0.9, 1e-4)
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    scaler.scale(model(torch.randn(2, 1, 1, 2, 2)).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    scaler.update(512.0)
    args = main.build_parser().parse_args(['--checkpoint_dir', str(tmp_path), '--amp', 'fp16'])
    path = engine_checkpoint.save(args, model, optimizer, EpochSampler(4), 2, 1, 12.5, scaler)
    assert torch.load(path, weights_only=True)['scaler']['scale'] == 512.0
    args.resume = path
    restored = torch.amp.GradScaler('cpu')
    engine_checkpoint.resume(args, model, optimizer, RunLog(console=False), restored)
    assert restored.get_scale() == 512.0 and restored.state_dict() == scaler.state_dict()


def test_the_training_benchmark_reports_waiting_and_computing(capsys):
    result = load_script('benchmark_train').main(['--synthetic', '4', '--num_segments', '2', '--input_size', '48',
                                                  '-b', '2', '-j', '0', '--iterations', '1', '--warmup', '0'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == result
    assert result['clips_per_s'] > 0 and result['step_ms'] == pytest.approx(result['wait_ms'] + result['compute_ms'])
    assert any(line.startswith('waiting for data') for line in lines)
