"""Running averages and top-k accuracy, as the released loop reports them."""


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


def correct_counts(output, target, topk=(1, 5)):
    """How many samples have the target among the top k predictions, for each k (capped at the classes)."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    correct = pred.eq(target.view(-1, 1))
    return [int(correct[:, :min(k, maxk)].any(dim=1).sum()) for k in topk]


def accuracy(output, target, topk=(1, 5)):
    """Top-k accuracy in percent for each k (k capped at the number of classes)."""
    return [100.0 * count / output.shape[0] for count in correct_counts(output, target, topk)]
