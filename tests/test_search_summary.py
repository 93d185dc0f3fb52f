"""The line a search prints at every validation point: how many BN scales are small, per kind, and the kernel mix
pruning would keep now."""
import os

import pytest
import torch

from conftest import RUN, run_main
from cakes.models.checkpoint import load_checkpoint, load_weights, model_state
from cakes.models import create_model, read_description
from cakes.ops import DropoutSupernetOp
from cakes.ops.search import search_summary

VIDEO_KINDS = ('kxkxk', '1xkxk', 'kx1x1')


def op_with_scales(scales):
    op = DropoutSupernetOp(VIDEO_KINDS, 2, 4, 1)
    with torch.no_grad():
        op.norm.weight.copy_(torch.tensor(scales))
    return op


def test_the_summary_counts_small_scales_per_kind_and_the_kept_mix():
    # small: under 1% of the op's largest |scale|. Op 1 (largest 1): 3D 1, 2D 2, 1D 2 small; it keeps the
    # 4 largest, 3D 2 and 1D 2. Op 2 (largest 4): 3D 1, 1D 4 small (0.01 < 0.04); it keeps 2D 4.
    ops = [op_with_scales([1, -1, 0.005, 0.5, 0.001, 0.2, 0.3, -0.004, 0.009, 0.0, 0.6, 0.7]),
           op_with_scales([2, 2, 2, 0.001, 4, 4, 4, -4, 0.01, 0.01, 0.01, 0.01])]
    assert search_summary(ops) == ("Search: channels of small |BN scale| (< 1% of their layer's largest) "
                                   '3D 25% 2D 25% 1D 75%; the kernel mix pruning would keep now 3D 25% 2D 50% 1D 25%')


@pytest.mark.parametrize('op_code, extra', [('conv1_2_3d', ['-sr', '--reweight']), ('conv1_2d_dropout', [])],
                         ids=['sparsity', 'dropout'])
def test_a_search_prints_and_logs_it_at_validation_points_only(data, tmp_path, capsys, single_thread, op_code,
                                                                extra):
    run_main(data, tmp_path, '--op_code', op_code, '--search', '--epochs', '2', '--eval-freq', '2', *extra)
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if line.startswith('Search: channels ')]
    assert len(lines) == 1  # after epoch 2, not after epoch 1
    after = printed[printed.index(lines[0]) - 1]
    assert after.startswith('Epoch: [1]')
    # The config is measured at the same points, the dropout supernet's too (which does not validate).
    assert printed[printed.index(lines[0]) + 1].startswith('Search: config recorded after epoch 2 (')
    assert ('Testing Results' in '\n'.join(printed)) == (op_code == 'conv1_2_3d')
    checkpoint = load_checkpoint(str(tmp_path / 'checkpoint' / f'{RUN}_checkpoint.pth.tar'))
    model = create_model(**read_description(checkpoint))
    load_weights(model, model_state(checkpoint))
    assert lines[0] == search_summary(model.cakes_ops())  # the weights saved right after it
    with open(os.path.join(tmp_path, 'log', f'{RUN}.csv')) as f:
        assert f.read().count(lines[0]) == 1
