"""Dropout supernets (CAKES-P search): channel sampling, partial computation, BN statistics, eval mode."""
import pytest
import torch
import torch.nn.functional as F

from cakes import ops
from cakes.models import TemporalModel

pytestmark = pytest.mark.usefixtures('single_thread')

C, CIN = 8, 4
DROPOUT_CODES = {
    'convst_dropout': (('kxkxk', '1xkxk'), True),
    'conv1_2d_dropout': (('1xkxk', 'kx1x1'), False),
    'conv1_2_3d_dropout': (('kxkxk', '1xkxk', 'kx1x1'), False),
}


def make_op(op_code, seed=0, stride=1):
    kinds, split_two = DROPOUT_CODES[op_code]
    torch.manual_seed(seed)
    op = ops.DropoutSupernetOp(kinds, CIN, C, stride, split_two=split_two)
    with torch.no_grad():
        for branch in op.convs:
            branch[0].weight.normal_()
        op.norm.weight.uniform_(0.5, 1.5)
        op.norm.bias.normal_()
        op.norm.running_mean.normal_()
        op.norm.running_var.uniform_(0.5, 2.0)
    return op


def record_channels(op, monkeypatch):
    """Wrap the op's sample_channels so the test knows which channels a training forward used."""
    drawn = []
    real = op.sample_channels

    def recording():
        index = real()
        drawn.append(index.clone())
        return index

    monkeypatch.setattr(op, 'sample_channels', recording)
    return drawn


def all_filters(op, x):
    """The n*C supernet outputs of the convolutions (before BN), in branch order."""
    return torch.cat([F.conv3d(x, b[0].weight, None, b[0].stride, b[0].padding) for b in op.convs], dim=1)


