"""Parameter groups and the learning-rate schedule against the released loop's exact values."""
import json
import os
from types import SimpleNamespace

import pytest
import torch

from cakes.models import TemporalModel
from cakes.engine.schedule import GROUPS, apply_schedule, make_optimizer, param_groups

CASES = json.load(open(os.path.join(os.path.dirname(__file__), 'data', 'lr_schedule.json')))['cases']


@pytest.fixture(scope='module')
def model():
    with torch.device('meta'):
        return TemporalModel(174, 8, op_code='conv1_2_3d', search=True)


def test_param_groups_follow_the_released_policy(model):
    groups = {g['name']: g for g in param_groups(model)}
    assert [g['name'] for g in param_groups(model)] == [name for name, _, _ in GROUPS]
    first = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv3d)][:3]
    assert [id(p) for p in groups['first_conv_weight']['params']] == [id(p) for p in first]
    assert groups['first_conv_bias']['params'] == []
    assert any(p is model.new_fc.weight for p in groups['normal_weight']['params'])
    assert [id(p) for p in groups['normal_bias']['params']] == [id(model.new_fc.bias)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(groups['BN scale/shift']['params']) == 2 * len(bns)
    every = [id(p) for g in groups.values() for p in g['params']]
    assert sorted(every) == sorted(id(p) for p in model.parameters())
    assert [(g['lr_mult'], g['decay_mult']) for g in groups.values()] == [(1, 1), (2, 0), (1, 1), (2, 0), (1, 0)]


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"lr{c['lr']}-warm{c['warm']}-steps{c['lr_steps']}")
def test_schedule_matches_the_released_values_at_every_step(case):
    args = SimpleNamespace(lr=case['lr'], warm=case['warm'], lr_steps=case['lr_steps'],
                           weight_decay=case['weight_decay'])
    optimizer = make_optimizer(torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1), torch.nn.BatchNorm3d(1),
                                                   torch.nn.Linear(1, 1)), args.lr, 0.9, args.weight_decay)
    steps = iter(case['per_iteration'])
    for epoch in range(case['start_epoch'], case['epochs']):
        for i in range(case['iters_per_epoch']):
            apply_schedule(optimizer, args, epoch, i, case['iters_per_epoch'])
            want = next(steps)
            assert (want['epoch'], want['iter']) == (epoch, i)
            assert [g['lr'] for g in optimizer.param_groups] == pytest.approx(want['lr'], abs=1e-11, rel=0)
            assert [g['weight_decay'] for g in optimizer.param_groups] == pytest.approx(want['weight_decay'])


def test_no_warm_up_uses_the_scheduled_lr_from_the_first_step():
    args = SimpleNamespace(lr=0.04, warm=0, lr_steps=[2], weight_decay=3e-4)
    optimizer = make_optimizer(torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1), torch.nn.Linear(1, 1)), 0.04, 0.9, 3e-4)
    apply_schedule(optimizer, args, 0, 0, 10)
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([0.04, 0.08, 0.04, 0.08, 0.04])
    apply_schedule(optimizer, args, 2, 0, 10)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.004)
