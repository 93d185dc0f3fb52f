"""The clip dataset: sampling, robust frame loading and the transforms, one clip per video."""
import numpy as np
import torch

from cakes.data.sampling import dense_train_indices, dense_val_indices, train_indices, val_indices
from cakes.data.sources import warn
from cakes.data.transforms import FLIP_LABELS, normalize, train_transform, val_transform
from cakes.errors import UsageError

MAX_TRIES = 100  # unusable videos in a row before giving up on the frame folder


def stack_channels_last(frames):
    """(T, 3, H, W) with channels innermost in memory (decode_jpeg's own layout): interpolation is fastest so."""
    return torch.stack([frame.permute(1, 2, 0) for frame in frames]).permute(0, 3, 1, 2)


class VideoDataset(torch.utils.data.Dataset):
    """(clip, label) per video: clip (T*3, S, S), float32 normalised or, with uint8, raw RGB."""

    def __init__(self, videos, source, num_segments, input_size, train, uint8, flip_labels=FLIP_LABELS, dense=False):
        self.videos = videos
        self.dense = dense  # dense sampling (T frames 64 // T apart) instead of TSN segments
        self.source = source  # sources.FrameFolders or sources.VideoFiles
        self.flip_labels = flip_labels  # label -> label of the mirrored action
        self.num_segments = num_segments
        self.input_size = input_size
        self.train = train
        self.uint8 = uint8
        # corrupt frames, missing videos; shared memory so that DataLoader workers add to the same counts
        self._problems = torch.zeros(2, dtype=torch.int64).share_memory_()

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, index):
        return self.clip(*self._load_usable(index))

    def clip(self, frames, label):
        """The transformed (T*3, S, S) clip of (T, 3, H, W) uint8 frames, and its label (swapped when flipped)."""
        if self.train:
            frames, label = train_transform(frames, label, self.input_size, self.flip_labels)
        else:
            frames = val_transform(frames, self.input_size)
        clip = frames if self.uint8 else normalize(frames)
        return clip.reshape(-1, self.input_size, self.input_size), label

    def problem_counts(self):
        corrupt, missing = self._problems.tolist()
        return {'corrupt_frames': corrupt, 'missing_videos': missing}

    def reset_problem_counts(self):
        self._problems.zero_()

    def sample(self, video):
        if self.dense:
            pick = dense_train_indices if self.train else dense_val_indices
        else:
            pick = train_indices if self.train else val_indices
        return pick(video.num_frames, self.num_segments)

    def frame_path(self, video, index):
        """The JPEG file of a frame (frame folders only)."""
        return self.source.frame_path(video, index)

    def _load_usable(self, index):
        """Frames and label of the video, or of a random other one while a video is unusable."""
        for _ in range(MAX_TRIES):
            video = self.videos[index]
            frames = self._load(video)
            if frames is not None:
                return frames, video.label
            self._problems[1] += 1
            index = (index + 1 + np.random.randint(max(len(self.videos) - 1, 1))) % len(self.videos)
        raise UsageError(f'no usable video in {MAX_TRIES} tries in {self.source.directory}: '
                         f'check the {self.source.what}')

    def _load(self, video):
        """(T, 3, H, W) uint8 frames; unreadable ones replaced by frame 1; None without the video or frame 1."""
        if not self.source.has(video):
            return None
        indices = self.sample(video)
        decoded = self.source.read(video, indices)
        if decoded is None:
            return None
        unreadable = [index for index, frame in decoded.items() if frame is None]
        if unreadable:
            first = decoded[1] if 1 in decoded else (self.source.read(video, [1]) or {}).get(1)
            if first is None:
                warn(f'unreadable frame {self.source.describe_frame(video, 1)}, using another video')
                return None
            for index in unreadable:
                warn(f'unreadable frame {self.source.describe_frame(video, index)}, using frame 1')
                decoded[index] = first
            self._problems[0] += len(unreadable)
        return stack_channels_last([decoded[index] for index in indices])
