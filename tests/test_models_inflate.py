"""ImageNet initialisation: inflating a torchvision 2D ResNet state_dict into the I3D backbone as the released
code does."""
import os

import pytest
import torch
import torchvision
from torch import nn

from cakes.configs import RELEASED
from cakes.models import TemporalModel, block_widths, inflate_resnet
from cakes.errors import UsageError

pytestmark = pytest.mark.usefixtures('single_thread')

# Branch order of every searchable op code in the released network, independent of the code under test.
BRANCH_KINDS = {
    'convst': ('kxkxk', '1xkxk'),
    'conv1_2d': ('1xkxk', 'kx1x1'),
    'conv1_2_3d': ('kxkxk', '1xkxk', 'kx1x1'),
    'convst_dropout': ('kxkxk', '1xkxk'),
    'conv1_2d_dropout': ('1xkxk', 'kx1x1'),
    'conv1_2_3d_dropout': ('kxkxk', '1xkxk', 'kx1x1'),
}
KIND_OF_KERNEL = {(3, 3, 3): 'kxkxk', (1, 3, 3): '1xkxk', (3, 1, 1): 'kx1x1'}


def randomised_resnet_state(arch, seed):
    """A torchvision ResNet state_dict (random init) whose BN vectors and counters are random too."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    counter = 7
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(counter)
                counter += 13
    return {key: value.clone() for key, value in net.state_dict().items()}


@pytest.fixture(scope='module')
def resnet50_2d(tmp_path_factory):
    state = randomised_resnet_state('resnet50', 0)
    path = tmp_path_factory.mktemp('weights') / 'resnet50.pth'
    torch.save(state, path)
    yield str(path), state
    os.remove(path)


# ----------------------------------------------------------------------------- expected values

def i3d(w):
    """(C, Cin, 1, 3, 3) -> (C, Cin, 3, 3, 3): three copies along time, divided by 3."""
    return torch.cat([w, w, w], dim=2) / 3


def expected_branch(kind, w):
    if kind == 'kxkxk':
        return i3d(w)
    if kind == '1xkxk':
        return w
    assert kind == 'kx1x1'
    return i3d(w.sum(dim=3, keepdim=True).sum(dim=4, keepdim=True))


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f'{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}'
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=lambda m: f'{what}: {m}')


def assert_bn(bn3d, state2d, prefix, tiles=1):
    """Every BN vector copied (tiled `tiles` times), num_batches_tracked copied as is."""
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        assert_close(getattr(bn3d, name).detach(), torch.cat([state2d[f'{prefix}.{name}']] * tiles), f'{prefix}.{name}')
    counter = bn3d.num_batches_tracked
    assert counter.shape == () and counter.dtype == torch.long, f'{prefix}.num_batches_tracked reshaped'
    assert torch.equal(counter, state2d[f'{prefix}.num_batches_tracked']), f'{prefix}.num_batches_tracked'


def expected_widths(op_code, search, conv_config, index, width):
    kinds = BRANCH_KINDS[op_code]
    if search or op_code.endswith('_dropout'):
        return [(kind, width) for kind in kinds]
    if conv_config is not None:
        return [(kind, conv_config[index].get(kind, 0)) for kind in kinds if conv_config[index].get(kind, 0) > 0]
    n = len(kinds)
    return list(zip(kinds, [width - (n - 1) * (width // n)] + [width // n] * (n - 1)))


def check_inflation(base, state2d, op_code, search=False, conv_config=None, arch='resnet50'):
    """Check every rule of the released inflation on the backbone `base` against the 2D state_dict."""
    assert_close(base.conv1.weight.detach(), state2d['conv1.weight'].unsqueeze(2), 'conv1.weight')
    assert_bn(base.bn1, state2d, 'bn1')
    cakes = op_code in ('convst', 'conv1_2d', 'conv1_2_3d')
    dropout = op_code.endswith('_dropout')
    index = 0
    for layer in range(1, 5):
        for b, block in enumerate(getattr(base, f'layer{layer}')):
            p = f'layer{layer}.{b}'
            width = block_widths(arch)[index]
            assert_close(block.conv1.weight.detach(), state2d[f'{p}.conv1.weight'].unsqueeze(2), f'{p}.conv1')
            assert_bn(block.bn1, state2d, f'{p}.bn1')
            assert_bn(block.bn3, state2d, f'{p}.bn3')
            w3 = state2d[f'{p}.conv3.weight'].unsqueeze(2)
            n = len(BRANCH_KINDS[op_code]) if (cakes or dropout) else 1
            conv3_tiles = n if (cakes and search) else 1
            assert_close(block.conv3.weight.detach(), torch.cat([w3] * conv3_tiles, dim=1), f'{p}.conv3')
            if f'{p}.downsample.0.weight' in state2d:
                assert_close(block.downsample[0].weight.detach(), state2d[f'{p}.downsample.0.weight'].unsqueeze(2),
                             f'{p}.downsample.0')
                assert_bn(block.downsample[1], state2d, f'{p}.downsample.1')
            else:
                assert block.downsample is None
            w2 = state2d[f'{p}.conv2.weight'].unsqueeze(2)
            op = block.convT
            if op_code == 'conv3d':
                assert_close(op.op[0].weight.detach(), i3d(w2), f'{p}.convT.op.0')
                assert_bn(op.get_submodule('op.1'), state2d, f'{p}.bn2')
            elif op_code == 'conv2d':
                assert_close(op.op[0].weight.detach(), w2, f'{p}.convT.op.0')
                assert_bn(op.get_submodule('op.1'), state2d, f'{p}.bn2')
            elif op_code == 'convp3d':
                assert_close(op.op[0].weight.detach(), w2, f'{p}.convT.op.0')
                assert isinstance(op.op[1], nn.Conv3d) and op.op[1].kernel_size == (3, 1, 1)
                assert_bn(op.get_submodule('op.2'), state2d, f'{p}.bn2')
            else:
                branches = expected_widths(op_code, search, conv_config, index, width)
                assert len(op.convs) == len(branches), p
                start = 0
                for i, (kind, branch_width) in enumerate(branches):
                    conv = op.convs[i][0]
                    assert KIND_OF_KERNEL[conv.kernel_size] == kind, f'{p}.convT.convs.{i} is not {kind}'
                    begin = 0 if (search or dropout) else start
                    assert_close(conv.weight.detach(), expected_branch(kind, w2[begin:begin + branch_width]),
                                 f'{p}.convT.convs.{i} ({kind})')
                    start += branch_width
                if not (search or dropout):
                    assert start == width
                bn_name = 'norm' if dropout else 'out.0'
                assert_bn(op.get_submodule(bn_name), state2d, f'{p}.bn2', tiles=n if (search or dropout) else 1)
            index += 1
    assert index == len(block_widths(arch))


# ----------------------------------------------------------------------------- every op code

INFLATE_SETTINGS = [
    ('conv3d', False, None), ('conv2d', False, None), ('convp3d', False, None),
    ('convst', False, None), ('convst', True, None),
    ('conv1_2d', False, None), ('conv1_2d', True, None),
    ('conv1_2_3d', False, None), ('conv1_2_3d', True, None),
    ('convst_dropout', True, None), ('conv1_2d_dropout', True, None), ('conv1_2_3d_dropout', True, None),
    ('convst', False, 'CAKES23D_C'), ('conv1_2d', False, 'CAKES12D_P'),
    # CAKES123D_P block 1 has no kx1x1 branch; CAKES123D_C lists '1xkxk' first and block 13 has no kx1x1.
    ('conv1_2_3d', False, 'CAKES123D_P'), ('conv1_2_3d', False, 'CAKES123D_C'),
]


@pytest.mark.parametrize('op_code,search,config_name', INFLATE_SETTINGS,
                         ids=[f'{o}-search{int(s)}-{c or "default"}' for o, s, c in INFLATE_SETTINGS])
def test_pretrained_path_inflates_every_key(resnet50_2d, op_code, search, config_name):
    path, state2d = resnet50_2d
    conv_config = RELEASED[config_name] if config_name else None
    torch.manual_seed(3)
    model = TemporalModel(num_class=10, num_segments=2, op_code=op_code, search=search, conv_config=conv_config,
                          backbone='resnet50', dropout=0.3, pretrained=path)
    check_inflation(model.base_model, state2d, op_code, search, conv_config)


def middle_zero_config():
    """conv1_2_3d config with some blocks lacking the middle (1xkxk), the first or the last branch."""
    conf = []
    for i, width in enumerate(block_widths('resnet50')):
        a = width // 4 + i
        if i % 3 == 0:
            conf.append({'kxkxk': a, '1xkxk': 0, 'kx1x1': width - a})
        elif i % 3 == 1:
            conf.append({'kxkxk': 0, '1xkxk': a, 'kx1x1': width - a})
        else:
            conf.append({'kx1x1': 0, 'kxkxk': width - a, '1xkxk': a})
    return conf


def test_middle_branch_of_width_zero_maps_by_kind(resnet50_2d):
    """{'kxkxk': a, '1xkxk': 0, 'kx1x1': b}: convs.0 (kxkxk) gets filters [0:a], convs.1 (kx1x1) [a:a+b]."""
    _, state2d = resnet50_2d
    conf = middle_zero_config()
    model = TemporalModel(num_class=10, num_segments=2, op_code='conv1_2_3d', conv_config=conf, pretrained=None)
    inflate_resnet(model.base_model, state2d)
    check_inflation(model.base_model, state2d, 'conv1_2_3d', False, conf)
    # The same facts spelled out for block 0 (width 64).
    a = conf[0]['kxkxk']
    op = model.base_model.layer1[0].convT
    w2 = state2d['layer1.0.conv2.weight'].unsqueeze(2)
    assert len(op.convs) == 2
    assert op.convs[1][0].kernel_size == (3, 1, 1)
    assert_close(op.convs[0][0].weight.detach(), i3d(w2[:a]), 'kxkxk')
    assert_close(op.convs[1][0].weight.detach(),
                 i3d(w2[a:].sum(dim=(3, 4), keepdim=True)), 'kx1x1')


@pytest.fixture(scope='module')
def convp3d_pair(resnet50_2d):
    """The same seed with and without pretrained weights: what the 2D state does not cover keeps its init."""
    path, _ = resnet50_2d
    torch.manual_seed(11)
    scratch = TemporalModel(num_class=10, num_segments=2, op_code='convp3d', pretrained=None)
    torch.manual_seed(11)
    loaded = TemporalModel(num_class=10, num_segments=2, op_code='convp3d', pretrained=path)
    return scratch, loaded


def test_convp3d_temporal_conv_and_new_fc_keep_their_init(convp3d_pair):
    scratch, loaded = convp3d_pair
    scratch_state, loaded_state = scratch.state_dict(), loaded.state_dict()
    kept = [k for k in scratch_state if k.endswith('convT.op.1.weight') or k.startswith('new_fc.')]
    assert len(kept) == 16 + 2
    for key in kept:
        assert torch.equal(scratch_state[key], loaded_state[key]), key
    # Everything else did change (so the comparison above is not vacuous).
    changed = [k for k in scratch_state if k not in kept and not torch.equal(scratch_state[k], loaded_state[k])]
    assert len(changed) == len(scratch_state) - len(kept)


def test_random_init_before_loading(convp3d_pair):
    """Kaiming normal (fan_out, relu) for every Conv3d, BN 1/0, classifier normal(0, 0.001) with bias 0."""
    scratch, _ = convp3d_pair
    for name, module in scratch.named_modules():
        if isinstance(module, nn.Conv3d):
            assert module.bias is None, name
            w = module.weight.detach()
            if w.numel() >= 16384:
                fan_out = w.shape[0] * w[0, 0].numel()
                std = (2 / fan_out) ** 0.5
                assert abs(w.std().item() / std - 1) < 0.1, name
                assert abs(w.mean().item()) < 0.1 * std, name
        elif isinstance(module, nn.BatchNorm3d):
            assert torch.equal(module.weight.detach(), torch.ones_like(module.weight)), name
            assert torch.equal(module.bias.detach(), torch.zeros_like(module.bias)), name
    fc = scratch.new_fc
    assert abs(fc.weight.std().item() - 0.001) < 0.0001
    assert torch.equal(fc.bias.detach(), torch.zeros(10))


def test_convp3d_inflation(convp3d_pair, resnet50_2d):
    _, loaded = convp3d_pair
    check_inflation(loaded.base_model, resnet50_2d[1], 'convp3d')


def test_inflate_resnet_directly_on_the_backbone(resnet50_2d):
    """`inflate_resnet(backbone3d, state2d)` without going through a file."""
    _, state2d = resnet50_2d
    model = TemporalModel(num_class=10, num_segments=2, op_code='conv1_2d', search=True, pretrained=None)
    inflate_resnet(model.base_model, state2d)
    check_inflation(model.base_model, state2d, 'conv1_2d', True)


def test_resnet101_inflates_every_block(tmp_path):
    state2d = randomised_resnet_state('resnet101', 1)
    path = tmp_path / 'resnet101.pth'
    torch.save(state2d, path)
    model = TemporalModel(num_class=10, num_segments=2, op_code='conv1_2_3d', backbone='resnet101',
                          pretrained=str(path))
    check_inflation(model.base_model, state2d, 'conv1_2_3d', arch='resnet101')
    # The deep layer3 blocks (absent from ResNet-50) got their 3x3 weights too.
    w2 = state2d['layer3.22.conv2.weight'].unsqueeze(2)
    assert_close(model.base_model.layer3[22].convT.convs[0][0].weight.detach(), i3d(w2[:86]), 'layer3.22 kxkxk')


def test_resnet101_weights_do_not_fit_resnet50(tmp_path):
    torch.manual_seed(0)
    state2d = torchvision.models.resnet101(weights=None).state_dict()
    with torch.device('meta'):
        model = TemporalModel(num_class=10, num_segments=2, op_code='conv3d', backbone='resnet50')
    with pytest.raises(UsageError):
        inflate_resnet(model.base_model, state2d)


def test_resnet50_weights_do_not_fit_resnet101(resnet50_2d):
    _, state2d = resnet50_2d
    with torch.device('meta'):
        model = TemporalModel(num_class=10, num_segments=2, op_code='conv3d', backbone='resnet101')
    with pytest.raises(UsageError):
        inflate_resnet(model.base_model, state2d)


# ----------------------------------------------------------------------------- errors

def test_imagenet_offline_gives_usage_error(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError('network is unreachable')

    monkeypatch.setattr(WeightsEnum, 'get_state_dict', offline)
    with torch.device('meta'), pytest.raises(UsageError) as info:
        TemporalModel(num_class=10, num_segments=2, op_code='conv3d', pretrained='imagenet')
    message = str(info.value)
    assert '--pretrained PATH' in message
    assert 'none' in message.replace('--pretrained PATH', '')
    assert '\n' not in message


def test_missing_pretrained_path_gives_usage_error(tmp_path):
    missing = str(tmp_path / 'no_such_weights.pth')
    with torch.device('meta'), pytest.raises(UsageError) as info:
        TemporalModel(num_class=10, num_segments=2, op_code='conv3d', pretrained=missing)
    assert missing in str(info.value)


def test_basic_block_resnet_weights_do_not_fit():
    """A ResNet-18 state_dict (basic blocks, 3x3 conv1) is refused with a UsageError, not a traceback."""
    state2d = torchvision.models.resnet18(weights=None).state_dict()
    with torch.device('meta'):
        model = TemporalModel(num_class=10, num_segments=2, op_code='conv3d', backbone='resnet50')
    with pytest.raises(UsageError, match='not a torchvision'):
        inflate_resnet(model.base_model, state2d)
