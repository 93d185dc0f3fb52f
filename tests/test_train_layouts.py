"""main.py on each layout's synthetic set: the whole pipeline (search, prune, retrain, evaluate under a test
protocol, the class report and the scores file) on Kinetics-400 from its videos, and a training epoch with its
validation on every other layout."""
import os

import numpy as np
import pytest

from conftest import run_main
from cakes.data.synthetic import make_synthetic_data

pytestmark = pytest.mark.usefixtures('single_thread')

CUSTOM = ('--train_list', 'train.txt', '--val_list', 'val.txt')
# layout, make_synthetic_data videos, main.py flags
LIGHT = [('ucf101', False, ('--split', '2')), ('hmdb51', True, ()), ('jester', False, ('--dense_sample',)),
         ('diving48', True, ()), ('custom', False, CUSTOM), ('custom', True, (*CUSTOM, '--category', 'classes.txt'))]


def synthetic(tmp_path_factory, layout, videos, train=2, val=2):
    root = str(tmp_path_factory.mktemp(layout))
    make_synthetic_data(root, train=train, val=val, frames=6, layout=layout, videos=videos)
    return root


def run_name(layout, segments=2):
    return f'I3D_{layout}_resnet50_segment{segments}_'


def results(printed):
    return [line for line in printed.splitlines() if line.startswith('Testing Results: ')]


def test_kinetics_from_videos_search_prune_retrain_evaluate(tmp_path_factory, tmp_path, monkeypatch, capsys):
    root = synthetic(tmp_path_factory, 'kinetics400', True, train=4, val=3)
    monkeypatch.chdir(tmp_path)
    common = ('--dataset', 'kinetics400', '--epochs', '1')
    supernet = str(tmp_path / 'search' / 'checkpoint' / (run_name('kinetics400') + '_checkpoint.pth.tar'))
    run_main(root, tmp_path / 'search', *common, '--op_code', 'conv1_2_3d', '--search', '-sr', '--reweight')
    run_main(root, tmp_path / 'search', *common, '--op_code', 'conv1_2_3d', '--search', '--prune',
             '--prune_model_path', supernet)
    retrain = ('--op_code', 'conv1_2_3d', '--conv_config', 'conv_config.txt')
    run_main(root, tmp_path / 'retrain', *common, *retrain, '--finetune', supernet)
    capsys.readouterr()
    pruned = str(tmp_path / 'retrain' / 'checkpoint' / (run_name('kinetics400') + '_checkpoint.pth.tar'))
    scores = str(tmp_path / 'scores.npz')
    run_main(root, tmp_path / 'retrain', *common, *retrain, '--resume', pruned, '--evaluate', '--test_crops', '3',
             '--save_scores', scores)
    printed = capsys.readouterr().out
    assert len(results(printed)) == 1
    assert 'moving something from left to right' in printed  # the class report names the classes
    saved = np.load(scores)
    assert saved['scores'].shape == (3, 2) and sorted(saved['labels'].tolist()) == [0, 1, 1]


@pytest.mark.parametrize('layout, videos, flags', LIGHT,
                         ids=[f'{layout}{"_videos" if videos else ""}' for layout, videos, _ in LIGHT])
def test_a_training_epoch_and_its_validation(tmp_path_factory, tmp_path, capsys, layout, videos, flags):
    root = synthetic(tmp_path_factory, layout, videos)
    run_main(root, tmp_path, '--dataset', layout, '--epochs', '1', *flags)
    printed = capsys.readouterr().out
    assert 'Epoch: [0][0/1]' in printed and len(results(printed)) == 1
    assert os.path.isfile(tmp_path / 'checkpoint' / (run_name(layout) + '_checkpoint.pth.tar'))
