"""The two examples end to end on tiny settings: every stage runs and the result table adds up."""
import importlib.util
import os
import re
import sys

import pytest

from cakes import convert
from cakes.cli import run_cli
from cakes.data.lists import LAYOUTS

pytestmark = pytest.mark.usefixtures('single_thread')

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples')


def load(name):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(out):
    """{'original': (score, params, GFLOPs), 'CAKES': ...} from the closing table."""
    rows = re.findall(r'^(original|CAKES) +([\d.]+) +([\d,]+) +([\d.]+)$', out, re.M)
    return {label: (float(s), int(p.replace(',', '')), float(g)) for label, s, p, g in rows}


def check_run(out, converted, config_path):
    rows = table(out)
    assert set(rows) == {'original', 'CAKES'}
    assert rows['CAKES'][1] < rows['original'][1] and rows['CAKES'][2] < rows['original'][2]
    assert converted in out and 'pruned widths:' in out
    config = convert.load_config(config_path)
    assert all(f'  {name}: ' in out for name in config)


def test_volumetric_segmentation(tmp_path, capsys):
    pytest.importorskip('monai')
    example = load('volumetric_segmentation')
    config = str(tmp_path / 'unet.json')
    example.main(['--size', '16', '--train', '2', '--val', '1', '-b', '2', '--epochs', '1', '--search_epochs', '1',
                  '--retrain_epochs', '1', '--config', config])
    out = capsys.readouterr().out
    check_run(out, '7 of 13 3D convolutions converted', config)
    assert re.search(r'^skipped +model\.1\.submodule\.2\.0\.conv +transposed convolution$', out, re.M)
    assert 'kxkxk 16, 1xkxk 16, kx1x1 16, kx1xk 16, kxkx1 16, 1xkx1 16, 1x1xk 16' in out


def test_video_any_backbone(data, tmp_path, capsys):
    example = load('video_any_backbone')
    config = str(tmp_path / 'r3d.json')
    # The search stops as soon as the config settles: a threshold every distance lies below, one in a row.
    example.main(['--data', data, '--num_segments', '2', '--input_size', '32', '-b', '2', '--epochs', '1',
                  '--search_epochs', '3', '--stop_when_stable', '0.99', '--stable_for', '1', '--retrain_epochs', '1',
                  '--config', config])
    out = capsys.readouterr().out
    assert len(open(os.path.join(data, LAYOUTS['somethingv1'].train_list)).readlines()) == 4  # data reused
    check_run(out, '16 of 20 3D convolutions converted', config)
    assert 'supernet kxkxk 512, 1xkxk 512, kx1x1 512' in out
    assert re.search(r'^search epoch 2: \d+\.\d\d% of the channels changed kept/dropped state$', out, re.M)
    assert 'search epoch 3' not in out and '\nsupernet: 2 epochs, ' in out
    assert ('search stopped after epoch 2 of 3: the config settled (distance below 0.99 at 1 validation point in a row)'
            ', saving 1 epoch (33%)') in out


def test_bad_flags_are_one_line(capsys):
    example = load('volumetric_segmentation')
    with pytest.raises(SystemExit) as exit_info:
        run_cli(example.main, ['--size', '10'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: --size must be a positive multiple of 4; --train, --val and -b at least 1\n'
    with pytest.raises(SystemExit) as exit_info:
        run_cli(example.main, ['--stop_when_stable', '1.5'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --stop_when_stable 1.5 must lie strictly between 0 and 1') and err.count('\n') == 1
