"""Pruning to a FLOPs budget: lambda = 0 is the released rule, the target is never exceeded, a smaller target
never gives more FLOPs, targets out of reach are refused; --prune --target_gflops end to end."""
import ast
import os
import re
import shutil

import pytest
import torch

from conftest import run_main
from cakes import ops
from cakes.complexity import count_flops
from cakes.files import save_atomic
from cakes.models.checkpoint import released_state
from cakes.errors import UsageError
from cakes.models import TemporalModel, block_widths
from cakes.models.budget import prune_video_to_budget, video_costs, video_flops
from cakes.ops.search import kept_indices, prune_to_budget

FRAMES, SIZE, CLASSES = 2, 48, 5  # those of conftest's supernet


def released_rule(scale, n):
    """The released pruning rule: keep every channel whose |scale| is at least the int(total / n)-th largest."""
    values = scale.detach().abs()
    threshold = values.sort(descending=True).values[values.numel() // n - 1]
    return torch.nonzero(values >= threshold).flatten()


def counted(config):
    with torch.device('meta'):
        model = TemporalModel(CLASSES, FRAMES, op_code='conv1_2_3d', conv_config=config)
    return count_flops(model, FRAMES, SIZE)


def test_lambda_zero_is_the_released_rule(supernet):
    searchable = supernet.cakes_ops()
    for op in searchable:
        assert torch.equal(ops.kept_channels(op), released_rule(op.bn.weight, 3))
    costs = video_costs('conv1_2_3d', 'resnet50', FRAMES, SIZE)
    released = ops.prune_config(searchable)
    budget = prune_to_budget(searchable, costs, counted, counted(released) + 1)
    assert budget.lam == 0 and budget.config == released and budget.flops == counted(released)
    # Costs play no part at lambda 0: ties still go to the earlier channel.
    assert kept_indices(torch.ones(12), 3, torch.arange(12.0, 0, -1), 0.0).tolist() == [0, 1, 2, 3]


def test_the_budget_rule_trades_the_weakest_costly_channel_for_the_strongest_cheap_one():
    op = ops.CakesOp([('kxkxk', 3), ('kx1x1', 3)], 4, 1, search=True)
    with torch.no_grad():
        op.bn.weight.copy_(torch.tensor([1.0, -0.9, 0.8, 0.5, -0.6, 0.1]))
    costs = [{'kxkxk': 10, 'kx1x1': 1}]

    def flops(config):  # an affine network: 100 FLOPs besides the op
        return 100 + sum(w * costs[0][kind] for kind, w in config[0].items())

    def pruned(target):
        return prune_to_budget([op], costs, flops, target)

    assert (pruned(130).config, pruned(130).lam) == ([{'kxkxk': 3, 'kx1x1': 0}], 0.0)
    assert pruned(129).config == [{'kxkxk': 2, 'kx1x1': 1}] and pruned(129).flops == 121
    assert ops.kept_channels(op, costs[0], pruned(129).lam).tolist() == [0, 1, 4]  # 0.8 gave way to -0.6
    assert pruned(112).config == [{'kxkxk': 1, 'kx1x1': 2}] and pruned(103).flops == 103
    with pytest.raises(UsageError, match='out of reach'):
        pruned(102)


def test_a_budget_above_the_released_rule_is_spent_on_costlier_kernels():
    op = ops.CakesOp([('kxkxk', 3), ('kx1x1', 3)], 4, 1, search=True)
    with torch.no_grad():
        op.bn.weight.copy_(torch.tensor([0.2, -0.5, 0.1, 1.0, -0.9, 0.3]))
    costs = [{'kxkxk': 10, 'kx1x1': 1}]

    def flops(config):
        return 100 + sum(w * costs[0][kind] for kind, w in config[0].items())

    def pruned(target):
        return prune_to_budget([op], costs, flops, target)

    assert ops.prune_config([op]) == [{'kxkxk': 1, 'kx1x1': 2}]  # 112 FLOPs
    assert (pruned(120).config, pruned(120).lam) == ([{'kxkxk': 1, 'kx1x1': 2}], 0.0)  # one trade costs 9
    budget = pruned(125)
    assert budget.config == [{'kxkxk': 2, 'kx1x1': 1}] and budget.flops == 121 and budget.lam < 0
    assert ops.kept_channels(op, costs[0], budget.lam).tolist() == [0, 1, 3]  # -0.9 gave way to 0.2
    assert pruned(130).config == [{'kxkxk': 3, 'kx1x1': 0}] and pruned(130).flops == 130


def test_budgets_above_the_released_rule_reach_every_target_up_to_the_costliest(supernet):
    searchable = supernet.cakes_ops()
    costs = video_costs('conv1_2_3d', 'resnet50', FRAMES, SIZE)
    flops = video_flops('conv1_2_3d', 'resnet50', FRAMES, SIZE, CLASSES)
    released = counted(ops.prune_config(searchable))
    _, most = prune_video_to_budget(supernet, released, SIZE).reachable
    one_trade = max(max(c.values()) - min(c.values()) for c in costs)
    achieved = []
    for target in torch.linspace(released, most, 4).tolist()[1:]:
        budget = prune_to_budget(searchable, costs, flops, target)
        assert budget.flops == counted(budget.config) <= target and budget.lam < 0
        assert target - budget.flops <= one_trade
        assert [sum(b.values()) for b in budget.config] == block_widths('resnet50')
        achieved.append(budget.flops)
    assert achieved == sorted(achieved) and len(set(achieved)) == len(achieved) and achieved[-1] == most


def test_channel_costs_are_the_flops_of_one_output_channel():
    costs = video_costs('conv1_2_3d_dropout', 'resnet50', FRAMES, SIZE)
    # layer1.0 reads 64 channels of 12x12 (48 / 4); layer4.0 reads 512 and writes 2x2 (stride 2 from 3x3).
    assert costs[0] == {kind: 2 * 64 * volume * FRAMES * 12 * 12
                        for kind, volume in (('kxkxk', 27), ('1xkxk', 9), ('kx1x1', 3))}
    assert costs[13]['1xkxk'] == 2 * 512 * 9 * FRAMES * 2 * 2


def test_budgets_are_never_exceeded_and_smaller_targets_never_cost_more(supernet):
    searchable = supernet.cakes_ops()
    costs = video_costs('conv1_2_3d', 'resnet50', FRAMES, SIZE)
    flops = video_flops('conv1_2_3d', 'resnet50', FRAMES, SIZE, CLASSES)
    released = counted(ops.prune_config(searchable))
    fewest, _ = prune_video_to_budget(supernet, released, SIZE).reachable
    one_trade = max(max(c.values()) - min(c.values()) for c in costs)
    achieved = []
    for target in torch.linspace(released, fewest, 6).tolist()[1:]:
        budget = prune_to_budget(searchable, costs, flops, target)
        assert budget.flops == counted(budget.config) <= target
        assert target - budget.flops <= one_trade  # as close as one channel trade allows
        assert [sum(b.values()) for b in budget.config] == block_widths('resnet50')
        achieved.append(budget.flops)
    assert achieved == sorted(achieved, reverse=True) and len(set(achieved)) == len(achieved)
    # The video wrapper (model, frames, classes read off the supernet) agrees.
    assert prune_video_to_budget(supernet, (released + fewest) / 2, SIZE).config == \
        prune_to_budget(searchable, costs, flops, (released + fewest) / 2).config


def test_targets_out_of_reach_name_the_range(supernet):
    fewest, most = prune_video_to_budget(supernet, counted(ops.prune_config(supernet.cakes_ops())), SIZE).reachable
    assert most == counted([{'kxkxk': w, '1xkxk': 0, 'kx1x1': 0} for w in block_widths('resnet50')])
    assert fewest == counted([{'kxkxk': 0, '1xkxk': 0, 'kx1x1': w} for w in block_widths('resnet50')])
    for target in (fewest - 1, most + 1):
        reach = rf'out of reach.* from {fewest / 1e9:.3f} GFLOPs .* to {most / 1e9:.3f} GFLOPs'
        with pytest.raises(UsageError, match=reach):
            prune_video_to_budget(supernet, target, SIZE)


@pytest.fixture(scope='module')
def supernet_checkpoint(supernet, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('budget') / 'I3D_somethingv1_resnet50_segment2__best.pth.tar')
    save_atomic({'epoch': 1, 'arch': 'resnet50', 'state_dict': released_state(supernet), 'best_prec1': 0.0}, path)
    yield path
    shutil.rmtree(os.path.dirname(path))


def prune_cli(path, *extra):
    run_main('unused', os.path.dirname(path), '--op_code', 'conv1_2_3d', '--search', '--prune', '--prune_model_path',
             path, *extra)


def test_prune_to_target_gflops_prints_the_achieved_flops_and_writes_config_and_picture(
        supernet, supernet_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    released = counted(ops.prune_config(supernet.cakes_ops())) / 1e9
    target = round(released * 0.85, 3)
    prune_cli(supernet_checkpoint, '--target_gflops', str(target))
    printed = capsys.readouterr().out
    line = re.search(r'pruned network ([\d.]+) GFLOPs, ([\d.]+) below the target', printed)
    achieved, gap = map(float, line.groups())
    config = ast.literal_eval(open(tmp_path / 'conv_config.txt').read())
    assert achieved == pytest.approx(counted(config) / 1e9, abs=5e-4) and achieved <= target
    assert gap == pytest.approx(target - achieved, abs=2e-3)
    picture = supernet_checkpoint.replace('_best.pth.tar', f'_conv_config_{target:g}gflops.png')
    assert f'kernel mix picture written to {picture}' in printed
    assert open(picture, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    # beside the supernet under the budget's own name: RUN_conv_config.txt stays what --finetune reads
    assert ast.literal_eval(open(picture.replace('.png', '.txt')).read()) == config
    assert not os.path.exists(supernet_checkpoint.replace('_best.pth.tar', '_conv_config.txt'))


def test_prune_to_a_target_above_the_released_rule_spends_it(supernet, supernet_checkpoint, tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.chdir(tmp_path)
    released = counted(ops.prune_config(supernet.cakes_ops())) / 1e9
    target = round(released * 1.2, 3)
    prune_cli(supernet_checkpoint, '--target_gflops', str(target))
    printed = capsys.readouterr().out
    line = re.search(r'pruned network ([\d.]+) GFLOPs, ([\d.]+) below the target .*lambda (-[\d.]+) per GFLOP: '
                     r'costlier kernels spend the budget\)', printed)
    achieved = float(line.group(1))
    config = ast.literal_eval(open(tmp_path / 'conv_config.txt').read())
    assert achieved == pytest.approx(counted(config) / 1e9, abs=5e-4) and released < achieved <= target


def test_prune_with_a_width_multiple_alone_and_with_a_budget(supernet_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prune_cli(supernet_checkpoint, '--width_multiple', '16')
    capsys.readouterr()
    config = ast.literal_eval(open(tmp_path / 'conv_config.txt').read())
    assert all(w % 16 == 0 for block in config for w in block.values())
    assert [sum(b.values()) for b in config] == block_widths('resnet50')
    beside = supernet_checkpoint.replace('_best.pth.tar', '_conv_config_m16.txt')
    assert ast.literal_eval(open(beside).read()) == config
    target = round(counted(config) / 1e9 * 0.9, 3)
    prune_cli(supernet_checkpoint, '--width_multiple', '16', '--target_gflops', str(target))
    assert 'GFLOPs, ' in capsys.readouterr().out
    named = supernet_checkpoint.replace('_best.pth.tar', f'_conv_config_{target:g}gflops_m16.txt')
    budget = ast.literal_eval(open(named).read())
    assert counted(budget) <= target * 1e9 and all(w % 16 == 0 for block in budget for w in block.values())
    with pytest.raises(SystemExit) as stopped:  # a choice of --prune
        run_main('unused', tmp_path, '--width_multiple', '16')
    assert stopped.value.code == 2 and '--width_multiple M' in capsys.readouterr().err


@pytest.mark.parametrize('extra, message', [
    (['--width_multiple', '0'], '--width_multiple M'),
    (['--target_gflops', '1000'], 'out of reach'),
    (['--target_gflops', '0'], 'G > 0'),
])
def test_bad_targets_are_one_line_errors(supernet_checkpoint, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        prune_cli(supernet_checkpoint, *extra)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and err.count('\n') == 1


def test_a_dropout_supernet_prunes_to_a_budget_of_its_cakes_network():
    torch.manual_seed(1)
    supernet = TemporalModel(CLASSES, FRAMES, op_code='convst_dropout', search=True, dropout=0)
    with torch.no_grad():
        for op in supernet.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
    released = ops.prune_config(supernet.cakes_ops())
    with torch.device('meta'):
        network = TemporalModel(CLASSES, FRAMES, op_code='convst', conv_config=released, dropout=0)
    target = 0.9 * count_flops(network, FRAMES, SIZE)
    budget = prune_video_to_budget(supernet, target, SIZE)
    assert budget.flops <= target and budget.lam > 0 and all(list(b) == ['kxkxk', '1xkxk'] for b in budget.config)
    assert sum(b['kxkxk'] for b in budget.config) < sum(b['kxkxk'] for b in released)
