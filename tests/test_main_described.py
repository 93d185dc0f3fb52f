"""Self-describing checkpoints: prune, finetune and evaluate from a checkpoint's description alone; flags that
disagree with it refused; the pruned config beside the supernet and ./conv_config.txt.bak; hard links."""
import ast
import errno
import os
import shutil

import pytest
import torch

import main
from conftest import TINY
from cakes import files as writing
from cakes.cli import run_cli
from cakes.engine.checkpoint import keep_copies
from cakes.engine.run import channels_last
from cakes.files import save_atomic
from cakes.models import create_model
from cakes.models.checkpoint import model_state, prune_output_prefix

# TINY without --num_segments: the runs below take it from the description (the search gives 2, not 8).
AT = TINY.index('--num_segments')
SETTINGS = TINY[:AT] + TINY[AT + 2:]
RUN = 'I3D_somethingv1_resnet50_segment2_'


def run(data, out, *extra):
    run_cli(main.main, ['--root_path', data, '--checkpoint_dir', str(out), *SETTINGS, '--epochs', '1', *extra])


def path_of(out, name='checkpoint'):
    return os.path.join(str(out), 'checkpoint', f'{RUN}_{name}.pth.tar')


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def pipeline(data, tmp_path_factory):
    """Search (all flags given), then prune, finetune and evaluate giving only the checkpoint."""
    root = tmp_path_factory.mktemp('described')
    cwd = os.getcwd()
    os.chdir(root)  # --prune writes ./conv_config.txt
    try:
        run(data, root / 'search', '--op_code', 'convst', '--search', '--num_segments', '2', '-sr')
        supernet = path_of(root / 'search')
        run(data, root, '--prune', '--prune_model_path', supernet)
        run(data, root / 'ft', '--finetune', supernet)
        pruned = path_of(root / 'ft')
    finally:
        os.chdir(cwd)
    yield root, supernet, pruned
    shutil.rmtree(root)


def test_every_checkpoint_describes_its_network(data, pipeline):
    root, supernet, pruned = pipeline
    categories = open(os.path.join(data, 'something-something-v1', 'category.txt')).read().split('\n')[:-1]
    searched = load(supernet)['description']
    assert searched == {'op_code': 'convst', 'search': True, 'conv_config': None, 'arch': 'resnet50',
                        'num_segments': 2, 'dropout': 0.3, 'num_class': 174, 'class_names': categories,
                        'input_size': 48}
    widths = ast.literal_eval(open(root / 'conv_config.txt').read())
    finetuned = load(pruned)['description']
    assert finetuned['op_code'] == 'convst' and finetuned['search'] is False
    assert finetuned['conv_config'] == widths and finetuned['num_segments'] == 2


def test_create_model_rebuilds_the_network_of_each_checkpoint(pipeline):
    _, supernet, pruned = pipeline
    for path in (supernet, pruned):
        checkpoint = load(path)
        create_model(**checkpoint['description']).load_state_dict(model_state(checkpoint), strict=True)


@pytest.mark.parametrize('described', [True, False], ids=['described', 'released'])
def test_finetune_from_a_pruned_network_says_it_is_no_supernet(data, pipeline, tmp_path, capsys, described):
    root, _, pruned = pipeline
    flags = []
    if not described:  # as released: the flags it was trained with name its network
        checkpoint = load(pruned)
        del checkpoint['description']
        pruned = str(tmp_path / 'released.pth.tar')
        torch.save(checkpoint, pruned)
        flags = ['--op_code', 'convst', '--num_segments', '2', '--conv_config', str(root / 'conv_config.txt')]
    with pytest.raises(SystemExit) as exit_info:
        run(data, tmp_path / 'ft', '--finetune', pruned, *flags)
    err = capsys.readouterr().err.strip().splitlines()
    network = 'op code convst with a conv_config' if described else 'no description'
    assert exit_info.value.code == 2 and err == [
        f"error: '{pruned}' holds a trained network ({network}), not a --search supernet: --finetune starts a pruned "
        'network from the channels a supernet keeps; give the checkpoint of the --search run it was pruned from, or '
        f'--resume {pruned} to continue training it']


def test_prune_writes_the_config_beside_the_supernet_too(pipeline):
    root, supernet, _ = pipeline
    beside = os.path.join(os.path.dirname(supernet), RUN + '_conv_config.txt')
    assert open(beside).read() == open(root / 'conv_config.txt').read()


