"""The seven kernel kinds: shapes, padding, cost, the weights shrunk from a full kernel, any kernel size."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from cakes.errors import UsageError
from cakes.ops import CakesOp, DropoutSupernetOp
from cakes.ops.kernels import KERNEL_COST, KINDS, kernel_cost, kind_of_size, make_conv, shrink
from cakes.ops.search import sparsity_scale

pytestmark = pytest.mark.usefixtures('single_thread')

# kind -> the axes (D, H, W) that keep the full kernel
FULL_AXES = {'kxkxk': (0, 1, 2), '1xkxk': (1, 2), 'kx1x1': (0,), 'kx1xk': (0, 2), 'kxkx1': (0, 1),
             '1xkx1': (1,), '1x1xk': (2,)}


def test_the_seven_kinds_video_kinds_first():
    assert KINDS[:3] == ('kxkxk', '1xkxk', 'kx1x1')
    assert set(KINDS) == set(FULL_AXES)


@pytest.mark.parametrize('kind,k', list(itertools.product(KINDS, (3, 5))))
def test_kernel_padding_and_output_shape(kind, k):
    conv = make_conv(kind, 2, 3, (1, 1, 1), k)
    assert conv.kernel_size == tuple(k if a in FULL_AXES[kind] else 1 for a in range(3))
    assert conv.padding == tuple(k // 2 if a in FULL_AXES[kind] else 0 for a in range(3))
    assert conv.bias is None and kind_of_size(conv.kernel_size) == kind
    x = torch.randn(1, 2, 5, 6, 7)
    assert conv(x).shape == (1, 3, 5, 6, 7)
    # Any stride gives the full kernel's output size.
    strided = make_conv(kind, 2, 3, (2, 1, 2), k)
    full = make_conv('kxkxk', 2, 3, (2, 1, 2), k)
    assert strided(x).shape == full(x).shape == (1, 3, 3, 6, 4)


def test_video_stride_is_spatial_only():
    assert make_conv('kx1xk', 2, 3, 2).stride == (1, 2, 2)


def test_cost_is_the_kernel_volume():
    assert KERNEL_COST == {'kxkxk': 27, '1xkxk': 9, 'kx1x1': 3, 'kx1xk': 9, 'kxkx1': 9, '1xkx1': 3, '1x1xk': 3}
    assert [kernel_cost(kind, 5) for kind in KINDS] == [125, 25, 5, 25, 25, 5, 5]


@pytest.mark.parametrize('kind', KINDS)
def test_shrunk_weight_is_the_kernel_summed_over_the_shrinking_axes(kind):
    torch.manual_seed(0)
    full = torch.randn(3, 2, 5, 5, 5)
    summed = tuple(2 + a for a in range(3) if a not in FULL_AXES[kind])
    expected = full.sum(dim=summed, keepdim=True) if summed else full
    assert torch.equal(shrink(kind, full), expected)
    # What that means: on an input constant along the shrinking axes, the sub-kernel computes what the
    # full kernel computes (away from the zero padding of those axes).
    x = torch.randn(1, 2, 9, 9, 9)
    for a in range(3):
        if a not in FULL_AXES[kind]:
            x = x.narrow(2 + a, 0, 1).expand_as(x)
    size_pad = make_conv(kind, 2, 3, 1, 5)
    small = F.conv3d(x, shrink(kind, full), padding=size_pad.padding)
    big = F.conv3d(x, full, padding=2)
    interior = tuple(slice(None) if a in FULL_AXES[kind] else slice(2, -2) for a in range(3))
    assert torch.allclose(small[(..., *interior)], big[(..., *interior)], atol=1e-4)


def test_unknown_kind_is_named():
    with pytest.raises(UsageError, match="unknown kernel kind 'kxk'"):
        make_conv('kxk', 2, 3, 1)


def test_cost_weights_of_the_sparsity_term_follow_k():
    op = DropoutSupernetOp(('kxkxk', '1xkxk', 'kx1x1'), 2, 4, 1, k=5)
    scale = sparsity_scale(op, reweight=True)
    assert torch.allclose(scale, torch.tensor([125 / 155] * 4 + [25 / 155] * 4 + [5 / 155] * 4))
    video = DropoutSupernetOp(('kxkxk', '1xkxk', 'kx1x1'), 2, 4, 1)
    assert torch.allclose(sparsity_scale(video, reweight=True)[::4], torch.tensor([27, 9, 3]) / 39)


def test_ops_without_activation_keep_their_state_dict_layout():
    """activation=False drops only the ReLU: negative outputs survive, the keys stay the same."""
    torch.manual_seed(0)
    x = torch.randn(2, 2, 3, 5, 5)
    for build in (lambda act: CakesOp([('kxkxk', 2), ('1x1xk', 2)], 2, 1, activation=act),
                  lambda act: DropoutSupernetOp(KINDS, 2, 4, 1, activation=act)):
        with_relu, without = build(True).eval(), build(False).eval()
        assert with_relu.state_dict().keys() == without.state_dict().keys()
        without.load_state_dict(with_relu.state_dict())
        with torch.no_grad():
            a, b = with_relu(x), without(x)
        assert (b < 0).any() and torch.equal(a, b.clamp(min=0))
