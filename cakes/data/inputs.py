"""One video given by the user (a video file or a folder of frames) as the views of a test protocol, for
predict.py. Unlike training, nothing is replaced: an unreadable input is an InputError naming it."""
import os

from cakes.data.decode import VideoError, count_frames, decode_frames
from cakes.data.lists import FRAME_TEMPLATES, detect_template
from cakes.data.sources import decode_frame
from cakes.data.video_dataset import stack_channels_last



class InputError(Exception):
    """The input cannot be read; the message names it and why."""


def frame_name(folder):
    """The naming that the folder's first frame uses: one of the datasets' (00001.jpg, img_00001.jpg, ...) or
    any NAME0001.jpg numbered from 1."""
    name = detect_template(folder)
    if name is not None and name.endswith('.jpg'):
        return name
    if not any(entry.name.endswith('.jpg') for entry in os.scandir(folder)):
        raise InputError(f'{folder}: empty folder (no .jpg frames)')
    raise InputError(f'{folder}: frames must be numbered from 1, named like '
                     f'{" or ".join(n.format(1) for n in FRAME_TEMPLATES)}, ... (as scripts/extract_frames.py '
                     'extracts them)')


def folder_frames(folder, indices):
    """{index: (3, H, W) uint8} of the folder's frames, numbered from 1 without gaps."""
    name = frame_name(folder)
    frames = {}
    for index in sorted(set(indices)):
        frame = decode_frame(os.path.join(folder, name.format(index)))
        if frame is None:
            raise InputError(f'{os.path.join(folder, name.format(index))}: missing or unreadable frame')
        frames[index] = frame
    return frames


def folder_length(folder):
    """Frames 1, 2, ... present in the folder (the first gap ends the video)."""
    name = frame_name(folder)
    count = 0
    while os.path.isfile(os.path.join(folder, name.format(count + 1))):
        count += 1
    return count


def video_frames(path, indices):
    try:
        frames = decode_frames(path, indices)
    except VideoError as e:
        raise InputError(str(e)) from None
    if len(frames) < len(set(indices)):
        raise InputError(f'{path}: frames {sorted(set(indices) - set(frames))} could not be decoded')
    return frames


def video_length(path):
    try:
        count = count_frames(path)
    except VideoError as e:
        raise InputError(str(e)) from None
    if count == 0:
        raise InputError(f'{path}: no decodable video frame')
    return count


def load_views(path, views, num_segments, input_size):
    """(V, T*3, s, s) uint8 views of the video file or frame folder at `path`."""
    if os.path.isdir(path):
        length, read = folder_length, folder_frames
    elif os.path.isfile(path):
        length, read = video_length, video_frames
    else:
        raise InputError(f'{path}: no such file or folder')
    indices = [i for clip in views.indices(length(path), num_segments) for i in clip]
    frames = read(path, indices)
    return views.transform(stack_channels_last([frames[i] for i in indices]), input_size)
