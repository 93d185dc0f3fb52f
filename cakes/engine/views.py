"""A video's score from its views, as TSM's test_models.py takes it: the mean of their logits (TSM; with --softmax the scores kept
are the softmax of that mean, which changes neither accuracy nor loss), or with --average_probabilities the mean of
their softmax probabilities (PySlowFast); accuracy and loss are taken on that score."""
import torch
import torch.nn.functional as F

from cakes import data
from cakes.data import normalize_uint8

from .precision import autocast


def average_views(logits, probabilities=False):
    """(videos, views, classes) logits -> (videos, classes) scores: mean logits, or mean probabilities."""
    logits = logits.float()
    return (logits.softmax(-1) if probabilities else logits).mean(1)


def view_loss(scores, target, probabilities=False):
    """Per-video loss of the averaged score: cross-entropy of the mean logits, or of mean probabilities the
    negative log of the target's (clamped at the smallest float, so a 0 stays finite)."""
    if probabilities:
        return F.nll_loss(scores.clamp_min(torch.finfo(scores.dtype).tiny).log(), target, reduction='none')
    return F.cross_entropy(scores, target, reduction='none')


def view_logits(model, views, device, amp=None, chunk=None):
    """(videos, views, T*3, s, s) uint8 -> (videos, views, classes) float logits, `chunk` clips per forward (the
    batch size: a batch of videos times their views may not fit at once)."""
    flat = views.flatten(0, 1)
    parts = []
    for part in flat.split(chunk or len(flat)):
        with autocast(device, amp):
            parts.append(model(normalize_uint8(part.to(device, non_blocking=True))).float())
    return torch.cat(parts).unflatten(0, views.shape[:2])


class ViewScorer:
    """validate()'s forward under a test protocol: scores and per-video losses of a batch of videos' views.
    Keeps every score and label of this process, in the loader's order."""

    def __init__(self, views, chunk):
        self.views, self.chunk = views, chunk
        self.scores, self.labels = [], []

    def describe(self):
        return self.views.describe()

    def __call__(self, run, model, views, target):
        target = target.to(run.device, non_blocking=True)
        mean_probabilities = self.views.averaging == 'probabilities'
        scores = average_views(view_logits(model, views, run.device, run.args.amp, self.chunk), mean_probabilities)
        # on the device until the end: a copy per batch would wait for it
        self.scores.append(scores.softmax(-1) if self.views.averaging == 'softmax' else scores)
        self.labels.append(target)
        return scores, view_loss(scores, target, mean_probabilities)

    def kept(self):
        """(scores float32 (videos, classes), labels int64 (videos,)) of this process."""
        if not self.scores:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
        return torch.cat(self.scores).cpu(), torch.cat(self.labels).cpu()


# The flags of --evaluate's test protocol, with their defaults: none given is the released validation.
TEST_FLAGS = {'test_crops': 1, 'full_res': False, 'twice_sample': False, 'dense_sample': False, 'softmax': False,
              'average_probabilities': False, 'save_scores': '', 'confusion': ''}


def given_test_flags(args):
    """The test flags given, as --flags: none means the released validation (one centred clip, centre crop)."""
    return ['--' + name for name, default in TEST_FLAGS.items() if getattr(args, name) != default]


def evaluation_views(args):
    """The test protocol of --evaluate with test flags, or None for the released validation."""
    return data.Views.from_args(args) if args.evaluate and given_test_flags(args) else None
