"""Multi-view test protocols (TSM's test_models.py): crop boxes, clip indices and the views they make."""
import numpy as np
import pytest
import torch

from cakes.data.transforms import val_transform
from cakes.data.views import Views, dense_indices, twice_indices

# 176 x 100 frames at S = 48: shorter side to 48 * 256 // 224 = 54, so the scaled frame is 95 x 54;
# 3/5/10 crops step by w = (95 - 48) // 4 = 11, h = (54 - 48) // 4 = 1.
BOXES_48 = {
    1: [(24, 3)],  # round(47 / 2) = 24 (round half to even), round(6 / 2) = 3
    3: [(0, 2), (44, 2), (22, 2)],  # left, right, centre
    5: [(0, 0), (44, 0), (0, 4), (44, 4), (22, 2)],  # corners, centre
}


@pytest.mark.parametrize('crops', [1, 3, 5])
def test_crop_boxes_of_each_protocol(crops):
    assert Views(crops).boxes(95, 54, 48) == [(x, y, False) for x, y in BOXES_48[crops]]


def test_ten_crops_are_the_five_each_followed_by_its_flip():
    assert Views(10).boxes(95, 54, 48) == [(x, y, flip) for x, y in BOXES_48[5] for flip in (False, True)]


def test_full_resolution_crops_are_the_scaled_shorter_side():
    views = Views(3, full_res=True)
    assert views.crop_size(48) == 54
    # w = (95 - 54) // 4 = 10, h = 0
    assert views.boxes(95, 54, 48) == [(0, 0, False), (40, 0, False), (20, 0, False)]
    assert Views(1, full_res=True).boxes(95, 54, 48) == [(20, 0, False)]  # round(41 / 2) = 20
    assert Views(3, full_res=True).crop_size(224) == 256


def test_portrait_frames_step_along_both_sides_as_tsm_does():
    # 54 x 95: w = (54 - 48) // 4 = 1, h = (95 - 48) // 4 = 11; the three crops stay at height 2h.
    assert Views(3).boxes(54, 95, 48) == [(0, 22, False), (4, 22, False), (2, 22, False)]


def test_twice_sample_indices():
    # n = 10, T = 4: tick 2.5; centred int(1.25 + 2.5k) + 1, then int(2.5k) + 1
    assert twice_indices(10, 4) == [[2, 4, 7, 9], [1, 3, 6, 8]]
    # n <= T: the centred clip keeps the validation special case, the second has none (tick 0.75)
    assert twice_indices(3, 4) == [[1, 1, 1, 1], [1, 1, 2, 3]]
    assert Views(twice=True).indices(10, 4) == twice_indices(10, 4)


def test_dense_sample_indices():
    # n = 100, T = 8: stride 8, starts linspace(0, 36, 10) = 0, 4, ..., 36
    clips = dense_indices(100, 8)
    assert len(clips) == 10
    assert clips[0] == [1, 9, 17, 25, 33, 41, 49, 57]
    assert clips[1] == [5, 13, 21, 29, 37, 45, 53, 61]
    assert clips[9] == [37, 45, 53, 61, 69, 77, 85, 93]
    # n = 20, T = 4: stride 16, every start 0, indices wrap around: 0, 16, 32 % 20, 48 % 20
    assert dense_indices(20, 4) == [[1, 17, 13, 9]] * 10
    assert Views(dense=True).indices(20, 4) == dense_indices(20, 4)


def test_one_view_is_the_validation_clip():
    assert Views().indices(10, 4) == [[2, 4, 7, 9]]
    frames = torch.randint(0, 256, (4, 3, 100, 176), dtype=torch.uint8)
    views = Views().transform(frames, 48)
    assert views.shape == (1, 12, 48, 48)
    assert torch.equal(views[0], val_transform(frames, 48).reshape(12, 48, 48))


def coordinate_frames(clips, frames, width=95, height=54):
    """Frames already at the scaled size (resizing is then the identity) whose red channel is x, green y and
    blue the frame's number, so that a view's pixels tell where and from which frame it was cut."""
    video = torch.zeros(clips * frames, 3, height, width, dtype=torch.uint8)
    video[:, 0] = torch.arange(width, dtype=torch.uint8)
    video[:, 1] = torch.arange(height, dtype=torch.uint8)[:, None]
    video[:, 2] = torch.arange(clips * frames, dtype=torch.uint8)[:, None, None]
    return video


def test_views_are_cut_clip_by_clip_and_crop_by_crop_with_flips():
    video = coordinate_frames(clips=2, frames=3)
    views = Views(10, twice=True).transform(video, 48)
    assert views.shape == (20, 9, 48, 48)
    for v, view in enumerate(views):
        clip, crop = divmod(v, 10)
        (x, y), flipped = BOXES_48[5][crop // 2], crop % 2 == 1
        frames = view.reshape(3, 3, 48, 48)
        assert frames[:, 2, 0, 0].tolist() == [3 * clip, 3 * clip + 1, 3 * clip + 2]  # the clip's frames
        assert frames[0, 1, 0, 0] == y
        assert frames[0, 0, 0, 0] == (x + 47 if flipped else x)
        assert frames[0, 0, 0, 47] == (x if flipped else x + 47)


def test_describe_names_the_protocol():
    assert Views(3, twice=True).describe() == '3 crops x 2 clips per video, logits averaged'
    assert Views(averaging='probabilities').describe() == '1 crop x 1 clip per video, softmax probabilities averaged'
    assert Views(averaging='softmax').describe() == '1 crop x 1 clip per video, logits averaged, then softmax'
    assert Views(10, full_res=True, dense=True).describe() == \
        '10 crops x 10 clips per video, full resolution, logits averaged'
    assert Views(5, dense=True).count == 50


def test_view_dataset_gives_every_view_of_a_video(data):
    from cakes.data import build_dataset
    one = build_dataset('somethingv1', data, 'val', 2, input_size=48, uint8=True)
    views = build_dataset('somethingv1', data, 'val', 2, input_size=48, uint8=True, views=Views(3, twice=True))
    clip, label = one[0]
    all_views, same_label = views[0]
    assert all_views.shape == (6, 6, 48, 48) and all_views.dtype == torch.uint8 and same_label == label
    assert not torch.equal(all_views[0], all_views[1])  # left and right crops differ on the moving square
    single = build_dataset('somethingv1', data, 'val', 2, input_size=48, uint8=True, views=Views())[0][0]
    assert torch.equal(single[0], clip)
    assert np.array_equal(views.sample(views.videos[0]), [2, 5, 1, 4])  # n = 6, T = 2: centred, then starts
