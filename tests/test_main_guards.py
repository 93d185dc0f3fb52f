"""What a new user hits: a run never overwrites another network's checkpoint (--overwrite moves it aside), loader
workers' errors are one line, --evaluate needs a checkpoint, the trained input size is kept, a foreign state_dict
is named as such, and -j is capped at the CPUs the process may use."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torchvision

import main
from conftest import ROOT, RUN, TINY, run_main
from cakes.engine import loaders
from cakes.cli import run_cli
from cakes.files import save_atomic


def checkpoint(out, name='checkpoint'):
    return os.path.join(str(out), 'checkpoint', f'{RUN}_{name}.pth.tar')


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def supernet(data, tmp_path_factory):
    """A one-epoch conv1_2_3d sparsity supernet in DIR, under the default run name."""
    out = tmp_path_factory.mktemp('guarded')
    run_main(data, out, '--op_code', 'conv1_2_3d', '--search', '-sr', '--epochs', '1')
    yield out
    shutil.rmtree(out)  # a supernet checkpoint of 560 MB


def test_a_run_of_another_network_refuses_to_overwrite_it(supernet, data, capsys):
    before = load(checkpoint(supernet))
    with pytest.raises(SystemExit) as stop:
        run_main(data, supernet, '--op_code', 'conv3d', '--epochs', '1')
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'another network (conv1_2_3d --search supernet, resnet50, 2 frames, 174 classes)' in err
    assert '(conv3d, resnet50, 2 frames, 174 classes)' in err and '--store_name' in err and '--overwrite' in err
    assert torch.equal(load(checkpoint(supernet))['state_dict']['module.new_fc.weight'],
                       before['state_dict']['module.new_fc.weight'])


def copy_run(out, copy):
    """A copy of the run folder `out` whose checkpoints are hard links (a run replaces them, never writes into
    them), so that the copy costs no disk; logs, which a run appends to, are copied."""
    def link_checkpoints(src, dst):
        return os.link(src, dst) if src.endswith('.pth.tar') else shutil.copy2(src, dst)
    return shutil.copytree(out, str(copy), copy_function=link_checkpoints)


def test_the_same_network_without_resume_refuses_and_overwrite_moves_it_aside(supernet, data, tmp_path, capsys):
    again = ['--op_code', 'conv1_2_3d', '--search', '-sr', '--epochs', '1']
    with pytest.raises(SystemExit):
        run_main(data, supernet, *again)
    err = capsys.readouterr().err
    assert 'a checkpoint of this network (epoch 1)' in err and f'--resume {checkpoint(supernet)}' in err
    old = load(checkpoint(supernet))['state_dict']['module.new_fc.weight']
    copy = copy_run(supernet, tmp_path / 'copy')
    run_main(data, copy, *again, '--overwrite')
    assert "=> --overwrite: the earlier run's checkpoints and logs moved to" in capsys.readouterr().out
    [aside] = os.listdir(os.path.join(copy, 'overwritten'))
    moved = os.path.join(copy, 'overwritten', aside)
    assert sorted(os.listdir(os.path.join(moved, 'checkpoint'))) == [f'{RUN}_best.pth.tar', f'{RUN}_checkpoint.pth.tar']
    assert sorted(os.listdir(os.path.join(moved, 'log'))) == [f'{RUN}.csv', f'{RUN}_tb']
    assert torch.equal(load(os.path.join(moved, 'checkpoint', f'{RUN}_checkpoint.pth.tar'))['state_dict']
                       ['module.new_fc.weight'], old)
    assert os.path.isfile(checkpoint(copy))  # the new run's


def test_resuming_the_run_itself_is_allowed(supernet, data, tmp_path):
    copy = copy_run(supernet, tmp_path / 'resumed')
    run_main(data, copy, '--resume', checkpoint(copy), '-sr', '--epochs', '2')
    assert load(checkpoint(copy))['epoch'] == 2


def test_a_released_format_checkpoint_of_another_layout_is_named(supernet, data, tmp_path, capsys):
    state = load(checkpoint(supernet))['state_dict']
    save_atomic({'epoch': 3, 'state_dict': state}, checkpoint(tmp_path))  # no description, as released
    with pytest.raises(SystemExit):
        run_main(data, tmp_path, '--op_code', 'conv3d', '--epochs', '1')
    assert ('another network (a checkpoint without a description: its CAKES branches are 3D/2D/1D: a --search '
            'supernet of --op_code conv1_2_3d)') in capsys.readouterr().err


def test_a_usage_error_in_a_loader_worker_is_one_line(data, tmp_path):
    root = shutil.copytree(data, str(tmp_path / 'broken'))
    frames = os.path.join(root, 'something-something-v1', '20bn-something-something-v1')
    for folder in os.listdir(frames):
        shutil.rmtree(os.path.join(frames, folder))
    flags = [f if f != '0' or TINY[i - 1] != '-j' else '1' for i, f in enumerate(TINY)]  # one loader worker
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), '--root_path', root, '--checkpoint_dir',
                             str(tmp_path / 'out'), *flags, '--epochs', '1'], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    # The workers' warnings (one per missing folder) and the error share stderr, written by several processes
    # (a line may be cut by another's): the error once, no traceback.
    expected = f'error: no usable video in 100 tries in {frames}: check the frame folders'
    assert result.stderr.count(expected) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_evaluate_without_a_checkpoint_is_refused(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_main(data, tmp_path, '--evaluate')
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == ('error: --evaluate scores a trained network: give --resume CKPT, the '
                                               'checkpoint to evaluate')


def test_the_input_size_trained_at_is_kept_and_used(supernet, data, tmp_path, capsys):
    assert load(checkpoint(supernet))['description']['input_size'] == 48
    at = TINY.index('--input_size')
    without = TINY[:at] + TINY[at + 2:]
    argv = ['--root_path', data, '--checkpoint_dir', str(tmp_path), '--resume', checkpoint(supernet), '--evaluate']
    run_cli(main.main, argv + without)
    described = capsys.readouterr().out
    run_cli(main.main, argv + TINY)
    given = capsys.readouterr().out
    result = [line for line in described.splitlines() if line.startswith('Testing Results')]
    assert result and result == [line for line in given.splitlines() if line.startswith('Testing Results')]
    exported = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'export_onnx.py'), '--resume',
                               checkpoint(supernet), str(tmp_path / 'm.onnx')], capture_output=True, text=True)
    assert exported.returncode == 0 and ', 6, 48, 48)' in exported.stdout, exported.stderr


def test_a_foreign_state_dict_is_named_as_such(data, tmp_path, capsys):
    path = str(tmp_path / 'r3d_18.pth')
    torch.save(torchvision.models.video.r3d_18().state_dict(), path)
    with pytest.raises(SystemExit):
        run_main(data, tmp_path, '--resume', path, '--evaluate')
    err = capsys.readouterr().err
    assert 'its keys (stem.0.weight, stem.1.weight, stem.1.bias, ...) are not this project\'s layout' in err
    assert '--dropout' not in err


@pytest.mark.parametrize('workers, cpus, expected', [(16, 2, 2), (2, 2, 2), (0, 2, 0), (4, 3, 3)])
def test_workers_are_capped_at_the_usable_cpus(monkeypatch, workers, cpus, expected):
    monkeypatch.setattr(loaders.os, 'sched_getaffinity', lambda pid: set(range(cpus)))
    settings, _, source = main.parse_settings(['--checkpoint_dir', 'x', '-j', str(workers)])
    assert settings.workers == expected
    assert list(source.notes) == ([f'=> -j {workers}: this process may use {cpus} CPUs, loading with {cpus} workers']
                                  if workers > cpus else [])


def test_the_default_workers_are_capped_without_a_word(monkeypatch):
    """-j left out: its 16 is nobody's choice, so fewer CPUs are no news."""
    monkeypatch.setattr(loaders.os, 'sched_getaffinity', lambda pid: {0, 1})
    settings, _, source = main.parse_settings(['--checkpoint_dir', 'x'])
    assert settings.workers == 2 and source.notes == ()


def test_a_budget_out_of_reach_names_the_input_it_was_counted_at(supernet, capsys):
    """The supernet was trained at 48x48: --prune takes that size from its description."""
    with pytest.raises(SystemExit):
        run_cli(main.main, ['--checkpoint_dir', 'unused', '--prune', '--prune_model_path', checkpoint(supernet),
                            '--target_gflops', '1000'])
    err = capsys.readouterr().err
    assert 'FLOPs target 1000' in err and 'at 2 frames of 48x48; give a target in that range' in err, err
