"""Parameter and FLOP counts (tests/data/complexity.json, the reference counts of the released code's nine
settings: see tests/data/README.md), each row derived here by hand from the network's definition, and the
scripts/complexity.py command line."""
import json
import os
import subprocess
import sys

import pytest
import torch

from cakes.configs import RELEASED
from cakes.models import TemporalModel
from cakes.complexity import count_flops, count_params
from cakes.ops.forward import eval_forward
from conftest_data import load_script

pytestmark = pytest.mark.usefixtures('single_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'complexity.py')
with open(os.path.join(ROOT, 'tests', 'data', 'complexity.json')) as f:
    ROWS = json.load(f)
ROW_IDS = [f"{row['op_code']}-{row['conv_config'] or 'default'}" for row in ROWS]


def meta_model(row, num_segments):
    conv_config = RELEASED[row['conv_config']] if row['conv_config'] else None
    with torch.device('meta'):
        return TemporalModel(num_class=174, num_segments=num_segments, op_code=row['op_code'],
                             conv_config=conv_config, backbone='resnet50', dropout=0.3, pretrained=None)


# Kernel volume of each sub-kernel kind (3x3x3, 1x3x3, 3x1x1).
KERNEL_VOLUME = {'kxkxk': 27, '1xkxk': 9, 'kx1x1': 3}
# The 3x3 operation of each plain op code, its convolutions' kinds (C to C channels): convp3d is 1x3x3 then 3x1x1.
PLAIN_OPS = {'conv3d': ['kxkxk'], 'conv2d': ['1xkxk'], 'convp3d': ['1xkxk', 'kx1x1']}
with open(os.path.join(ROOT, 'tests', 'data', 'conv_configs.json')) as f:
    REFERENCE_CONFIGS = json.load(f)


def hand_count(op_code, config, frames, size=224, classes=174):
    """(params, FLOPs) of the I3D ResNet-50 by its layer table. A bias-free Conv3d from Cin to Cout channels has
    Cout * Cin * kernel volume parameters and, as FlopCounterMode counts it, 2 * Cout * Cin * kernel volume FLOPs at
    every output position (frames x height x width; padding changes nothing). A BN has 2 * C parameters (its
    running statistics are buffers); BN, ReLU, pooling and the mean over frames count no FLOPs. The classifier,
    Linear(2048, classes) with bias, runs on each frame's pooled features: 2 * frames * 2048 * classes FLOPs."""
    totals = [0, 0]

    def conv(cin, cout, volume, side):
        totals[0] += cout * cin * volume
        totals[1] += 2 * cout * cin * volume * frames * side * side

    def bn(channels):
        totals[0] += 2 * channels

    conv(3, 64, 1 * 7 * 7, size // 2)  # conv1, stride (1, 2, 2)
    bn(64)
    side, cin = size // 4, 64  # after the (1, 3, 3) max pool of stride (1, 2, 2)
    configs = iter(config or [])
    for layer, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        for block in range(blocks):
            out_side = side // 2 if layer and not block else side  # layers 2-4 start at spatial stride 2
            conv(cin, width, 1, side)  # conv1 1x1x1, before the stride
            bn(width)
            if op_code in PLAIN_OPS:
                for kind in PLAIN_OPS[op_code]:
                    conv(width, width, KERNEL_VOLUME[kind], out_side)
            else:  # CAKES: each branch reads all `width` inputs and writes its share of the outputs
                for kind, channels in next(configs).items():
                    conv(width, channels, KERNEL_VOLUME[kind], out_side)
            bn(width)  # the 3x3 operation's BN
            conv(width, 4 * width, 1, out_side)  # conv3
            bn(4 * width)
            if block == 0:  # downsample: 1x1x1 conv at the block's stride, BN
                conv(cin, 4 * width, 1, out_side)
                bn(4 * width)
            cin, side = 4 * width, out_side
    totals[0] += 2048 * classes + classes
    totals[1] += 2 * frames * 2048 * classes
    return tuple(totals)


@pytest.mark.parametrize('row', ROWS, ids=ROW_IDS)
def test_reference_rows_are_the_hand_counts_of_the_network(row):
    config = REFERENCE_CONFIGS[row['conv_config']] if row['conv_config'] else None
    assert hand_count(row['op_code'], config, 8) == (row['params'], row['flops_8f'])
    assert hand_count(row['op_code'], config, 16) == (row['params'], row['flops_16f'])


def test_reference_rows():
    assert len(ROWS) == 9
    assert {row['op_code'] for row in ROWS} == {'conv3d', 'conv2d', 'convp3d', 'conv1_2d', 'convst', 'conv1_2_3d'}


@pytest.mark.parametrize('row', ROWS, ids=ROW_IDS)
def test_params_and_flops_match_reference(row):
    model8 = meta_model(row, 8)
    assert count_params(model8) == row['params']
    assert count_flops(model8, 8) == row['flops_8f']
    model16 = meta_model(row, 16)
    assert count_params(model16) == row['params']
    assert count_flops(model16, 16) == row['flops_16f']


def test_count_flops_keeps_the_training_mode():
    model = meta_model(ROWS[1], 8)
    model.train()
    count_flops(model, 8)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    count_flops(model, 8)
    assert not any(m.training for m in model.modules())


def test_an_eval_forward_that_raises_leaves_no_hook_and_the_training_mode():
    """Shapes, FLOPs and conv-BN pairs are read off one eval forward; a forward that fails (a wrong input) must
    not leave the model in eval mode or with hooks that would fire in every later step."""
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4)).train()
    seen = []
    with pytest.raises(RuntimeError):
        eval_forward(model, torch.zeros(1, 5, 4, 4, 4), pre_hooks=[(model[0], lambda m, a: seen.append(m))],
                     hooks=[(model[1], lambda m, a, out: seen.append(m))])
    assert model.training and model[1].training and seen == [model[0]]
    model(torch.zeros(1, 3, 4, 4, 4))
    assert seen == [model[0]]
    out = eval_forward(model, torch.zeros(1, 3, 4, 4, 4), hooks=[(model[1], lambda m, a, out: seen.append(m))])
    assert out.shape == (1, 4, 2, 2, 2) and not out.requires_grad and seen == [model[0], model[1]]
    assert model.training