def test_evaluate_from_the_description_alone_equals_the_flags(data, pipeline, tmp_path, capsys):
    root, _, pruned = pipeline
    capsys.readouterr()
    run(data, tmp_path, '--resume', pruned, '--evaluate')
    alone = [line for line in capsys.readouterr().out.splitlines() if line.startswith('Testing Results')]
    run(data, tmp_path, '--resume', pruned, '--evaluate', '--op_code', 'convst', '--num_segments', '2',
        '--conv_config', str(root / 'conv_config.txt'), '--arch', 'resnet50')
    flags = [line for line in capsys.readouterr().out.splitlines() if line.startswith('Testing Results')]
    assert len(alone) == 1 and alone == flags


def test_resume_from_the_description_continues_the_run(data, pipeline, tmp_path, capsys):
    _, _, pruned = pipeline
    run(data, tmp_path, '--resume', pruned, '--epochs', '2')
    out = capsys.readouterr().out
    assert 'Epoch: [1][0/2]' in out and 'settings differ' not in out
    assert load(path_of(tmp_path))['description'] == load(pruned)['description']


def test_resume_takes_the_described_dropout_when_not_given(data, tmp_path, capsys):
    """A --dropout 0 run has no new_fc: continuing it without the flag must build that layout again."""
    run(data, tmp_path / 'a', '--op_code', 'conv2d', '--num_segments', '2', '--dropout', '0')
    first = path_of(tmp_path / 'a')
    run(data, tmp_path / 'b', '--resume', first, '--epochs', '2')
    assert 'Epoch: [1][0/2]' in capsys.readouterr().out
    resumed = load(path_of(tmp_path / 'b'))
    assert resumed['description']['dropout'] == 0.0 and 'module.new_fc.weight' not in resumed['state_dict']


DISAGREEING = [
    (['--num_segments', '4'], '--num_segments 4 disagrees with the checkpoint (num_segments 2)'),
    (['--op_code', 'conv1_2_3d'], '--op_code conv1_2_3d disagrees with the checkpoint (op_code convst)'),
    (['--arch', 'resnet101'], '--arch resnet101 disagrees with the checkpoint (arch resnet50)'),
    (['--search'], '--search disagrees with the checkpoint (search False)'),
    (['--conv_config', 'CAKES12D_C'], '--conv_config CAKES12D_C disagrees with the checkpoint (conv_config of 16 '
                                      'blocks; block 0: '),
]


@pytest.mark.parametrize('flags, message', DISAGREEING, ids=[' '.join(f) for f, _ in DISAGREEING])
def test_a_flag_that_disagrees_with_the_description_is_refused(data, pipeline, tmp_path, capsys, flags, message):
    _, _, pruned = pipeline
    with pytest.raises(SystemExit) as exit_info:
        run(data, tmp_path, '--resume', pruned, '--evaluate', *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ' + message), err


def test_finetune_flags_are_compared_with_the_pruned_network(data, pipeline, tmp_path, capsys):
    """--finetune reads a supernet: the network it builds has the op code without _dropout and no --search."""
    _, supernet, _ = pipeline
    with pytest.raises(SystemExit):
        run(data, tmp_path, '--finetune', supernet, '--op_code', 'conv1_2d')
    assert 'disagrees with the checkpoint (op_code convst)' in capsys.readouterr().err


def test_prune_refuses_a_described_network_that_is_no_supernet(data, pipeline, tmp_path, monkeypatch, capsys):
    _, _, pruned = pipeline
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(data, tmp_path, '--prune', '--prune_model_path', pruned)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and 'without --search (op code convst)' in err[0]
    assert not os.listdir(tmp_path)


def test_a_checkpoint_for_other_classes_is_refused_at_evaluate(data, pipeline, tmp_path, capsys):
    _, _, pruned = pipeline
    checkpoint = load(pruned)
    checkpoint['description']['num_class'] = 10
    path = str(tmp_path / 'ten.pth.tar')
    torch.save(checkpoint, path)
    with pytest.raises(SystemExit) as exit_info:
        run(data, tmp_path, '--resume', path, '--evaluate')
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert 'for 10 classes' in err[0] and 'lists 174' in err[0]


def test_prune_moves_another_config_to_bak(pipeline, tmp_path, monkeypatch, capsys):
    root, supernet, _ = pipeline
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'conv_config.txt').write_text('[{"kxkxk": 64}]\n')
    prune = ['--root_path', 'unused', '--checkpoint_dir', str(tmp_path), '--prune', '--prune_model_path', supernet]
    run_cli(main.main, prune)
    out = capsys.readouterr().out
    assert out.count('conv_config.txt.bak') == 1
    assert (tmp_path / 'conv_config.txt.bak').read_text() == '[{"kxkxk": 64}]\n'
    assert (tmp_path / 'conv_config.txt').read_text() == (root / 'conv_config.txt').read_text()
    os.remove(tmp_path / 'conv_config.txt.bak')
    run_cli(main.main, prune)  # the same config again: nothing to keep
    assert '.bak' not in capsys.readouterr().out and not (tmp_path / 'conv_config.txt.bak').exists()


