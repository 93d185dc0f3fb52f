"""The sparsity term, pruning and finetuning from a supernet."""
import pytest
import torch

from cakes import ops
from cakes.models import TemporalModel
from cakes.models.finetune import init_from_supernet
from cakes.ops.search import kept_indices
from cakes.errors import UsageError

C = 8


def searched(op_code, **kw):
    return ops.op_factory(op_code, search=True)(0, 4, C, 1)


@pytest.mark.parametrize('op_code, shares', [
    ('convst', [27 / 36, 9 / 36]), ('conv1_2d', [9 / 12, 3 / 12]), ('conv1_2_3d', [27 / 39, 9 / 39, 3 / 39]),
    ('conv1_2_3d_dropout', [27 / 39, 9 / 39, 3 / 39])])
@pytest.mark.parametrize('reweight', [False, True])
def test_sparsity_term_per_branch_block(op_code, shares, reweight):
    op = searched(op_code)
    weight = op.bn.weight
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape))
    weight.grad = torch.full_like(weight, 0.5)
    ops.add_sparsity_grad([op], 1e-2, reweight)
    factor = torch.tensor([s if reweight else 1.0 for s in shares]).repeat_interleave(C)
    assert torch.allclose(weight.grad, 0.5 + 1e-2 * factor * weight.sign())


def test_sparsity_weights_follow_actual_branch_widths_outside_a_supernet():
    op = ops.CakesOp([('kxkxk', 5), ('1xkxk', 0), ('kx1x1', 3)], 4, 1)
    op.bn.weight.grad = torch.zeros(8)
    with torch.no_grad():
        op.bn.weight.fill_(-1)
    ops.add_sparsity_grad([op], 1.0, True)
    assert torch.allclose(op.bn.weight.grad, -torch.tensor([27 / 30] * 5 + [3 / 30] * 3))


def test_pruning_keeps_the_largest_scales_and_counts_per_branch():
    op = searched('conv1_2_3d')
    scale = torch.zeros(3 * C)
    scale[[0, 1, 2, 8, 9, 20, 21, 22]] = torch.tensor([5., -4, 3, 2, -9, 1.5, 7, 8])
    with torch.no_grad():
        op.bn.weight.copy_(scale)
    assert ops.kept_channels(op).tolist() == [0, 1, 2, 8, 9, 20, 21, 22]
    assert ops.prune_config([op]) == [{'kxkxk': 3, '1xkxk': 2, 'kx1x1': 3}]
    assert all(type(v) is int for v in ops.prune_config([op])[0].values())


def test_pruning_breaks_ties_towards_earlier_channels_and_keeps_exactly_c():
    assert kept_indices(torch.ones(12), 3).tolist() == [0, 1, 2, 3]
    assert kept_indices(torch.tensor([1., 2, 2, 2, 0, 2]), 2).tolist() == [1, 2, 3]


def supernet_and_pruned(op_code, dropout_family):
    torch.manual_seed(0)
    supernet = TemporalModel(5, 2, op_code=op_code + ('_dropout' if dropout_family else ''), search=True,
                             dropout=0.3).eval()
    with torch.no_grad():
        for m in supernet.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        for op in supernet.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
            if not dropout_family:  # channels pruning drops contribute nothing: the nets compute the same
                dropped = torch.ones(op.bn.num_features, dtype=torch.bool)
                dropped[ops.kept_channels(op)] = False
                op.bn.weight[dropped] = 0
                op.bn.bias[dropped] = 0
    config = ops.prune_config(supernet.cakes_ops())
    pruned = TemporalModel(5, 2, op_code=op_code, conv_config=config, dropout=0.3).eval()
    return supernet, pruned


@pytest.mark.parametrize('dropout_family', [False, True], ids=['sparsity', 'dropout'])
def test_finetune_from_a_supernet_computes_the_supernet_function(dropout_family):
    supernet, pruned = supernet_and_pruned('conv1_2_3d', dropout_family)
    init_from_supernet(pruned, supernet.state_dict())
    clip = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        assert torch.allclose(pruned(clip), supernet(clip), atol=1e-4, rtol=1e-3)
    first = supernet.cakes_ops()[0]
    kept = ops.kept_channels(first)
    assert torch.equal(pruned.cakes_ops()[0].bn.running_mean, first.bn.running_mean[kept])


def test_finetune_starts_a_budget_config_from_each_branchs_largest_scales():
    """A budget's config (FLOPs, time, --width_multiple) moves channels between kinds: each branch takes its own
    largest |BN scale|, as the budget valued them, not the released rule's. With the other channels silenced
    (conv3 does not read them) the pruned network computes the supernet's function."""
    torch.manual_seed(0)
    supernet = TemporalModel(5, 2, op_code='convst', search=True, dropout=0.3).eval()
    blocks = {name: m for name, m in supernet.named_modules() if hasattr(m, 'conv3')}
    with torch.no_grad():
        for op in supernet.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
            op.bn.bias.uniform_(-0.1, 0.1)
    config = ops.prune_config(supernet.cakes_ops())
    config[0] = {'kxkxk': config[0]['kxkxk'] - 1, '1xkxk': config[0]['1xkxk'] + 1}
    with torch.no_grad():
        for (name, block), op, widths in zip(blocks.items(), supernet.cakes_ops(), config):
            silent = torch.ones(op.bn.num_features, dtype=torch.bool)
            for b, kind in enumerate(op.kinds):
                branch = op.bn.weight[b * op.widths[b]:(b + 1) * op.widths[b]].abs()
                silent[b * op.widths[b] + branch.topk(widths[kind]).indices] = False
            block.conv3.weight[:, silent] = 0
    pruned = TemporalModel(5, 2, op_code='convst', conv_config=config, dropout=0.3).eval()
    init_from_supernet(pruned, supernet.state_dict())
    clip = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        assert torch.allclose(pruned(clip), supernet(clip), atol=1e-4, rtol=1e-3)


def test_finetune_refuses_a_dropout_supernet_a_config_other_than_the_released_rules():
    supernet, pruned = supernet_and_pruned('convst', True)
    config = [dict(zip(op.kinds, op.widths)) for op in pruned.cakes_ops()]
    config[0] = {'kxkxk': config[0]['kxkxk'] - 1, '1xkxk': config[0]['1xkxk'] + 1}
    wrong = TemporalModel(5, 2, op_code='convst', conv_config=config, dropout=0.3)
    with pytest.raises(UsageError, match='released rule'):
        init_from_supernet(wrong, supernet.state_dict())
