"""The speed-ups of scripts/benchmark_model.py compute what the straightforward forms compute."""
import copy

import pytest
import torch

from cakes.configs import RELEASED
from cakes.models import TemporalModel
from cakes.models.inference import fold_batchnorm
from cakes.ops.kernels import Conv3d

pytestmark = pytest.mark.usefixtures('single_thread')

SETTINGS = [('conv3d', False, None), ('conv2d', False, None), ('convp3d', False, None),
            ('convst', True, None), ('conv1_2d', False, 'CAKES12D_C'), ('conv1_2_3d', False, 'CAKES123D_P'),
            ('conv1_2_3d_dropout', True, None)]


def randomised(op_code, search, key):
    torch.manual_seed(0)
    model = TemporalModel(7, 2, op_code=op_code, search=search, conv_config=RELEASED.get(key))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize('op_code, search, key', SETTINGS, ids=[s[0] for s in SETTINGS])
def test_channels_last_gives_the_same_logits_and_gradients(op_code, search, key):
    # float64: in float32 the gradients of a deep random net differ by ~1% between any two summation
    # orders (even 1 vs 2 threads), which would hide a real error.
    base = randomised(op_code, search, key).double()
    clip = torch.randn(2, 6, 64, 64, dtype=torch.float64)
    results = []
    for channels_last in (False, True):
        model = copy.deepcopy(base).use_channels_last(channels_last)  # train steps move BN statistics
        torch.manual_seed(1)  # the same supernet channel draws in both runs
        model.train()
        out = model(clip)
        out.square().sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        model.eval()
        with torch.no_grad():
            results.append((out.detach(), grads, model(clip)))
    (train_a, grads_a, eval_a), (train_b, grads_b, eval_b) = results
    assert torch.allclose(train_a, train_b, rtol=1e-9, atol=1e-12)
    assert torch.allclose(eval_a, eval_b, rtol=1e-9, atol=1e-12)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9 * a.abs().max().item())


@pytest.mark.parametrize('op_code, search, key', SETTINGS, ids=[s[0] for s in SETTINGS])
def test_folding_batchnorm_keeps_the_eval_function(op_code, search, key):
    model = randomised(op_code, search, key).eval()
    before = copy.deepcopy(model.state_dict())
    folded = fold_batchnorm(model)
    clip = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        want = model(clip)
        assert torch.allclose(folded(clip), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
        folded.use_channels_last()
        assert torch.allclose(folded(clip), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    batchnorms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(batchnorms) == (16 if op_code.endswith('_dropout') else 0)
    assert model.state_dict().keys() != folded.state_dict().keys()
    # the original is left as it was: every BN and every weight
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules()) == 53  # stem, 3 a block, 4 shortcuts


def test_frame_convolution_path_keeps_channels_last():
    conv = Conv3d(8, 16, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
    x = torch.randn(2, 8, 3, 10, 10)
    y = conv(x.contiguous(memory_format=torch.channels_last_3d))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(y, conv(x), atol=1e-5)
    temporal = Conv3d(8, 16, (3, 1, 1), padding=(1, 0, 0), bias=False)
    y = temporal(x.contiguous(memory_format=torch.channels_last_3d))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(y, temporal(x), atol=1e-5)