def x_input(seed=5):
    return torch.randn(2, CIN, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- construction

@pytest.mark.parametrize('op_code', DROPOUT_CODES)
def test_supernet_structure(op_code):
    kinds, _ = DROPOUT_CODES[op_code]
    op = make_op(op_code)
    assert len(op.convs) == len(kinds)
    for branch in op.convs:
        assert branch[0].out_channels == C and branch[0].in_channels == CIN
    assert op.norm.num_features == len(kinds) * C
    assert op.out_channels == C
    assert [type(m) for m in op.out] == [torch.nn.ReLU]


@pytest.mark.parametrize('op_code', DROPOUT_CODES)
def test_op_factory_builds_supernets_whatever_search_says(op_code):
    for search in (False, True):
        op = ops.op_factory(op_code, search=search)(0, 64, 64, 1)
        assert isinstance(op, ops.DropoutSupernetOp)
        assert op.norm.num_features == len(DROPOUT_CODES[op_code][0]) * 64


# ----------------------------------------------------------------------------- sampling

def test_split_two_sampling_distribution():
    op = make_op('convst_dropout')
    op.train()
    torch.manual_seed(0)
    draws = 2700
    d_counts = torch.zeros(C + 1, dtype=torch.long)
    channel_counts = torch.zeros(2 * C, dtype=torch.long)
    for _ in range(draws):
        index = op.sample_channels()
        assert index.dtype == torch.long and index.numel() == C
        assert torch.equal(index, index.sort().values)
        assert index.unique().numel() == C
        assert index.min() >= 0 and index.max() < 2 * C
        d = int((index >= C).sum())
        assert int((index < C).sum()) == C - d
        d_counts[d] += 1
        channel_counts[index] += 1
    # d is uniform on 0..C: both extremes happen, and every value is near draws / (C + 1) = 300.
    assert d_counts[0] > 0 and d_counts[C] > 0
    assert (d_counts > 200).all() and (d_counts < 400).all(), d_counts
    # Inside each branch the subset is uniform: every channel is kept about draws / 2 times.
    assert (channel_counts > 0.4 * draws).all() and (channel_counts < 0.6 * draws).all(), channel_counts


@pytest.mark.parametrize('op_code', ['conv1_2d_dropout', 'conv1_2_3d_dropout'])
def test_uniform_sampling_distribution(op_code):
    n = len(DROPOUT_CODES[op_code][0])
    op = make_op(op_code)
    torch.manual_seed(0)
    draws = 1500
    channel_counts = torch.zeros(n * C, dtype=torch.long)
    per_branch = torch.zeros(n, C + 1, dtype=torch.long)
    for _ in range(draws):
        index = op.sample_channels()
        assert index.numel() == C
        assert torch.equal(index, index.sort().values)
        assert index.unique().numel() == C
        assert index.min() >= 0 and index.max() < n * C
        channel_counts[index] += 1
        for b in range(n):
            per_branch[b, int(((index >= b * C) & (index < (b + 1) * C)).sum())] += 1
    expected = draws / n
    assert (channel_counts > 0.8 * expected).all() and (channel_counts < 1.2 * expected).all(), channel_counts
    # Not a fixed split: the number kept per branch varies from draw to draw.
    assert ((per_branch > 0).sum(dim=1) >= 4).all()


# ----------------------------------------------------------------------------- training forward

@pytest.mark.parametrize('op_code', DROPOUT_CODES)
def test_training_forward_computes_only_the_selected_filters(op_code, monkeypatch):
    op = make_op(op_code, seed=1)
    op.train()
    drawn = record_channels(op, monkeypatch)
    x = x_input()
    old_mean, old_var = op.norm.running_mean.clone(), op.norm.running_var.clone()
    old_count = int(op.norm.num_batches_tracked)
    torch.manual_seed(4)
    y = op(x)
    (index,) = drawn
    assert y.shape == (2, C, 2, 8, 8)

    # Manual computation from the selected filters.
    with torch.no_grad():
        selected = all_filters(op, x)[:, index]
        expected = F.relu(F.batch_norm(selected, None, None, op.norm.weight[index], op.norm.bias[index],
                                       training=True, eps=op.norm.eps))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)

    # Running statistics: only the selected channels move, with the usual momentum update.
    mask = torch.zeros(op.norm.num_features, dtype=torch.bool)
    mask[index] = True
    m = op.norm.momentum
    batch_mean = selected.mean(dim=(0, 2, 3, 4))
    batch_var = selected.var(dim=(0, 2, 3, 4), unbiased=True)
    torch.testing.assert_close(op.norm.running_mean[index], (1 - m) * old_mean[index] + m * batch_mean)
    torch.testing.assert_close(op.norm.running_var[index], (1 - m) * old_var[index] + m * batch_var)
    assert torch.equal(op.norm.running_mean[~mask], old_mean[~mask])
    assert torch.equal(op.norm.running_var[~mask], old_var[~mask])
    assert int(op.norm.num_batches_tracked) == old_count + 1

    # Gradients: exactly zero for the filters (and BN entries) that were not selected.
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(9))).sum().backward()
    for b, branch in enumerate(op.convs):
        local = index[(index >= b * C) & (index < (b + 1) * C)] - b * C
        keep = torch.zeros(C, dtype=torch.bool)
        keep[local] = True
        grad = branch[0].weight.grad
        if grad is None:
            assert not keep.any()
            continue
        assert torch.equal(grad[~keep], torch.zeros_like(grad[~keep])), f'branch {b}'
        if keep.any():
            assert (grad[keep].flatten(1).abs().sum(dim=1) > 0).all(), f'branch {b}'
    for name in ('weight', 'bias'):
        grad = getattr(op.norm, name).grad
        assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
        assert (grad[mask] != 0).all()


