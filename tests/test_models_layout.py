"""state_dict layouts of TemporalModel against the released checkpoints (tests/data/checkpoint_keys.json)."""
import json
import math
import os

import pytest
import torch

from cakes.configs import RELEASED
from cakes.models import TemporalModel, block_widths
from cakes.ops.plans import load_plans, plan_table

pytestmark = pytest.mark.usefixtures('single_thread')

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
with open(os.path.join(DATA, 'checkpoint_keys.json')) as f:
    LAYOUTS = json.load(f)['settings']
SETTINGS = list(LAYOUTS)


def parse_setting(name):
    """'op_code|search=0/1|config=NAME or -' -> (op_code, search, conv_config list or None)."""
    op_code, search, conf = name.split('|')
    assert search in ('search=0', 'search=1') and conf.startswith('config=')
    conf = conf[len('config='):]
    return op_code, search == 'search=1', None if conf == '-' else RELEASED[conf]


def build(name, num_segments=8, num_class=174, device='meta', **kwargs):
    op_code, search, conv_config = parse_setting(name)
    with torch.device(device):
        return TemporalModel(num_class=num_class, num_segments=num_segments, op_code=op_code, search=search,
                             conv_config=conv_config, backbone='resnet50', dropout=0.3, pretrained=None, **kwargs)


def random_state(layout, generator):
    """Random tensors in the released layout ('module.' stripped), scaled so a forward stays finite."""
    state = {}
    for key, shape in layout:
        assert key.startswith('module.')
        key = key[len('module.'):]
        name = key.rsplit('.', 1)[1]
        if name == 'num_batches_tracked':
            state[key] = torch.randint(1, 1000, (), generator=generator)
        elif len(shape) == 5:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2 / fan_in)
        elif len(shape) == 2:
            state[key] = torch.randn(shape, generator=generator) * 0.01
        elif name == 'weight':
            state[key] = torch.rand(shape, generator=generator) * 0.5 + 0.5
        elif name in ('bias', 'running_mean'):
            state[key] = torch.randn(shape, generator=generator) * 0.1
        elif name == 'running_var':
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            raise AssertionError(f'unexpected key in the reference layout: {key}')
    return state


def test_reference_file_has_the_15_settings():
    assert len(SETTINGS) == 15
    assert len(set(SETTINGS)) == 15


@pytest.mark.parametrize('name', SETTINGS)
def test_state_dict_layout_matches_released_checkpoint(name):
    model = build(name)
    got = [['module.' + key, list(value.shape)] for key, value in model.state_dict().items()]
    expected = LAYOUTS[name]
    got_keys, expected_keys = [k for k, _ in got], [k for k, _ in expected]
    assert got_keys == expected_keys, (
        f'missing {sorted(set(expected_keys) - set(got_keys))[:5]}, extra {sorted(set(got_keys) - set(expected_keys))[:5]}')
    assert got == expected


@pytest.mark.parametrize('name', SETTINGS)
def test_random_state_in_released_layout_loads_strictly(name):
    state = random_state(LAYOUTS[name], torch.Generator().manual_seed(0))
    model = build(name)
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# One of each family, plus a config with a dropped (width 0) branch and a dropout supernet in eval mode.
FORWARD_SETTINGS = ['conv3d|search=0|config=-', 'convp3d|search=0|config=-', 'conv1_2_3d|search=1|config=-',
                    'conv1_2_3d|search=0|config=CAKES123D_P', 'convst_dropout|search=1|config=-']


