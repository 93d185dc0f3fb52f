"""Robust loading: unreadable frames, missing videos, and the problem counts across DataLoader workers."""
import os

import numpy as np
import pytest
import torch

from conftest_data import grey, make_dataset
from cakes.data import build_dataset
from cakes.errors import UsageError


def frame_greys(clip):
    return [round(frame.float().mean().item()) for frame in clip.unflatten(0, (-1, 3))]


def frame_path(frames_dir, folder, index):
    return os.path.join(frames_dir, folder, f'{index:05d}.jpg')


@pytest.fixture
def val_root(tmp_path):
    """Validation videos of 16 frames: 4 segments sample frames 3, 7, 11, 15."""
    frames_dir = make_dataset(tmp_path, val=[('1', 16, 10), ('2', 16, 20)])
    return tmp_path, frames_dir


def load_val(root):
    return build_dataset('somethingv1', root, 'val', 4, uint8=True)


@pytest.mark.parametrize('damage', ['corrupt', 'truncated', 'missing'])
def test_unreadable_frame_is_replaced_by_frame_1(val_root, capfd, damage):
    root, frames_dir = val_root
    bad = frame_path(frames_dir, '1', 7)
    if damage == 'missing':
        os.remove(bad)
    else:
        with open(bad, 'rb') as f:
            data = f.read()
        with open(bad, 'wb') as f:
            f.write(data[:len(data) // 2] if damage == 'truncated' else b'not a jpeg')
    dataset = load_val(root)
    clip, label = dataset[0]
    assert frame_greys(clip) == [grey(3), grey(1), grey(11), grey(15)] and label == 10
    assert f'warning: unreadable frame {bad}, using frame 1' in capfd.readouterr().err
    assert dataset.problem_counts() == {'corrupt_frames': 1, 'missing_videos': 0}
    dataset[0]
    assert dataset.problem_counts()['corrupt_frames'] == 2
    dataset.reset_problem_counts()
    assert dataset.problem_counts() == {'corrupt_frames': 0, 'missing_videos': 0}


def test_missing_video_folder_gives_another_video(val_root, capfd):
    root, frames_dir = val_root
    os.rename(os.path.join(frames_dir, '1'), os.path.join(frames_dir, 'moved'))
    dataset = load_val(root)
    clip, label = dataset[0]
    assert label == 20 and frame_greys(clip) == [grey(3), grey(7), grey(11), grey(15)]
    missing = os.path.join(frames_dir, '1')
    assert f'warning: missing video folder {missing}, using another video' in capfd.readouterr().err
    assert dataset.problem_counts() == {'corrupt_frames': 0, 'missing_videos': 1}


def test_video_without_frame_1_gives_another_video(val_root, capfd):
    root, frames_dir = val_root
    os.remove(frame_path(frames_dir, '1', 1))
    os.remove(frame_path(frames_dir, '1', 3))
    dataset = load_val(root)
    assert dataset[0][1] == 20
    first = frame_path(frames_dir, '1', 1)
    assert f'warning: unreadable frame {first}, using another video' in capfd.readouterr().err
    assert dataset.problem_counts() == {'corrupt_frames': 0, 'missing_videos': 1}


def test_no_usable_video_is_an_error(val_root):
    root, frames_dir = val_root
    for folder in ('1', '2'):
        os.rename(os.path.join(frames_dir, folder), os.path.join(frames_dir, folder + '.moved'))
    with pytest.raises(UsageError, match=f'no usable video in 100 tries in {frames_dir}'):
        load_val(root)[0]


def test_counts_add_up_across_dataloader_workers(val_root):
    root, frames_dir = val_root
    with open(frame_path(frames_dir, '2', 11), 'wb') as f:
        f.write(b'broken')
    os.rename(os.path.join(frames_dir, '1'), os.path.join(frames_dir, 'moved'))
    dataset = load_val(root)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    labels = [label.item() for _ in range(2) for _, label in loader]
    assert labels == [20] * 4
    assert dataset.problem_counts() == {'corrupt_frames': 4, 'missing_videos': 2}


def test_train_item_shapes_and_types(tmp_path):
    make_dataset(tmp_path, train=[('1', 24, 86)])
    np.random.seed(0)
    clip, label = build_dataset('somethingv1', tmp_path, 'train', 8, input_size=112)[0]
    assert clip.shape == (24, 112, 112) and clip.dtype == torch.float32 and clip.is_contiguous()
    assert type(label) is int and label in (86, 87)
