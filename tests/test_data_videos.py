"""SSV2 straight from its .webm videos: decoding, the dataset's video source, undecodable videos."""
import os
import shutil

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest_data import run_script, write_text
from cakes.data import build_dataset
from cakes.data.decode import VideoError, count_frames, decode_frames
from cakes.data.lists import LAYOUTS
from cakes.data.sources import decode_frame
from cakes.data.synthetic import panning_frames, write_video_file

V2 = LAYOUTS['somethingv2']
NUM_FRAMES = {'1': 14, '2': 9}  # video -> frames
JPEG_TOLERANCE = 4.0  # mean absolute difference, in grey levels, of a frame (or clip) and its JPEG version


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    """The folder of two SSV2-style .webm videos."""
    folder = tmp_path_factory.mktemp('videos')
    for seed, (name, count) in enumerate(NUM_FRAMES.items()):
        write_video_file(str(folder / f'{name}.webm'), panning_frames(count, 96, 64, seed=seed), bit_rate=1_000_000)
    return folder


def every_frame(path):
    """All frames of a video as (H, W, 3) uint8 arrays, by plainly decoding it to the end."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format='rgb24') for frame in container.decode(video=0)]


def write_reference_frames(video_dir, frame_dir):
    """What extract_frames.py writes, made with PyAV and PIL instead of the ffmpeg program."""
    for name in NUM_FRAMES:
        folder = frame_dir / name
        os.makedirs(folder)
        for index, frame in enumerate(every_frame(video_dir / f'{name}.webm'), 1):
            Image.fromarray(frame).save(folder / V2.frame_name.format(index), quality=95)


def mean_difference(a, b):
    return (a.float() - b.float()).abs().mean().item()


def assert_frames_match_files(video, frame_folder):
    """decode_frames of every index equals the JPEG file of that index within JPEG tolerance, and not the
    file of the next frame (which tells an off-by-one apart)."""
    files = sorted(os.listdir(frame_folder))
    assert files == [V2.frame_name.format(i) for i in range(1, len(files) + 1)]
    decoded = decode_frames(str(video), range(1, len(files) + 1))
    assert sorted(decoded) == list(range(1, len(files) + 1))
    jpegs = [decode_frame(str(frame_folder / name)) for name in files]
    for index, jpeg in enumerate(jpegs, 1):
        assert decoded[index].shape == jpeg.shape
        assert mean_difference(decoded[index], jpeg) < JPEG_TOLERANCE
        if index < len(jpegs):
            assert mean_difference(decoded[index], jpegs[index]) > 2 * JPEG_TOLERANCE


def test_count_and_decode_frames(videos):
    path = str(videos / '1.webm')
    assert count_frames(path) == NUM_FRAMES['1'] == len(every_frame(path))
    frames = decode_frames(path, [5, 2, 5, 99])
    assert sorted(frames) == [2, 5]  # only what was asked; 99 lies past the end
    reference = every_frame(path)
    for index, frame in frames.items():
        assert frame.dtype == torch.uint8 and frame.shape == (3, 64, 96)
        assert torch.equal(frame.permute(1, 2, 0), torch.from_numpy(reference[index - 1]))


def test_decoded_frames_equal_pyav_jpegs(videos, tmp_path):
    write_reference_frames(videos, tmp_path)
    for name in NUM_FRAMES:
        assert_frames_match_files(videos / f'{name}.webm', tmp_path / name)


@pytest.mark.skipif(shutil.which('ffmpeg') is None,
                    reason='needs the ffmpeg program that extract_frames.py runs (apt-get install ffmpeg); '
                           'test_decoded_frames_equal_pyav_jpegs checks the same without it')
def test_decoded_frames_equal_extract_frames_output(videos, tmp_path):
    result = run_script('extract_frames', videos, tmp_path, '-j', 1)
    assert result.returncode == 0, result.stderr
    for name in NUM_FRAMES:
        assert_frames_match_files(videos / f'{name}.webm', tmp_path / name)


@pytest.mark.parametrize('damage', ['garbage', 'empty', 'no video stream'])
def test_undecodable_video_is_an_error(tmp_path, damage):
    path = tmp_path / 'bad.webm'
    if damage == 'no video stream':
        with av.open(str(path), 'w') as container:
            stream = container.add_stream('libopus', rate=48000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format='flt', layout='mono')
            frame.sample_rate = 48000
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
    else:
        write_text(path, 'not a video' if damage == 'garbage' else '')
    with pytest.raises(VideoError, match=f'{path}'):
        decode_frames(str(path), [1])
    with pytest.raises(VideoError, match=f'{path}'):
        count_frames(str(path))


def make_v2_root(root, videos, rows):
    """The SSV2 layout under root with the videos only: category file and both lists from `rows`."""
    write_text(root / V2.category, ''.join(f'class {i}\n' for i in range(174)))
    write_text(root / V2.train_list, ''.join(f'{f} {n} {label}\n' for f, n, label in rows))
    write_text(root / V2.val_list, ''.join(f'{f} {n} {label}\n' for f, n, label in rows))
    shutil.copytree(videos, root / V2.videos)
    return root


ROWS = [('1', 14, 5), ('2', 9, 7)]


@pytest.mark.parametrize('split', ['train', 'val'])
def test_clips_from_videos_equal_clips_from_frames(videos, tmp_path, split):
    """Same sampling and transforms: with the same seed, the clip from the video equals the clip from the
    extracted frames within JPEG tolerance."""
    from_videos = make_v2_root(tmp_path / 'videos', videos, ROWS)
    from_frames = make_v2_root(tmp_path / 'frames', videos, ROWS)
    write_reference_frames(videos, from_frames / V2.frames)
    datasets = [build_dataset('somethingv2', root, split, 4, input_size=48, uint8=True)
                for root in (from_videos, from_frames)]
    assert type(datasets[0].source).__name__ == 'VideoFiles' and type(datasets[1].source).__name__ == 'FrameFolders'
    for index in range(len(ROWS)):
        for seed in range(3):
            clips = []
            for dataset in datasets:
                np.random.seed(seed)
                clips.append(dataset[index])
            assert clips[0][1] == clips[1][1]
            assert mean_difference(clips[0][0], clips[1][0]) < JPEG_TOLERANCE


def test_undecodable_or_missing_video_gives_another_video(videos, tmp_path, capfd):
    root = make_v2_root(tmp_path, videos, [('1', 14, 5), ('2', 9, 7), ('3', 9, 8)])
    write_text(root / V2.videos / '1.webm', 'not a video')
    dataset = build_dataset('somethingv2', root, 'val', 4, input_size=48, uint8=True)
    for index in (0, 2):
        assert dataset[index][1] == 7
    err = capfd.readouterr().err
    assert f"warning: cannot open {root / V2.videos / '1.webm'} as a video" in err and 'using another video' in err
    assert f"warning: missing video {root / V2.videos / '3.webm'}, using another video" in err
    assert dataset.problem_counts() == {'corrupt_frames': 0, 'missing_videos': 2}


def test_frames_past_the_end_are_replaced_by_frame_1(videos, tmp_path, capfd):
    root = make_v2_root(tmp_path, videos, [('2', 16, 7)])  # the list says 16, the video has 9
    dataset = build_dataset('somethingv2', root, 'val', 4, input_size=48, uint8=True)
    clip, label = dataset[0]  # frames 3, 7, 11, 15: the last two are past the end
    frames = clip.unflatten(0, (-1, 3))
    assert label == 7 and torch.equal(frames[2], frames[3]) and not torch.equal(frames[0], frames[2])
    assert f"warning: unreadable frame 11 of {root / V2.videos / '2.webm'}" in capfd.readouterr().err
    assert dataset.problem_counts() == {'corrupt_frames': 2, 'missing_videos': 0}


def test_frame_folder_wins_over_videos(videos, tmp_path):
    root = make_v2_root(tmp_path, videos, ROWS)
    os.makedirs(root / V2.frames)
    assert build_dataset('somethingv2', root, 'val', 4).source.directory == os.path.join(root, V2.frames)


def test_main_trains_and_validates_from_videos(videos, tmp_path, capsys):
    """The whole run on SSV2 videos, decoded in a DataLoader worker process."""
    from conftest import run_main
    root = make_v2_root(tmp_path / 'data', videos, ROWS)
    run_main(str(root), tmp_path / 'out', '--dataset', 'somethingv2', '--epochs', '1', '-j', '1')
    out = capsys.readouterr()
    assert 'Testing Results: Prec@1 ' in out.out and 'data problems' not in out.out + out.err


def test_dataloader_workers_decode_after_the_parent_did(videos, tmp_path):
    """Frames converted in the parent first, then in forked workers: nothing made before the fork may wait
    for threads the child does not have (the loader's timeout turns a hang into a failure)."""
    root = make_v2_root(tmp_path, videos, ROWS)
    dataset = build_dataset('somethingv2', root, 'val', 4, input_size=32, uint8=True)
    parent = [dataset[index][0] for index in range(len(dataset))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1, timeout=60,
                                         multiprocessing_context='fork')
    assert all(torch.equal(clip[0], expected) for (clip, _), expected in zip(loader, parent))
