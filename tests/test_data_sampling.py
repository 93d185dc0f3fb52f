"""TSN frame sampling, alone and as the dataset applies it (1-based frame files)."""
import numpy as np
import pytest

from conftest_data import grey, make_dataset
from cakes.data import build_dataset
from cakes.data.sampling import train_indices, val_indices


def test_train_draws_one_frame_per_segment():
    seen = set()
    for seed in range(200):
        np.random.seed(seed)
        indices = train_indices(21, 8)  # segments of 2 frames, frame 17..21 never used
        assert all(2 * k + 1 <= index <= 2 * k + 2 for k, index in enumerate(indices))
        seen.update(indices)
    assert seen == set(range(1, 17))


def test_train_uses_numpys_global_rng_like_tsn():
    np.random.seed(5)
    expected = np.arange(4) * 7 + np.random.randint(7, size=4) + 1
    np.random.seed(5)
    assert train_indices(30, 4) == expected.tolist()
    np.random.seed(5)
    assert train_indices(30, 4) == expected.tolist()


@pytest.mark.parametrize('num_frames, expected', [(3, [1] * 8), (7, [1] * 8), (8, list(range(1, 9)))])
def test_train_short_videos(num_frames, expected):
    assert train_indices(num_frames, 8) == expected


@pytest.mark.parametrize('num_frames, segments, expected', [
    (20, 8, [2, 4, 7, 9, 12, 14, 17, 19]),
    (16, 4, [3, 7, 11, 15]),
    (9, 8, [1, 2, 3, 4, 6, 7, 8, 9]),
    (8, 8, [1] * 8),  # n <= T: the first frame T times, as the released code does
    (3, 8, [1] * 8),
])
def test_val_takes_segment_centres(num_frames, segments, expected):
    assert val_indices(num_frames, segments) == expected


def frame_greys(clip):
    """The grey level of each frame of a uint8 clip of flat frames."""
    return [round(frame.float().mean().item()) for frame in clip.unflatten(0, (-1, 3))]


def test_dataset_loads_the_sampled_frames(tmp_path):
    make_dataset(tmp_path, train=[('5', 16, 0)], val=[('5', 16, 0)])
    val = build_dataset('somethingv1', tmp_path, 'val', 4, uint8=True)
    assert frame_greys(val[0][0]) == [grey(i) for i in (3, 7, 11, 15)]
    train = build_dataset('somethingv1', tmp_path, 'train', 4, uint8=True)
    np.random.seed(0)
    expected = train_indices(16, 4)
    np.random.seed(0)
    assert frame_greys(train[0][0]) == [grey(i) for i in expected]
