"""TensorBoard (tensorboardX) under CHECKPOINT_DIR/log/RUN_tb/: what the printed lines say, plus how a search
converges (and, at every validation point of a search, the kernel mix pruning would choose then). Only rank 0
writes; without a folder (--no_tensorboard, other ranks) nothing is recorded.

Every point is at the global iteration (epoch * iterations per epoch + i), so a resumed run purges what the
interrupted one wrote past the point it continues from.

tensorboardX is imported only when there is a folder to write to: --no_tensorboard runs without it.
"""
from cakes.errors import UsageError
from cakes.ops.search import pruned_widths


class Board:
    def __init__(self, folder=None, purge_step=None):
        self.writer = summary_writer()(folder, purge_step=purge_step or None) if folder else None

    def scalars(self, prefix, values, step):
        if self.writer:
            for name, value in values.items():
                self.writer.add_scalar(f'{prefix}/{name}', value, step)

    def search(self, named_ops, step):
        """Per CAKES layer: a histogram of |BN scale| and the widths pruning would choose now."""
        if not self.writer:
            return
        for name, op in named_ops:
            self.writer.add_histogram(f'bn_scale/{name}', op.bn.weight.detach().abs().float().cpu().numpy(), step)
            for kind, width in pruned_widths(op).items():
                self.writer.add_scalar(f'prune/{name}/{kind}', width, step)

    def figure(self, tag, figure, step):
        """A matplotlib Figure as an image (e.g. the kernel mix picture of cakes.plot)."""
        if self.writer:
            self.writer.add_figure(tag, figure, step)

    def close(self):
        if self.writer:
            self.writer.close()


def summary_writer():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise UsageError('TensorBoard events need tensorboardX: pip install tensorboardX (offline: a wheel, see '
                         'docs/gpu_first_run.md), or pass --no_tensorboard') from None
    return SummaryWriter


def named_cakes_ops(model):
    """[('layer3.2', op), ...]: the searchable ops of a TemporalModel named by their bottleneck."""
    wanted = {id(op) for op in model.cakes_ops()}
    return [(name.replace('base_model.', '').replace('.convT', ''), m) for name, m in model.named_modules()
            if id(m) in wanted]
