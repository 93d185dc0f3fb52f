"""Running averages and top-k counts, as the released loop reports them."""
import torch


class AverageMeter:
    """The latest value and the average weighted by batch size."""

    def __init__(self):
        self.val = self.sum = self.count = 0.0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n

    @property
    def avg(self):
        return self.sum / self.count if self.count else 0.0


def correct_tensors(output, target, topk=(1, 5)):
    """How many samples have the target among the top k predictions, for each k (capped at the classes): 0-d
    tensors on the output's device, read by the caller when it reads its other numbers."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).sum() for k in topk]


def read_once(*values):
    """Host numbers for `values`: 0-d tensors (on one device) read together, anything else passed through.
    Every read of a GPU tensor waits until the GPU has done all the work queued before it, so each read costs
    a drain of the queue: a training step reads all it needs at once."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    read = iter(torch.stack([t.detach().double() for t in tensors]).tolist() if tensors else [])
    return [next(read) if isinstance(v, torch.Tensor) else v for v in values]

