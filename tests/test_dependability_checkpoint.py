"""Checkpoints survive crashes and full disks, refuse code, and say what they are when they do not fit."""
import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from cakes.configs import RELEASED
import main
from cakes.engine import checkpoint as engine_checkpoint
from cakes.models import TemporalModel
from cakes import files as writing
from cakes.models import checkpoint as ckpt
from cakes.cli import run_cli
from cakes.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files(folder):
    return sorted(os.listdir(folder))


@pytest.fixture
def previous(tmp_path):
    """A good checkpoint already on disk, and what it holds."""
    good = {'epoch': 3, 'state_dict': {'w': torch.arange(10.)}}
    path = str(tmp_path / 'run_checkpoint.pth.tar')
    writing.save_atomic(good, path)
    return path, good


def assert_intact(path, good):
    loaded = ckpt.load_checkpoint(path)
    assert loaded['epoch'] == good['epoch'] and torch.equal(loaded['state_dict']['w'], good['state_dict']['w'])


def test_a_full_disk_mid_write_keeps_the_previous_checkpoint_and_no_temp(previous, tmp_path, monkeypatch):
    path, good = previous

    def torn_save(obj, f):
        f.write(b'PK\x03\x04 half a checkpoint')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', torn_save)
    with pytest.raises(UsageError, match='No space left on device.*intact'):
        writing.save_atomic({'epoch': 4, 'state_dict': {}}, path)
    assert files(tmp_path) == ['run_checkpoint.pth.tar']
    assert_intact(path, good)


