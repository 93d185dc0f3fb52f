"""main.py on each layout's synthetic set: the whole pipeline (search, prune, retrain, evaluate under a test
protocol, the class report and the scores file) on Kinetics-400 from its videos, and a training epoch with its
validation on every other layout."""
import re

import numpy as np
import pytest

from conftest import run_main
from cakes.data.synthetic import TWO_CLASSES, make_synthetic_data

pytestmark = pytest.mark.usefixtures('single_thread')

CUSTOM = ('--train_list', 'train.txt', '--val_list', 'val.txt')
# (layout, make_synthetic_data videos, main.py flags): the whole pipeline on two, an epoch and --evaluate on the others
FULL = [('kinetics400', True, ()), ('custom', False, CUSTOM)]
LIGHT = [('ucf101', False, ('--split', '2')), ('hmdb51', True, ()), ('jester', False, ('--dense_sample',)),
         ('diving48', True, ()), ('custom', True, (*CUSTOM, '--category', 'classes.txt'))]


def ids(cases):
    return [f'{layout}{"_videos" if videos else ""}' for layout, videos, _ in cases]


def synthetic(tmp_path_factory, layout, videos, train=2, val=2):
    root = str(tmp_path_factory.mktemp(layout))
    make_synthetic_data(root, train=train, val=val, frames=6, layout=layout, videos=videos)
    return root


def checkpoint(out, layout, name='checkpoint'):
    return str(out / 'checkpoint' / f'I3D_{layout}_resnet50_segment2__{name}.pth.tar')


def results(printed):
    return [line for line in printed.splitlines() if line.startswith('Testing Results: ')]


@pytest.mark.parametrize('layout, videos, flags', FULL, ids=ids(FULL))
def test_search_prune_retrain_evaluate(tmp_path_factory, tmp_path, monkeypatch, capsys, layout, videos, flags):
    root = synthetic(tmp_path_factory, layout, videos, val=3)  # 2 training videos: one step an epoch
    monkeypatch.chdir(tmp_path)
    common = ('--dataset', layout, '--epochs', '1', *flags)
    supernet = checkpoint(tmp_path / 'search', layout)
    run_main(root, tmp_path / 'search', *common, '--op_code', 'conv1_2_3d', '--search', '-sr', '--reweight')
    run_main(root, tmp_path / 'search', *common, '--op_code', 'conv1_2_3d', '--search', '--prune',
             '--prune_model_path', supernet)
    retrain = ('--op_code', 'conv1_2_3d', '--conv_config', 'conv_config.txt')
    run_main(root, tmp_path / 'retrain', *common, *retrain, '--finetune', supernet)
    capsys.readouterr()
    scores = str(tmp_path / 'scores.npz')
    run_main(root, tmp_path / 'retrain', *common, *retrain, '--resume', checkpoint(tmp_path / 'retrain', layout),
             '--evaluate', '--test_crops', '3', '--save_scores', scores)
    printed = capsys.readouterr().out
    assert len(results(printed)) == 1
    assert 'Mean class accuracy: ' in printed and '2 classes with videos' in printed
    report = [line.split(')  ')[1] for line in printed.splitlines() if re.match(r' *\d+\.\d{3}% \(\d/\d\)  ', line)]
    # the class report names the classes: custom has no category file here, so its labels as text
    assert sorted(report) == (['0', '1'] if layout == 'custom' else list(TWO_CLASSES))
    saved = np.load(scores)
    assert saved['scores'].shape == (3, 2) and sorted(saved['labels'].tolist()) == [0, 1, 1]


@pytest.mark.parametrize('layout, videos, flags', LIGHT, ids=ids(LIGHT))
def test_a_training_epoch_then_evaluate(tmp_path_factory, tmp_path, capsys, layout, videos, flags):
    root = synthetic(tmp_path_factory, layout, videos)
    run_main(root, tmp_path, '--dataset', layout, '--epochs', '1', *flags)
    printed = capsys.readouterr().out
    assert 'Epoch: [0][0/1]' in printed and len(results(printed)) == 1
    run_main(root, tmp_path, '--dataset', layout, *flags, '--resume', checkpoint(tmp_path, layout), '--evaluate')
    printed = capsys.readouterr().out
    assert len(results(printed)) == 1
    if '--dense_sample' in flags:  # in training dense clips; with --evaluate TSM's ten dense clips
        assert '1 crop x 10 clips per video' in printed


def test_split_elsewhere_and_custom_without_lists_are_one_line(tmp_path, capsys):
    for flags, message in ((('--dataset', 'kinetics400', '--split', '2'), 'error: --split 2: only ucf101, hmdb51'),
                           (('--dataset', 'custom'), 'error: --dataset custom needs --train_list FILE')):
        with pytest.raises(SystemExit) as exit_info:
            run_main(str(tmp_path), tmp_path, *flags)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count('\n') == 1
