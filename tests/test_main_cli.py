"""main.py end to end on tiny synthetic data: search, prune, retrain, finetune, evaluate, resume, errors."""
import ast
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import main
from conftest import RUN, run_main
from cakes.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = json.load(open(os.path.join(REPO, 'tests', 'data', 'checkpoint_keys.json')))['settings']


def cli(data, out, *extra):
    run_main(data, out, '--epochs', '1', *extra)


def checkpoint(out, name='checkpoint'):
    return os.path.join(str(out), 'checkpoint', f'{RUN}_{name}.pth.tar')


@pytest.fixture(scope='module')
def searched(data, tmp_path_factory):
    out = tmp_path_factory.mktemp('search')
    cli(data, out, '--op_code', 'conv1_2_3d', '--search', '-sr', '--s', '0.001', '--reweight')
    yield out
    shutil.rmtree(out)  # a supernet checkpoint of 560 MB


def test_search_writes_the_released_checkpoint_and_log(searched, capsys):
    ckpt = torch.load(checkpoint(searched), map_location='cpu', weights_only=True)
    assert set(ckpt) >= {'epoch', 'arch', 'state_dict', 'best_prec1'}
    assert ckpt['epoch'] == 1 and ckpt['arch'] == 'resnet50'
    layout = [[k, list(v.shape)] for k, v in ckpt['state_dict'].items()]
    assert layout == LAYOUTS['conv1_2_3d|search=1|config=-']
    log = open(os.path.join(str(searched), 'log', RUN + '.csv')).read()
    assert 'Epoch: [0][0/2], lr: ' in log and '\tPrec@5 ' in log
    assert 'Testing Results: Prec@1 ' in log and 'Best Prec@1: 0.000' in log


