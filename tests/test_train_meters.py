"""The numbers the training and validation lines print: top-k counts, running averages, one read of them all."""
import torch

from cakes.engine.meters import AverageMeter, correct_tensors, read_once


def test_top_k_counts_the_samples_whose_target_ranks_within_k():
    # Each row's classes ranked by score: the target is 1st, 2nd, 5th and 6th.
    output = torch.tensor([[9.0, 1, 2, 3, 4, 5], [1, 9, 8, 2, 3, 4], [5, 4, 3, 2, 1, 0], [5, 4, 3, 2, 1, 0]])
    target = torch.tensor([0, 2, 4, 5])
    counts = correct_tensors(output, target, topk=(1, 2, 5))
    assert all(c.dim() == 0 for c in counts) and [int(c) for c in counts] == [1, 2, 3]
    # k beyond the number of classes counts every sample
    assert [int(c) for c in correct_tensors(output[:, :3], torch.tensor([0, 2, 2, 1]))] == [1, 4]


def test_one_read_returns_host_numbers_in_order():
    assert read_once(torch.tensor(2.5), None, 3, torch.tensor(4)) == [2.5, None, 3, 4.0]
    assert read_once() == []


def test_the_average_is_weighted_by_batch_size():
    meter = AverageMeter()
    assert meter.avg == 0.0
    meter.update(50.0, 2)
    meter.update(100.0, 6)
    assert meter.val == 100.0 and meter.avg == 87.5
