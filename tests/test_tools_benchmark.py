"""scripts/benchmark_data.py: runs each path and ends with a JSON line."""
import json
import os
import re

import pytest
import torch

from conftest_data import load_script, run_script, write_text
from cakes.data.sampling import val_indices
from cakes.data.synthetic import make_synthetic_data
from cakes.cli import run_cli


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    make_synthetic_data(root, train=3, val=3, frames=9)
    return root


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The benchmark runs on one thread; give the other tests their threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('split, path', [('train', '--reference'), ('val', '--uint8'), ('val', None)])
def test_prints_clips_per_second_last(root, capsys, split, path):
    args = ['--root_path', str(root), '--split', split, '--num_segments', '4', '--input_size', '64', '--limit', '2']
    run_cli(load_script('benchmark_data').main, args + ([path] if path else []))
    lines = capsys.readouterr().out.splitlines()
    assert f'{split}, {"reference PIL" if path == "--reference" else "uint8" if path else "float"} path: 2 clips' \
        in lines[0]
    assert json.loads(lines[-1])['clips_per_s'] > 0


def test_cli_error(tmp_path):
    result = run_script('benchmark_data', '--root_path', tmp_path, '--split', 'val')
    assert result.returncode == 2
    assert result.stderr.startswith(f'error: missing category file {tmp_path}/something-something-v1/category.txt')


def test_ssv2_videos_compares_video_and_frame_paths(capsys):
    args = ['--ssv2_videos', '1', '--split', 'val', '--num_segments', '2', '--input_size', '32', '--repeats', '1']
    run_cli(load_script('benchmark_data').main, args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('1 videos of 427x240 at 12 fps')
    figures = json.loads(lines[-1])
    assert set(figures['clips_per_s']) == {'video', 'frames'} and min(figures['clips_per_s'].values()) > 0
    assert set(figures['video_cpu_ms']) == {'open', 'decode', 'convert', 'transform'}
    frames = int(re.search(r'fps, (\d+) to', lines[0]).group(1))
    assert figures['frames_decoded_per_clip'] == val_indices(frames, 2)[-1]  # decoding stops at the last one


def test_reference_needs_frames(tmp_path):
    from cakes.data.synthetic import panning_frames, write_video_file
    write_text(tmp_path / 'category.txt', 'a\nb\n')
    write_text(tmp_path / 'val_video_folder.txt', '1 4 0\n')
    os.makedirs(tmp_path / '20bn-something-something-v2')
    write_video_file(str(tmp_path / '20bn-something-something-v2' / '1.webm'), panning_frames(4, 32, 32, cell=8))
    result = run_script('benchmark_data', '--root_path', tmp_path, '--dataset', 'somethingv2', '--split', 'val',
                        '--reference')
    assert result.returncode == 2
    assert result.stderr == (f'error: --reference reads JPEG frames, and {tmp_path} has the videos only: '
                             'extract the frames with scripts/extract_frames.py\n')
