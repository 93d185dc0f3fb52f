"""The training and validation transforms against the released transforms' numbers and a plain PIL implementation."""
import numpy as np
import pytest
import torch

from conftest_data import WIDTH, HEIGHT, make_dataset, textured_frames
from cakes.data import build_dataset, normalize_uint8
from cakes.data.reference import pil_item
from cakes.data.transforms import (MEAN, STD, center_crop_offset, crop_offsets, crop_size_pairs, random_crop_box,
                                 scaled_size, train_transform)

GREY_LEVEL = 1 / 255 + 1e-5  # tolerance in [0, 1] units: one grey level, plus float rounding


def to_unit_range(clip):
    """A normalised (T*3, S, S) clip back to [0, 1] RGB values."""
    frames = clip.unflatten(0, (-1, 3))
    return frames * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]


def test_crop_size_pairs_of_an_ssv1_frame():
    # sides int(100 * s) = 100, 87, 75, 66; (w, h) pairs whose scale indices differ by at most one
    assert crop_size_pairs(176, 100, 224) == [(100, 100), (87, 100), (100, 87), (87, 87), (75, 87),
                                              (87, 75), (75, 75), (66, 75), (75, 66), (66, 66)]


@pytest.mark.parametrize('width, height, sides', [
    (340, 256, [256, 224, 192, 168]),
    (300, 226, [224, 197, 169, 149]),  # 226 is within 2 of 224: snapped
    (300, 227, [227, 198, 170, 149]),  # 227 is not
])
def test_crop_sides_snap_to_input_size(width, height, sides):
    assert {side for pair in crop_size_pairs(width, height, 224) for side in pair} == set(sides)


def test_crop_sides_snap_to_any_input_size():
    assert {side for pair in crop_size_pairs(176, 100, 76) for side in pair} == {100, 87, 76, 66}


def test_crop_offsets_are_tsns_13_positions():
    step_x, step_y = (176 - 75) // 4, (100 - 87) // 4  # 25, 3
    assert crop_offsets(176, 100, 75, 87) == [
        (0, 0), (4 * step_x, 0), (0, 4 * step_y), (4 * step_x, 4 * step_y), (2 * step_x, 2 * step_y),
        (0, 2 * step_y), (4 * step_x, 2 * step_y), (2 * step_x, 4 * step_y), (2 * step_x, 0),
        (step_x, step_y), (3 * step_x, step_y), (step_x, 3 * step_y), (3 * step_x, 3 * step_y)]


def test_random_crop_box_draws_every_pair_and_offset():
    np.random.seed(0)
    boxes = {random_crop_box(176, 100, 224) for _ in range(3000)}
    expected = {(x, y, w, h) for w, h in crop_size_pairs(176, 100, 224) for x, y in crop_offsets(176, 100, w, h)}
    assert boxes == expected


def test_val_geometry():
    assert scaled_size(176, 100, 256) == (450, 256)
    assert scaled_size(100, 176, 256) == (256, 450)
    assert center_crop_offset(450, 256, 224) == (113, 16)


def gradient_frames(width=WIDTH, height=HEIGHT):
    """Frames growing brighter from left to right, so that every crop shows whether it was flipped."""
    row = torch.arange(width) * 255 // (width - 1)
    return row.to(torch.uint8).expand(4, 3, height, width)


@pytest.mark.parametrize('label, swapped', [(86, 87), (87, 86), (93, 94), (94, 93), (166, 167), (167, 166),
                                            (5, 5), (88, 88)])
def test_flip_swaps_left_right_labels(label, swapped):
    outcomes = set()
    for seed in range(20):
        np.random.seed(seed)
        clip, new_label = train_transform(gradient_frames(), label, 32)
        flipped = clip[..., 0].float().mean() > clip[..., -1].float().mean()
        assert new_label == (swapped if flipped else label)
        assert torch.equal(clip, clip[:1].expand_as(clip))  # every frame the same crop and flip
        outcomes.add(bool(flipped))
    assert outcomes == {True, False}


@pytest.fixture(scope='module')
def textured_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('textured')
    rows = [('1', 12, 86), ('2', 9, 5), ('3', 20, 167)]
    make_dataset(root, train=rows, val=rows, frames=textured_frames)
    make_dataset(root / 'portrait', train=rows, val=rows,
                 frames=lambda n: textured_frames(n, width=HEIGHT, height=WIDTH, seed=1))
    return root


@pytest.mark.parametrize('portrait', [False, True])
@pytest.mark.parametrize('split, size', [('val', 224), ('val', 112), ('train', 224), ('train', 64)])
def test_clip_equals_pil_pipeline(textured_root, split, size, portrait):
    root = textured_root / 'portrait' if portrait else textured_root
    dataset = build_dataset('somethingv1', root, split, 8, input_size=size)
    for index in range(len(dataset)):
        for seed in range(3):
            np.random.seed(seed)
            clip, label = dataset[index]
            np.random.seed(seed)
            expected, expected_label = pil_item(dataset, index)
            assert clip.shape == expected.shape == (24, size, size) and clip.dtype == torch.float32
            assert label == expected_label
            assert (to_unit_range(clip) - to_unit_range(expected)).abs().max() <= GREY_LEVEL


@pytest.mark.parametrize('split', ['train', 'val'])
def test_uint8_path_normalises_to_float_path(textured_root, split):
    floats = build_dataset('somethingv1', textured_root, split, 8, input_size=96)
    uint8s = build_dataset('somethingv1', textured_root, split, 8, input_size=96, uint8=True)
    np.random.seed(1)
    float_clips, float_labels = zip(*[floats[i] for i in range(len(floats))])
    np.random.seed(1)
    uint8_clips, uint8_labels = zip(*[uint8s[i] for i in range(len(uint8s))])
    assert uint8_clips[0].dtype == torch.uint8 and uint8_clips[0].shape == (24, 96, 96)
    assert float_labels == uint8_labels
    assert torch.equal(normalize_uint8(torch.stack(uint8_clips)), torch.stack(float_clips))


def test_normalize_uint8_values():
    batch = torch.randint(0, 256, (2, 6, 5, 7), dtype=torch.uint8)
    out = normalize_uint8(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape and out.is_contiguous()
    mean = torch.tensor(MEAN * 2)[:, None, None]
    std = torch.tensor(STD * 2)[:, None, None]
    assert torch.allclose(out, (batch.float() / 255 - mean) / std, atol=1e-6)
