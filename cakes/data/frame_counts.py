"""Frame counts of video files for the lists: decoded in parallel, remembered in a cache file as they come.

The cache has one `FOLDER NUM_FRAMES BYTES` line per counted video, appended as soon as it is counted, so
a run that is stopped goes on where it was. A count is reused only when the file still has that size; a
line cut short by a kill does not parse or does not match, and that video is counted again.
"""
import contextlib
import multiprocessing
import os
import signal
import sys
import time

from cakes.data.decode import VideoError, count_frames
from cakes.progress import ProgressBar

CACHE_NAME = 'video_frame_counts.txt'
REDRAW_SECONDS = 0.2


def read_cache(path):
    """{folder: (num_frames, bytes)} from the complete, well-formed lines of the cache file."""
    counts = {}
    if not os.path.exists(path):
        return counts
    with open(path) as f:
        for line in f:
            fields = line.split()
            if line.endswith('\n') and len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                counts[fields[0]] = (int(fields[1]), int(fields[2]))
    return counts


class CacheFile:
    """Appends one line per counted video, each with a single write."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(self.fd).st_size and not _ends_with_newline(path):
            os.write(self.fd, b'\n')  # a line cut short stays a line of its own, which read_cache drops

    def add(self, folder, num_frames, size):
        os.write(self.fd, f'{folder} {num_frames} {size}\n'.encode())

    def close(self):
        os.close(self.fd)


def _ends_with_newline(path):
    with open(path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b'\n'


def _ignore_sigint():
    """Ctrl-C stops the parent, which ends the pool: no traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _count(item):
    """(folder, size, num_frames or the error message): run in the pool's worker processes."""
    folder, path, size = item
    try:
        return folder, size, count_frames(path)
    except VideoError as error:
        return folder, size, str(error)


def count_videos(paths, cache_path, jobs):
    """{folder: num_frames} for `paths` ({folder: existing video file}), with the failures as
    {folder: message}: decoded in `jobs` processes, except the videos the cache already knows."""
    cached = read_cache(cache_path)
    counts, failures, todo = {}, {}, []
    for folder, path in paths.items():
        size = os.path.getsize(path)
        if cached.get(folder, (None, None))[1] == size:
            counts[folder] = cached[folder][0]
        else:
            todo.append((folder, path, size))
    print(f'{len(counts)} of {len(paths)} videos counted before (in {cache_path})', file=sys.stderr, flush=True)
    cache = CacheFile(cache_path)
    try:
        for folder, size, result in _results(todo, jobs):
            if isinstance(result, int):
                counts[folder] = result
                cache.add(folder, result, size)
            else:
                failures[folder] = result
    except KeyboardInterrupt:
        print(f'\nstopped with {len(counts)} of {len(paths)} videos counted (in {cache_path}): run again to go on',
              file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        cache.close()
    return counts, failures


def _results(todo, jobs):
    """_count of every item, as they finish, with a progress bar on stderr."""
    if not todo:
        return
    bar = ProgressBar('counting frames', len(todo), stream=sys.stderr)
    drawn = 0.0
    with multiprocessing.Pool(jobs, _ignore_sigint) if jobs > 1 else contextlib.nullcontext() as pool:
        results = pool.imap_unordered(_count, todo, chunksize=4) if pool else map(_count, todo)
        for done, result in enumerate(results, 1):
            yield result
            if time.time() - drawn > REDRAW_SECONDS or done == len(todo):
                bar.update(done)
                drawn = time.time()
    bar.finish()
