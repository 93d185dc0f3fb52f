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


DENSE_SPAN = 64  # frames that a dense clip spans (the I3D convention TSM follows): T frames 64 // T apart


def dense_train_indices(num_frames, num_segments):
    """T frames `64 // T` apart from a random start, wrapping around a short video, as TSM's --dense_sample
    trains: start 0 when n <= 64, else drawn from 0..n-65 (TSM's randint(0, n - 64), upper bound excluded)."""
    stride = max(1, DENSE_SPAN // num_segments)
    positions = max(1, num_frames - DENSE_SPAN + 1)
    start = 0 if positions == 1 else np.random.randint(positions - 1)
    return [(start + k * stride) % num_frames + 1 for k in range(num_segments)]


def dense_val_indices(num_frames, num_segments):
    """The dense clip from the middle start: deterministic, where TSM draws the validation start at random
    (which makes its validation numbers vary from run to run)."""
    stride = max(1, DENSE_SPAN // num_segments)
    start = max(0, num_frames - DENSE_SPAN - 1) // 2  # the middle of the training starts 0..n-65
    return [(start + k * stride) % num_frames + 1 for k in range(num_segments)]