def test_prune_writes_a_plain_int_config(searched, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli('unused', searched, '--op_code', 'conv1_2_3d', '--search', '--prune', '--prune_model_path',
        checkpoint(searched))
    text = open(tmp_path / 'conv_config.txt').read()
    config = ast.literal_eval(text)
    assert len(config) == 16 and list(config[0]) == ['kxkxk', '1xkxk', 'kx1x1']
    assert [sum(b.values()) for b in config] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert 'tensor' not in text and text.strip() in capsys.readouterr().out


def test_prune_to_a_time_target_writes_its_config_and_picture_beside_the_supernet(searched, tmp_path, monkeypatch,
                                                                                 capsys):
    from conftest import TINY
    from test_main_time_budget import write_table
    monkeypatch.chdir(tmp_path)
    flags = ['--root_path', 'unused', '--checkpoint_dir', str(searched), *TINY, '--op_code', 'conv1_2_3d', '--search',
             '--prune', '--prune_model_path', checkpoint(searched), '--latency_table', str(tmp_path / 'table.json')]
    settings, _, source = main.parse_settings(flags + ['--target_ms', '1'])
    table = write_table(settings, source.description['num_class'], tmp_path / 'table.json')
    kinds = table.shapes[0].kinds
    # the time of equal thirds: within reach, whatever the supernet's scales
    target = round(table.predicted_ms([{k: s.width // 3 + (k == kinds[0]) * (s.width % 3) for k in kinds}
                                       for s in table.shapes]), 1)
    run_cli(main.main, flags + ['--target_ms', str(target)])
    out = capsys.readouterr().out
    config = ast.literal_eval(open(tmp_path / 'conv_config.txt').read())
    assert latency_of(table, config) <= target and f'time budget {target:g} ms: eval, batch 1' in out
    prefix = checkpoint(searched).replace('_checkpoint.pth.tar', f'_conv_config_{target:g}ms')
    assert ast.literal_eval(open(prefix + '.txt').read()) == config and os.path.isfile(prefix + '.png')
    os.remove(prefix + '.txt')
    os.remove(prefix + '.png')


def latency_of(table, config):
    from cakes.ops import latency
    return latency.predicted_time([{k: w.get(k, 0) for k in s.kinds} for w, s in zip(config, table.shapes)], table)


def test_retrain_finetune_evaluate_and_resume(data, searched, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli(data, searched, '--op_code', 'conv1_2_3d', '--search', '--prune', '--prune_model_path', checkpoint(searched))
    out = tmp_path / 'ft'
    common = ('--op_code', 'conv1_2_3d', '--conv_config', 'conv_config.txt')
    cli(data, out, *common, '--finetune', checkpoint(searched))
    capsys.readouterr()
    cli(data, out, *common, '--resume', checkpoint(out), '--evaluate')
    printed = capsys.readouterr().out.splitlines()
    results = [line for line in printed if line.startswith('Testing Results: ')]
    assert len(results) == 1
    at = printed.index(results[0])
    assert printed[at + 1] == '' and printed[at + 2].startswith('Best Prec@1: ')
    # Resume continues at the saved epoch with the saved best accuracy.
    cli(data, out, *common, '--resume', checkpoint(out), '--epochs', '2')
    printed = capsys.readouterr().out
    assert 'Epoch: [1][0/2]' in printed and 'Epoch: [0]' not in printed
    assert torch.load(checkpoint(out), weights_only=True)['epoch'] == 2


def test_checkpoint_without_module_prefix_and_legacy_format_loads(data, searched, tmp_path, capsys):
    ckpt = torch.load(checkpoint(searched), weights_only=True)
    ckpt['state_dict'] = {k[len('module.'):]: v for k, v in ckpt['state_dict'].items()}
    ckpt['best_prec1'] = torch.tensor(12.5)  # released checkpoints store a 0-d tensor
    path = str(tmp_path / 'legacy.pth.tar')
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    cli(data, tmp_path, '--op_code', 'conv1_2_3d', '--search', '--resume', path, '--evaluate')
    assert 'Best Prec@1: 12.500' in capsys.readouterr().out


def test_dropout_supernet_search_skips_validation_and_prunes(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli(data, tmp_path, '--op_code', 'convst_dropout', '--search')
    assert 'Testing Results' not in capsys.readouterr().out
    ckpt = torch.load(checkpoint(tmp_path), weights_only=True)
    assert float(ckpt['best_prec1']) == 0
    cli(data, tmp_path, '--op_code', 'convst_dropout', '--search', '--prune', '--prune_model_path',
        checkpoint(tmp_path))
    config = ast.literal_eval(open(tmp_path / 'conv_config.txt').read())
    assert all(list(b) == ['kxkxk', '1xkxk'] for b in config)
    capsys.readouterr()
    # At lr 0 the finetuned weights stay those it started from: the supernet's kept channels.
    cli(data, tmp_path / 'ft', '--op_code', 'convst', '--conv_config', 'conv_config.txt', '--lr', '0',
        '--finetune', checkpoint(tmp_path))
    assert f"=> initialised from the kept channels of supernet '{checkpoint(tmp_path)}'" in capsys.readouterr().out
    supernet = torch.load(checkpoint(tmp_path), weights_only=True)['state_dict']
    finetuned = torch.load(checkpoint(tmp_path / 'ft'), weights_only=True)
    assert finetuned['epoch'] == 1
    assert_kept_channels(supernet, finetuned['state_dict'], config)


def assert_kept_channels(supernet, pruned, config):
    """`pruned` holds the channels of the dropout supernet `supernet` (convst) that pruning keeps, the C largest
    |BN scale| of each op (ties towards the earlier channel), with the widths of `config`; everything else as
    it is. Running statistics are left out: a training epoch moves them."""
    ops = list(dict.fromkeys(key.split('.convT.')[0] for key in supernet if '.convT.' in key))
    assert len(ops) == len(config) == 16
    for op, widths in zip(ops, config):
        scale = supernet[f'{op}.convT.norm.weight']
        width = len(scale) // 2
        kept = torch.sort(scale.abs(), descending=True, stable=True).indices[:width].sort().values
        in_branch = [kept[kept < width], kept[kept >= width] - width]
        assert [len(k) for k in in_branch] == [widths['kxkxk'], widths['1xkxk']]
        j = 0  # a branch of width 0 is left out: the later ones shift down
        for b, local in enumerate(in_branch):
            if len(local):
                weight = supernet[f'{op}.convT.convs.{b}.0.weight'][local]
                assert torch.equal(pruned[f'{op}.convT.convs.{j}.0.weight'], weight)
                j += 1
        assert f'{op}.convT.convs.{j}.0.weight' not in pruned
        for entry in ('weight', 'bias'):
            assert torch.equal(pruned[f'{op}.convT.out.0.{entry}'], supernet[f'{op}.convT.norm.{entry}'][kept])
    others = [k for k in supernet if '.convT.' not in k and not k.endswith(('running_mean', 'running_var', 'tracked'))]
    assert len(others) > 100
    for key in others:
        assert torch.equal(pruned[key], supernet[key]), key


ERRORS = [
    (['--op_code', 'conv9d'], 'unknown op code'),
    (['--op_code', 'conv1_2_3d', '--conv_config', 'NOPE'], 'CAKES123D_P'),
    (['--op_code', 'conv1_2_3d', '--search', '--prune'], '--prune_model_path'),
    (['--op_code', 'conv1_2_3d', '--search', '--conv_config', 'CAKES123D_P'], '--search'),
    (['--op_code', 'conv3d', '-sr'], 'CAKES'),
    (['--op_code', 'conv1_2_3d', '--search', '--reweight'], '-sr'),
    (['--op_code', 'conv1_2_3d_dropout'], '--search'),
    (['--op_code', 'conv1_2_3d', '--resume', 'missing.pth.tar', '--evaluate'], 'missing.pth.tar'),
    (['--op_code', 'conv1_2d', '--conv_config', 'CAKES123D_P'], 'block 0'),
]


@pytest.mark.parametrize('argv, needle', ERRORS, ids=[' '.join(a) for a, _ in ERRORS])
def test_bad_input_is_one_line_and_exit_status_2(data, tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        cli(data, tmp_path, *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and needle in err[0]


def test_wrong_architecture_checkpoint_names_the_mismatch(data, searched, tmp_path, capsys):
    # A checkpoint without a description, as released: its keys and shapes name the mismatch.
    ckpt = torch.load(checkpoint(searched), weights_only=True)
    del ckpt['description']
    path = str(tmp_path / 'released.pth.tar')
    torch.save(ckpt, path)
    with pytest.raises(SystemExit):
        cli(data, tmp_path, '--op_code', 'convst', '--search', '--resume', path, '--evaluate')
    err = capsys.readouterr().err
    assert 'unexpected' in err and '3D/2D/1D' in err


def test_a_real_process_reports_missing_data_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, 'main.py'), '--root_path', str(tmp_path),
                             '--checkpoint_dir', str(tmp_path / 'out'), '--pretrained', 'none'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr and 'category' in result.stderr


def test_resume_evaluate_and_prune_never_fetch_imagenet_weights(data, searched, tmp_path, monkeypatch, capsys):
    def offline(arch):
        raise AssertionError('ImageNet weights were requested')
    monkeypatch.setattr('cakes.models.imagenet.imagenet_state_dict', offline)
    monkeypatch.chdir(tmp_path)
    common = ['--root_path', data, '--checkpoint_dir', str(tmp_path), '--num_segments', '2', '--input_size', '48',
              '-b', '2', '-j', '0', '--op_code', 'conv1_2_3d', '--search', '--pretrained', 'imagenet']
    run_cli(main.main, common + ['--resume', checkpoint(searched), '--evaluate'])
    run_cli(main.main, common + ['--prune', '--prune_model_path', checkpoint(searched)])
    assert 'Testing Results' in capsys.readouterr().out
    with pytest.raises(AssertionError, match='ImageNet weights were requested'):
        run_cli(main.main, common + ['--epochs', '1'])
