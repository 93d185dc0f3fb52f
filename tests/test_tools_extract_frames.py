"""scripts/extract_frames.py with a fake ffmpeg put first on PATH (ffmpeg itself is not needed)."""
import os

import pytest

from conftest_data import run_script, write_text

# Writes 3 frames through the output pattern (the last argument) and logs each call; fails on "bad" videos.
FAKE_FFMPEG = '''#!/bin/sh
for last; do :; done
case "$*" in *bad*) echo "first line" >&2; echo "bad.webm: Invalid data found" >&2; exit 1;; esac
echo "$*" >> "$FAKE_FFMPEG_LOG"
for i in 1 2 3; do printf 'jpeg' > "$(printf "$last" "$i")"; done
'''


@pytest.fixture
def setup(tmp_path):
    """(video folder, frame folder, environment with the fake ffmpeg, log of its calls)."""
    bin_dir = tmp_path / 'bin'
    write_text(bin_dir / 'ffmpeg', FAKE_FFMPEG)
    os.chmod(bin_dir / 'ffmpeg', 0o755)
    videos = tmp_path / 'videos'
    for name in ('10.webm', '11.webm', '12.mp4'):
        write_text(videos / name, 'video')
    log = tmp_path / 'ffmpeg.log'
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', FAKE_FFMPEG_LOG=str(log))
    return videos, tmp_path / 'frames', env, log


def calls(log):
    with open(log) as f:
        return f.read().splitlines()


def test_extracts_every_video(setup):
    videos, frames, env, log = setup
    result = run_script('extract_frames', videos, frames, '-j', 2, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(frames)) == ['10', '11', '12']
    assert sorted(os.listdir(frames / '12')) == ['000001.jpg', '000002.jpg', '000003.jpg']
    assert len(calls(log)) == 3
    assert 'extracting frames 3/3' in result.stderr  # the plain progress line: stderr is a pipe here


def test_resumes_and_skips_finished_videos(setup):
    videos, frames, env, log = setup
    os.makedirs(frames / '10')  # finished before
    os.makedirs(frames / '.11.tmp')  # interrupted
    write_text(frames / '.11.tmp' / '000001.jpg', 'partial')
    result = run_script('extract_frames', videos, frames, env=env)
    assert result.returncode == 0, result.stderr
    assert '1 of 3 videos already extracted' in result.stderr
    assert [call.split(' -i ')[1].split()[0] for call in calls(log)] in (
        [str(videos / '11.webm'), str(videos / '12.mp4')], [str(videos / '12.mp4'), str(videos / '11.webm')])
    assert sorted(os.listdir(frames)) == ['10', '11', '12']
    assert len(os.listdir(frames / '11')) == 3
    run_script('extract_frames', videos, frames, env=env)
    assert len(calls(log)) == 2  # nothing left to do


def test_failed_video_is_reported_and_left_out(setup):
    videos, frames, env, log = setup
    write_text(videos / 'bad.webm', 'broken')
    result = run_script('extract_frames', videos, frames, env=env)
    assert result.returncode == 1
    assert 'error: bad.webm: bad.webm: Invalid data found' in result.stderr
    assert sorted(os.listdir(frames)) == ['10', '11', '12']


def test_missing_ffmpeg_is_a_usage_error(setup, tmp_path):
    videos, frames, env, _ = setup
    env['PATH'] = str(tmp_path / 'empty')
    result = run_script('extract_frames', videos, frames, env=env)
    assert result.returncode == 2
    assert result.stderr == 'error: ffmpeg not found on PATH: install it (e.g. apt-get install ffmpeg) and run again\n'


def test_missing_video_folder_is_a_usage_error(setup, tmp_path):
    _, frames, env, _ = setup
    result = run_script('extract_frames', tmp_path / 'nowhere', frames, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f'error: missing video folder {tmp_path / "nowhere"}')
