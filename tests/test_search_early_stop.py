"""A search run that measures how its config settles and stops once it has (main.py --stop_when_stable): the
distance at each validation point (printed, logged, on TensorBoard, in the checkpoint), the stop with the config
written as --prune writes it, resume and SIGTERM keeping the history exact, the flags' one-line errors."""
import argparse
import ast
import os
import shutil
import signal

import pytest
import torch
from PIL import Image

import main
from conftest import RUN, run_main
from conftest_scale import read_events, scalars
from cakes.cli import run_cli
from cakes.engine.board import Board, named_cakes_ops
from cakes.engine.settling import SearchSettling
from cakes.models import create_model, read_description
from cakes.models.budget import prune_video_to_budget
from cakes.models.checkpoint import load_weights, model_state
from cakes.ops import prune_config
from cakes.ops.settling import CHECKPOINT_KEY, config_masks, mask_distance, pruning_masks

pytestmark = pytest.mark.usefixtures('single_thread')
SEARCH = ['--op_code', 'conv1_2_3d', '--search', '-sr', '--seed', '0']
STOP = ['--stop_when_stable', '0.99', '--stable_for', '2']  # every distance is below 0.99: stops at the 2nd one


def checkpoint(out, name='checkpoint'):
    return os.path.join(str(out), 'checkpoint', f'{RUN}_{name}.pth.tar')


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def supernet_of(saved):
    model = create_model(**read_description(saved))
    load_weights(model, model_state(saved))
    return model


@pytest.fixture(scope='module')
def straight(data, tmp_path_factory):
    """Three search epochs without the flag: the released schedule, recording the distances only."""
    out = tmp_path_factory.mktemp('straight')
    run_main(data, out, *SEARCH, '--epochs', '3')
    yield out, load(checkpoint(out))
    shutil.rmtree(out)


def test_a_search_records_the_distance_at_each_validation_point_without_stopping(straight, data):
    out, saved = straight
    history = saved[CHECKPOINT_KEY]
    assert (saved['epoch'], history['eps'], history['epochs'], history['settled_epoch']) == (3, None, [2, 3], None)
    assert history['mask_epoch'] == 3 and len(history['distances']) == 2
    masks = pruning_masks(named_cakes_ops(supernet_of(saved)))  # the last mask: the saved weights' config
    assert sum(history['mask']['sizes']) == sum(m.numel() for m in masks.values())
    log = open(os.path.join(str(out), 'log', f'{RUN}.csv')).read().splitlines()
    lines = [line for line in log if line.startswith('Search: config ')]
    assert lines[0].startswith('Search: config recorded after epoch 1 (')
    for line, distance in zip(lines[1:], history['distances']):
        assert line.startswith(f'Search: config distance {distance:.4f} from epoch ')
        assert 'in a row' not in line  # no stop rule, no count towards it
    board = scalars(read_events(os.path.join(str(out), 'log', f'{RUN}_tb')))['search/config_distance']
    assert [value for _, value in board] == pytest.approx(history['distances'])


def test_a_search_stops_once_settled_and_writes_its_config_as_prune_does(straight, data, tmp_path, monkeypatch,
                                                                        capsys):
    """Stopped during the validation after epoch 2 (the distance measured, not yet kept), resumed: the point is
    measured again, the search stops after epoch 3 of 5 with the weights and distances of the run without the
    flag, and writes the config beside its checkpoint. Resumed again, it stays stopped."""
    _, unstopped = straight
    forward, calls = torch.nn.CrossEntropyLoss.forward, []

    def signalling(self, *inputs):  # calls 1-2: epoch 0's steps, 3-4 its validation, 5-6 epoch 1, 7 validation
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *inputs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.CrossEntropyLoss, 'forward', signalling)
        with pytest.raises(SystemExit) as stopped:
            run_main(data, tmp_path, *SEARCH, *STOP, '--epochs', '5')
    assert stopped.value.code == 143
    interrupted = load(checkpoint(tmp_path))
    assert (interrupted['epoch'], interrupted[CHECKPOINT_KEY]['distances']) == (1, [])
    capsys.readouterr()
    run_main(data, tmp_path, *SEARCH, *STOP, '--epochs', '5', '--auto_resume')
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == ('search stopped after epoch 3 of 5: the config settled (distance below 0.99 at 2 '
                           'validation points in a row), saving 2 epochs (40%)')
    assert 'Epoch: [3]' not in '\n'.join(printed)
    assert any(line.endswith('; below 0.99 at 2 points in a row (2 stop the search)') for line in printed)
    saved = load(checkpoint(tmp_path))
    history = saved[CHECKPOINT_KEY]
    assert (saved['epoch'], history['settled_epoch'], history['epochs']) == (3, 3, [2, 3])
    assert history['distances'] == unstopped[CHECKPOINT_KEY]['distances']
    for key, value in unstopped['state_dict'].items():
        assert torch.equal(value, saved['state_dict'][key]), key
    beside = checkpoint(tmp_path).replace('_checkpoint.pth.tar', '_conv_config')
    assert ast.literal_eval(open(beside + '.txt').read()) == prune_config(supernet_of(saved).cakes_ops())
    assert Image.open(beside + '.png').size[0] == 1700  # the config and the distance curve beside it

    run_main(data, tmp_path, *SEARCH, *STOP, '--epochs', '5', '--auto_resume')
    printed = capsys.readouterr().out
    assert 'Epoch: [' not in printed and printed.splitlines()[-1].startswith('search stopped after epoch 3 of 5')


