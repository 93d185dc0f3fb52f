"""A video's score from its views (SPEC section 9): the mean of their logits (TSM), or of their softmax
probabilities; accuracy and loss are taken on that score."""
import torch
import torch.nn.functional as F

from cakes import data
from cakes.data import normalize_uint8

from .precision import autocast


def average_views(logits, softmax=False):
    """(videos, views, classes) logits -> (videos, classes) scores: mean logits, or mean probabilities."""
    logits = logits.float()
    return (logits.softmax(-1) if softmax else logits).mean(1)


def view_loss(scores, target, softmax=False):
    """Per-video loss of the averaged score: cross-entropy of the mean logits, or with softmax the negative
    log of the mean probability of the target (clamped at the smallest float, so a 0 stays finite)."""
    if softmax:
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

    def __init__(self, views, softmax, chunk):
        self.views, self.softmax, self.chunk = views, softmax, chunk
        self.scores, self.labels = [], []

    def describe(self):
        return self.views.describe(self.softmax)

    def __call__(self, run, model, views, target):
        target = target.to(run.device, non_blocking=True)
        scores = average_views(view_logits(model, views, run.device, run.args.amp, self.chunk), self.softmax)
        self.scores.append(scores.cpu())
        self.labels.append(target.cpu())
        return scores, view_loss(scores, target, self.softmax)

    def kept(self):
        """(scores float32 (videos, classes), labels int64 (videos,)) of this process."""
        if not self.scores:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
        return torch.cat(self.scores), torch.cat(self.labels)


# The flags of --evaluate's test protocol, with their defaults: none given is the released validation.
TEST_FLAGS = {'test_crops': 1, 'full_res': False, 'twice_sample': False, 'dense_sample': False, 'softmax': False,
              'save_scores': '', 'confusion': ''}


def given_test_flags(args):
    """The test flags given, as --flags: none means the released validation (one centred clip, centre crop)."""
    return ['--' + name for name, default in TEST_FLAGS.items() if getattr(args, name) != default]


def evaluation_views(args):
    """The test protocol of --evaluate with test flags, or None for the released validation."""
    return data.Views.from_args(args) if args.evaluate and given_test_flags(args) else None
