"""Pictures: kernel mix per block (cakes.plot, scripts/plot_config.py), the TensorBoard picture of a search, and
the accuracy/cost plot of evaluated checkpoints (scripts/pareto.py)."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import RUN, run_main
from conftest_data import load_script
from conftest_scale import read_events
from cakes import ops
from cakes.complexity import count_flops, count_params
from cakes.conv_config import conv_configs
from cakes.files import save_atomic
from cakes.models.checkpoint import released_state
from cakes.errors import UsageError
from cakes.models import TemporalModel, describe
from cakes.plot import config_figure, describe_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASED = ['CAKES12D_P', 'CAKES12D_C', 'CAKES23D_P', 'CAKES23D_C', 'CAKES123D_P', 'CAKES123D_C']
COMPLEXITY = {(row['op_code'], row['conv_config']): row
              for row in json.load(open(os.path.join(REPO, 'tests', 'data', 'complexity.json')))}
PNG = b'\x89PNG\r\n\x1a\n'


def test_panels_show_each_block_share_and_the_released_complexity():
    entries = [describe_config(key, conv_configs()[key]) for key in RELEASED]
    for entry in entries:
        row = COMPLEXITY[(entry['op_code'], entry['name'])]
        assert (entry['params'], entry['flops']) == (row['params'], row['flops_8f'])
    figure = config_figure(entries)
    axes = figure.axes
    assert len(axes) == 6
    for ax, entry in zip(axes, entries):
        kinds = ops.op_spec(entry['op_code']).kinds
        assert len(ax.containers) == len(kinds) and all(len(bars) == 16 for bars in ax.containers)
        tops = [max(bar.get_y() + bar.get_height() for bar in block) for block in zip(*ax.containers)]
        assert tops == pytest.approx([1.0] * 16)
        first = ax.containers[0][0].get_height()
        block = conv_configs()[entry['name']][0]
        assert first == pytest.approx(block[kinds[0]] / sum(block.values()))
        title = ax.get_legend().get_title().get_text()
        assert entry['name'] in title and f"{entry['flops'] / 1e9:.2f} GFLOPs" in title
        assert len([line for line in ax.get_lines() if line.get_linestyle() == '--']) == 3  # stage boundaries


def test_plot_config_draws_keys_files_and_checkpoints(tmp_path, capsys):
    plot_config = load_script('plot_config')
    out = tmp_path / 'six.png'
    plot_config.main([*RELEASED, '--out', str(out)])
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 20000
    assert 'CAKES123D_P 33.51 M params 87.23 GFLOPs' in capsys.readouterr().out

    # A supernet checkpoint (no description): the widths pruning would choose, read off its BN scales.
    torch.manual_seed(0)
    supernet = TemporalModel(5, 2, op_code='convst_dropout', search=True)
    with torch.no_grad():
        for op in supernet.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
    path = str(tmp_path / 'RUN_checkpoint.pth.tar')
    save_atomic({'state_dict': released_state(supernet)}, path)
    assert plot_config.load_config(path) == ('RUN', ops.prune_config(supernet.cakes_ops()), None, 5)
    config = ops.prune_config(supernet.cakes_ops())
    # A pruned network's checkpoint: its widths; with a description: the description's config.
    pruned = TemporalModel(5, 2, op_code='convst', conv_config=config)
    save_atomic({'state_dict': released_state(pruned)}, path)
    assert plot_config.load_config(path)[1] == config
    released = conv_configs()['CAKES23D_C']
    save_atomic({'description': describe('convst', False, released, 'resnet50', 16, 0.3, ['a', 'b'])}, path)
    assert plot_config.load_config(path)[1:] == (released, 16, 2)
    text = tmp_path / 'conv_config.txt'
    text.write_text(str(released))
    plot_config.main([str(text), path, '--out', str(out), '--num_segments', '16'])
    # at 16 frames (8: 82.39); the checkpoint's network has its own 2 classes, the text file the released 174
    assert 'conv_config.txt 35.70 M params 164.77 GFLOPs, RUN 35.34 M params 164.76 GFLOPs' in capsys.readouterr().out
    with pytest.raises(UsageError, match='neither a key'):
        plot_config.main(['NO_SUCH_KEY', '--out', str(out)])


@pytest.mark.parametrize('described', [False, True], ids=['released', 'described'])
def test_plot_config_counts_a_checkpoints_own_classes(tmp_path, capsys, described):
    plot_config = load_script('plot_config')
    config = conv_configs()['CAKES123D_P']
    with torch.device('meta'):
        network = TemporalModel(3, 2, op_code='conv1_2_3d', conv_config=config)
    path = str(tmp_path / 'RUN_best.pth.tar')
    if described:
        save_atomic({'description': describe('conv1_2_3d', False, config, 'resnet50', 2, 0.3, ['a', 'b', 'c'])}, path)
    else:
        state = {k: torch.zeros(v.shape) for k, v in released_state(network).items() if 'conv' in k or 'fc' in k}
        save_atomic({'state_dict': state}, path)
    plot_config.main([path, 'CAKES123D_P', '--out', str(tmp_path / 'p.png'), '--num_segments', '2'])
    printed = capsys.readouterr().out
    assert f'RUN {count_params(network) / 1e6:.2f} M params' in printed and 'CAKES123D_P 33.51 M params' in printed
    assert 33.51e6 - count_params(network) == pytest.approx(171 * (2048 + 1), abs=0.005e6)  # 171 classes fewer


@pytest.mark.parametrize('op_code', ['conv1_2_3d', 'conv1_2d_dropout'])
def test_a_search_logs_the_kernel_mix_picture_at_every_validation_point(data, tmp_path, op_code, capsys,
                                                                      single_thread):
    extra = ['-sr', '--reweight'] if op_code == 'conv1_2_3d' else []
    run_main(data, tmp_path, '--op_code', op_code, '--search', '--epochs', '2', *extra)
    images = [(e.step, v.image) for e in read_events(tmp_path / 'log' / f'{RUN}_tb') for v in e.summary.value
              if v.tag == 'prune/conv_config']
    assert [step for step, _ in images] == [1, 3]  # the last iteration of epochs 0 and 1 (2 per epoch)
    for _, image in images:
        assert image.encoded_image_string[:8] == PNG and image.width > 500 and image.height > 100


def test_pareto_counts_accuracy_and_cost_of_each_run(tmp_path, capsys):
    pareto = load_script('pareto')
    labels = np.array([0, 1, 2, 1])
    scores = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]  # 3 of 4 right
    np.savez(tmp_path / 'scores.npz', ids=np.array(['a', 'b', 'c', 'd']), labels=labels, scores=scores)
    ckpt = str(tmp_path / 'I3D_x_best.pth.tar')
    save_atomic({'description': describe('conv1_2_3d', False, conv_configs()['CAKES123D_P'], 'resnet50', 8, 0.3,
                                         [f'c{i}' for i in range(174)])}, ckpt)
    point = pareto.run_point(str(tmp_path / 'scores.npz'), ckpt)
    row = COMPLEXITY[('conv1_2_3d', 'CAKES123D_P')]
    assert (point['top1'], point['videos'], point['params'], point['flops']) == (75.0, 4, row['params'],
                                                                                   row['flops_8f'])
    published = pareto.published_points()
    assert len(published) == 6 and {p['flops'] for p in published} >= {row['flops_8f'], row['flops_16f']}
    out = tmp_path / 'pareto.png'
    pareto.main(['--run', str(tmp_path / 'scores.npz'), ckpt, '--out', str(out)])
    assert out.read_bytes()[:8] == PNG and 'I3D_x 8f: top-1 75.000 over 4 videos' in capsys.readouterr().out
    # A released checkpoint: the model flags and its classifier's classes (10 here) build its network.
    released = str(tmp_path / 'released.pth.tar')
    with torch.device('meta'):
        network = TemporalModel(10, 8, op_code='conv1_2_3d', conv_config=conv_configs()['CAKES123D_P'])
    save_atomic({'state_dict': {'module.' + k: torch.zeros(v.shape) if k == 'new_fc.weight' else torch.zeros(1)
                                for k, v in network.state_dict().items()}}, released)
    flags = pareto.parse_args(['--run', 's', 'c', '--out', 'o', '--op_code', 'conv1_2_3d', '--conv_config',
                               'CAKES123D_P'])
    point = pareto.run_point(str(tmp_path / 'scores.npz'), released, flags=flags)
    assert (point['params'], point['flops']) == (count_params(network), count_flops(network, 8))
    np.savez(tmp_path / 'bad.npz', labels=labels)
    with pytest.raises(UsageError, match="'scores'"):
        pareto.main(['--run', str(tmp_path / 'bad.npz'), ckpt, '--out', str(out)])
