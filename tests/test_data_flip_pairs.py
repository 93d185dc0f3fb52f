"""Flip pairs by class name: which labels a horizontal flip swaps, from category.txt."""
import numpy as np
import pytest
import torch

from conftest_data import make_dataset, write_text
from cakes.data import build_dataset
from cakes.data.lists import LAYOUTS
from cakes.data.synthetic import category_names
from cakes.data.transforms import FLIP_LABELS, flip_labels, mirrored_name, name_flip_labels, train_transform

# The left/right classes of Something-Something (V1 names; V2's are the same templates), at their labels
# in TRN's alphabetical order, which the released index pairs assume.
SSV_LEFT_RIGHT = {
    86: 'Pulling something from left to right', 87: 'Pulling something from right to left',
    93: 'Pushing something from left to right', 94: 'Pushing something from right to left',
    166: 'Turning the camera left while filming something', 167: 'Turning the camera right while filming something',
}


def names_with(placed, count=174):
    """`count` neutral class names with `placed` ({label: name}) put in; one contains the word 'upright'."""
    names = [f'Doing thing {i}' for i in range(count)]
    names[5] = 'Putting something upright on the table'
    for label, name in placed.items():
        names[label] = name
    return names


def test_mirrored_name_exchanges_whole_words_only():
    assert mirrored_name('Pushing something from left to right') == 'Pushing something from right to left'
    assert mirrored_name('Turning the camera Left') == 'Turning the camera Right'
    assert mirrored_name('Putting something upright, leftover') == 'Putting something upright, leftover'


def test_real_names_in_trns_order_give_the_released_pairs(capfd):
    assert flip_labels(names_with(SSV_LEFT_RIGHT), 'category.txt') == FLIP_LABELS
    assert capfd.readouterr().err == ''


def test_names_in_another_order_give_their_own_pairs_and_one_warning(capfd):
    moved = dict(zip((3, 40, 41, 100, 150, 12), SSV_LEFT_RIGHT.values()))
    flips = flip_labels(names_with(moved), 'ROOT/category.txt')
    assert flips == {3: 40, 40: 3, 41: 100, 100: 41, 150: 12, 12: 150}
    assert capfd.readouterr().err == ('warning: the left/right class names of ROOT/category.txt differ from the '
                                      'released flip pairs 86/87, 93/94, 166/167: flipped clips swap 3/40, '
                                      '12/150, 41/100\n')


def test_more_pairs_than_released_are_all_used():
    extra = {**SSV_LEFT_RIGHT, 10: 'Moving something from left to right', 11: 'Moving something from right to left'}
    assert name_flip_labels(names_with(extra)) == {**FLIP_LABELS, 10: 11, 11: 10}


@pytest.mark.parametrize('names', [category_names(), [f'class {i:03d}' for i in range(174)],
                                   names_with({86: 'Moving something from left to right'})])
def test_names_without_pairs_keep_the_released_pairs(names, capfd):
    """The synthetic datasets (whose two classes carry their numbers in their names) and lists with an
    unpaired left/right name."""
    assert name_flip_labels(names) == {}
    assert flip_labels(names, 'category.txt') == FLIP_LABELS
    assert capfd.readouterr().err == ''


def gradient_frames():
    row = torch.arange(64) * 255 // 63
    return row.to(torch.uint8).expand(2, 3, 48, 64)


def test_train_transform_swaps_the_given_pairs():
    outcomes = set()
    for seed in range(16):
        np.random.seed(seed)
        clip, label = train_transform(gradient_frames(), 3, 32, {3: 40, 40: 3})
        flipped = bool(clip[..., 0].float().mean() > clip[..., -1].float().mean())
        assert label == (40 if flipped else 3)
        outcomes.add(flipped)
    assert outcomes == {True, False}


@pytest.mark.parametrize('dataset', ['somethingv1', 'somethingv2'])
def test_training_dataset_takes_the_pairs_of_its_category_file(tmp_path, dataset, capfd):
    make_dataset(tmp_path, dataset, train=[('1', 8, 3)], val=[('2', 8, 40)])
    category = tmp_path / LAYOUTS[dataset].category
    write_text(category, ''.join(name + '\n' for name in names_with(
        {3: 'Pushing something from left to right', 40: 'Pushing something from right to left'})))
    train = build_dataset(dataset, tmp_path, 'train', 2, input_size=32)
    assert train.flip_labels == {3: 40, 40: 3}
    labels = set()
    for seed in range(12):
        np.random.seed(seed)
        labels.add(train[0][1])
    assert labels == {3, 40}
    build_dataset(dataset, tmp_path, 'val', 2, input_size=32)
    assert capfd.readouterr().err == (f'warning: the left/right class names of {category} differ from the released '
                                      'flip pairs 86/87, 93/94, 166/167: flipped clips swap 3/40\n')
