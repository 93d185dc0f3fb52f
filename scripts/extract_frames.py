"""Extract the frames of every video in VIDEO_DIR to FRAME_DIR/NAME/000001.jpg ... with ffmpeg.

Resumable: a video whose frame folder exists is skipped. Frames are written into a hidden temporary
folder that is renamed when ffmpeg has finished, so an interrupted run leaves no partial folder.
"""
import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.cli import run_cli  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.progress import ProgressBar  # noqa: E402

FRAME_NAME = '%06d.jpg'  # the SSV2 layout's frame names


def find_ffmpeg():
    ffmpeg = shutil.which('ffmpeg')
    if ffmpeg is None:
        raise UsageError('ffmpeg not found on PATH: install it (e.g. apt-get install ffmpeg) and run again')
    return ffmpeg


def list_videos(video_dir):
    if not os.path.isdir(video_dir):
        raise UsageError(f'missing video folder {video_dir}: give the folder of the downloaded videos')
    return sorted(entry.name for entry in os.scandir(video_dir) if entry.is_file() and not entry.name.startswith('.'))


def extract(ffmpeg, video_path, out_dir):
    """Run ffmpeg into a temporary folder and rename it to out_dir; return an error message or None."""
    parent, name = os.path.split(out_dir)
    tmp_dir = os.path.join(parent, f'.{name}.tmp')
    shutil.rmtree(tmp_dir, ignore_errors=True)  # left by an interrupted run
    os.makedirs(tmp_dir)
    result = subprocess.run([ffmpeg, '-nostdin', '-loglevel', 'error', '-i', video_path, '-q:v', '2',
                             os.path.join(tmp_dir, FRAME_NAME)], capture_output=True, text=True)
    if result.returncode != 0 or not os.listdir(tmp_dir):
        shutil.rmtree(tmp_dir)
        return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no frame written'
    os.rename(tmp_dir, out_dir)
    return None


def extract_all(video_dir, frame_dir, jobs):
    """Extract every video not done yet; return the failures as {video name: message}."""
    ffmpeg = find_ffmpeg()
    videos = list_videos(video_dir)
    os.makedirs(frame_dir, exist_ok=True)
    out_dirs = {video: os.path.join(frame_dir, os.path.splitext(video)[0]) for video in videos}
    todo = [video for video in videos if not os.path.isdir(out_dirs[video])]
    print(f'{len(videos) - len(todo)} of {len(videos)} videos already extracted', file=sys.stderr)
    failures = {}
    with ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(extract, ffmpeg, os.path.join(video_dir, video), out_dirs[video]): video
                   for video in todo}
        bar = ProgressBar('extracting frames', len(todo), stream=sys.stderr)
        for done, future in enumerate(as_completed(futures), 1):
            error = future.result()
            if error:
                failures[futures[future]] = error
            bar.update(done)
        bar.finish()
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('video_dir')
    parser.add_argument('frame_dir')
    parser.add_argument('-j', '--jobs', type=int, default=os.cpu_count(), help='videos extracted at once')
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error('-j must be at least 1')
    failures = extract_all(args.video_dir, args.frame_dir, args.jobs)
    for video, error in sorted(failures.items()):
        print(f'error: {video}: {error}', file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == '__main__':
    run_cli(main)
