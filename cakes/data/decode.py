"""Frames straight from video files with PyAV (its wheels carry FFmpeg): frame k is the k-th decoded frame,
counted from 1, as a frame extractor would have numbered it.

Decoding always starts at the first frame: seeking in VP9 lands on a keyframe by timestamp, which is
not exact, and a clip's last sampled frame lies near the end of the video anyway. By default a container
decodes on the calling thread only: a DataLoader worker is one of many processes sharing the cores, where
decoder threads add CPU time without adding throughput (scripts/benchmark_data.py measures both).

PyAV is imported at the first video opened: frame folders need none.
"""
import os

import torch

from cakes.errors import UsageError


_converters = {}  # process id -> VideoReformatter


class VideoError(Exception):
    """The file cannot be opened or decoded as a video."""


def pyav():
    """The av module, or a UsageError saying how to get it."""
    try:
        import av
    except ImportError:
        raise UsageError('reading video files needs PyAV: pip install av (offline: a wheel, see '
                         'docs/gpu_first_run.md), or extract frames with scripts/extract_frames.py') from None
    return av


def open_video(path, threads=1):
    """An open PyAV container with a video stream, decoding on `threads` threads (0: FFmpeg's choice, with
    frame and slice threading)."""
    av = pyav()
    try:
        # the decoder that probes the stream gets the same threads (FFmpeg's choice costs 0.7 ms a video)
        container = av.open(path, options={'threads': str(threads)})
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f'cannot open {path} as a video ({e})') from None
    if not container.streams.video:
        container.close()
        raise VideoError(f'{path} has no video stream')
    stream = container.streams.video[0]
    stream.thread_count = threads
    if threads != 1:
        stream.thread_type = 'AUTO'
    return container


def decoded(container, path, last=None):
    """(number, av.VideoFrame) from frame 1 on, stopping after frame `last` (default: the end)."""
    av = pyav()
    try:
        for number, frame in enumerate(container.decode(video=0), start=1):
            yield number, frame
            if number == last:
                return
    except av.FFmpegError as e:
        raise VideoError(f'cannot decode {path} ({e})') from None


def to_tensor(frame):
    """(3, H, W) uint8 RGB, channels innermost in memory as a JPEG decoder gives them."""
    rgb = _converter().reformat(frame, format='rgb24', threads=1)
    return torch.from_numpy(rgb.to_ndarray()).permute(2, 0, 1)


def _converter():
    """One converter per process: it keeps its swscale context between frames of the same size (a fresh one
    per frame, as VideoFrame.to_ndarray makes, costs half as much again as the conversion itself). Per process
    and on one thread, because a context made before a fork (DataLoader workers) waits forever in the child
    for the slice threads it had in the parent."""
    pid = os.getpid()
    if pid not in _converters:  # the parent's stays referenced: freeing it in the child could wait as well
        _converters[pid] = pyav().video.reformatter.VideoReformatter()
    return _converters[pid]


def count_frames(path):
    """The number of decodable frames (decoding them: container frame counts are often absent or wrong)."""
    with open_video(path) as container:
        return sum(1 for _ in decoded(container, path))


def decode_frames(path, indices, threads=1):
    """{index: (3, H, W) uint8 RGB tensor} for the 1-based frame `indices`; decoding stops after the last one
    and converts only the frames asked for. Indices past the end are missing from the result."""
    wanted = set(indices)
    with open_video(path, threads) as container:
        return {number: to_tensor(frame) for number, frame in decoded(container, path, max(wanted))
                if number in wanted}
