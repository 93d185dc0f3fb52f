"""A small SSV1-layout dataset whose two classes differ only in temporal order, for the demo and the tests.

Class 86 is a bright square moving left to right, class 87 the same videos played backwards, so a
single frame tells nothing and a horizontal flip turns one class into the other, as the label swap
of the training transform assumes.
"""
import os

import numpy as np
from PIL import Image

from cakes.data.lists import LAYOUTS, MIN_FRAMES, write_lists
from cakes.errors import UsageError

WIDTH, HEIGHT = 176, 100  # SSV1 frame size
NUM_CLASSES = 174
LEFT_TO_RIGHT, RIGHT_TO_LEFT = 86, 87
SQUARE = 40


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


def make_synthetic_data(root, train=200, val=50, seed=0, frames=8):
    """Write the somethingv1 layout under `root`: category.txt, the two lists and the frame folders."""
    if frames < MIN_FRAMES:
        raise UsageError(f'--frames {frames} is too few: the loader drops videos with fewer than {MIN_FRAMES}')
    layout = LAYOUTS['somethingv1']
    rng = np.random.default_rng(seed)
    rows = []
    for video_id in range(1, train + val + 1):
        label = (LEFT_TO_RIGHT, RIGHT_TO_LEFT)[video_id % 2]
        video = render_left_to_right(rng, frames)
        if label == RIGHT_TO_LEFT:
            video = video[::-1]
        write_video(os.path.join(root, layout.frames, str(video_id)), video, layout.frame_name)
        rows.append(f'{video_id} {frames} {label}')
    write_lists(root, layout, category_names(), rows[:train], rows[train:])


def write_video_file(path, frames, fps=12, bit_rate=200_000):
    """Encode (N, H, W, 3) uint8 RGB frames as a VP9 .webm with PyAV, as SSV2 ships its videos
    (12 frames per second, about 200 kbit/s)."""
    import av  # only this function needs PyAV
    with av.open(path, 'w') as container:
        stream = container.add_stream('libvpx-vp9', rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = bit_rate
        stream.options = {'deadline': 'good', 'cpu-used': '4'}
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