@pytest.mark.parametrize('name', FORWARD_SETTINGS)
def test_loaded_weights_determine_the_logits(name):
    """Load a released-layout state into A, copy A into B (other random init): same logits in eval mode."""
    generator = torch.Generator().manual_seed(1)
    state = random_state(LAYOUTS[name], generator)
    torch.manual_seed(1)
    model_a = build(name, num_segments=2, device='cpu')
    model_a.load_state_dict(state, strict=True)
    torch.manual_seed(2)
    model_b = build(name, num_segments=2, device='cpu')
    model_b.load_state_dict(model_a.state_dict(), strict=True)
    model_a.eval()
    model_b.eval()
    x = torch.randn(2, 2 * 3, 64, 64, generator=generator)
    with torch.no_grad():
        logits_a = model_a(x)
        # The same plans too: each op's plan is timed at its first forward, and another plan rounds otherwise.
        load_plans(model_b, plan_table(model_a))
        logits_b = model_b(x)
    assert logits_a.shape == (2, 174)
    assert torch.isfinite(logits_a).all()
    # The input matters (the network is not dead): the two clips get different logits.
    assert not torch.allclose(logits_a[0], logits_a[1])
    torch.testing.assert_close(logits_b, logits_a, rtol=1e-5, atol=1e-6)


def test_dropout_zero_puts_the_classifier_in_base_model_fc():
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='conv3d', dropout=0, pretrained=None)
    state = model.state_dict()
    assert state['base_model.fc.weight'].shape == (174, 2048)
    assert state['base_model.fc.bias'].shape == (174,)
    assert not any(key.startswith('new_fc') for key in state)
    assert not hasattr(model, 'new_fc')
    assert isinstance(model.base_model.fc, torch.nn.Linear)
    # Apart from the classifier the layout is the dropout>0 one.
    released = [k[len('module.'):] for k, _ in LAYOUTS['conv3d|search=0|config=-']]
    assert [k for k in state if not k.startswith('base_model.fc')] == [k for k in released if not k.startswith('new_fc')]


def test_dropout_zero_forward_uses_base_model_fc():
    """Logits = base_model.fc applied to the pooled frame features, averaged over the frames."""
    torch.manual_seed(0)
    model = TemporalModel(num_class=5, num_segments=2, op_code='conv2d', dropout=0, pretrained=None).eval()
    features = []
    model.base_model.fc.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        logits = model(torch.randn(2, 2 * 3, 64, 64))
    assert logits.shape == (2, 5)
    (frame_features,) = features
    assert frame_features.shape == (2 * 2, 2048)
    fc = model.base_model.fc
    expected = (frame_features @ fc.weight.T + fc.bias).view(2, 2, 5).mean(dim=1)
    torch.testing.assert_close(logits, expected)


def test_dropout_positive_gives_dropout_and_new_fc():
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='conv3d', dropout=0.3, pretrained=None)
    assert isinstance(model.base_model.fc, torch.nn.Dropout)
    assert model.base_model.fc.p == 0.3
    assert isinstance(model.new_fc, torch.nn.Linear)
    assert (model.new_fc.in_features, model.new_fc.out_features) == (2048, 174)


def test_resnet101_has_23_blocks_in_layer3():
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='conv3d', backbone='resnet101', pretrained=None)
    base = model.base_model
    assert [len(getattr(base, f'layer{i}')) for i in range(1, 5)] == [3, 4, 23, 3]
    assert len(block_widths('resnet101')) == 33
    assert len(block_widths('resnet50')) == 16
    keys = model.state_dict().keys()
    assert 'base_model.layer3.22.conv3.weight' in keys and 'base_model.layer3.23.conv1.weight' not in keys


def test_resnet101_accepts_a_33_block_config_and_rejects_the_16_block_one():
    from cakes.errors import UsageError
    widths = block_widths('resnet101')
    conf = [{'kxkxk': w // 2, '1xkxk': w - w // 2} for w in widths]
    with torch.device('meta'):
        model = TemporalModel(174, 8, op_code='convst', conv_config=conf, backbone='resnet101')
        assert model.base_model.layer3[22].convT.convs[0][0].out_channels == 128
        with pytest.raises(UsageError):
            TemporalModel(174, 8, op_code='convst', conv_config=RELEASED['CAKES23D_P'],
                          backbone='resnet101')


def test_conv_configs_equal_reference():
    with open(os.path.join(DATA, 'conv_configs.json')) as f:
        reference = json.load(f)
    assert RELEASED == reference
    assert list(RELEASED) == list(reference)
    # Every block dict keeps its key order too (CAKES123D_C lists '1xkxk' first).
    for name in reference:
        assert [list(block) for block in RELEASED[name]] == [list(block) for block in reference[name]]
