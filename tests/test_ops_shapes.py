"""Shapes, structure and gradients of every op code; conv_config validation; op code errors."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cakes.configs import RELEASED
from cakes import ops
from cakes.models import TemporalModel, block_widths
from cakes.errors import UsageError

pytestmark = pytest.mark.usefixtures('single_thread')

ALL_OP_CODES = ['conv3d', 'conv2d', 'convp3d', 'convst', 'conv1_2d', 'conv1_2_3d',
                'convst_dropout', 'conv1_2d_dropout', 'conv1_2_3d_dropout']
CAKES_KINDS = {'convst': ('kxkxk', '1xkxk'), 'conv1_2d': ('1xkxk', 'kx1x1'),
               'conv1_2_3d': ('kxkxk', '1xkxk', 'kx1x1')}
KERNEL = {'kxkxk': ((3, 3, 3), (1, 1, 1)), '1xkxk': ((1, 3, 3), (0, 1, 1)), 'kx1x1': ((3, 1, 1), (1, 0, 0))}
CONFIG_OF = {'convst': 'CAKES23D_P', 'conv1_2d': 'CAKES12D_C', 'conv1_2_3d': 'CAKES123D_P'}

SHAPE_SETTINGS = (
    [(code, False, None) for code in ('conv3d', 'conv2d', 'convp3d')]
    + [(code, search, None) for code in CAKES_KINDS for search in (False, True)]
    + [(code, False, CONFIG_OF[code]) for code in CAKES_KINDS]
    + [(code, True, None) for code in ('convst_dropout', 'conv1_2d_dropout', 'conv1_2_3d_dropout')]
)


def test_every_op_code_is_covered():
    assert sorted(ops.OP_CODES) == sorted(ALL_OP_CODES)
    assert sorted({code for code, _, _ in SHAPE_SETTINGS}) == sorted(ALL_OP_CODES)


def branch_convs(op):
    """The Conv3d modules of a 3x3 operation, in order."""
    return [m for m in op.modules() if isinstance(m, nn.Conv3d)]


@pytest.mark.parametrize('op_code,search,config_name', SHAPE_SETTINGS,
                         ids=[f'{o}-search{int(s)}-{c or "default"}' for o, s, c in SHAPE_SETTINGS])
def test_forward_backward_shapes_and_gradients(op_code, search, config_name):
    conv_config = RELEASED[config_name] if config_name else None
    torch.manual_seed(0)
    model = TemporalModel(num_class=11, num_segments=2, op_code=op_code, search=search, conv_config=conv_config,
                          backbone='resnet50', dropout=0.3, pretrained=None)
    model.train()
    x = torch.randn(2, 2 * 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 11)
    assert torch.isfinite(logits).all()
    (logits * torch.randn(2, 11)).sum().backward()
    dropout = op_code.endswith('_dropout')
    for name, p in model.named_parameters():
        if p.grad is None:
            # Only a dropout supernet branch none of whose filters was sampled may sit out a step.
            assert dropout and re.fullmatch(r'base_model\.layer\d\.\d+\.convT\.convs\.\d\.0\.weight', name), name
            continue
        assert torch.isfinite(p.grad).all(), name
        if not dropout:
            assert p.grad.abs().sum() > 0, f'{name} takes part but got a zero gradient'
    # Input sizes 112 and 64 both work in eval mode.
    model.eval()
    with torch.no_grad():
        for size in (112, 64):
            out = model(torch.randn(1, 2 * 3, size, size))
            assert out.shape == (1, 11) and torch.isfinite(out).all()


def kind_of(module):
    return next(c for c in (nn.Conv3d, nn.BatchNorm3d, nn.ReLU) if isinstance(module, c))


@pytest.mark.parametrize('op_code', ALL_OP_CODES)
def test_convT_kernels_strides_and_bn(op_code):
    """Every 3x3 operation: the released kernels and paddings, stride (1, s, s), no bias, one BN after the convs."""
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code=op_code, search=True)
    blocks = [blk for layer in range(1, 5) for blk in getattr(model.base_model, f'layer{layer}')]
    assert len(blocks) == 16
    for i, block in enumerate(blocks):
        s = 2 if i in (3, 7, 13) else 1
        op = block.convT
        convs = branch_convs(op)
        assert all(c.bias is None for c in convs)
        if op_code in ('conv3d', 'conv2d'):
            kind = 'kxkxk' if op_code == 'conv3d' else '1xkxk'
            assert [kind_of(m) for m in op.op] == [nn.Conv3d, nn.BatchNorm3d, nn.ReLU]
            assert (op.op[0].kernel_size, op.op[0].padding, op.op[0].stride) == (*KERNEL[kind], (1, s, s))
        elif op_code == 'convp3d':
            assert [kind_of(m) for m in op.op] == [nn.Conv3d, nn.Conv3d, nn.BatchNorm3d, nn.ReLU]
            assert (op.op[0].kernel_size, op.op[0].padding, op.op[0].stride) == (*KERNEL['1xkxk'], (1, s, s))
            assert (op.op[1].kernel_size, op.op[1].padding, op.op[1].stride) == (*KERNEL['kx1x1'], (1, 1, 1))
            assert op.op[1].in_channels == op.op[1].out_channels == op.op[0].out_channels
        else:
            kinds = CAKES_KINDS[op_code.replace('_dropout', '')]
            assert len(op.convs) == len(kinds)
            for conv, kind in zip(convs, kinds):
                assert (conv.kernel_size, conv.padding, conv.stride) == (*KERNEL[kind], (1, s, s))
            bn = op.norm if op_code.endswith('_dropout') else op.out[0]
            assert isinstance(bn, nn.BatchNorm3d) and bn.num_features == len(kinds) * block_widths('resnet50')[i]


@pytest.mark.parametrize('op_code', ['conv3d', 'conv1_2_3d'])
def test_feature_map_shapes_at_224(op_code):
    """No temporal stride anywhere; 224 input gives 56/28/14/7 maps and a 7x7 map before pooling."""
    shapes = {}
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=4, op_code=op_code).eval()
        base = model.base_model
        for name in ('conv1', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4', 'fc'):
            base.get_submodule(name).register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, (tuple(i[0].shape), tuple(o.shape))))
        out = model(torch.zeros(2, 4 * 3, 224, 224))
    assert out.shape == (2, 174)
    assert shapes['conv1'] == ((2, 3, 4, 224, 224), (2, 64, 4, 112, 112))
    assert shapes['maxpool'][1] == (2, 64, 4, 56, 56)
    assert shapes['layer1'][1] == (2, 256, 4, 56, 56)
    assert shapes['layer2'][1] == (2, 512, 4, 28, 28)
    assert shapes['layer3'][1] == (2, 1024, 4, 14, 14)
    assert shapes['layer4'][1] == (2, 2048, 4, 7, 7)
    assert shapes['fc'][0] == (2 * 4, 2048)


@pytest.fixture(scope='module')
def conv2d_model():
    torch.manual_seed(0)
    model = TemporalModel(num_class=6, num_segments=2, op_code='conv2d', dropout=0.3, pretrained=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.05)
    return model.eval()


def test_pooling_equals_avgpool7_at_224(conv2d_model):
    captured = {}
    base = conv2d_model.base_model
    hooks = [base.layer4.register_forward_hook(lambda m, i, o: captured.__setitem__('maps', o)),
             base.fc.register_forward_hook(lambda m, i, o: captured.__setitem__('features', i[0]))]
    try:
        with torch.no_grad():
            conv2d_model.num_segments = 1
            conv2d_model(torch.randn(1, 3, 224, 224))
    finally:
        conv2d_model.num_segments = 2
        for h in hooks:
            h.remove()
    maps = captured['maps']
    assert maps.shape == (1, 2048, 1, 7, 7)
    pooled = F.avg_pool2d(maps.transpose(1, 2).flatten(0, 1), 7).flatten(1)
    torch.testing.assert_close(captured['features'], pooled)


def test_clip_logits_average_the_frame_logits(conv2d_model):
    """(B, T*3, H, W) is T RGB frames in order: with a purely 2D op in eval mode each frame is independent,
    so the clip logits are the mean of the logits of each frame alone."""
    x = torch.randn(2, 2 * 3, 64, 64)
    with torch.no_grad():
        clip = conv2d_model(x)
        conv2d_model.num_segments = 1
        try:
            frames = [conv2d_model(x[:, 3 * t:3 * t + 3]) for t in range(2)]
        finally:
            conv2d_model.num_segments = 2
    assert not torch.allclose(frames[0], frames[1])
    torch.testing.assert_close(clip, (frames[0] + frames[1]) / 2, rtol=1e-5, atol=1e-6)


def test_temporal_ops_mix_frames():
    """conv3d does look across time: changing frame 2 changes what frame 1's features contribute."""
    torch.manual_seed(0)
    model = TemporalModel(num_class=6, num_segments=2, op_code='conv3d', dropout=0, pretrained=None).eval()
    features = []
    model.base_model.fc.register_forward_hook(lambda m, i, o: features.append(i[0]))
    x = torch.randn(1, 2 * 3, 64, 64)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
        model(y)
    # Row 0 is frame 0 of the clip: its input is identical in x and y, its features are not.
    assert not torch.allclose(features[0][0], features[1][0])