def test_any_failure_mid_write_propagates_and_cleans_up(previous, tmp_path, monkeypatch):
    path, good = previous

    def crash(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        writing.save_atomic({'epoch': 4}, path)
    assert files(tmp_path) == ['run_checkpoint.pth.tar']
    assert_intact(path, good)


def test_a_failed_copy_keeps_the_previous_copy(previous, tmp_path, monkeypatch):
    path, good = previous
    best = str(tmp_path / 'run_best.pth.tar')
    writing.copy_atomic(path, best)
    writing.save_atomic({'epoch': 5, 'state_dict': {'w': torch.zeros(10)}}, path)

    def full_disk(src, dst):
        dst.write(src.read(10))
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(writing.shutil, 'copyfileobj', full_disk)
    with pytest.raises(UsageError, match='run_best.pth.tar'):
        writing.copy_atomic(path, best)
    assert files(tmp_path) == ['run_best.pth.tar', 'run_checkpoint.pth.tar']
    assert_intact(best, good)


KILLED_WRITER = textwrap.dedent('''
    import sys, time, torch
    sys.path.insert(0, {repo!r})
    from cakes.files import save_atomic

    def slow_save(obj, f):
        f.write(b'PK' + bytes(1 << 20))  # the first megabyte of a large checkpoint...
        f.flush()
        print('writing', flush=True)
        time.sleep(60)                   # ...and SIGKILL arrives before the rest

    torch.save = slow_save
    save_atomic({{'epoch': 4}}, {path!r})
''')


def test_a_write_killed_half_way_leaves_the_last_checkpoint_loadable(previous, tmp_path):
    path, good = previous
    writer = subprocess.Popen([sys.executable, '-c', KILLED_WRITER.format(repo=REPO, path=path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == 'writing'
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    leftovers = [name for name in files(tmp_path) if name.endswith('.tmp')]
    assert len(leftovers) == 1 and leftovers[0].startswith('.run_checkpoint.pth.tar.')  # hidden, never the target
    assert_intact(path, good)
    # The next write clears what the killed one left.
    writing.save_atomic({'epoch': 5, 'state_dict': {'w': torch.ones(2)}}, path)
    assert files(tmp_path) == ['run_checkpoint.pth.tar']
    assert ckpt.load_checkpoint(path)['epoch'] == 5


class Payload:
    """Unpickling this would create `marker`: the test asserts that it never does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").write("ran")',)


@pytest.fixture(params=['torch', 'pickle'])
def malicious(request, tmp_path):
    marker = str(tmp_path / 'payload_ran')
    path = str(tmp_path / 'evil.pth.tar')
    content = {'epoch': 1, 'arch': 'resnet50', 'state_dict': {'module.x': Payload(marker)}, 'best_prec1': 0}
    if request.param == 'torch':
        torch.save(content, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(content, f)
    return path, marker


@pytest.mark.parametrize('flags', [
    ['--resume', '{path}', '--evaluate'],
    ['--op_code', 'conv1_2_3d', '--conv_config', 'CAKES123D_P', '--finetune', '{path}'],
    ['--op_code', 'conv1_2_3d', '--search', '--prune', '--prune_model_path', '{path}'],
], ids=['resume', 'finetune', 'prune'])
def test_a_malicious_pickle_is_refused_and_never_run(data, malicious, tmp_path, monkeypatch, capsys, flags):
    path, marker = malicious
    monkeypatch.chdir(tmp_path)
    argv = ['--root_path', data, '--checkpoint_dir', str(tmp_path / 'out'), '--pretrained', 'none',
            '--num_segments', '2', '--input_size', '48', '-b', '2', '-j', '0',
            *[flag.format(path=path) for flag in flags]]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: refusing to load') and 'evil.pth.tar' in err[0]
    assert not os.path.exists(marker)


@pytest.mark.parametrize('tool, flags', [
    ('main', ['--resume', '{path}', '--evaluate']),
    ('main', ['--op_code', 'conv1_2_3d', '--conv_config', 'CAKES123D_P', '--finetune', '{path}']),
    ('main', ['--op_code', 'conv1_2_3d', '--search', '--prune', '--prune_model_path', '{path}']),
    ('predict', ['--resume', '{path}', '{path}']),
], ids=['resume', 'finetune', 'prune', 'predict'])
def test_a_text_file_given_as_a_checkpoint_is_named_as_not_one(data, tmp_path, monkeypatch, capsys, tool, flags):
    import predict
    path = str(tmp_path / 'train_videofolder.txt')  # a list where the checkpoint should be
    with open(path, 'w') as f:
        f.write('clip1 40 3\nclip2 37 0\n')
    monkeypatch.chdir(tmp_path)
    argv = [flag.format(path=path) for flag in flags]
    if tool == 'main':
        argv = ['--root_path', data, '--checkpoint_dir', str(tmp_path / 'out'), '--pretrained', 'none',
                '--num_segments', '2', '--input_size', '48', '-b', '2', '-j', '0', *argv]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main.main if tool == 'main' else predict.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: '{path}' is not a checkpoint: it starts with the text 'clip1 40 3', where a PyTorch "
                   "checkpoint is a zip archive or a binary pickle; check the path given to --resume/--finetune/"
                   "--prune_model_path"]


def test_binary_bytes_that_are_no_checkpoint_are_shown(tmp_path):
    path = tmp_path / 'frame.jpg'
    path.write_bytes(b'\xff\xd8\xff\xe0\x00\x10JFIF\x00')
    with pytest.raises(UsageError, match=r"is not a checkpoint: it starts with the bytes b'\\xff\\xd8"):
        ckpt.load_checkpoint(str(path))


@pytest.mark.parametrize('content, needle', [(b'', 'cannot read'), (b'PK\x03\x04torn', 'cannot read')],
                         ids=['empty', 'torn'])
def test_an_unreadable_checkpoint_is_one_clear_error(tmp_path, content, needle):
    path = tmp_path / 'bad.pth.tar'
    path.write_bytes(content)
    with pytest.raises(UsageError, match=needle):
        ckpt.load_checkpoint(str(path))
    with pytest.raises(UsageError, match='not found'):
        ckpt.load_checkpoint(str(tmp_path))  # a folder is not a checkpoint


def meta_model(op_code, **kw):
    with torch.device('meta'):
        return TemporalModel(174, 2, op_code=op_code, **kw)


def mismatch(checkpoint_model, model):
    with pytest.raises(UsageError) as error:
        ckpt.load_weights(model, checkpoint_model.state_dict())
    return str(error.value)


def test_a_checkpoint_of_another_config_names_the_first_differing_block():
    message = mismatch(meta_model('conv1_2_3d', conv_config=RELEASED['CAKES123D_P']),
                       meta_model('conv1_2_3d', conv_config=RELEASED['CAKES123D_C']))
    theirs, ours = RELEASED['CAKES123D_P'], RELEASED['CAKES123D_C']
    first = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
    assert 'shape (checkpoint vs model)' in message and '(--op_code conv1_2_3d)' in message
    assert f'has widths {dict((k, v) for k, v in theirs[first].items() if v)}' in message
    assert '--conv_config it was trained with' in message


def test_hints_name_supernets_one_dimensional_branches_and_the_classifier():
    message = mismatch(meta_model('conv1_2d', search=True), meta_model('conv1_2d'))
    assert 'its CAKES branches are 2D/1D: a --search supernet of --op_code conv1_2d' in message
    message = mismatch(meta_model('conv1_2d'), meta_model('convst'))
    assert 'its CAKES branches are 2D/1D (--op_code conv1_2d)' in message
    assert 'it was trained with --dropout 0' in mismatch(meta_model('conv3d', dropout=0), meta_model('conv3d'))
    assert 'it has 23 blocks in layer3 (--arch resnet101), the model 6' in mismatch(
        meta_model('conv3d', backbone='resnet101'), meta_model('conv3d'))


def test_a_full_checkpoint_is_plain_data_for_weights_only(tmp_path):
    """What save() adds (optimizer, RNG, args) must load with weights_only=True, and released tools still
    find the released keys."""
    from types import SimpleNamespace
    from cakes.engine.resume import EpochSampler
    from cakes.engine.schedule import make_optimizer
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    optimizer = make_optimizer(model, 0.1, 0.9, 1e-4)
    model(torch.randn(2, 1, 1, 2, 2)).sum().backward()
    optimizer.step()
    args = main.build_parser().parse_args(['--checkpoint_dir', str(tmp_path), '--lr_steps', '3', '5'])
    path = engine_checkpoint.save(args, model, optimizer, EpochSampler(4), 2, 1, 12.5)
    loaded = torch.load(path, weights_only=True)
    assert {'epoch', 'arch', 'state_dict', 'best_prec1'} <= set(loaded)
    assert all(k.startswith('module.') for k in loaded['state_dict'])
    assert (loaded['epoch'], loaded['iteration'], loaded['best_prec1']) == (2, 1, 12.5)
    assert loaded['optimizer']['state'][0]['momentum_buffer'].shape == (2, 1, 1, 1, 1)
    assert set(loaded['rng']) >= {'python', 'numpy', 'torch', 'loader_seed'}
    assert loaded['args']['lr_steps'] == [3.0, 5.0] and loaded['args']['checkpoint_dir'] == str(tmp_path)
    assert SimpleNamespace(**loaded['args']).arch == 'resnet50'


def test_atomic_writes_follow_the_umask_like_a_plain_open(tmp_path):
    """mkstemp creates 0600 files: checkpoints, configs and pictures must be readable as torch.save's would be."""
    old = os.umask(0o022)
    try:
        writing.write_text_atomic(str(tmp_path / 'conv_config.txt'), '[]\n')
        writing.save_atomic({'epoch': 1}, str(tmp_path / 'x.pth.tar'))
    finally:
        os.umask(old)
    for name in ('conv_config.txt', 'x.pth.tar'):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
