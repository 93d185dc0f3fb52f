"""Whether a search has settled: the channels pruning would keep now, as one kept/dropped flag per searchable
channel (every branch of every op: n*C per op), the distance between two such masks (Early-Bird's normalised
Hamming distance: You et al., "Drawing Early-Bird Tickets", ICLR 2020), and the history of the distances at a
search's validation points with the rule that stops it: the last K distances all below EPS.

The history is plain data (ints, floats, lists, dicts, a uint8 tensor) so that checkpoints holding it load with
torch.load(weights_only=True), and it holds the last mask (packed, a bit per channel) so that a resumed search
measures its next distance against it.
"""
import math

import torch

from cakes.errors import UsageError

from .search import branch_blocks, prune_config, top_indices

EPS, PATIENCE = 0.1, 5  # Early-Bird's window: 5 distances below 0.1
CHECKPOINT_KEY = 'search_history'  # where a search checkpoint keeps its SettlingHistory.state_dict()


def kept_mask(op, widths):
    """Bool per BN channel of `op`: kept when its branch keeps it at `widths` ({kind: width}), i.e. among the
    branch's `width` channels of largest |BN scale| (ties towards the earlier channel). These are the channels
    the pruned network takes from the supernet, whichever rule (released or budget) chose the widths: every
    rule ranks a branch's channels by |BN scale| alone, as the channels of one branch cost the same."""
    unknown = set(widths) - set(op.kinds)
    if unknown:
        raise UsageError(f'config kinds {sorted(unknown)} are not branches of the op ({", ".join(op.kinds)})')
    scale = op.bn.weight.detach().abs().cpu()
    mask = torch.zeros(scale.numel(), dtype=torch.bool)
    for kind, start, width in branch_blocks(op):
        keep = widths.get(kind, 0)
        if not 0 <= keep <= width:
            raise UsageError(f'config keeps {keep} channels of the {kind} branch, which has {width}')
        mask[top_indices(scale[start:start + width], keep) + start] = True
    return mask


def config_masks(named_ops, config):
    """{name: kept_mask} of the [(name, op)] searchable ops at `config` ({kind: width} per op, in the same
    order)."""
    if len(config) != len(named_ops):
        raise UsageError(f'config has {len(config)} entries for {len(named_ops)} searchable ops')
    return {name: kept_mask(op, widths) for (name, op), widths in zip(named_ops, config)}


def pruning_masks(named_ops, rule=None):
    """The masks of the config that `rule(ops)` chooses now (default: the released rule, `prune_config`; a
    budget's rule returns its `Budget.config`)."""
    config = (rule or prune_config)([op for _, op in named_ops])
    return config_masks(named_ops, config)


def mask_distance(a, b):
    """The fraction of all searchable channels whose kept/dropped state differs between the masks `a` and `b`
    ({name: bool mask}): 0 for the same masks, 1 for complementary ones, whatever the order of the ops."""
    if set(a) != set(b) or any(a[name].numel() != b[name].numel() for name in a):
        raise UsageError('the masks to compare are of different searchable layers: '
                         f'{layout_text(a)} vs {layout_text(b)}')
    changed = sum(int((a[name] != b[name]).sum()) for name in a)
    total = sum(mask.numel() for mask in a.values())
    return changed / total


def layout_text(masks):
    items = [f'{name} ({mask.numel()})' for name, mask in masks.items()]
    return ', '.join(items[:3]) + (f', ... ({len(items)} layers)' if len(items) > 3 else '')