def test_a_taken_bak_is_kept_and_the_next_number_used(pipeline, tmp_path, monkeypatch, capsys):
    root, supernet, _ = pipeline
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'conv_config.txt').write_text('[{"kxkxk": 64}]\n')
    (tmp_path / 'conv_config.txt.bak').write_text('mine\n')
    (tmp_path / 'conv_config.txt.bak.1').write_text('mine too\n')
    run_cli(main.main, ['--root_path', 'unused', '--checkpoint_dir', str(tmp_path), '--prune',
                        '--prune_model_path', supernet])
    assert 'to ./conv_config.txt.bak.2' in capsys.readouterr().out
    assert (tmp_path / 'conv_config.txt.bak').read_text() == 'mine\n'
    assert (tmp_path / 'conv_config.txt.bak.1').read_text() == 'mine too\n'
    assert (tmp_path / 'conv_config.txt.bak.2').read_text() == '[{"kxkxk": 64}]\n'


@pytest.mark.parametrize('path, prefix', [
    ('D/checkpoint/I3D_x_segment8__checkpoint.pth.tar', 'D/checkpoint/I3D_x_segment8_'),
    ('D/I3D_x_segment8__best.pth.tar', 'D/I3D_x_segment8_'),
    ('D/I3D_x_segment8__epoch15.pth.tar', 'D/I3D_x_segment8_'),
    ('ckpt/supernet.pth.tar', 'ckpt/supernet'),
    ('ckpt/supernet.pt', 'ckpt/supernet'),
    ('ckpt/supernet.pth', 'ckpt/supernet'),
    ('ckpt/RUN_epoch15', 'ckpt/RUN_epoch15'),  # no checkpoint extension: the name as it is
])
def test_prune_output_prefix(path, prefix):
    assert prune_output_prefix(path) == prefix


def write_checkpoint(tmp_path, value):
    path = str(tmp_path / f'{RUN}_checkpoint.pth.tar')
    save_atomic({'epoch': value}, path)
    return path


def test_best_and_epoch_files_are_hard_links_that_keep_their_contents(tmp_path):
    path = write_checkpoint(tmp_path, 5)
    keep_copies(path, 5, True)
    for name in ('best', 'epoch5'):
        assert os.path.samefile(path, str(tmp_path / f'{RUN}_{name}.pth.tar'))
    write_checkpoint(tmp_path, 6)  # the next save replaces the checkpoint's name, not the linked file
    assert load(str(tmp_path / f'{RUN}_best.pth.tar'))['epoch'] == 5 and load(path)['epoch'] == 6
    assert sorted(os.listdir(tmp_path)) == sorted(f'{RUN}_{n}.pth.tar' for n in ('best', 'checkpoint', 'epoch5'))


@pytest.mark.parametrize('code', [errno.EPERM, errno.EXDEV, errno.ENOTSUP])
def test_copies_where_links_cannot_be_made(tmp_path, monkeypatch, code):
    def refuse(src, dst):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(writing.os, 'link', refuse)
    path = write_checkpoint(tmp_path, 5)
    keep_copies(path, 10, True)
    for name in ('best', 'epoch10'):
        copy = str(tmp_path / f'{RUN}_{name}.pth.tar')
        assert not os.path.samefile(path, copy) and load(copy)['epoch'] == 5
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


@pytest.mark.parametrize('flags, cuda, expected', [
    ([], False, True),  # training on a CPU: channels_last by default
    (['--no_channels_last'], False, False),
    (['--evaluate'], False, True),  # evaluating on a CPU too: faster, the same Prec@1/Prec@5
    (['--evaluate', '--no_channels_last'], False, False),
    ([], True, False),  # GPUs: not measured there, opt-in
    (['--channels_last'], True, True),
])
def test_channels_last_default(monkeypatch, flags, cuda, expected):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    args = main.build_parser().parse_args(['--checkpoint_dir', 'x', *flags])
    assert channels_last(args) is expected


def test_channels_last_both_ways_is_refused(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(data, tmp_path, '--channels_last', '--no_channels_last')
    assert exit_info.value.code == 2 and '--no_channels_last' in capsys.readouterr().err
