"""Helpers for the data and tool tests: tiny datasets written into a test's tmp_path."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from cakes.data.lists import LAYOUTS
from conftest import PLAN_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 176, 100  # SSV1 frame size


def grey(index):
    """The flat grey level of frame `index` (up to 25) in plain_frames videos, so a test can tell frames apart."""
    return 10 * index


def plain_frames(count, width=WIDTH, height=HEIGHT):
    return [np.full((height, width, 3), grey(i), np.uint8) for i in range(1, count + 1)]


def textured_frames(count, width=WIDTH, height=HEIGHT, seed=0):
    """Smooth random images, so that resampling differences show."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        frames.append(np.asarray(image))
    return frames


def write_frames(folder, frames, frame_name):
    os.makedirs(folder, exist_ok=True)
    for index, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(os.path.join(folder, frame_name.format(index)), quality=95)


def make_dataset(root, dataset='somethingv1', train=(), val=(), frames=plain_frames, classes=174):
    """Write `dataset`'s layout under root: category.txt and both lists from (folder, num_frames, label)
    rows, and `frames(num_frames)` images for each listed video. Returns the (training) frame folder."""
    layout = LAYOUTS[dataset]
    write_text(os.path.join(root, layout.category), ''.join(f'class {i:03d}\n' for i in range(classes)))
    for subset, rows in (('train', train), ('val', val)):
        os.makedirs(os.path.join(root, layout.frame_dir(subset)), exist_ok=True)
        write_text(os.path.join(root, layout.split_list(subset)), ''.join(f'{f} {n} {label}\n' for f, n, label in rows))
        for folder, num_frames, _ in rows:
            write_frames(os.path.join(root, layout.frame_dir(subset), folder), frames(num_frames), layout.frame_name)
    return os.path.join(root, layout.frame_dir('train'))


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def load_script(name):
    """scripts/NAME.py as a module, to call its main() in the test process."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'scripts', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name, *args, env=None):
    """Run `python scripts/NAME.py ARGS` from the repo root, as a user does (plans measured: see user_env)."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != PLAN_ENV}
    return subprocess.run([sys.executable, os.path.join('scripts', name + '.py'), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, env=env)
