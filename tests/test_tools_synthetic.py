"""The synthetic dataset: SSV1 layout, classes told apart only by the direction of motion."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest_data import load_script, run_script
from cakes.data import build_dataset, num_classes
from cakes.data.synthetic import LEFT_TO_RIGHT, RIGHT_TO_LEFT, make_synthetic_data
from cakes.cli import run_cli

V1 = 'something-something-v1'


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    make_synthetic_data(root, train=6, val=4, seed=3, frames=10)
    return root


def read_rows(path):
    with open(path) as f:
        return [line.split() for line in f]


def object_x(path):
    """Column of the bright object's centre in a frame."""
    bright = np.asarray(Image.open(path).convert('L')) > 120
    return np.nonzero(bright)[1].mean()


def test_layout(root):
    with open(root / V1 / 'category.txt') as f:
        categories = f.read().splitlines()
    assert len(categories) == num_classes('somethingv1', root) == 174 and categories == sorted(categories)
    train = read_rows(root / V1 / 'train_videofolder.txt')
    val = read_rows(root / V1 / 'val_videofolder.txt')
    assert len(train) == 6 and len(val) == 4
    assert {row[2] for row in train} == {row[2] for row in val} == {str(LEFT_TO_RIGHT), str(RIGHT_TO_LEFT)}
    for folder, frames, _ in train + val:
        names = sorted(os.listdir(root / V1 / '20bn-something-something-v1' / folder))
        assert frames == '10' and names == [f'{i:05d}.jpg' for i in range(1, 11)]
    assert Image.open(root / V1 / '20bn-something-something-v1' / '1' / '00001.jpg').size == (176, 100)


def test_labels_follow_motion_direction(root):
    for folder, frames, label in read_rows(root / V1 / 'train_videofolder.txt'):
        xs = [object_x(root / V1 / '20bn-something-something-v1' / folder / f'{i:05d}.jpg')
              for i in range(1, int(frames) + 1)]
        direction = 1 if int(label) == LEFT_TO_RIGHT else -1
        assert (direction * np.diff(xs) > 0).all()
        assert direction * (xs[-1] - xs[0]) >= 60


def test_same_seed_same_data(root, tmp_path):
    make_synthetic_data(tmp_path, train=6, val=4, seed=3, frames=10)
    for relative in ('train_videofolder.txt', '20bn-something-something-v1/7/00004.jpg'):
        with open(root / V1 / relative, 'rb') as a, open(tmp_path / V1 / relative, 'rb') as b:
            assert a.read() == b.read()


def test_loads_as_a_dataset(root):
    dataset = build_dataset('somethingv1', root, 'train', 4, input_size=64)
    clip, label = dataset[0]
    assert len(dataset) == 6 and clip.shape == (12, 64, 64) and label in (LEFT_TO_RIGHT, RIGHT_TO_LEFT)


def test_cli(tmp_path):
    result = run_script('make_synthetic_data', tmp_path, '--train', 2, '--val', 1, '--frames', 2)
    assert result.returncode == 2
    assert result.stderr == 'error: --frames 2 is too few: the loader drops videos with fewer than 3\n'
    run_cli(load_script('make_synthetic_data').main, [str(tmp_path), '--train', '2', '--val', '1', '--frames', '3'])
    assert len(read_rows(tmp_path / V1 / 'train_videofolder.txt')) == 2


def test_other_layouts(tmp_path):
    result = run_script('make_synthetic_data', tmp_path, '--layout', 'jester', '--videos')
    assert result.returncode == 2
    assert result.stderr == 'error: the jester layout has no video folder (frames only): drop --videos\n'
    make_synthetic_data(tmp_path, train=2, val=2, frames=4, layout='ucf101', seed=3)
    for split in (1, 2, 3):
        rows = read_rows(tmp_path / 'ucf101' / f'ucf101_train_split_{split}.txt')
        assert rows == [['right_to_left/00001', '4', '1'], ['left_to_right/00002', '4', '0']]
    assert os.path.isfile(tmp_path / 'ucf101/rawframes/right_to_left/00001/img_00004.jpg')
    assert build_dataset('ucf101', tmp_path, 'train', 2).flip_labels == {0: 1, 1: 0}  # named to swap
