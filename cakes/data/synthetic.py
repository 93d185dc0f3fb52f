"""A small dataset whose two classes differ only in temporal order, for the demo and the tests, in the SSV1
layout or any other of lists.LAYOUTS.

Class 86 is a bright square moving left to right, class 87 the same videos played backwards, so a
single frame tells nothing and a horizontal flip turns one class into the other, as the label swap
of the training transform assumes. Outside Something-Something the two classes are 0 and 1, named so
that the flip pairs by name swap them.
"""
import os

import numpy as np
from PIL import Image

from cakes.data.lists import LAYOUTS, MIN_FRAMES, write_lines, write_lists
from cakes.errors import UsageError

WIDTH, HEIGHT = 176, 100  # SSV1 frame size
NUM_CLASSES = 174
LEFT_TO_RIGHT, RIGHT_TO_LEFT = 86, 87
SQUARE = 40
TWO_CLASSES = ('moving something from left to right', 'moving something from right to left')
CLASS_FOLDERS = ('left_to_right', 'right_to_left')  # class subfolders, where the dataset keeps videos in them
BY_CLASS = ('kinetics400', 'ucf101', 'hmdb51')
EXTENSIONS = {'somethingv2': '.webm', 'ucf101': '.avi', 'hmdb51': '.avi'}  # else .mp4
CUSTOM_FRAMES = 'f_{:04d}.jpg'  # not one of lists.FRAME_TEMPLATES: custom detects it from the files


def category_names():
    """174 names whose order is their sorted order, the two used classes named for what they show."""
    names = [f'class {i:03d} (unused)' for i in range(NUM_CLASSES)]
    names[LEFT_TO_RIGHT] = f'class {LEFT_TO_RIGHT:03d} moving something from left to right'
    names[RIGHT_TO_LEFT] = f'class {RIGHT_TO_LEFT:03d} moving something from right to left'
    return names


def render_left_to_right(rng, frames):
    """(frames, HEIGHT, WIDTH, 3) uint8: a bright square crossing a dark background from left to right."""
    travel = rng.integers(70, WIDTH - SQUARE)
    start = rng.integers(0, WIDTH - SQUARE - travel + 1)
    top = rng.integers(0, HEIGHT - SQUARE + 1)
    video = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    video[:] = rng.integers(0, 60, size=3)
    color = rng.integers(190, 256, size=3)
    for t in range(frames):
        left = start + round(travel * t / (frames - 1))
        video[t, top:top + SQUARE, left:left + SQUARE] = color
    return video


def write_video(folder, video, frame_name):
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(video, 1):
        Image.fromarray(frame).save(os.path.join(folder, frame_name.format(t)), quality=90)


def make_synthetic_data(root, train=200, val=50, seed=0, frames=8, layout='somethingv1', videos=False):
    """Write the `layout` dataset under `root`: category file, lists (every split) and frame folders or, with
    `videos`, video files. custom: ROOT/train.txt and val.txt (`clips/ID NUM_FRAMES LABEL`, or with videos
    `clips/ID.mp4 LABEL`), ROOT/classes.txt and frames ROOT/clips/ID/f_0001.jpg or videos."""
    if frames < MIN_FRAMES:
        raise UsageError(f'--frames {frames} is too few: the loader drops videos with fewer than {MIN_FRAMES}')
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout '{layout}': choose one of {', '.join(LAYOUTS)}")
    spec = LAYOUTS[layout]
    if videos and not spec.videos and layout != 'custom':
        raise UsageError(f'the {layout} layout has no video folder (frames only): drop --videos')
    ssv = spec.released_flips
    labels = (LEFT_TO_RIGHT, RIGHT_TO_LEFT) if ssv else (0, 1)
    rng = np.random.default_rng(seed)
    rows = {'train': [], 'val': []}
    for video_id in range(1, train + val + 1):
        subset, which = 'train' if video_id <= train else 'val', video_id % 2
        video = render_left_to_right(rng, frames)
        if which:
            video = video[::-1]
        name = str(video_id) if ssv else f'{CLASS_FOLDERS[which]}/{video_id:05d}' if layout in BY_CLASS \
            else f'clips/{video_id:05d}' if layout == 'custom' else f'{video_id:05d}'
        rows[subset].append(_write_clip(root, layout, subset, name, video, videos) + f' {labels[which]}')
    if layout == 'custom':
        for subset, lines in rows.items():
            write_lines(os.path.join(root, f'{subset}.txt'), lines)
        write_lines(os.path.join(root, 'classes.txt'), TWO_CLASSES)
        return
    for split in spec.splits or (1,):
        write_lists(root, spec._replace(split=split), category_names() if ssv else TWO_CLASSES, rows['train'],
                    rows['val'])


def _write_clip(root, layout, subset, name, video, as_video):
    """Write one video's frames or file; its list row without the label."""
    spec = LAYOUTS[layout]
    if not as_video:
        write_video(os.path.join(root, spec.frame_dir(subset), name), video, spec.frame_name or CUSTOM_FRAMES)
        return f'{name} {len(video)}'
    path = name + EXTENSIONS.get(layout, '.mp4') if spec.video_name == '{}' else name
    target = os.path.join(root, spec.video_dir(subset), spec.video_name.format(path))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    write_video_file(target, video)
    return path if layout == 'custom' else f'{path} {len(video)}'  # custom: MMAction2's video rows, PATH LABEL


def write_video_file(path, frames, fps=12, bit_rate=200_000):
    """Encode (N, H, W, 3) uint8 RGB frames with PyAV: a .webm in VP9 as SSV2 ships its videos (12 frames per
    second, about 200 kbit/s), any other file (.mp4, .avi) in MPEG-4 part 2, which every FFmpeg has."""
    import av  # only this function needs PyAV
    webm = path.endswith('.webm')
    with av.open(path, 'w') as container:
        stream = container.add_stream('libvpx-vp9' if webm else 'mpeg4', rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = bit_rate
        stream.options = {'deadline': 'good', 'cpu-used': '4'} if webm else {}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode())


def panning_frames(count, width, height, seed=0, step=6, cell=32):
    """(count, H, W, 3) uint8: a smooth random scene panning `step` pixels a frame, so that neighbouring frames
    differ. Detail no finer than `cell` pixels, as in camera footage: saturated fine detail would lose more
    to the 4:2:0 chroma of video and JPEG than real frames do."""
    rng = np.random.default_rng(seed)
    scene_width = width + step * count
    coarse = rng.integers(0, 256, (height // cell + 1, scene_width // cell + 1, 3), dtype=np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((scene_width, height), Image.BICUBIC))
    return np.stack([scene[:, step * t:step * t + width] for t in range(count)])