def pack_masks(masks):
    """{name: bool mask} as plain data: names, sizes and one bit per channel in a uint8 tensor."""
    flags = torch.cat([mask.flatten().to(torch.uint8) for mask in masks.values()])
    padded = torch.zeros(-(-flags.numel() // 8) * 8, dtype=torch.uint8)
    padded[:flags.numel()] = flags
    bits = (padded.view(-1, 8) * BIT_VALUES).sum(1, dtype=torch.uint8)
    return {'names': list(masks), 'sizes': [mask.numel() for mask in masks.values()], 'bits': bits}


def unpack_masks(packed):
    """The inverse of `pack_masks`."""
    flags = ((packed['bits'].unsqueeze(1) // BIT_VALUES) % 2).flatten().bool()
    return dict(zip(packed['names'], flags[:sum(packed['sizes'])].split(packed['sizes'])))


BIT_VALUES = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def check_stop_rule(eps, patience, eps_name='eps', patience_name='patience'):
    """EPS in (0, 1) (None: no rule, the distances are only recorded) and K a whole number >= 1; the errors name
    the setting as the caller calls it (a flag, an argument)."""
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1):
        raise UsageError(f'{eps_name} {eps!r} must lie strictly between 0 and 1: the fraction of searchable '
                         f'channels whose kept/dropped state may still change ({EPS:g}: Early-Bird\'s figure)')
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise UsageError(f'{patience_name} {patience!r} must be a whole number >= 1: how many distances in a row '
                         f'must lie below the threshold ({PATIENCE}: Early-Bird\'s figure)')


class SettlingHistory:
    """The distances of a search, one per validation point after the first (against the point before), and the
    stop rule's decision: settled at the first point where the last `patience` distances all lie below `eps`.
    `eps` None records the distances only. `total_epochs`: the planned schedule, for the saving it reports.

    Epochs are counted as epochs trained (1 after the first epoch), so a search that settles at epoch E of N
    saves N - E epochs.
    """

    def __init__(self, eps=EPS, patience=PATIENCE, total_epochs=None):
        check_stop_rule(eps, patience)
        self.eps, self.patience, self.total_epochs = eps, patience, total_epochs
        self.epochs, self.distances = [], []
        self.mask, self.mask_epoch = None, None
        self.settled_epoch = None

    def record(self, masks, epoch):
        """Take the masks of this validation point (after `epoch` epochs); returns its distance to the previous
        point's masks (None at the first point)."""
        distance = None if self.mask is None else mask_distance(unpack_masks(self.mask), masks)
        self.mask, self.mask_epoch = pack_masks(masks), int(epoch)
        if distance is not None:
            self.epochs.append(int(epoch))
            self.distances.append(distance)
            if self.settled_epoch is None and self.rule_holds():
                self.settled_epoch = int(epoch)
        return distance

    def rule_holds(self):
        recent = self.distances[-self.patience:]
        return self.eps is not None and len(recent) == self.patience and all(d < self.eps for d in recent)

    @property
    def settled(self):
        return self.settled_epoch is not None

    @property
    def epochs_saved(self):
        """Epochs of the planned schedule left when the search settled (None: not settled or no schedule)."""
        if not self.settled or self.total_epochs is None:
            return None
        return self.total_epochs - self.settled_epoch

    def stop_text(self):
        """One line: at which epoch of how many the search stopped and the epochs that saved, or why it runs on."""
        last = f', the last {self.distances[-1]:.4f}' if self.distances else ''
        if self.eps is None:
            return f'no stop rule: {len(self.distances)} distances recorded{last}'
        points = 'point' if self.patience == 1 else 'points'
        rule = f'distance below {self.eps:g} at {self.patience} validation {points} in a row'
        if not self.settled:
            return f'the config has not settled ({rule}): {len(self.distances)} distances{last}'
        of = '' if self.total_epochs is None else f' of {self.total_epochs}'
        saved = '' if self.total_epochs is None else (
            f", saving {self.epochs_saved} epoch{'' if self.epochs_saved == 1 else 's'} "
            f'({100 * self.epochs_saved / max(self.total_epochs, 1):.0f}%)')
        return f'search stopped after epoch {self.settled_epoch}{of}: the config settled ({rule}){saved}'

    def state_dict(self):
        return {'eps': self.eps, 'patience': self.patience, 'total_epochs': self.total_epochs,
                'epochs': list(self.epochs), 'distances': list(self.distances), 'mask': self.mask,
                'mask_epoch': self.mask_epoch, 'settled_epoch': self.settled_epoch}

    def load_state_dict(self, state):
        """Continue the history of `state` (from state_dict), its rule and decision included."""
        try:
            check_stop_rule(state['eps'], state['patience'])
            epochs, distances = [int(e) for e in state['epochs']], [float(d) for d in state['distances']]
            mask = state['mask']
            if mask is not None:
                unpack_masks(mask)
            total, mask_epoch, settled = (state[key] for key in ('total_epochs', 'mask_epoch', 'settled_epoch'))
        except (KeyError, TypeError, ValueError, RuntimeError, UsageError) as e:
            raise UsageError(f'not a settling history (the state_dict of SettlingHistory): {type(e).__name__} '
                             f'{e}') from None
        if len(epochs) != len(distances) or not all(math.isfinite(d) and 0 <= d <= 1 for d in distances):
            raise UsageError('not a settling history: its epochs and distances (fractions) do not pair up')
        self.eps, self.patience, self.total_epochs = state['eps'], state['patience'], total
        self.epochs, self.distances, self.mask, self.mask_epoch = epochs, distances, mask, mask_epoch
        self.settled_epoch = settled
        return self

    @classmethod
    def from_state(cls, state):
        return cls().load_state_dict(state)

    def judged_by(self, eps, patience, total_epochs):
        """A history with these distances and last mask under another rule and schedule (a resumed run's
        flags), its decision taken again point by point: the same rule decides as before."""
        judged = SettlingHistory(eps, patience, total_epochs)
        judged.mask, judged.mask_epoch = self.mask, self.mask_epoch
        for epoch, distance in zip(self.epochs, self.distances):
            judged.epochs.append(epoch)
            judged.distances.append(distance)
            if judged.settled_epoch is None and judged.rule_holds():
                judged.settled_epoch = epoch
        return judged
