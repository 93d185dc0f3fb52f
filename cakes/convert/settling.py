"""Stop your own search loop when the config has settled: at each evaluation, the channels prune_config would
keep now are compared with the previous evaluation's (cakes.ops.settling), and the search may stop once the
distance stays below EPS for K evaluations in a row:

    monitor = StopWhenSettled(supernet, eps=0.1, patience=5, epochs=100)
    for epoch in range(100):
        ... train one epoch
        if monitor.update(epoch + 1):
            break
    print(monitor.history.stop_text())
"""
import inspect

from cakes.errors import UsageError
from cakes.ops import settling

from .search import prune_config, supernet_ops


class StopWhenSettled:
    """The settling history of a supernet from to_supernet. `prune_options` are prune_config's (target_flops
    with example_input, width_multiple, ...): the config compared is the one that call would return.
    `epochs`: the planned schedule, for the saving the history reports. Save state_dict() in your checkpoints
    and load_state_dict() it after resuming: the next update measures against the last mask recorded."""

    def __init__(self, supernet, eps=settling.EPS, patience=settling.PATIENCE, epochs=None, **prune_options):
        self.supernet = supernet
        self.named_ops = supernet_ops(supernet)
        try:
            inspect.signature(prune_config).bind(supernet, **prune_options)
        except TypeError as e:
            raise UsageError(f'StopWhenSettled passes its options on to prune_config: {e}') from None
        self.prune_options = prune_options
        self.history = settling.SettlingHistory(eps, patience, epochs)
        self.distance = None  # the last update's

    def update(self, epoch=None):
        """Record the config now, after `epoch` epochs (default: one more than the last update's); True once the
        search has settled (and from then on)."""
        if epoch is None:
            epoch = (self.history.mask_epoch or 0) + 1
        config = prune_config(self.supernet, **self.prune_options)
        masks = settling.config_masks(self.named_ops, [config[name] for name, _ in self.named_ops])
        self.distance = self.history.record(masks, epoch)
        return self.history.settled

    def state_dict(self):
        return self.history.state_dict()

    def load_state_dict(self, state):
        history = settling.SettlingHistory.from_state(state)
        if history.mask is not None and sorted(history.mask['names']) != sorted(name for name, _ in self.named_ops):
            raise UsageError('the settling state is of another supernet: its layers are '
                             f"{', '.join(history.mask['names'][:3])}, ...")
        self.history = history