# ----------------------------------------------------------------------------- widths

def test_default_widths_without_search_or_config():
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='conv1_2_3d')
    widths = [[branch[0].out_channels for branch in op.convs] for op in model.cakes_ops()]
    assert widths[0] == [22, 21, 21]
    assert widths[3] == [44, 42, 42]
    assert widths[7] == [86, 85, 85]
    assert widths[13] == [172, 170, 170]
    for op, width in zip(model.cakes_ops(), block_widths('resnet50')):
        assert op.out[0].num_features == width
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='convst')
    assert [branch[0].out_channels for branch in model.cakes_ops()[0].convs] == [32, 32]


def test_search_widths_and_conv3_inputs():
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='conv1_2_3d', search=True)
    block = model.base_model.layer2[0]
    assert [b[0].out_channels for b in block.convT.convs] == [128, 128, 128]
    assert block.convT.out[0].num_features == 384
    assert block.conv3.in_channels == 384


def test_config_widths_by_branch_name():
    conf = RELEASED['CAKES123D_C']   # dicts list '1xkxk' first: branch order must not follow them
    with torch.device('meta'):
        model = TemporalModel(num_class=174, num_segments=8, op_code='conv1_2_3d', conv_config=conf)
    for op, entry in zip(model.cakes_ops(), conf):
        expected = [(kind, entry[kind]) for kind in CAKES_KINDS['conv1_2_3d'] if entry[kind] > 0]
        got = [({v[0]: k for k, v in KERNEL.items()}[b[0].kernel_size], b[0].out_channels) for b in op.convs]
        assert got == expected