def test_prune_draws_the_distance_curve_a_search_checkpoint_kept(straight, tmp_path, monkeypatch, capsys):
    out, _ = straight
    monkeypatch.chdir(tmp_path)
    run_cli(main.main, ['--checkpoint_dir', str(tmp_path), '--prune', '--prune_model_path', checkpoint(out)])
    printed = capsys.readouterr().out
    assert 'no stop rule: 2 distances recorded, the last ' in printed
    picture = checkpoint(out).replace('_checkpoint.pth.tar', '_conv_config.png')
    assert Image.open(picture).size[0] == 1700


class Log(list):
    def __call__(self, line=''):
        self.append(line)


class Recorder(Board):
    def __init__(self):
        super().__init__()
        self.points = []

    def scalars(self, prefix, values, step):
        self.points.append((prefix, values, step))


def settling_of(model, **changes):
    settings = dict(stop_when_stable=0.5, stable_for=1, epochs=10, target_gflops=None, target_ms=None,
                    target_speedup=None, width_multiple=1, input_size=48, num_segments=2)
    run = argparse.Namespace(args=argparse.Namespace(**{**settings, **changes}), model=model, log=Log(),
                             board=Recorder())
    return SearchSettling(run), run


def test_a_point_joins_the_history_only_once_done(supernet):
    settling, run = settling_of(supernet)
    settling.measure(1, 9)
    before = pruning_masks(named_cakes_ops(supernet))
    with torch.no_grad():
        for op in supernet.cakes_ops()[:3]:
            op.bn.weight.copy_(op.bn.weight.flip(0))
    settling.commit()
    settling.measure(2, 19)
    assert settling.state_dict()['distances'] == []  # not committed: a stop now repeats the point
    expected = mask_distance(before, pruning_masks(named_cakes_ops(supernet)))
    assert 0 < expected and run.board.points == [('search', {'config_distance': expected}, 19)]
    assert run.log[-1] == (f'Search: config distance {expected:.4f} from epoch 1 to 2 (share of the '
                           f'{sum(m.numel() for m in before.values())} searchable channels kept or dropped '
                           'differently); below 0.5 at 1 point in a row (1 stop the search)')
    settling.commit()
    assert settling.state_dict()['distances'] == [expected] and settling.stops


def test_a_flops_budget_in_a_search_measures_the_budget_config(supernet):
    settling, _ = settling_of(supernet, target_gflops=0.8)
    budget = prune_video_to_budget(supernet, 0.8e9, 48)
    assert budget.config != prune_config(supernet.cakes_ops())
    named = named_cakes_ops(supernet)
    for name, mask in settling.masks().items():
        assert torch.equal(mask, config_masks(named, budget.config)[name])


@pytest.mark.parametrize('extra, message', [
    (['--search', '--stop_when_stable', '1'], '--stop_when_stable 1.0 must lie strictly between 0 and 1'),
    (['--search', '--stop_when_stable', '0'], '--stop_when_stable 0.0 must lie strictly between 0 and 1'),
    (['--stop_when_stable'], '--stop_when_stable ends a search when its config has settled: give it to a --search'),
    (['--search', '--stop_when_stable', '--stable_for', '0'], '--stable_for 0 must be a whole number >= 1'),
    (['--search', '--stable_for', '3'], '--stable_for K is how many distances in a row --stop_when_stable waits'),
])
def test_the_flags_are_checked_in_one_line(extra, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_cli(main.main, ['--checkpoint_dir', 'unused', '--op_code', 'conv1_2_3d', *extra])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and err.count('\n') == 1, err


def test_the_default_threshold_is_early_birds():
    settings, _, _ = main.parse_settings(['--checkpoint_dir', 'x', '--op_code', 'conv1_2_3d', '--search',
                                          '--stop_when_stable'])
    assert (settings.stop_when_stable, settings.stable_for) == (0.1, 5)
