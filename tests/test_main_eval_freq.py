"""--eval-freq: which epochs validate, and when RUN_checkpoint, RUN_best and RUN_epochN are written (only at
validation points: every eval-freq-th epoch and the last one)."""
import os
import re

import pytest
import torch

from conftest import RUN, run_main

pytestmark = pytest.mark.usefixtures('single_thread')


def recorded_saves(monkeypatch, folder):
    """Every checkpoint torch.save writes during the run, as (its 'epoch', the .pth.tar files in `folder` just
    before it is written)."""
    saves = []
    save = torch.save

    def recording(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and 'state_dict' in obj:
            names = os.listdir(folder) if os.path.isdir(folder) else []
            saves.append((obj['epoch'], sorted(short_name(n) for n in names if n.endswith('.pth.tar'))))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', recording)
    return saves


def short_name(file_name):
    """RUN_best.pth.tar -> best."""
    assert file_name.startswith(RUN + '_'), file_name
    return file_name[len(RUN) + 1:-len('.pth.tar')]


def validations(printed):
    """(epoch counted from 1 after which it ran, Prec@1) of each validation: the last training line before it."""
    epoch, found = None, []
    for line in printed.splitlines():
        if line.startswith('Epoch: ['):
            epoch = int(re.match(r'Epoch: \[(\d+)\]', line).group(1)) + 1
        elif line.startswith('Testing Results: '):
            found.append((epoch, float(line.split()[3])))
    return found


@pytest.mark.parametrize('epochs, validated, copies', [
    (6, [2, 4, 6], []),  # no validation after epoch 5, so no RUN_epoch5
    (5, [2, 4, 5], [5]),  # the last epoch always validates: RUN_epoch5 as with --eval-freq 1
])
def test_eval_freq_sets_the_validation_points_and_checkpoints_are_written_only_there(
        data, tmp_path, monkeypatch, capsys, epochs, validated, copies):
    folder = str(tmp_path / 'checkpoint')
    saves = recorded_saves(monkeypatch, folder)
    run_main(data, tmp_path, '--op_code', 'conv2d', '--epochs', str(epochs), '--eval-freq', '2', '--seed', '0')
    printed = capsys.readouterr().out
    assert [f'Epoch: [{e}][0/2]' in printed for e in range(epochs)] == [True] * epochs  # every epoch trains
    points = validations(printed)
    assert [epoch for epoch, _ in points] == validated
    # RUN_checkpoint at each validation point; RUN_best when Prec@1 beats the best before (0 at the start),
    # RUN_epochN at a point N that is a multiple of 5. What each save finds is what the saves before it left.
    best, best_epoch, expected = 0.0, None, []
    for epoch, prec1 in points:
        expected.append((epoch, sorted(({'checkpoint'} if expected else set()) | ({'best'} if best_epoch else set())
                                       | {f'epoch{c}' for c in copies if c < epoch})))
        if prec1 > best:
            best, best_epoch = prec1, epoch
    assert saves == expected
    names = {'checkpoint': epochs, **({'best': best_epoch} if best_epoch else {}), **{f'epoch{c}': c for c in copies}}
    assert sorted(map(short_name, os.listdir(folder))) == sorted(names)
    for name, epoch in names.items():
        path = os.path.join(folder, f'{RUN}_{name}.pth.tar')
        assert torch.load(path, mmap=True, weights_only=True)['epoch'] == epoch, name