def test_split_two_extremes_do_not_crash(monkeypatch):
    """d = 0 (branch 2 unused) and d = C (branch 1 unused) both run."""
    op = make_op('convst_dropout', seed=2)
    op.train()
    x = x_input()
    for index in (torch.arange(C), torch.arange(C, 2 * C)):
        monkeypatch.setattr(op, 'sample_channels', lambda index=index: index)
        y = op(x)
        with torch.no_grad():
            expected = F.relu(F.batch_norm(all_filters(op, x)[:, index], None, None, op.norm.weight[index],
                                           op.norm.bias[index], training=True, eps=op.norm.eps))
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_training_forwards_draw_fresh_channels():
    op = make_op('conv1_2_3d_dropout', seed=3)
    op.train()
    x = x_input()
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = [op(x) for _ in range(4)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


# ----------------------------------------------------------------------------- eval

@pytest.mark.parametrize('op_code', DROPOUT_CODES)
def test_eval_uses_channels_with_largest_bn_scale(op_code):
    n = len(DROPOUT_CODES[op_code][0])
    op = make_op(op_code, seed=6)
    # Hand-set scales: a random permutation of distinct magnitudes with random signs.
    generator = torch.Generator().manual_seed(7)
    magnitudes = torch.randperm(n * C, generator=generator).float() + 1
    signs = torch.where(torch.rand(n * C, generator=generator) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        op.norm.weight.copy_(magnitudes * signs)
    op.eval()
    expected_index = torch.argsort(magnitudes, descending=True)[:C].sort().values
    x = x_input()
    before = {k: v.clone() for k, v in op.norm.state_dict().items()}
    with torch.no_grad():
        y = op(x)
        y_again = op(x)
        expected = F.relu(F.batch_norm(all_filters(op, x)[:, expected_index], op.norm.running_mean[expected_index],
                                       op.norm.running_var[expected_index], op.norm.weight[expected_index],
                                       op.norm.bias[expected_index], training=False, eps=op.norm.eps))
    assert y.shape == (2, C, 2, 8, 8)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(y, y_again)
    for key, value in op.norm.state_dict().items():
        assert torch.equal(value, before[key]), f'eval changed norm.{key}'


def test_eval_with_all_top_channels_in_one_branch():
    op = make_op('convst_dropout', seed=8)
    with torch.no_grad():
        op.norm.weight.copy_(torch.cat([torch.full((C,), 0.1), torch.linspace(1, 2, C)]))
    op.eval()
    x = x_input()
    with torch.no_grad():
        y = op(x)
        index = torch.arange(C, 2 * C)
        expected = F.relu(F.batch_norm(all_filters(op, x)[:, index], op.norm.running_mean[index],
                                       op.norm.running_var[index], op.norm.weight[index], op.norm.bias[index],
                                       training=False, eps=op.norm.eps))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def strided_filters(op, x, stride):
    """all_filters at the spatial stride `stride`, given here rather than read from the op's convolutions."""
    return torch.cat([F.conv3d(x, b[0].weight, None, (1, stride, stride), b[0].padding) for b in op.convs], dim=1)


def test_stride_two_supernet(monkeypatch):
    op = make_op('conv1_2_3d_dropout', seed=9, stride=2)
    op.train()
    drawn = record_channels(op, monkeypatch)
    x = x_input()
    y = op(x)
    (index,) = drawn
    with torch.no_grad():
        expected = F.relu(F.batch_norm(strided_filters(op, x, 2)[:, index], None, None, op.norm.weight[index],
                                       op.norm.bias[index], training=True, eps=op.norm.eps))
    assert y.shape == (2, C, 2, 4, 4)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    op.eval()
    kept = torch.argsort(op.norm.weight.abs(), descending=True)[:C].sort().values
    with torch.no_grad():
        y = op(x)
        expected = F.relu(F.batch_norm(strided_filters(op, x, 2)[:, kept], op.norm.running_mean[kept],
                                       op.norm.running_var[kept], op.norm.weight[kept], op.norm.bias[kept],
                                       training=False, eps=op.norm.eps))
    assert y.shape == (2, C, 2, 4, 4)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- whole model

@pytest.mark.parametrize('op_code', ['convst_dropout', 'conv1_2_3d_dropout'])
def test_temporal_model_with_dropout_supernet_trains_and_evaluates(op_code):
    torch.manual_seed(0)
    model = TemporalModel(num_class=7, num_segments=2, op_code=op_code, search=True, pretrained=None)
    x = torch.randn(2, 2 * 3, 64, 64)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.sum().backward()
    supernets = model.cakes_ops()
    assert len(supernets) == 16 and all(isinstance(m, ops.DropoutSupernetOp) for m in supernets)
    assert all(int(m.norm.num_batches_tracked) == 1 for m in supernets)
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (2, 7) and torch.isfinite(first).all()
    assert torch.equal(first, second)
