"""TSN frame sampling: which T frames of an n-frame video make a clip (1-based indices)."""
import numpy as np


def train_indices(num_frames, num_segments):
    """One frame at a random offset in each of T equal segments; all frame 1 when n < T.

    TSN's other branch (sorted random draws when n > T but a segment is empty) cannot be reached
    with one frame per segment, so it is left out. The draws use numpy's global RNG, like TSN.
    """
    segment = num_frames // num_segments
    if segment == 0:
        return [1] * num_segments
    offsets = np.arange(num_segments) * segment + np.random.randint(segment, size=num_segments)
    return (offsets + 1).tolist()


def val_indices(num_frames, num_segments):
    """The centre frame of each of T equal segments; all frame 1 when n <= T (kept from TSN)."""
    if num_frames <= num_segments:
        return [1] * num_segments
    tick = num_frames / num_segments
    return [int(tick / 2.0 + tick * k) + 1 for k in range(num_segments)]
