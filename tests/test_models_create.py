"""create_model, the one way to build a video network: a description's fields as keywords, every form of
conv_config, main.py's defaults, one-line errors, and `cakes.create_model` without loading torch at `import cakes`."""
import json
import os
import subprocess
import sys

import pytest
import torch

import main
from cakes.configs import RELEASED
from cakes.errors import UsageError
from cakes.models import TemporalModel, create_model, describe
from cakes.models.factory import defaults

NETWORK_FLAGS = ('op_code', 'conv_config', 'num_segments', 'arch', 'search', 'dropout')


def layout(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def meta(**fields):
    with torch.device('meta'):
        return create_model(**fields)


def test_the_defaults_are_the_released_flags():
    """What main.py builds when no network flag is given (its --conv_config '' is no config); pretrained stays
    None: rebuilding a checkpoint's network must not download ImageNet weights it then replaces."""
    parser = main.build_parser()
    released = {flag: parser.get_default(flag) for flag in NETWORK_FLAGS}
    released['conv_config'] = released['conv_config'] or None
    assert {flag: defaults()[flag] for flag in NETWORK_FLAGS} == released
    assert defaults()['pretrained'] is None and defaults()['num_class'] == 174
    with torch.device('meta'):
        released_model = TemporalModel(174, 8, op_code='conv3d', backbone='resnet50', dropout=0.3)
    assert layout(meta()) == layout(released_model)


def test_every_form_of_conv_config_builds_the_same_network(tmp_path):
    widths = RELEASED['CAKES23D_P']
    path = tmp_path / 'conv_config.txt'
    path.write_text(str(widths))
    mine = {'MINE': widths}
    expected = layout(meta(op_code='convst', conv_config=widths))
    for form, configs in [('CAKES23D_P', None), ('MINE', mine), (str(path), None), (path, None)]:
        assert layout(meta(op_code='convst', conv_config=form, configs=configs)) == expected, form
    assert expected != layout(meta(op_code='convst'))  # equal widths: another network
    assert layout(meta(op_code='convst', conv_config='')) == layout(meta(op_code='convst', conv_config=None))
    conv2 = [k for k, _ in expected if k.startswith('base_model.layer1.0.convT.convs')]
    assert [dict(expected)[k][0] for k in conv2 if k.endswith('0.weight')] == [41, 23]  # block 0: 3D 41, 2D 23


def test_your_configs_are_the_ones_passed_in():
    """The library never reads a config.py: a name of your configs resolves only when they are given."""
    with pytest.raises(UsageError, match="unknown --conv_config 'MINE'"):
        meta(op_code='convst', conv_config='MINE')


def test_a_description_rebuilds_the_network_it_describes():
    description = describe('conv1_2_3d', False, RELEASED['CAKES123D_P'], 'resnet50', 2, 0, [f'c{i}' for i in range(5)],
                           input_size=48)
    torch.manual_seed(0)
    model = create_model(**description)
    rebuilt = create_model(**description)
    assert layout(rebuilt) == layout(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert model.num_segments == 2 and not hasattr(model, 'new_fc') and model.base_model.fc.out_features == 5
    convs = [k for k, _ in layout(model) if k.startswith('base_model.layer4.2.convT.convs')]
    assert [dict(layout(model))[k][0] for k in convs if k.endswith('0.weight')] == [337, 83, 92]  # the last block


BAD = [
    (dict(op_code='conv9d'), "unknown op code 'conv9d'"),
    (dict(arch='resnet18'), "unknown arch 'resnet18': choose one of resnet50, resnet101"),
    (dict(num_segments=0), 'num_segments must be an integer of at least 1, not 0'),
    (dict(num_class=2.5), 'num_class must be an integer of at least 1, not 2.5'),
    (dict(dropout=1.5), 'dropout 1.5 is a probability'),
    (dict(dropout='0.3'), 'dropout 0.3 is a probability'),
    (dict(op_code='convst', search=True, conv_config='CAKES23D_P'), 'a search supernet has every channel'),
    (dict(op_code='convst', conv_config='CAKES12D_P'), "conv_config block 0: {'1xkxk': 32, 'kx1x1': 32} must map"),
    (dict(op_code='convst', conv_config={'kxkxk': 64}), 'give a config name, a conv_config.txt or a list'),
    (dict(num_class=3, class_names=['a', 'b']), '2 class names for 3 classes'),
    (dict(backbone='resnet50'), "create_model has no argument 'backbone': its arguments are op_code, conv_config, "),
]


@pytest.mark.parametrize('fields, message', BAD, ids=[str(f) for f, _ in BAD])
def test_bad_arguments_are_one_line(fields, message):
    with pytest.raises(UsageError) as error:
        meta(**fields)
    assert message in str(error.value) and '\n' not in str(error.value)


def test_import_cakes_loads_no_torch_and_create_model_comes_on_first_use():
    probe = ("import sys, json, cakes\nbefore = 'torch' in sys.modules\nimport torch\nwith torch.device('meta'):\n"
             "    model = cakes.create_model(num_class=3, num_segments=1, dropout=0)\n"
             "from cakes.models import create_model\n"
             "print(json.dumps([before, cakes.create_model is create_model, model.base_model.fc.out_features]))")
    out = subprocess.run([sys.executable, '-c', probe], check=True, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    assert json.loads(out) == [False, True, 3]
    with pytest.raises(AttributeError, match="no attribute 'create_modle'"):
        import cakes
        cakes.create_modle


def test_every_program_builds_its_network_by_create_model():
    """main.py, predict.py, the scripts, the package and README's example call create_model; only cakes/models
    (the factory, the class itself) names TemporalModel's constructor."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = []
    for folder, _, names in os.walk(repo):
        relative = os.path.relpath(folder, repo)
        if relative.split(os.sep)[0] in ('tests', '.venv', '.git', 'build') or relative == os.path.join('cakes',
                                                                                                         'models'):
            continue
        for name in names:
            if name.endswith(('.py', '.md', '.sh')):
                with open(os.path.join(folder, name), encoding='utf-8') as f:
                    found += [f'{os.path.join(relative, name)}:{n}' for n, line in enumerate(f, 1)
                              if 'TemporalModel(' in line]
    assert found == []
