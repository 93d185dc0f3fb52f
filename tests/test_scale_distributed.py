"""Two processes under torchrun (gloo on the CPU) against one: sharded training, validation that counts every
video once, rank-0-only output in the released format, a dropout supernet, preemption of one process."""
import os
import signal
import shutil
import subprocess
import sys

import pytest
import torch

import main
from conftest import PLAN_ENV, RUN, user_env, wait_for
from conftest_scale import free_port, read_events
from cakes.models import create_model
from cakes.data.synthetic import make_synthetic_data
from cakes.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--num_segments', '2', '--input_size', '48', '-j', '0', '--pretrained', 'none', '--warm', '0', '--seed', '0',
        '-p', '1', '--epochs', '1']
SEARCH = ['--op_code', 'conv1_2_3d', '--search']

pytestmark = pytest.mark.usefixtures('single_thread')


def torchrun(data, out, *extra, wait=True, plans=True):
    """`python -m torch.distributed.run --nproc_per_node 2 main.py ...` with -b 4 (2 per process); with `plans`
    as a user's run (rank 0 measures the CAKES ops' plans, both processes run its choice), else the branch form."""
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
               str(free_port()), os.path.join(REPO, 'main.py'), '--root_path', data, '--checkpoint_dir', str(out),
               '-b', '4', *TINY, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(out.parent),
                               env=user_env(OMP_NUM_THREADS='1') if plans else dict(os.environ, OMP_NUM_THREADS='1'))
    return process.communicate(timeout=300) + (process.returncode,) if wait else process


def checkpoint(out):
    return os.path.join(str(out), 'checkpoint', f'{RUN}_checkpoint.pth.tar')


def results_line(printed):
    lines = [line for line in printed.splitlines() if line.startswith('Testing Results: ')]
    assert len(lines) == 1, printed
    return lines[0]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ssv1'))
    make_synthetic_data(root, train=8, val=5, frames=6)  # 5 validation videos: shards of 3 and 2
    return root


