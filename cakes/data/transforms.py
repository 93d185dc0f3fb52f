"""The training and validation transforms of a clip, on uint8 frame tensors (T, 3, H, W), and normalisation.

Resizing uses torch's antialiased bilinear interpolation, which follows PIL's resampling, so the
clips match the released PIL pipeline within one grey level.
"""
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALES = (1, .875, .75, .66)
# The 13 crop positions of TSN's multi-scale crop, in steps of a 4x4 grid, in TSN's order.
OFFSETS = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3))
# Classes that a horizontal flip turns into each other ("left to right" / "right to left"), as released:
# right only for TRN's alphabetical category order. flip_labels() finds the pairs by name instead.
FLIP_LABELS = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
# Words that a horizontal flip exchanges (a mirrored turn goes the other way round: Jester's 'Turning Hand
# Clockwise' / 'Counterclockwise'), in lower, capitalised and upper case.
_MIRRORED = (('left', 'right'), ('clockwise', 'counterclockwise'))
MIRROR = {form(a): form(b) for pair in _MIRRORED for a, b in (pair, pair[::-1])
          for form in (str.lower, str.capitalize, str.upper)}
LEFT_RIGHT = re.compile(r'\b(' + '|'.join(MIRROR) + r')\b')


def mirrored_name(name):
    """The class name with the words left and right (and clockwise and counterclockwise) exchanged."""
    return LEFT_RIGHT.sub(lambda match: MIRROR[match.group()], name)


def name_flip_labels(names):
    """{label: label} for every two class names that become each other when left and right are exchanged."""
    labels = {name: label for label, name in enumerate(names)}
    return {label: labels[mirrored_name(name)] for label, name in enumerate(names)
            if mirrored_name(name) != name and mirrored_name(name) in labels}


def format_pairs(flips):
    return ', '.join(f'{a}/{b}' for a, b in sorted(flips.items()) if a < b) or 'none'


def flip_labels(names, where, released=True):
    """The label swap of a flipped clip: the pairs found by name in `names`; when the names have none, the
    released FLIP_LABELS for a Something-Something layout (`released`: its synthetic data), else no swap. One
    warning line names the pairs used when they differ from the released ones."""
    by_name = name_flip_labels(names)
    if not by_name:
        return FLIP_LABELS if released else {}
    if not released:
        return by_name
    if by_name != FLIP_LABELS:
        print(f'warning: the left/right class names of {where} differ from the released flip pairs '
              f'{format_pairs(FLIP_LABELS)}: flipped clips swap {format_pairs(by_name)}', file=sys.stderr, flush=True)
    return by_name


def crop_size_pairs(width, height, size):
    """Candidate (w, h) crop sizes: scaled shorter sides snapped to `size` when within 2 pixels of it,
    paired when their scale indices differ by at most one (in TSN's order)."""
    base = min(width, height)
    sides = [int(base * scale) for scale in SCALES]
    sides = [size if abs(side - size) < 3 else side for side in sides]
    return [(sides[j], sides[i]) for i in range(len(sides)) for j in range(len(sides)) if abs(i - j) <= 1]


def crop_offsets(width, height, crop_width, crop_height):
    step_x, step_y = (width - crop_width) // 4, (height - crop_height) // 4
    return [(a * step_x, b * step_y) for a, b in OFFSETS]


def random_crop_box(width, height, size):
    """(x, y, w, h) of a multi-scale crop: size pair and offset drawn uniformly."""
    pairs = crop_size_pairs(width, height, size)
    crop_width, crop_height = pairs[np.random.randint(len(pairs))]
    offsets = crop_offsets(width, height, crop_width, crop_height)
    x, y = offsets[np.random.randint(len(offsets))]
    return x, y, crop_width, crop_height


def random_flip():
    return np.random.rand() < 0.5


def scaled_size(width, height, shorter):
    """(w, h) with the shorter side set to `shorter`, aspect kept, the longer side truncated."""
    if width < height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_offset(width, height, size):
    return int(round((width - size) / 2.)), int(round((height - size) / 2.))


def val_scale(size):
    """The shorter side before the centre crop: 256 for 224."""
    return size * 256 // 224


def resize(frames, width, height):
    return F.interpolate(frames, size=(height, width), mode='bilinear', antialias=True, align_corners=False)


def train_transform(frames, label, size, flips=FLIP_LABELS):
    """Multi-scale crop to size x size, then a random flip that swaps left/right labels (`flips`)."""
    height, width = frames.shape[-2:]
    x, y, crop_width, crop_height = random_crop_box(width, height, size)
    frames = resize(frames[..., y:y + crop_height, x:x + crop_width], size, size)
    if random_flip():
        frames, label = frames.flip(-1), flips.get(label, label)
    return frames, label


def val_transform(frames, size):
    """Shorter side to val_scale(size), then the centre size x size crop."""
    width, height = scaled_size(frames.shape[-1], frames.shape[-2], val_scale(size))
    frames = resize(frames, width, height)
    x, y = center_crop_offset(width, height, size)
    return frames[..., y:y + size, x:x + size]


def normalize(frames):
    """uint8 RGB frames (..., 3, H, W) in any memory layout, on any device -> contiguous float32
    (x / 255 - mean) / std."""
    std = torch.tensor(STD, device=frames.device)[:, None, None]
    mean = torch.tensor(MEAN, device=frames.device)[:, None, None]
    out = torch.empty(frames.shape, dtype=torch.float32, device=frames.device)
    return out.copy_(frames).mul_(1 / (255 * std)).sub_(mean / std)


def normalize_uint8(batch):
    """(B, T*3, S, S) uint8 clips -> the float32 clips that the float path of the dataset gives."""
    return normalize(batch.unflatten(1, (-1, 3))).flatten(1, 2)
