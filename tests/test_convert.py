"""cakes.convert on networks no one here wrote (torchvision r3d_18, MONAI UNet) and on small hand-made ones:
which layers convert, the supernet's initial weights, search, pruning, configs, complexity, errors."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cakes import convert
from cakes.complexity import count_flops, count_params
from cakes.errors import UsageError
from cakes.ops import CakesOp, DropoutSupernetOp
from cakes.ops.kernels import shrink

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def r3d():
    from torchvision.models.video import r3d_18
    torch.manual_seed(0)
    return r3d_18(weights=None, num_classes=5).eval()


def tiny_unet():
    from monai.networks.nets import UNet
    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=1,
                norm='batch').eval()


def randomize_bns(model):
    """BN statistics and scales that make the channel choice and the BN folding matter."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.normal_(0, 1)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def ops_of(model, kind):
    return {name: m for name, m in model.named_modules() if isinstance(m, kind)}


def skipped(model):
    return {layer.name: layer.reason for layer in model.cakes_layers if layer.reason}


def test_r3d_18_converts_its_3x3x3_convolutions(r3d):
    supernet = convert.to_supernet(r3d)
    ops = ops_of(supernet, DropoutSupernetOp)
    assert sorted(ops) == sorted(f'layer{i}.{j}.conv{c}.0' for i in range(1, 5) for j in (0, 1) for c in (1, 2))
    assert skipped(supernet) == {'stem.0': 'kernel (3, 7, 7) is not cubic',
                                 **{f'layer{i}.0.downsample.0': 'kernel 1x1x1: nothing to shrink' for i in (2, 3, 4)}}
    op = ops['layer2.0.conv1.0']
    assert op.kinds == ('kxkxk', '1xkxk', 'kx1x1') and op.width == 128 and op.bn.num_features == 3 * 128
    assert op.convs[0][0].stride == (2, 2, 2) and len(op.out) == 0  # no ReLU added: the block has its own
    assert isinstance(supernet.layer2[0].conv1[1], nn.Identity) and isinstance(supernet.layer2[0].conv1[2], nn.ReLU)
    # The original is untouched.
    assert isinstance(r3d.layer2[0].conv1[0], nn.Conv3d) and not hasattr(r3d, 'cakes_layers')
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert supernet.eval()(x).shape == r3d(x).shape == (1, 5)
    text = convert.summary(supernet)
    assert 'skipped    stem.0' in text and '16 of 20 3D convolutions converted' in text
    assert 'converted  layer4.1.conv2.0' in text and 'supernet kxkxk 512, 1xkxk 512, kx1x1 512' in text


def test_supernet_starts_from_the_original_kernel_and_bn():
    model = randomize_bns(tiny_unet())
    supernet = convert.to_supernet(model, kinds=convert.KINDS)
    for name, op in ops_of(supernet, DropoutSupernetOp).items():
        conv = model.get_submodule(name)
        bn = model.get_submodule(name.rsplit('.', 1)[0] + '.adn.N')
        for kind, branch in zip(op.kinds, op.convs):
            assert torch.equal(branch[0].weight, shrink(kind, conv.weight))
        assert torch.equal(op.norm.weight, bn.weight.repeat(7))
        # MONAI's convolutions have a bias: it is folded into the BN's running mean.
        assert conv.bias is not None
        assert torch.allclose(op.norm.running_mean, (bn.running_mean - conv.bias).repeat(7))


def test_supernet_with_equal_bn_scales_evaluates_as_the_original():
    """Equal scales tie, ties go to the first branch (the full kernel): the eval function is the original's,
    the convolution biases folded into the BNs included."""
    model = tiny_unet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
    supernet = convert.to_supernet(model, kinds=convert.KINDS).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(supernet(x), model(x), atol=1e-5)