# ----------------------------------------------------------------------------- errors

def test_check_config_accepts_the_released_configs():
    for name, code in (('CAKES12D_P', 'conv1_2d'), ('CAKES12D_C', 'conv1_2d'), ('CAKES23D_P', 'convst'),
                       ('CAKES23D_C', 'convst'), ('CAKES123D_P', 'conv1_2_3d'), ('CAKES123D_C', 'conv1_2_3d')):
        ops.check_config(code, RELEASED[name], block_widths('resnet50'))


def test_check_config_wrong_number_of_blocks():
    conf = RELEASED['CAKES23D_P']
    with pytest.raises(UsageError, match='16'):
        ops.check_config('convst', conf[:-1], block_widths('resnet50'))
    with pytest.raises(UsageError):
        ops.check_config('convst', conf + conf[-1:], block_widths('resnet50'))
    with torch.device('meta'), pytest.raises(UsageError):
        TemporalModel(num_class=174, num_segments=8, op_code='convst', conv_config=conf[:-1])


@pytest.mark.parametrize('block', [0, 5, 15])
def test_check_config_widths_must_sum_to_block_width(block):
    conf = [dict(entry) for entry in RELEASED['CAKES123D_P']]
    conf[block]['kxkxk'] += 1
    with pytest.raises(UsageError) as info:
        ops.check_config('conv1_2_3d', conf, block_widths('resnet50'))
    assert re.search(rf'\bblock {block}\b', str(info.value)), str(info.value)
    assert str(block_widths('resnet50')[block]) in str(info.value)
    with torch.device('meta'), pytest.raises(UsageError):
        TemporalModel(num_class=174, num_segments=8, op_code='conv1_2_3d', conv_config=conf)


def test_check_config_negative_width():
    conf = [dict(entry) for entry in RELEASED['CAKES12D_P']]
    conf[2] = {'1xkxk': 70, 'kx1x1': -6}
    with pytest.raises(UsageError, match=r'\bblock 2\b'):
        ops.check_config('conv1_2d', conf, block_widths('resnet50'))


def test_check_config_unknown_branch_name():
    conf = [dict(entry) for entry in RELEASED['CAKES23D_P']]
    conf[4] = {'kxkxk': 64, '3x3x3': 64}
    with pytest.raises(UsageError) as info:
        ops.check_config('convst', conf, block_widths('resnet50'))
    assert '3x3x3' in str(info.value)
    # A branch the op code does not have (kx1x1 in a convst config) is unknown too.
    conf[4] = {'kxkxk': 64, 'kx1x1': 64}
    with pytest.raises(UsageError):
        ops.check_config('convst', conf, block_widths('resnet50'))


@pytest.mark.parametrize('op_code', ['conv3d', 'conv2d', 'convp3d', 'convst_dropout', 'conv1_2_3d_dropout'])
def test_config_for_a_non_cakes_op_code(op_code):
    conf = RELEASED['CAKES123D_P']
    with pytest.raises(UsageError) as info:
        ops.check_config(op_code, conf, block_widths('resnet50'))
    assert op_code in str(info.value)
    with torch.device('meta'), pytest.raises(UsageError):
        TemporalModel(num_class=174, num_segments=8, op_code=op_code, conv_config=conf)


def test_unknown_op_code_names_the_known_codes():
    with pytest.raises(UsageError) as info:
        ops.op_spec('conv4d')
    for code in ALL_OP_CODES:
        assert code in str(info.value)
    assert 'conv4d' in str(info.value)
    with torch.device('meta'), pytest.raises(UsageError) as info:
        TemporalModel(num_class=174, num_segments=8, op_code='conv4d')
    for code in ALL_OP_CODES:
        assert code in str(info.value)
