"""Exact resume (end of epoch and mid-epoch), released checkpoints, --auto_resume, preemption, NaN losses."""
import os
import signal
import shutil
import subprocess
import sys

import pytest
import torch

import main
from cakes.data.synthetic import make_synthetic_data
from conftest import RUN, TINY, run_main, wait_for
from cakes.cli import run_cli
from cakes.engine.preempt import StopRequest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures('single_thread')


def cli(data, out, *extra):
    run_main(data, out, '--seed', '0', *extra)


def checkpoint(out):
    return os.path.join(str(out), 'checkpoint', f'{RUN}_checkpoint.pth.tar')


def weights(out):
    return torch.load(checkpoint(out), weights_only=True)['state_dict']


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6), k


@pytest.fixture(scope='module')
def straight(data, tmp_path_factory):
    """Two epochs in one go: what every interrupted run must end with."""
    out = tmp_path_factory.mktemp('straight')
    cli(data, out, '--epochs', '2')
    yield out
    shutil.rmtree(out)


def test_auto_resume_after_an_epoch_ends_where_the_straight_run_does(data, straight, tmp_path, capsys):
    cli(data, tmp_path, '--epochs', '1', '--auto_resume')
    assert f"=> --auto_resume: no checkpoint '{checkpoint(tmp_path)}' yet, starting fresh" in capsys.readouterr().out
    cli(data, tmp_path, '--epochs', '2', '--auto_resume')
    printed = capsys.readouterr().out
    assert f"=> loaded checkpoint '{checkpoint(tmp_path)}' (epoch 1)" in printed
    assert 'Epoch: [1][0/2]' in printed and 'Epoch: [0]' not in printed
    assert 'data problems' not in printed  # clean data: no report
    assert_same_weights(weights(straight), weights(tmp_path))
    saved = torch.load(checkpoint(tmp_path), weights_only=True)
    assert (saved['epoch'], saved['iteration']) == (2, 0)
    straight_state = torch.load(checkpoint(straight), weights_only=True)
    for a, b in zip(straight_state['optimizer']['state'].values(), saved['optimizer']['state'].values()):
        assert torch.allclose(a['momentum_buffer'], b['momentum_buffer'], rtol=0, atol=1e-6)


def signal_at_loss(monkeypatch, signum, call):
    """Deliver `signum` to this process during the `call`-th loss computation, as a scheduler would."""
    forward = torch.nn.CrossEntropyLoss.forward
    calls = []

    def signalling_forward(self, *inputs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return forward(self, *inputs)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, 'forward', signalling_forward)


@pytest.mark.parametrize('signum, call, iteration', [(signal.SIGINT, 1, 1), (signal.SIGTERM, 3, 2)],
                         ids=['mid-epoch', 'during-validation'])
def test_a_stop_saves_and_the_resumed_run_matches_the_straight_one(data, straight, tmp_path, monkeypatch, capsys,
                                                                   signum, call, iteration):
    """Resuming skips the batches done, in the same order and with the same RNG states: exact. A stop during
    validation saves the epoch as trained (iteration 2 of 2) and the resumed run validates it again."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # SIGINT is ignored in background jobs
    with monkeypatch.context() as patch:
        signal_at_loss(patch, signum, call)
        with pytest.raises(SystemExit) as exit_info:
            cli(data, tmp_path, '--epochs', '2')
    assert exit_info.value.code == 128 + signum
    path = checkpoint(tmp_path)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f"{signal.Signals(signum).name}: stopped at epoch 0, iteration {iteration}; saved '{path}': "
                    f'continue with --resume {path} (or --auto_resume)')
    saved = torch.load(path, weights_only=True)
    assert (saved['epoch'], saved['iteration']) == (0, iteration)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # handlers put back
    cli(data, tmp_path, '--epochs', '2', '--resume', path)
    printed = capsys.readouterr().out
    assert f"(epoch 0, iteration {iteration})" in printed
    assert 'Epoch: [0][0/2]' not in printed and 'Epoch: [1][0/2]' in printed
    assert ('Epoch: [0][1/2]' in printed) == (iteration == 1)
    assert printed.count('Testing Results: ') == 2
    assert_same_weights(weights(straight), weights(tmp_path))


def test_a_released_checkpoint_resumes_as_released(data, straight, tmp_path, capsys):
    """Only the released keys: weights, start epoch and best_prec1 (a 0-d tensor); a fresh optimizer."""
    full = torch.load(checkpoint(straight), weights_only=True)
    released = {'epoch': 1, 'arch': 'resnet50', 'state_dict': full['state_dict'], 'best_prec1': torch.tensor(40.)}
    path = str(tmp_path / 'released.pth.tar')
    torch.save(released, path, _use_new_zipfile_serialization=False)
    cli(data, tmp_path, '--epochs', '2', '--resume', path)
    printed = capsys.readouterr().out
    assert f"=> loaded checkpoint '{path}' (epoch 1; weights only, fresh optimizer)" in printed
    assert 'Epoch: [1][0/2]' in printed and 'Epoch: [0]' not in printed and 'Best Prec@1: 40.000' in printed
    saved = torch.load(checkpoint(tmp_path), weights_only=True)
    assert saved['epoch'] == 2 and saved['best_prec1'] == 40.0


def test_changed_settings_are_named_on_resume(data, straight, tmp_path, capsys):
    cli(data, tmp_path, '--epochs', '2', '--resume', checkpoint(straight), '--lr', '0.02')
    assert "=> settings differ from the checkpoint's run: lr 0.01 -> 0.02\n" in capsys.readouterr().out


def test_an_evaluation_names_only_the_changed_settings_it_uses(data, straight, tmp_path, capsys):
    """Training's settings (lr, its steps, warm-up, batch size) change nothing an evaluation does."""
    training = ['--lr', '0.02', '--lr_steps', '1', '--warm', '1', '-b', '1']
    cli(data, tmp_path, '--resume', checkpoint(straight), '--evaluate', *training)
    printed = capsys.readouterr().out
    assert 'Testing Results' in printed and 'settings differ' not in printed
    cli(data, tmp_path, '--resume', checkpoint(straight), '--evaluate', *training, '--input_size', '32')
    assert "=> settings differ from the checkpoint's run: input_size 48 -> 32\n" in capsys.readouterr().out