def test_monai_unet_converts_the_convolutions_batch_norm_follows():
    model = tiny_unet()
    supernet = convert.to_supernet(model, kinds=convert.KINDS)
    assert sorted(ops_of(supernet, DropoutSupernetOp)) == ['model.0.conv.unit0.conv', 'model.1.submodule.conv.unit0.conv']
    assert skipped(supernet) == {
        'model.0.residual': 'its output goes to add, not only to a BatchNorm3d',
        'model.1.submodule.residual': 'kernel 1x1x1: nothing to shrink',
        'model.2.0.conv': 'transposed convolution',
        'model.2.1.conv.unit0.conv': 'its output goes to add, not only to a BatchNorm3d'}
    assert isinstance(supernet.model[0].conv.unit0.adn.N, nn.Identity)
    assert isinstance(supernet.model[0].conv.unit0.adn.A, nn.PReLU)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert supernet.eval()(x).shape == model(x).shape == (1, 2, 8, 8, 8)
        assert supernet.train()(x).shape == (1, 2, 8, 8, 8)


@pytest.mark.parametrize('kinds', [convert.KINDS, ('1x1xk', 'kxkxk'), convert.VIDEO_KINDS])
def test_pruned_from_supernet_evaluates_as_the_supernet(kinds):
    model = tiny_unet()
    supernet = randomize_bns(convert.to_supernet(model, kinds=kinds)).eval()
    config = convert.prune_config(supernet)
    assert list(config) == ['model.0.conv.unit0.conv', 'model.1.submodule.conv.unit0.conv']
    assert all(list(widths) == list(kinds) and sum(widths.values()) == c
               for widths, c in zip(config.values(), (4, 8)))
    pruned = convert.to_pruned(model, config, supernet=supernet).eval()
    op = pruned.model[0].conv.unit0.conv
    assert isinstance(op, CakesOp) and len(op.out) == 1 and op.out_channels == 4
    assert dict(zip(op.kinds, op.widths)) == {k: w for k, w in config['model.0.conv.unit0.conv'].items() if w}
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(pruned(x), supernet(x), atol=1e-5)


def test_pruned_from_the_original_starts_from_its_filters():
    """Without a supernet, each branch takes the next original filters, shrunk: all-kxkxk is the original."""
    model = randomize_bns(tiny_unet())
    names = ['model.0.conv.unit0.conv', 'model.1.submodule.conv.unit0.conv']
    same = convert.to_pruned(model, {names[0]: {'kxkxk': 4}, names[1]: {'kxkxk': 8, 'kx1x1': 0}}).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(same(x), model(x), atol=1e-5)
    mixed = convert.to_pruned(model, {names[0]: {'kxkxk': 1, '1xkxk': 3}, names[1]: {'kx1x1': 8}})
    op, conv = mixed.get_submodule(names[0]), model.get_submodule(names[0])
    assert torch.equal(op.convs[1][0].weight, conv.weight[1:].sum(dim=2, keepdim=True))
    assert convert.summary(mixed).splitlines()[0].endswith('CAKES op kxkxk 1, 1xkxk 3')


def small_net():
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3))


def test_complexity_counts_every_form():
    model = small_net()
    x = torch.zeros(1, 2, 4, 5, 6)
    voxels = 4 * 5 * 6
    assert count_params(model) == 4 * 2 * 27 + 2 * 4 + 4 * 3 + 3
    assert count_flops(model, example_input=x) == 2 * voxels * 4 * 2 * 27 + 2 * 4 * 3
    supernet = convert.to_supernet(model)
    assert count_params(supernet) == 4 * 2 * (27 + 9 + 3) + 2 * 12 + 4 * 3 + 3
    pruned = convert.to_pruned(model, {'0': {'kxkxk': 1, '1xkxk': 1, 'kx1x1': 2}})
    assert count_params(pruned) == 2 * (27 + 9 + 2 * 3) + 2 * 4 + 4 * 3 + 3
    assert count_flops(pruned, example_input=x) == 2 * voxels * 2 * (27 + 9 + 2 * 3) + 2 * 4 * 3


@pytest.mark.parametrize('kept, widths', [([0, 9, 10, 11], {'kxkxk': 1, '1xkxk': 0, 'kx1x1': 3}),
                                          ([4, 5, 6, 7], {'kxkxk': 0, '1xkxk': 4, 'kx1x1': 0})])
