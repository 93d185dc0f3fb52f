"""Whether a search has settled (cakes.ops.settling): the kept-channel masks of a config, Early-Bird's distance
between two of them, the stop rule, the history across a resume, its picture, and the cakes.convert monitor."""
import importlib.util
import io
import os

import pytest
import torch
from PIL import Image
from torch import nn

from cakes import convert, ops
from cakes.engine.board import named_cakes_ops
from cakes.errors import UsageError
from cakes.files import save_atomic
from cakes.models import TemporalModel
from cakes.models.checkpoint import released_state
from cakes.ops.search import kept_indices, prune_to_budget
from cakes.ops.settling import (CHECKPOINT_KEY, SettlingHistory, check_stop_rule, config_masks, kept_mask,
                                mask_distance, pack_masks, pruning_masks, unpack_masks)
from cakes.plot import describe_config, png_bytes, settling_figure

pytestmark = pytest.mark.usefixtures('single_thread')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hand_op(scales):
    """A 2-branch (kxkxk, kx1x1) CAKES supernet op of C = len(scales) / 2 with the given BN scales."""
    op = ops.CakesOp([('kxkxk', len(scales) // 2), ('kx1x1', len(scales) // 2)], 2, 1, search=True)
    with torch.no_grad():
        op.bn.weight.copy_(torch.tensor(scales))
    return op


def flags(bits):
    return torch.tensor(bits, dtype=torch.bool)


def test_a_config_keeps_the_largest_scales_of_each_branch():
    op = hand_op([0.1, -0.9, 0.5, 0.5, 0.3, -0.2, 0.8, 0.0])
    assert kept_mask(op, {'kxkxk': 2, 'kx1x1': 2}).int().tolist() == [0, 1, 1, 0, 1, 0, 1, 0]
    assert kept_mask(op, {'kxkxk': 1, 'kx1x1': 3}).int().tolist() == [0, 1, 0, 0, 1, 1, 1, 0]
    # Ties go to the earlier channel; a kind the config leaves out keeps nothing.
    assert kept_mask(op, {'kxkxk': 3}).int().tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(UsageError, match="kinds \\['1xkxk'\\] are not branches"):
        kept_mask(op, {'1xkxk': 4})
    with pytest.raises(UsageError, match='keeps 5 channels of the kx1x1 branch, which has 4'):
        kept_mask(op, {'kx1x1': 5})


@pytest.mark.parametrize('op_code', ['conv1_2_3d', 'conv1_2_3d_dropout'])
def test_the_released_rule_masks_are_the_channels_pruning_keeps(op_code):
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code=op_code, search=True)
    with torch.no_grad():
        for op in model.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
    named = named_cakes_ops(model)
    masks = pruning_masks(named)
    assert list(masks) == [name for name, _ in named] and len(masks) == 16
    for name, op in named:
        expected = torch.zeros(op.bn.num_features, dtype=torch.bool)
        expected[ops.kept_channels(op)] = True
        assert torch.equal(masks[name], expected) and expected.sum() == op.bn.num_features // 3
    # With a width multiple, the masks are the channels grouped pruning keeps.
    op = named[0][1]
    grouped = pruning_masks(named[:1], lambda o: ops.prune_config(o, multiple=8))[named[0][0]]
    assert torch.equal(grouped.nonzero().flatten(), ops.kept_channels(op, multiple=8))


def test_a_budget_rule_gives_the_masks_of_the_channels_it_keeps():
    """The rule is pluggable: a budget's config, and its masks are the channels the budget's key keeps."""
    op = hand_op([1.0, -0.9, 0.8, 0.5, -0.6, 0.1])
    costs = [{'kxkxk': 10, 'kx1x1': 1}]

    def flops(config):
        return 100 + sum(w * costs[0][kind] for kind, w in config[0].items())

    def rule(searchable):
        return prune_to_budget(searchable, costs, flops, 112).config

    masks = pruning_masks([('op', op)], rule)
    budget = prune_to_budget([op], costs, flops, 112)
    assert budget.config == [{'kxkxk': 1, 'kx1x1': 2}] and budget.lam > 0
    assert masks['op'].nonzero().flatten().tolist() == \
        kept_indices(op.bn.weight, 2, ops.search.channel_cost(op, costs[0]), budget.lam).tolist() == [0, 3, 4]
    assert mask_distance(masks, pruning_masks([('op', op)])) == 4 / 6  # the released rule keeps 0, 1, 2


def test_distance_is_the_share_of_channels_whose_state_differs():
    a = {'x': flags([1, 1, 0, 0]), 'y': flags([1, 0, 1, 0, 1, 0])}
    assert mask_distance(a, a) == 0
    assert mask_distance(a, {name: ~mask for name, mask in a.items()}) == 1
    b = {'x': flags([1, 0, 1, 0]), 'y': flags([1, 0, 1, 0, 1, 0])}
    assert mask_distance(a, b) == 2 / 10  # two of all ten channels, not the mean of per-op shares (1/4)
    # Whatever the order of the ops: in the dicts, or in the ops the masks are taken from.
    assert mask_distance(dict(reversed(a.items())), b) == mask_distance(a, dict(reversed(b.items()))) == 2 / 10
    ops_ab = [('p', hand_op([3.0, 2, 1, 0])), ('q', hand_op([0.0, 1, 2, 3, 4, 5]))]
    first = config_masks(ops_ab, [{'kxkxk': 1, 'kx1x1': 1}, {'kxkxk': 3}])
    second = config_masks(ops_ab[::-1], [{'kx1x1': 3}, {'kx1x1': 2}])
    assert mask_distance(first, second) == (2 + 6) / 10
    with pytest.raises(UsageError, match='different searchable layers'):
        mask_distance(a, {'x': flags([1, 1, 0, 0])})
    with pytest.raises(UsageError, match='different searchable layers'):
        mask_distance(a, {'x': flags([1, 1, 0, 0, 1]), 'y': a['y']})
    with pytest.raises(UsageError, match='config has 1 entries for 2 searchable ops'):
        config_masks(ops_ab, [{'kxkxk': 1}])


def test_masks_pack_into_a_bit_per_channel():
    torch.manual_seed(0)
    masks = {'a': torch.rand(13) > 0.5, 'b': torch.rand(7) > 0.5, 'c': torch.ones(5, dtype=torch.bool)}
    packed = pack_masks(masks)
    assert packed['bits'].dtype == torch.uint8 and packed['bits'].numel() == 4  # 25 bits
    unpacked = unpack_masks(packed)
    assert list(unpacked) == ['a', 'b', 'c'] and all(torch.equal(unpacked[k], masks[k]) for k in masks)


def feed(history, distances, start=1):
    """Record masks whose consecutive distances are `distances` (the first point has none)."""
    masks = {'op': torch.zeros(100, dtype=torch.bool)}
    if history.mask is None:
        history.record(masks, start)
    masks = unpack_masks(history.mask)
    for d in distances:
        changed = masks['op'].clone()
        flip = torch.randperm(100)[:round(d * 100)]
        changed[flip] ^= True
        measured = history.record({'op': changed}, history.mask_epoch + 1)
        assert measured == pytest.approx(d)
        masks = {'op': changed}
    return history


def test_stop_when_the_last_k_distances_are_all_below_eps():
    torch.manual_seed(0)
    history = feed(SettlingHistory(0.1, 3, total_epochs=20), [0.5, 0.05, 0.09, 0.3, 0.05, 0.05])
    assert not history.settled and history.epochs == [2, 3, 4, 5, 6, 7]
    feed(history, [0.02])
    assert history.settled_epoch == 8 and history.epochs_saved == 12
    assert history.stop_text() == ('search stopped after epoch 8 of 20: the config settled (distance below 0.1 at '
                                   '3 validation points in a row), saving 12 epochs (60%)')
    feed(history, [0.01, 0.5])  # the decision stands once taken
    assert history.settled_epoch == 8
    # Fewer than K distances never settle, however small.
    assert not feed(SettlingHistory(0.1, 3), [0.01, 0.01]).settled
    # A distance equal to EPS is not below it; one below is enough with K = 1.
    assert not feed(SettlingHistory(0.1, 1), [0.2, 0.1]).settled
    assert feed(SettlingHistory(0.1, 1), [0.2, 0.09]).settled_epoch == 3


def test_a_history_that_dips_once_and_rises_again_does_not_stop():
    torch.manual_seed(0)
    history = feed(SettlingHistory(total_epochs=30), [0.4, 0.3, 0.05, 0.2, 0.04, 0.03, 0.02, 0.01, 0.2, 0.3])
    assert (history.eps, history.patience) == (0.1, 5) and not history.settled
    assert history.stop_text().startswith('the config has not settled (distance below 0.1 at 5 validation points')
    assert not feed(history, [0.05] * 4).settled
    assert feed(history, [0.05]).settled_epoch == 16
    # Without a rule the distances are only recorded.
    record_only = feed(SettlingHistory(None), [0.0] * 8)
    assert not record_only.settled and record_only.stop_text() == 'no stop rule: 8 distances recorded, the last 0.0000'


def test_a_resumed_history_continues_identically():
    torch.manual_seed(0)
    sequence = [{'op': torch.rand(37) > 0.5, 'other': torch.rand(11) > 0.3} for _ in range(9)]
    for i in range(4, 9):  # settling: fewer and fewer changes
        sequence[i] = {name: mask.clone() for name, mask in sequence[i - 1].items()}
        sequence[i]['op'][i] ^= True
    whole = SettlingHistory(0.1, 3, total_epochs=12)
    decisions = [whole.record(masks, epoch) for epoch, masks in enumerate(sequence, 1)]
    assert whole.settled_epoch == 7

    first = SettlingHistory(0.1, 3, total_epochs=12)
    resumed_decisions = [first.record(masks, epoch) for epoch, masks in enumerate(sequence[:5], 1)]
    buffer = io.BytesIO()
    torch.save({CHECKPOINT_KEY: first.state_dict()}, buffer)
    buffer.seek(0)
    resumed = SettlingHistory.from_state(torch.load(buffer, weights_only=True)[CHECKPOINT_KEY])
    resumed_decisions += [resumed.record(masks, epoch) for epoch, masks in enumerate(sequence[5:], 6)]
    assert resumed_decisions == decisions
    state, expected = resumed.state_dict(), whole.state_dict()
    assert torch.equal(state.pop('mask')['bits'], expected.pop('mask')['bits']) and state == expected
    # The decision survives a resume after it was taken.
    settled = SettlingHistory.from_state(whole.state_dict())
    assert settled.settled_epoch == 7 and settled.record(sequence[0], 10) > 0.1 and settled.settled_epoch == 7


def test_a_history_judged_by_another_rule_decides_as_that_rule_would_have():
    """A resumed run's flags judge the distances kept so far: recorded without a rule, stopped by one."""
    distances = [0.3, 0.05, 0.2, 0.05, 0.04, 0.03]
    recorded = feed(SettlingHistory(None, total_epochs=10), distances)
    judged = recorded.judged_by(0.1, 2, 20)
    assert (judged.settled_epoch, judged.epochs_saved) == (recorded.epochs[4], 20 - recorded.epochs[4])
    assert judged.distances == distances and judged.mask is recorded.mask
    assert recorded.judged_by(0.1, 3, 10).settled_epoch == recorded.epochs[5]
    assert not recorded.judged_by(0.01, 1, 10).settled and not recorded.judged_by(None, 1, 10).settled


@pytest.mark.parametrize('eps, patience, message', [
    (0.0, 5, 'eps 0.0 must lie strictly between 0 and 1'), (1, 5, 'eps 1 must lie strictly between 0 and 1'),
    (1.5, 5, 'eps 1.5 must'), (-0.1, 5, 'eps -0.1 must'), ('0.1', 5, "eps '0.1' must"), (True, 5, 'eps True must'),
    (0.1, 0, 'patience 0 must be a whole number >= 1'), (0.1, 2.5, 'patience 2.5 must'),
    (0.1, True, 'patience True must')])
def test_stop_rule_settings_are_checked_in_one_line(eps, patience, message):
    with pytest.raises(UsageError, match=message) as info:
        SettlingHistory(eps, patience)
    assert '\n' not in str(info.value)
    with pytest.raises(UsageError, match=message.replace('eps', '--stop_when_stable').replace(
            'patience', '--stable_for')):
        check_stop_rule(eps, patience, '--stop_when_stable', '--stable_for')


@pytest.mark.parametrize('broken', [{}, {'eps': 2.0}, {'distances': [0.5, 0.4]}, {'distances': [1.5]},
                                    {'mask': {'names': ['op'], 'sizes': [9]}}])
def test_a_broken_history_state_is_refused(broken):
    torch.manual_seed(0)
    state = feed(SettlingHistory(), [0.3]).state_dict()
    state = {} if not broken else {**state, **broken}
    with pytest.raises(UsageError, match='not a settling history') as info:
        SettlingHistory.from_state(state)
    assert '\n' not in str(info.value)


def made_up_history():
    history = SettlingHistory(0.1, 5, total_epochs=100)
    history.epochs = list(range(2, 15))
    history.distances = [0.42, 0.31, 0.24, 0.17, 0.12, 0.085, 0.14, 0.09, 0.07, 0.05, 0.045, 0.03, 0.03]
    history.settled_epoch = 14
    return history


def test_the_picture_shows_the_config_beside_its_distance_curve():
    from cakes.conv_config import conv_configs
    history = made_up_history()
    entry = describe_config('RUN', conv_configs()['CAKES123D_P'])
    figure = settling_figure([entry], [('RUN', history)])
    bars, curve = figure.axes
    assert len(bars.containers) == 3  # the config panel's three kinds
    line = curve.get_lines()
    assert [list(line[1].get_xdata()), list(line[1].get_ydata())] == [history.epochs, history.distances]
    assert list(line[0].get_ydata()) == [0.1, 0.1] and list(line[2].get_xdata()) == [14, 14]  # EPS, the stop
    labels = [text.get_text() for text in curve.get_legend().get_texts()]
    assert labels == ['EPS 0.1 (5 in a row below: stop)', 'distance to the previous point',
                      'stopped after epoch 14 of 100', '86 epochs saved']
    assert curve.get_xlim()[1] >= 100  # the whole planned schedule, so that the saving shows
    running = SettlingHistory(0.1, 5, total_epochs=30)
    running.epochs, running.distances = [2, 3, 4], [0.3, 0.2, 0.25]
    curve = settling_figure([entry], [('RUN', running)]).axes[1]
    assert curve.get_xlim() == (0, 30.5) and len(curve.get_lines()) == 2  # how far into the schedule, no stop
    assert [t.get_text() for t in curve.get_legend().get_texts()][1:] == ['distance to the previous point']
    image = Image.open(io.BytesIO(png_bytes(figure)))
    assert image.size == (1700, 380)


def test_plot_config_draws_the_history_a_supernet_checkpoint_kept(tmp_path, capsys):
    plot_config = load_script('plot_config')
    torch.manual_seed(0)
    supernet = TemporalModel(5, 2, op_code='conv1_2d', search=True)
    with torch.no_grad():
        for op in supernet.cakes_ops():
            op.bn.weight.copy_(torch.randn(op.bn.num_features))
    path, out = str(tmp_path / 'RUN_checkpoint.pth.tar'), tmp_path / 'run.png'
    save_atomic({'state_dict': released_state(supernet), CHECKPOINT_KEY: made_up_history().state_dict()}, path)
    plot_config.main([path, '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'RUN: search stopped after epoch 14 of 100' in printed and 'written ' in printed
    assert Image.open(out).size == (1700, 380)  # with the distance panel (1200 wide without)
    save_atomic({'state_dict': released_state(supernet)}, path)
    plot_config.main([path, '--out', str(out)])
    assert Image.open(out).size[0] == 1200 and 'search stopped' not in capsys.readouterr().out
    save_atomic({'state_dict': released_state(supernet), CHECKPOINT_KEY: {'eps': 3}}, path)
    with pytest.raises(UsageError, match='its search_history is not a settling history'):
        plot_config.main([path, '--out', str(out)])


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'scripts', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_supernet():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
                          nn.Conv3d(4, 6, 3, padding=1, bias=False), nn.BatchNorm3d(6), nn.ReLU(),
                          nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3))
    return convert.to_supernet(model)


def set_scales(supernet, step):
    """BN scales that reorder fewer channels as `step` grows (none from step 4 on)."""
    generator = torch.Generator().manual_seed(min(step, 4))
    with torch.no_grad():
        for m in supernet.modules():
            if isinstance(m, ops.DropoutSupernetOp):
                m.norm.weight.copy_(torch.rand(m.norm.num_features, generator=generator))


def test_convert_monitor_stops_a_loop_once_settled_and_resumes():
    supernet = small_supernet()
    monitor = convert.StopWhenSettled(supernet, eps=0.1, patience=2, epochs=10)
    stops = []
    for epoch in range(1, 11):
        set_scales(supernet, epoch)
        stops.append(monitor.update(epoch))
        if epoch == 5:
            saved = monitor.state_dict()
    assert stops == [False] * 5 + [True] * 5 and monitor.history.settled_epoch == 6
    assert monitor.distance == 0 and monitor.history.distances[:3] != [0, 0, 0]
    # The user's checkpoint: a fresh monitor takes the state and continues as the first one did.
    again = convert.StopWhenSettled(small_supernet(), eps=0.1, patience=2, epochs=10)
    again.load_state_dict(saved)
    set_scales(again.supernet, 6)
    assert again.update() is True and again.history.settled_epoch == 6  # epoch 6: after the 5 recorded
    assert again.history.distances == monitor.history.distances[:5]
    # The masks compared are prune_config's, with whatever options it is given.
    x = torch.zeros(1, 2, 4, 4, 4)
    budget = convert.StopWhenSettled(supernet, target_flops=40000, example_input=x)
    budget.update()
    config = convert.prune_config(supernet, target_flops=40000, example_input=x)
    assert config != convert.prune_config(supernet)
    named = convert.search.supernet_ops(supernet)
    expected = config_masks(named, [config[name] for name, _ in named])
    assert mask_distance(unpack_masks(budget.history.mask), expected) == 0


def test_convert_monitor_errors_are_one_line():
    supernet = small_supernet()
    with pytest.raises(UsageError, match='eps 1.5 must lie strictly between 0 and 1'):
        convert.StopWhenSettled(supernet, eps=1.5)
    with pytest.raises(UsageError, match="passes its options on to prune_config: got an unexpected keyword "
                                         "argument 'target_gflops'"):
        convert.StopWhenSettled(supernet, target_gflops=1)
    with pytest.raises(UsageError, match='has no supernet op'):
        convert.StopWhenSettled(nn.Sequential(nn.Linear(2, 2)))
    other = convert.to_supernet(nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4)))
    monitor = convert.StopWhenSettled(other)
    monitor.update()
    with pytest.raises(UsageError, match='of another supernet'):
        convert.StopWhenSettled(supernet).load_state_dict(monitor.state_dict())
