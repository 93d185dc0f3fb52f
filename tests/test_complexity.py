"""Parameter and FLOP counts (tests/data/complexity.json) and the scripts/complexity.py command line."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from cakes.configs import RELEASED
from cakes.models import TemporalModel
from cakes.complexity import count_flops, count_params

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


def load_script_module():
    spec = importlib.util.spec_from_file_location('complexity_script', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_accepts_a_conv_config_file(tmp_path, capsys):
    """A conv_config.txt (the list --prune prints) counts the same as the config.py key."""
    row = next(r for r in ROWS if r['conv_config'] == 'CAKES12D_C')
    path = tmp_path / 'conv_config.txt'
    path.write_text(repr(RELEASED['CAKES12D_C']))
    script = load_script_module()
    script.main(['--op_code', row['op_code'], '--conv_config', str(path), '--json'])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {'params': row['params'], 'flops': row['flops_8f']}