def test_a_dropout_supernet_counts_the_flops_of_the_network_pruning_would_give_now(kept, widths):
    model = small_net()
    x = torch.zeros(1, 2, 4, 5, 6)
    voxels = 4 * 5 * 6
    supernet = convert.to_supernet(model)
    with torch.no_grad():  # the 4 channels of largest |BN scale| out of 3 branches of 4
        supernet[0].norm.weight.copy_(torch.full((12,), 0.01).index_fill(0, torch.tensor(kept), -1.0))
    assert convert.prune_config(supernet) == {'0': widths}
    kernel_sum = widths['kxkxk'] * 27 + widths['1xkxk'] * 9 + widths['kx1x1'] * 3
    assert count_flops(supernet, example_input=x) == 2 * voxels * 2 * kernel_sum + 2 * 4 * 3
    pruned = convert.to_pruned(model, convert.prune_config(supernet), supernet=supernet)
    assert count_flops(pruned, example_input=x) == count_flops(supernet, example_input=x)
    with pytest.raises(UsageError, match='dropout supernet counts the channels pruning would keep.*not on meta'):
        count_flops(supernet.to('meta'), example_input=x)


def test_training_steps_lower_the_loss():
    """The supernet in a plain loop with the sparsity term, then the pruned network: both learn."""
    torch.manual_seed(0)
    model = tiny_unet()
    x = torch.randn(4, 1, 8, 8, 8)
    target = (x > 0.5).long().squeeze(1)
    for net in (convert.to_supernet(model, kinds=convert.KINDS), None):
        net = net or convert.to_pruned(model, {'model.0.conv.unit0.conv': {'kxkxk': 2, 'kx1xk': 2},
                                               'model.1.submodule.conv.unit0.conv': {'1xkx1': 8}})
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net.train()
        losses = []
        for _ in range(12):
            loss = F.cross_entropy(net(x), target)
            optimizer.zero_grad()
            loss.backward()
            if ops_of(net, DropoutSupernetOp):
                convert.add_sparsity_grad(net, 1e-4)
            optimizer.step()
            losses.append(loss.item())
        assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses


def test_sparsity_term_is_cost_weighted():
    supernet = convert.to_supernet(small_net(), kinds=convert.KINDS)
    supernet(torch.randn(2, 2, 3, 3, 3)).sum().backward()
    op = supernet[0]
    with torch.no_grad():
        op.norm.weight.copy_(torch.linspace(-1, 1, 28))
    before = op.norm.weight.grad.clone()
    convert.add_sparsity_grad(supernet, 0.5)
    share = torch.tensor([27, 9, 3, 9, 9, 3, 3]).repeat_interleave(4) / 63
    assert torch.allclose(op.norm.weight.grad - before, 0.5 * share * torch.linspace(-1, 1, 28).sign())
    convert.add_sparsity_grad(supernet, 0.5, reweight=False)
    assert torch.allclose(op.norm.weight.grad - before, 0.5 * (share + 1) * torch.linspace(-1, 1, 28).sign())


def test_sparsity_term_needs_a_supernet_after_backward():
    supernet = convert.to_supernet(small_net())
    with pytest.raises(UsageError, match=r'after loss\.backward\(\)'):
        convert.add_sparsity_grad(supernet, 1e-4)
    with pytest.raises(UsageError, match='Sequential has no supernet op'):
        convert.prune_config(small_net())


def test_config_json_round_trip(tmp_path):
    supernet = randomize_bns(convert.to_supernet(tiny_unet(), kinds=convert.KINDS))
    config = convert.prune_config(supernet)
    path = tmp_path / 'widths.json'
    convert.save_config(config, str(path))
    assert convert.load_config(str(path)) == config
    assert list(json.loads(path.read_text())['model.0.conv.unit0.conv']) == list(convert.KINDS)
    assert [p.name for p in tmp_path.iterdir()] == ['widths.json']  # no temporary file left