def test_a_nan_loss_stops_with_one_line_and_leaves_the_checkpoint_intact(data, tmp_path, monkeypatch, capsys):
    cli(data, tmp_path, '--epochs', '1')
    before = open(checkpoint(tmp_path), 'rb').read()
    forward = torch.nn.CrossEntropyLoss.forward
    calls = []

    def diverging(self, *inputs):
        calls.append(1)
        loss = forward(self, *inputs)
        return loss * float('nan') if len(calls) == 2 else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, 'forward', diverging)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli(data, tmp_path, '--epochs', '2', '--auto_resume')
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: loss is nan at epoch 1, iteration 1/2')
    assert open(checkpoint(tmp_path), 'rb').read() == before
    assert not [name for name in os.listdir(os.path.dirname(checkpoint(tmp_path))) if name.endswith('.tmp')]


def test_repeated_sigterm_is_one_request_and_a_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and stop.exit_status == 143
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.fixture(scope='module')
def data8(tmp_path_factory, single_thread):
    root = str(tmp_path_factory.mktemp('ssv1_8'))
    make_synthetic_data(root, train=8, val=3, frames=6)
    return root



def test_sigterm_to_a_real_run_saves_a_checkpoint_that_resume_continues(data8, tmp_path, capsys):
    out = tmp_path / 'out'
    argv = ['--root_path', data8, '--checkpoint_dir', str(out), *TINY, '--epochs', '1']
    stdout = tmp_path / 'stdout.txt'
    with open(stdout, 'w') as sink:
        run = subprocess.Popen([sys.executable, os.path.join(REPO, 'main.py'), *argv], stdout=sink,
                               stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
                               env=dict(os.environ, OMP_NUM_THREADS='1'))
        try:
            wait_for(str(out / 'log' / f'{RUN}.csv'), 'Epoch: [0][0/', run)
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=180)
        finally:
            run.kill()
    assert run.returncode == 143 and 'Traceback' not in err
    path = checkpoint(out)
    last = open(stdout).read().strip().splitlines()[-1]
    assert last.startswith('SIGTERM: stopped at epoch 0, iteration ') and f'--resume {path} ' in last
    saved = torch.load(path, weights_only=True)
    assert saved['epoch'] == 0 and 1 <= saved['iteration'] <= 4
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temp file, no best copy yet

    capsys.readouterr()
    run_cli(main.main, argv + ['--resume', path])
    printed = capsys.readouterr().out
    assert 'Epoch: [0][0/4]' not in printed and 'Testing Results: ' in printed
    if saved['iteration'] < 4:
        assert f"Epoch: [0][{saved['iteration']}/4]" in printed
    assert torch.load(path, weights_only=True)['epoch'] == 1


def test_a_resumed_run_reuses_the_plans_its_checkpoint_holds(data, tmp_path, monkeypatch, capsys):
    """Without --seed (which times nothing: the branch form everywhere) plans are timed and saved."""
    from cakes.ops import plans
    from cakes.ops.plans import choice
    monkeypatch.delenv(plans.ENV, raising=False)
    cakes = ['--op_code', 'conv1_2_3d', '--conv_config', 'CAKES123D_P']
    run_main(data, tmp_path, *cakes, '--epochs', '1')
    saved = torch.load(checkpoint(tmp_path), weights_only=True)['plans']
    ops = [f'base_model.layer{i}.{j}.convT' for i, depth in enumerate((3, 4, 6, 3), 1) for j in range(depth)]
    assert sorted(saved) == sorted(ops)
    assert all({key.split('|')[-2:][0] for key in table} == {'train', 'eval'} for table in saved.values())
    monkeypatch.setattr(choice, 'measure', lambda *a: pytest.fail('the resumed run measured plans again'))
    run_main(data, tmp_path, *cakes, '--epochs', '2', '--resume', checkpoint(tmp_path))
    assert torch.load(checkpoint(tmp_path), weights_only=True)['plans'] == saved
