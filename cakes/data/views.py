"""Multi-view testing as TSM's test_models.py does it: several clips of a video, several crops of each clip;
every view goes through the network and the video's score is their average.

The one-view protocol (one centred clip, the centre crop) is exactly the validation transform.
"""
from typing import NamedTuple

import numpy as np
import torch

from cakes.data.sampling import DENSE_SPAN, val_indices
from cakes.data.transforms import center_crop_offset, crop_offsets, resize, scaled_size, val_scale
from cakes.data.video_dataset import VideoDataset
from cakes.errors import UsageError

CROPS = (1, 3, 5, 10)
# Which of the 13 grid offsets of transforms.OFFSETS each protocol takes: 3 = left, right, centre (TSM's full
# resolution sample); 5 = the four corners and the centre; 10 = those five, each followed by its flip.
GRID_CROPS = {3: (5, 6, 4), 5: (0, 1, 2, 3, 4), 10: (0, 1, 2, 3, 4)}
DENSE_CLIPS = 10
# How a video's score comes from its views: TSM's mean logits (with --softmax, the softmax of that mean: the same
# top-1, top-5 and loss, probabilities to ensemble), or PySlowFast's mean of the views' probabilities.
AVERAGING = {'logits': 'logits averaged', 'softmax': 'logits averaged, then softmax',
             'probabilities': 'softmax probabilities averaged'}


def twice_indices(num_frames, num_segments):
    """The centred clip, then a clip starting at each segment's first frame (no special case for n <= T)."""
    tick = num_frames / num_segments
    return [val_indices(num_frames, num_segments), [int(tick * k) + 1 for k in range(num_segments)]]


def dense_indices(num_frames, num_segments):
    """Ten clips of T frames `64 // T` apart, their starts spread evenly over the first n - 63 frames."""
    stride = DENSE_SPAN // num_segments
    starts = np.linspace(0, max(1, num_frames - DENSE_SPAN + 1) - 1, num=DENSE_CLIPS, dtype=int)
    return [[(int(start) + k * stride) % num_frames + 1 for k in range(num_segments)] for start in starts]


class Views(NamedTuple):
    """A test protocol: which clips of a video and which crops of each clip make its views."""
    crops: int = 1
    full_res: bool = False
    twice: bool = False
    dense: bool = False
    averaging: str = 'logits'  # a key of AVERAGING

    @classmethod
    def from_args(cls, args):
        if args.twice_sample and args.dense_sample:
            raise UsageError('give either --twice_sample (2 clips) or --dense_sample (10 clips), not both')
        if args.softmax and args.average_probabilities:
            raise UsageError('give either --softmax (softmax of the mean logits) or --average_probabilities (mean '
                             'of the views\' probabilities), not both: both make the scores probabilities')
        averaging = 'probabilities' if args.average_probabilities else 'softmax' if args.softmax else 'logits'
        return cls(args.test_crops, args.full_res, args.twice_sample, args.dense_sample, averaging)

    @property
    def probabilities(self):
        """The scores are probabilities (what --save_scores writes and predict.py shows)."""
        return self.averaging != 'logits'

    @property
    def clips(self):
        return DENSE_CLIPS if self.dense else 2 if self.twice else 1

    @property
    def count(self):
        return self.clips * self.crops

    def videos_per_batch(self, views):
        """Under a test protocol -b counts views, as the GPUs see them: a batch is as many whole videos as fit in
        `views` (at least one), so its memory is at most max(views, self.count) views whatever the protocol
        (counted in videos, 10 crops x 10 clips would make -b 96 a batch of 9600 views)."""
        return max(1, views // self.count)

    def describe(self):
        """E.g. '3 crops x 2 clips per video, logits averaged'."""
        plural = (lambda n, word: f'{n} {word}' + ('s' if n > 1 else ''))
        size = ', full resolution' if self.full_res else ''
        views = f'{plural(self.crops, "crop")} x {plural(self.clips, "clip")} per video'
        return f'{views}{size}, {AVERAGING[self.averaging]}'

    def indices(self, num_frames, num_segments):
        """The 1-based frame indices of each clip."""
        if self.dense:
            return dense_indices(num_frames, num_segments)
        if self.twice:
            return twice_indices(num_frames, num_segments)
        return [val_indices(num_frames, num_segments)]

    def crop_size(self, input_size):
        """S, or with full_res the scaled shorter side 256 * S / 224 (the network pools globally)."""
        return val_scale(input_size) if self.full_res else input_size

    def boxes(self, width, height, input_size):
        """(x, y, flip) of each crop on a frame of width x height already scaled to val_scale(input_size)."""
        size = self.crop_size(input_size)
        if self.crops == 1:
            return [(*center_crop_offset(width, height, size), False)]
        grid = crop_offsets(width, height, size, size)
        flips = (False, True) if self.crops == 10 else (False,)
        return [(*grid[i], flip) for i in GRID_CROPS[self.crops] for flip in flips]

    def transform(self, frames, input_size):
        """uint8 frames (clips * T, 3, H, W), the clips one after the other -> (views, T*3, s, s), the views
        clip by clip, crop by crop."""
        width, height = scaled_size(frames.shape[-1], frames.shape[-2], val_scale(input_size))
        frames = resize(frames, width, height).unflatten(0, (self.clips, -1))
        size = self.crop_size(input_size)
        views = []
        for clip in frames:
            for x, y, flip in self.boxes(width, height, input_size):
                view = clip[..., y:y + size, x:x + size]
                views.append((view.flip(-1) if flip else view).reshape(-1, size, size))
        return torch.stack(views)


class ViewDataset(VideoDataset):
    """(views, label) per video: views (V, T*3, s, s) uint8, for the validation list under a test protocol.
    Loading (and replacing unreadable frames or videos) is the validation dataset's."""

    def __init__(self, *args, views=Views(), **kwargs):
        super().__init__(*args, **kwargs)
        if self.train or not self.uint8:
            raise ValueError('ViewDataset gives uint8 validation views')
        self.views = views

    def sample(self, video):
        return [i for clip in self.views.indices(video.num_frames, self.num_segments) for i in clip]

    def __getitem__(self, index):
        frames, label = self._load_usable(index)
        return self.views.transform(frames, self.input_size), label


def add_view_flags(parser, softmax=True):
    """The test-protocol flags (main.py --evaluate and predict.py). Without `softmax`, no --softmax flag: for a
    tool whose scores always are the softmax of the mean logits (predict.py's probabilities)."""
    parser.add_argument('--test_crops', type=int, default=1, choices=CROPS,
                        help='crops per clip: 1 centre (released); 3 left/centre/right, 5 corners and centre, '
                             '10 those five and their flips, of the frame scaled to 256*S/224')
    parser.add_argument('--full_res', action='store_true', help='crops of 256*S/224 pixels instead of S')
    parser.add_argument('--twice_sample', action='store_true', help='two clips per video (TSM)')
    parser.add_argument('--dense_sample', action='store_true',
                        help='frames 64/T apart (TSM): with --evaluate ten clips per video; in training one clip '
                             'from a random start (validation: the middle start)')
    if softmax:
        parser.add_argument('--softmax', action='store_true',
                            help='scores are the softmax of the mean logits (TSM): probabilities to ensemble runs, '
                                 'the same Prec@1, Prec@5 and loss')
    else:
        parser.set_defaults(softmax=False)
    parser.add_argument('--average_probabilities', action='store_true',
                        help="a video's score is the mean of its views' softmax probabilities (PySlowFast), which "
                             'can change Prec@1 and the loss')