def test_count_flops_on_cpu_equals_meta():
    """The meta-device shortcut counts what a real forward computes (small input to stay cheap)."""
    row = ROWS[7]  # conv1_2_3d CAKES123D_P
    torch.manual_seed(0)
    cpu_model = TemporalModel(num_class=174, num_segments=2, op_code=row['op_code'],
                              conv_config=RELEASED[row['conv_config']], pretrained=None)
    assert count_flops(cpu_model, 2, input_size=64) == count_flops(meta_model(row, 2), 2, input_size=64)
    assert count_params(cpu_model) == row['params']


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(ROOT))


def test_script_json_line():
    row = next(r for r in ROWS if r['conv_config'] == 'CAKES123D_P')
    result = run_script('--op_code', row['op_code'], '--conv_config', row['conv_config'], '--num_segments', '16',
                        '--json')
    assert result.returncode == 0, result.stderr
    # --json prints the JSON line alone, so that programs can parse stdout as it is.
    assert json.loads(result.stdout) == {'params': row['params'], 'flops': row['flops_16f']}
    assert result.stdout.count('\n') == 1


def test_script_unknown_conv_config():
    result = run_script('--op_code', 'conv1_2_3d', '--conv_config', 'CAKES999D_X')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('error:')
    assert 'CAKES999D_X' in lines[0]
    for key in RELEASED:
        assert key in lines[0]
    assert 'Traceback' not in result.stderr


def test_script_accepts_a_conv_config_file(tmp_path, capsys):
    """A conv_config.txt (the list --prune prints) counts the same as the config.py key."""
    row = next(r for r in ROWS if r['conv_config'] == 'CAKES12D_C')
    path = tmp_path / 'conv_config.txt'
    path.write_text(repr(RELEASED['CAKES12D_C']))
    script = load_script('complexity')
    script.main(['--op_code', row['op_code'], '--conv_config', str(path), '--json'])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {'params': row['params'], 'flops': row['flops_8f']}
