"""Hardware-friendly widths: pruning with a width multiple M keeps C channels per block, every branch width a
multiple of M (the rest of a block M does not divide in one branch), the largest |BN scale| within each branch,
the largest total; alone or with a FLOPs budget."""
import itertools

import pytest
import torch

from cakes import ops
from cakes.errors import UsageError
from cakes.models import block_widths
from cakes.models.budget import prune_video_to_budget, video_costs, video_flops
from cakes.ops.search import grouped_indices, prune_to_budget, top_indices

FRAMES, SIZE, CLASSES = 2, 48, 5  # those of conftest's supernet


def best_by_brute_force(key, n, count, multiple):
    """The largest total key over every split of `count` into n multiples of `multiple`."""
    branches = key.reshape(n, -1).sort(dim=1, descending=True).values
    splits = [w for w in itertools.product(range(0, count + 1, multiple), repeat=n) if sum(w) == count]
    return max(sum(float(b[:w].sum()) for b, w in zip(branches, split)) for split in splits)


def test_groups_keep_the_largest_total_and_the_largest_scales_within_each_branch():
    torch.manual_seed(1)
    for _ in range(20):
        key = torch.rand(3 * 64)
        kept = grouped_indices(key, 3, 64, 16)
        widths = [int(((kept >= b * 64) & (kept < (b + 1) * 64)).sum()) for b in range(3)]
        assert sum(widths) == 64 and all(w % 16 == 0 for w in widths)
        assert float(key[kept].sum()) == pytest.approx(best_by_brute_force(key, 3, 64, 16), rel=1e-6)
        for b, w in enumerate(widths):  # within a branch, its w largest
            branch = key[b * 64:(b + 1) * 64]
            assert sorted((kept[(kept >= b * 64) & (kept < (b + 1) * 64)] - b * 64).tolist()) == \
                top_indices(branch, w).tolist()
        assert torch.equal(grouped_indices(key, 3, 64, 1), top_indices(key, 64))  # M = 1: the released rule


def test_a_width_the_multiple_does_not_divide_gives_the_rest_to_one_branch():
    # 20 channels in groups of 8: two groups, then the 4 left over to the branch whose next 4 sum the most.
    key = torch.tensor([9.0] * 8 + [1.0] * 12 + [5.0] * 12 + [0.5] * 8 + [3.0] * 4 + [0.1] * 16)
    kept = grouped_indices(key, 3, 20, 8)
    widths = [int(((kept >= b * 20) & (kept < (b + 1) * 20)).sum()) for b in range(3)]
    assert widths == [8, 12, 0]  # 9s, then 5s (8 of 12), then the rest 4 of 5s (4 x 5 > 4 x 3)


def test_pruned_supernet_widths_are_multiples_of_16_per_block(supernet):
    searchable = supernet.cakes_ops()
    released = ops.prune_config(searchable)
    config = ops.prune_config(searchable, multiple=16)
    assert [sum(b.values()) for b in config] == block_widths('resnet50')
    assert all(w % 16 == 0 for block in config for w in block.values())
    assert config != released and all(list(b) == ['kxkxk', '1xkxk', 'kx1x1'] for b in config)
    # the largest kept |BN scale| of every multiple-of-16 split (brute force on the first block)
    scale = searchable[0].bn.weight.detach().abs()
    kept = ops.kept_channels(searchable[0], multiple=16)
    assert float(scale[kept].sum()) == pytest.approx(best_by_brute_force(scale, 3, 64, 16), rel=1e-6)
    assert ops.prune_config(searchable, multiple=1) == released


def test_width_multiple_with_a_budget_on_both_sides_of_its_rule(supernet):
    searchable = supernet.cakes_ops()
    costs = video_costs('conv1_2_3d', 'resnet50', FRAMES, SIZE)
    flops = video_flops('conv1_2_3d', 'resnet50', FRAMES, SIZE, CLASSES)
    rule = flops(ops.prune_config(searchable, multiple=16))
    group_trade = 16 * max(max(c.values()) - min(c.values()) for c in costs)
    for target, sign in ((0.9 * rule, 1), (1.1 * rule, -1)):
        budget = prune_to_budget(searchable, costs, flops, target, multiple=16)
        assert budget.flops <= target and target - budget.flops <= group_trade and budget.lam * sign > 0
        assert all(w % 16 == 0 for block in budget.config for w in block.values())
        assert [sum(b.values()) for b in budget.config] == block_widths('resnet50')
    assert prune_video_to_budget(supernet, rule, SIZE, multiple=16).config == ops.prune_config(searchable,
                                                                                               multiple=16)


@pytest.mark.parametrize('multiple', [0, -8, 2.5, True])
def test_a_width_multiple_that_is_not_a_whole_number_from_1_is_refused(supernet, multiple):
    with pytest.raises(UsageError, match='must be a whole number >= 1'):
        ops.prune_config(supernet.cakes_ops(), multiple=multiple)
