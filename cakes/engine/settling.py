"""How a search run's config settles (cakes.ops.settling): at every validation point the channels that the config
pruning would choose now keeps (the released rule, or the run's --target_gflops / --width_multiple rule) are
compared with the previous point's; the distance is printed and logged after the search's summary line, drawn on
TensorBoard (search/config_distance) and kept in the checkpoint, so a resumed run continues the history. With
--stop_when_stable the search ends once the last --stable_for distances all lie below EPS: its checkpoint saved as
at a normal end, the config written beside it as --prune writes it.

Every process measures (the weights are the same everywhere) and takes rank 0's history, so under torchrun every
rank decides to stop at the same epoch."""
from cakes.models import num_classes
from cakes.ops import settling
from cakes.ops.plans.sharing import rank_0s

from . import distributed
from .board import named_cakes_ops
from .distributed import unwrap
from .prune import pruned_config, write_beside


class SearchSettling:
    """The settling history of a search run (`run`: loop.Run), continued from `saved` (a checkpoint's
    state_dict of it, or None), judged by the run's own stop rule and schedule."""

    def __init__(self, run, saved=None):
        args = run.args
        self.run = run
        rule = (args.stop_when_stable, args.stable_for, args.epochs)
        self.history = (settling.SettlingHistory(*rule) if saved is None else
                        settling.SettlingHistory.from_state(saved).judged_by(*rule))
        self.pending = None  # this validation point's history, until the point is done
        if args.target_gflops is not None:
            self.masks()  # a budget out of reach is refused before the first epoch, not after it

    @property
    def stops(self):
        """Whether the run's stop rule has ended the search."""
        return self.run.args.stop_when_stable is not None and self.history.settled

    def masks(self):
        model = unwrap(self.run.model)
        config, _ = pruned_config(self.run.args, model)
        return settling.config_masks(named_cakes_ops(model), config)

    def measure(self, epochs_done, step):
        """At the validation point after `epochs_done` epochs: the distance to the previous point, printed and
        drawn. It joins the history (and the checkpoint) with `commit`, once the point is done: a run stopped
        during its validation repeats the point when resumed."""
        history = settling.SettlingHistory.from_state(self.history.state_dict())
        before = history.mask_epoch
        distance = history.record(self.masks(), epochs_done)
        self.pending = settling.SettlingHistory.from_state(rank_0s(history.state_dict()))
        distance = self.pending.distances[-1] if distance is not None else None
        channels = sum(self.pending.mask['sizes'])
        if distance is None:
            self.run.log(f'Search: config recorded after epoch {epochs_done} ({channels} searchable channels); its '
                         'distance is measured from the next validation point')
            return
        self.run.board.scalars('search', {'config_distance': distance}, step)
        self.run.log(f'Search: config distance {distance:.4f} from epoch {before} to {epochs_done} (share of the '
                     f'{channels} searchable channels kept or dropped differently)' + rule_text(self.pending))

    def commit(self):
        self.history, self.pending = self.pending or self.history, None

    def state_dict(self):
        return self.history.state_dict()

    def finish(self, path):
        """The search has settled: the config written beside the checkpoint at `path` (rank 0), and the line
        saying where it stopped."""
        if distributed.is_main():
            model = unwrap(self.run.model)
            config, _ = pruned_config(self.run.args, model)
            for line in write_beside(self.run.args, config, path, num_classes(model), self.history):
                self.run.log(line)
        self.run.log(self.history.stop_text())
        distributed.barrier()


def rule_text(history):
    """'; below 0.1 at 2 points in a row (5 stop the search)' (nothing without a stop rule)."""
    if history.eps is None:
        return ''
    run = 0
    for distance in reversed(history.distances):
        if distance >= history.eps:
            break
        run += 1
    points = 'point' if run == 1 else 'points'
    return f'; below {history.eps:g} at {run} {points} in a row ({history.patience} stop the search)'