@pytest.mark.parametrize('text,message', [
    ('{not json', 'is not JSON'),
    ('[1, 2]', 'must be a non-empty'),
    ('{"a.conv": {"kxkx": 3}}', "layer 'a.conv': unknown kernel kind 'kxkx'"),
    ('{"a.conv": {"kxkxk": -1}}', "layer 'a.conv': width -1 of 'kxkxk' must be a non-negative integer"),
    ('{"a.conv": {"kxkxk": 1.5}}', "width 1.5 of 'kxkxk'"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / 'c.json'
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        convert.load_config(str(path))
    with pytest.raises(UsageError, match='not found'):
        convert.load_config(str(tmp_path / 'missing.json'))


@pytest.mark.parametrize('config,message', [
    ({'0': {'kxkxk': 4}, '3': {'kxkxk': 6}, '9': {'kxkxk': 4}}, "config layer '9' is not a converted layer of Sequential"),
    ({'0': {'kxkxk': 4}}, "config has no entry for layer '3'"),
    ({'0': {'kxkxk': 4}, '3': {'kxkxk': 3}}, r"config layer '3': widths \{'kxkxk': 3\} sum to 3, not to the layer's 6"),
    ({'0': {'kxkxk': 2, 'k1k': 2}, '3': {'kxkxk': 6}}, "config layer '0': unknown kernel kind 'k1k'"),
    ({}, 'config must be a non-empty'),
])
def test_configs_that_do_not_fit(config, message):
    two_layers = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                               nn.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6))
    with pytest.raises(UsageError, match=message):
        convert.to_pruned(two_layers, config)


def test_config_kinds_must_be_supernet_branches():
    model = small_net()
    supernet = convert.to_supernet(model, kinds=('kxkxk', '1xkxk'))
    with pytest.raises(UsageError, match="layer '0': kind 'kx1x1' is not a branch of the supernet"):
        convert.to_pruned(model, {'0': {'kxkxk': 2, 'kx1x1': 2}}, supernet=supernet)


def test_no_eligible_layer_and_unknown_kinds_are_named():
    flat = nn.Sequential(nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(4))
    with pytest.raises(UsageError, match=r"Sequential has no eligible layer .*0: kernel \(1, 3, 3\) is not cubic"):
        convert.to_supernet(flat)
    with pytest.raises(UsageError, match="Linear has no eligible layer .*it has no Conv3d"):
        convert.to_supernet(nn.Linear(2, 2))
    with pytest.raises(UsageError, match="unknown kernel kind '3x3x1'"):
        convert.to_supernet(small_net(), kinds=('kxkxk', '3x3x1'))


@pytest.mark.parametrize('conv,reason', [
    (nn.Conv3d(2, 4, 3, padding=0), 'padding (0, 0, 0) is not k//2 = 1'),
    (nn.Conv3d(2, 4, 3, padding=1, groups=2), 'groups 2'),
    (nn.Conv3d(2, 4, 3, padding=2, dilation=2), 'dilation (2, 2, 2)'),
    (nn.Conv3d(2, 4, 4, padding=2), 'even kernel size 4'),
    (nn.Conv3d(2, 4, 3, padding=1, padding_mode='reflect'), "padding mode 'reflect'"),
])
def test_kernels_that_cannot_shrink(conv, reason):
    layers = convert.find_layers(nn.Sequential(conv, nn.BatchNorm3d(4)))
    assert layers[0].reason.startswith(reason)


class Untraceable(nn.Module):
    """Data-dependent control flow defeats torch.fx: only nn.Sequential order tells what follows what."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.Sequential(nn.BatchNorm3d(4), nn.ReLU()))
        self.conv = nn.Conv3d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)

    def forward(self, x):
        y = self.block(x)
        if y.sum() > 0:
            y = y * 2
        return self.bn(self.conv(y))


def test_untraceable_model_falls_back_on_sequential_order():
    model = Untraceable().eval()
    supernet = convert.to_supernet(model, example_input=torch.randn(1, 2, 4, 4, 4))
    assert list(ops_of(supernet, DropoutSupernetOp)) == ['block.0']
    assert isinstance(supernet.block[1][0], nn.Identity)
    assert 'torch.fx cannot trace the model' in skipped(supernet)['conv']
    x = torch.randn(1, 2, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(supernet.eval()(x), model(x), atol=1e-5)


@pytest.fixture(scope='module')
def r3d_supernet(r3d):
    torch.manual_seed(0)
    return randomize_bns(convert.to_supernet(r3d))


CLIP = torch.zeros(1, 3, 4, 32, 32)


def pruned_flops(model, config, x=CLIP):
    return count_flops(convert.to_pruned(model, config), example_input=x)


def test_prune_config_without_a_target_is_the_released_rule(r3d, r3d_supernet):
    config = convert.prune_config(r3d_supernet)
    for name, op in ops_of(r3d_supernet, DropoutSupernetOp).items():
        scale, c = op.bn.weight.detach().abs(), op.width
        kept = scale.sort(descending=True, stable=True).indices[:c]
        assert config[name] == {kind: int(((kept >= b * c) & (kept < (b + 1) * c)).sum())
                                for b, kind in enumerate(op.kinds)}
    # A budget the released choice fits keeps it (lambda 0).
    assert convert.prune_config(r3d_supernet, pruned_flops(r3d, config), CLIP) == config


def test_prune_config_to_flops_budgets_on_r3d_18(r3d, r3d_supernet):
    released = pruned_flops(r3d, convert.prune_config(r3d_supernet))
    achieved = []
    for target in (0.95 * released, 0.8 * released, 0.6 * released):
        config = convert.prune_config(r3d_supernet, target_flops=target, example_input=CLIP)
        achieved.append(pruned_flops(r3d, config))
        assert achieved[-1] <= target
        # As close as one channel trade allows: the costliest is a 3x3x3 channel for a 3x1x1 one in layer1
        # (64 input channels, 4x16x16 output voxels).
        assert target - achieved[-1] <= 2 * 64 * (27 - 3) * 4 * 16 * 16
    assert achieved == sorted(achieved, reverse=True) and len(set(achieved)) == 3
    # Above the released choice the budget is spent on costlier kernels, as close.
    target = 1.15 * released
    above = pruned_flops(r3d, convert.prune_config(r3d_supernet, target_flops=target, example_input=CLIP))
    assert released < above <= target and target - above <= 2 * 64 * (27 - 3) * 4 * 16 * 16


def test_budget_on_layers_narrower_than_their_kinds_and_its_range():
    """Seven kinds in layers of 4 and 3 channels: every kind's cost still counted (the range's ends)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
                          nn.Conv3d(4, 3, 3, padding=1, stride=2), nn.BatchNorm3d(3))
    supernet = randomize_bns(convert.to_supernet(model, kinds=convert.KINDS))
    x = torch.zeros(1, 3, 4, 8, 8)
    fewest = pruned_flops(model, {'0': {'1x1xk': 4}, '3': {'1x1xk': 3}}, x)
    most = pruned_flops(model, {'0': {'kxkxk': 4}, '3': {'kxkxk': 3}}, x)
    released = pruned_flops(model, convert.prune_config(supernet), x)
    for target in (fewest, (fewest + released) // 2, most):
        assert pruned_flops(model, convert.prune_config(supernet, target, x), x) <= target
    for target in (fewest - 1, most + 1):
        reach = rf'out of reach.* from {fewest / 1e3:.3f} kFLOPs .* to {most / 1e3:.3f} kFLOPs'
        with pytest.raises(UsageError, match=reach):
            convert.prune_config(supernet, target_flops=target, example_input=x)
    with pytest.raises(UsageError, match='give example_input'):
        convert.prune_config(supernet, target_flops=released)


def test_budget_on_a_forward_that_cannot_run_on_meta():
    model = Untraceable().eval()
    x = torch.randn(1, 2, 4, 4, 4)
    supernet = randomize_bns(convert.to_supernet(model, example_input=x))
    released = pruned_flops(model, convert.prune_config(supernet), x)
    config = convert.prune_config(supernet, target_flops=released - 1, example_input=x)
    assert pruned_flops(model, config, x) <= released - 1


def test_prune_config_with_a_width_multiple_on_r3d_18(r3d_supernet):
    released = convert.prune_config(r3d_supernet)
    config = convert.prune_config(r3d_supernet, width_multiple=8)
    assert {name: sum(widths.values()) for name, widths in config.items()} == \
        {name: sum(widths.values()) for name, widths in released.items()}
    assert all(w % 8 == 0 for widths in config.values() for w in widths.values()) and config != released
    assert convert.prune_config(r3d_supernet, width_multiple=1) == released
