"""Progress bars draw with \\r and escape codes on a terminal only: piped output (a log, `| tee`, nohup) gets plain
lines, and the run's per-iteration lines as released."""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from cakes.data.synthetic import panning_frames, write_video_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Counting the frames of two videos (progress on stderr), then an epoch of two steps through the run's log
# (progress on stdout): the two bars a run shows.
SCRIPT = textwrap.dedent('''
    import sys
    from cakes.data.frame_counts import count_videos
    from cakes.engine.log import RunLog
    folder = sys.argv[1]
    count_videos({name: f'{folder}/{name}.mp4' for name in ('a', 'b')}, f'{folder}/counts.txt', 1)
    log = RunLog(f'{folder}/run.csv')
    bar = log.progress('Epoch 0', 2)
    for i in range(2):
        log.step(f'Epoch: [0][{i}/2]')
        if bar:
            bar.update(i + 1, 'Loss 1.0')
    log.end_progress()
    log('done')
''')


@pytest.fixture
def videos(tmp_path):
    for name in ('a', 'b'):
        write_video_file(str(tmp_path / f'{name}.mp4'), panning_frames(4, 32, 32, cell=8))
    return tmp_path


def run(folder, **streams):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    return subprocess.run([sys.executable, '-c', SCRIPT, str(folder)], cwd=REPO, env=env, timeout=300, **streams)


def test_piped_output_has_no_bar_only_plain_lines(videos):
    result = run(videos, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for text in (result.stdout, result.stderr):
        assert '\r' not in text and '\x1b' not in text
    assert result.stdout == 'Epoch: [0][0/2]\nEpoch: [0][1/2]\ndone\n'
    lines = result.stderr.splitlines()
    assert lines[0] == f'0 of 2 videos counted before (in {videos}/counts.txt)'
    assert re.fullmatch(r'counting frames 2/2 in 0:00:\d\d', lines[1]) and len(lines) == 2
    assert open(videos / 'run.csv').read() == 'Epoch: [0][0/2]\nEpoch: [0][1/2]\ndone\n'


def test_a_terminal_gets_the_bars_and_the_log_file_the_released_lines(videos):
    pty = pytest.importorskip('pty')
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, '-c', SCRIPT, str(videos)], cwd=REPO, stdout=terminal,
                                   stderr=terminal, env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO))
        os.close(terminal)
        shown = b''
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=300) == 0
    finally:
        os.close(controller)
    shown = shown.decode()
    assert '\rcounting frames [########################] 2/2 ETA 0:00:00 \x1b[K' in shown
    assert '\rEpoch 0 [########################] 2/2 ETA 0:00:00 Loss 1.0\x1b[K' in shown
    assert 'Epoch: [0]' not in shown and 'done' in shown  # the bar stands for the per-iteration lines
    assert open(videos / 'run.csv').read() == 'Epoch: [0][0/2]\nEpoch: [0][1/2]\ndone\n'


def test_a_pipe_gets_a_line_a_minute_and_the_total(monkeypatch):
    import io
    from cakes import progress
    now = [1000.0]
    monkeypatch.setattr(progress.time, 'time', lambda: now[0])
    stream = io.StringIO()
    bar = progress.ProgressBar('counting frames', 4, stream=stream)
    for done, at in ((1, 1030), (2, 1061), (3, 1100), (4, 1130)):
        now[0] = at
        bar.update(done)
    bar.finish()
    assert stream.getvalue() == 'counting frames 2/4 ETA 0:01:01\ncounting frames 4/4 in 0:02:10\n'


def test_extract_frames_piped_prints_plain_lines(tmp_path):
    """scripts/extract_frames.py with a stand-in ffmpeg that writes one frame per video."""
    bin_dir, video_dir = tmp_path / 'bin', tmp_path / 'videos'
    bin_dir.mkdir(), video_dir.mkdir()
    (bin_dir / 'ffmpeg').write_text('#!/bin/sh\nfor out; do :; done\ntouch "$(dirname "$out")/000001.jpg"\n')
    (bin_dir / 'ffmpeg').chmod(0o755)
    for name in ('a.mp4', 'b.mp4'):
        (video_dir / name).write_bytes(b'')
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'extract_frames.py'), str(video_dir),
                             str(tmp_path / 'frames'), '-j', '1'], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / 'frames')) == ['a', 'b']
    lines = result.stderr.splitlines()
    assert lines[0] == '0 of 2 videos already extracted' and len(lines) == 2
    assert re.fullmatch(r'extracting frames 2/2 in 0:00:\d\d', lines[1])