@pytest.fixture(scope='module')
def searched(data, tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp') / 'search'
    out.mkdir()
    stdout, stderr, status = torchrun(data, out, *SEARCH, '-sr', '--reweight')
    assert status == 0, stderr
    yield out, stdout
    shutil.rmtree(out)


def test_two_processes_train_and_only_rank_0_writes_in_the_released_format(searched):
    out, stdout = searched
    # The global batch 4 is 2 per process: 8 videos make 2 iterations, each line printed once (rank 0).
    assert stdout.count('Epoch: [0][0/2]') == 1 and stdout.count('Epoch: [0][1/2]') == 1
    assert 'Epoch: [0][2/' not in stdout and stdout.count('Best Prec@1: ') == 1
    log = open(out / 'log' / f'{RUN}.csv').read()
    assert log.count('Epoch: [0][1/2]') == 1 and log.count('Testing Results: ') == 1
    losses = [float(line.split('\tLoss ')[1].split()[0]) for line in log.splitlines() if line.startswith('Epoch')]
    assert len(losses) == 2 and all(0 < loss < 50 for loss in losses)
    assert sorted(os.listdir(out / 'checkpoint')) == [f'{RUN}_best.pth.tar', f'{RUN}_checkpoint.pth.tar']
    assert len(os.listdir(out / 'log' / f'{RUN}_tb')) == 1  # one writer: rank 0
    assert any(v.tag == 'bn_scale/layer1.0' for e in read_events(out / 'log' / f'{RUN}_tb') for v in e.summary.value)
    saved = torch.load(checkpoint(out), weights_only=True)
    assert (saved['epoch'], saved['iteration']) == (1, 0)
    assert all(key.startswith('module.base_model.') or key.startswith('module.new_fc.') for key in saved['state_dict'])
    # The same model as a single process would build: the released layout of a conv1_2_3d supernet.
    settings, _, _ = main.parse_settings(['--checkpoint_dir', 'x', *TINY, *SEARCH])
    reference = create_model(op_code=settings.op_code, num_segments=settings.num_segments, search=settings.search)
    assert [(k, v.shape) for k, v in saved['state_dict'].items()] == \
        [('module.' + k, v.shape) for k, v in reference.state_dict().items()]
    assert len(saved['rank_rng']) == 2 and saved['rng']['loader_seed'] == saved['rank_rng'][1]['loader_seed']


def test_validation_counts_every_video_once_like_one_process(data, searched, tmp_path, monkeypatch, capsys):
    """Training differs from one process (per-process BN statistics, crops drawn per process), validation must
    not: the 2-process summary equals one process evaluating the saved checkpoint, per-process batch alike."""
    out, stdout = searched
    monkeypatch.delenv(PLAN_ENV)  # as a user's run: the plans the checkpoint holds, those its validation ran
    run_cli(main.main, ['--root_path', data, '--checkpoint_dir', str(tmp_path), *TINY, *SEARCH, '-b', '2',
                        '--resume', checkpoint(out), '--evaluate'])
    single = results_line(capsys.readouterr().out)
    assert results_line(stdout) == single
    evaluated = tmp_path / 'evaluate'
    evaluated.mkdir()
    stdout, stderr, status = torchrun(data, evaluated, *SEARCH, '--resume', checkpoint(out), '--evaluate')
    assert status == 0, stderr
    assert results_line(stdout) == single



def rank_pid(launcher, rank):
    """The pid of torchrun's worker with RANK=rank."""
    children = open(f'/proc/{launcher.pid}/task/{launcher.pid}/children').read().split()
    for pid in children:
        environ = open(f'/proc/{pid}/environ', 'rb').read().split(b'\0')
        if f'RANK={rank}'.encode() in environ:
            return int(pid)
    raise AssertionError(f'no worker of rank {rank} among {children}')


def test_a_dropout_supernet_stops_in_every_process_when_one_gets_sigterm_and_resumes(tmp_path):
    """Dropout supernets leave branches unused (DDP's find_unused_parameters); a SIGTERM to rank 1 alone stops
    both processes after the same iteration, rank 0 saves, and --auto_resume finishes the epoch."""
    root = str(tmp_path / 'ssv1_16')
    make_synthetic_data(root, train=16, val=3, frames=6)
    out = tmp_path / 'out'
    out.mkdir()
    launcher = torchrun(root, out, '--op_code', 'convst_dropout', '--search', wait=False, plans=False)
    try:
        wait_for(str(out / 'log' / f'{RUN}.csv'), 'Epoch: [0][0/4]', launcher)
        os.kill(rank_pid(launcher, 1), signal.SIGTERM)
        stdout, stderr = launcher.communicate(timeout=240)
    finally:
        launcher.kill()
    assert 'exitcode  : 143' in stderr  # both workers ended with 128 + SIGTERM (torchrun itself says failed)
    stops = [line for line in stdout.splitlines() if line.startswith('SIGTERM: stopped at epoch 0, iteration ')]
    assert len(stops) == 1 and f'--resume {checkpoint(out)} ' in stops[0]
    saved = torch.load(checkpoint(out), weights_only=True)
    assert saved['epoch'] == 0 and 1 <= saved['iteration'] <= 4
    stdout, stderr, status = torchrun(root, out, '--op_code', 'convst_dropout', '--search', '--auto_resume',
                                      plans=False)
    assert status == 0, stderr
    assert f"(epoch 0, iteration {saved['iteration']})" in stdout and 'Epoch: [0][0/4]' not in stdout
    assert torch.load(checkpoint(out), weights_only=True)['epoch'] == 1


def test_a_search_stops_once_settled_at_the_same_epoch_in_every_process(data, tmp_path):
    """The stop is rank 0's decision, taken by every process: both end after epoch 2 of 3 (not one training on
    while the other waits for it), rank 0 alone prints the line and writes the config."""
    out = tmp_path / 'out'
    out.mkdir()
    stdout, stderr, status = torchrun(data, out, *SEARCH, '-sr', '--epochs', '3', '--stop_when_stable', '0.99',
                                      '--stable_for', '1', plans=False)
    assert status == 0, stderr
    assert stdout.count('search stopped after epoch 2 of 3: the config settled') == 1
    assert 'Epoch: [1][1/2]' in stdout and 'Epoch: [2]' not in stdout
    saved = torch.load(checkpoint(out), weights_only=True)
    assert (saved['epoch'], saved['search_history']['settled_epoch']) == (2, 2)
    assert os.path.isfile(checkpoint(out).replace('_checkpoint.pth.tar', '_conv_config.txt'))
