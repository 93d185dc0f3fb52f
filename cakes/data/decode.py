"""Frames straight from video files with PyAV (its wheels carry FFmpeg): frame k is the k-th decoded frame,
counted from 1, as a frame extractor would have numbered it."""
import av
import torch


class VideoError(Exception):
    """The file cannot be opened or decoded as a video."""


def _open(path):
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f'cannot open {path} as a video ({e})') from None
    if not container.streams.video:
        container.close()
        raise VideoError(f'{path} has no video stream')
    return container


def count_frames(path):
    """The number of decodable frames (decoding them: container frame counts are often absent or wrong)."""
    container = _open(path)
    try:
        return sum(1 for _ in container.decode(video=0))
    except av.FFmpegError as e:
        raise VideoError(f'cannot decode {path} ({e})') from None
    finally:
        container.close()


def decode_frames(path, indices):
    """{index: (3, H, W) uint8 RGB tensor} for the 1-based frame `indices`; decoding stops after the last one
    and converts only the frames asked for. Indices past the end are missing from the result."""
    wanted = set(indices)
    last = max(wanted)
    frames = {}
    container = _open(path)
    try:
        for number, frame in enumerate(container.decode(video=0), start=1):
            if number in wanted:
                frames[number] = torch.from_numpy(frame.to_ndarray(format='rgb24')).permute(2, 0, 1)
            if number >= last:
                break
    except av.FFmpegError as e:
        raise VideoError(f'cannot decode {path} ({e})') from None
    finally:
        container.close()
    return frames
