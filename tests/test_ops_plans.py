"""Execution plans of the CAKES ops (cakes.ops.plans) compute what the branch form computes: outputs and
gradients, every plan, kind mix, width, stride, memory format and mode; the choice is cached, exported,
loaded, shared by replicas and deepcopies, and leaves the state_dict, BN statistics and RNG alone."""
import copy

import pytest
import torch
from torch import nn

from cakes import convert
from cakes.configs import RELEASED
from cakes.errors import UsageError
from cakes.models import TemporalModel
from cakes.ops import CakesOp, DropoutSupernetOp, plans, timing
from cakes.ops.plans import choice, sharing

pytestmark = pytest.mark.usefixtures('single_thread')

FORMATS = (torch.contiguous_format, torch.channels_last_3d)
MIXES = [  # (kind, width) lists: widths 0, 1, odd; the video kinds and the other four
    [('kxkxk', 3), ('1xkxk', 2), ('kx1x1', 1)],
    [('kxkxk', 1), ('1xkxk', 0), ('kx1x1', 5)],
    [('kxkxk', 0), ('1xkxk', 3), ('kx1x1', 2)],
    [('1xkxk', 4), ('kx1x1', 1)],
    [('kxkxk', 2), ('1xkxk', 5)],
    [('kx1xk', 1), ('kxkx1', 2), ('1xkx1', 3), ('1x1xk', 1)],
    [('1xkxk', 3)],
]


def randomised_bn(bn):
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)


def make_op(branches, stride, k=3):
    torch.manual_seed(0)
    op = CakesOp(branches, 4, stride, k=k).double()
    randomised_bn(op.bn)
    return op


def close(a, b):
    return torch.allclose(a, b, rtol=1e-9, atol=1e-10 * max(1.0, a.abs().max().item()))


@pytest.mark.parametrize('fmt', FORMATS, ids=['contiguous', 'channels_last'])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('mix', MIXES, ids=[str(i) for i in range(len(MIXES))])
def test_every_plan_gives_the_branch_outputs_and_gradients(mix, stride, fmt):
    op = make_op(mix, stride, k=5 if len(mix) == 4 else 3)
    x = torch.randn(2, 4, 5, 9, 9, dtype=torch.float64).contiguous(memory_format=fmt)
    names = plans.candidates(op)
    assert plans.STACKED in names and len(names) >= 2
    params = [p for branch in op.convs for p in branch.parameters()]
    ref_in = x.clone().requires_grad_()
    want = plans.BRANCHES.outputs(op, ref_in)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, [ref_in] + params, grad)
    op.eval()
    with torch.no_grad():
        want_eval = plans.BRANCHES.forward(op, x)
    for name in names:
        assert plans.parse(str(name)) == name  # the name checkpoints hold reads back
        x_in = x.clone().requires_grad_()
        got = name.outputs(op, x_in)
        assert close(got, want), name
        assert name == plans.BRANCHES or got.is_contiguous(memory_format=fmt), name  # no format conversion
        for a, b in zip(torch.autograd.grad(got, [x_in] + params, grad), want_grads):
            assert close(a, b), name
        with torch.no_grad():  # eval: the BN folded into the plan's cached weights
            assert close(name.forward(op, x), want_eval), name
            assert close(name.forward(op, x), want_eval), name  # from the cache


def logits_and_grads(model, clip, plan, monkeypatch, seed=1):
    monkeypatch.setenv(plans.ENV, plan)
    model = copy.deepcopy(model)
    torch.manual_seed(seed)  # the same supernet channel draws for every plan
    out = model.train()(clip)
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        return out.detach(), grads, model.eval()(clip), model


NETWORKS = [('conv1_2_3d', False, 'CAKES123D_P', False), ('conv1_2_3d', False, 'CAKES123D_P', True),
            ('conv1_2d', False, 'CAKES12D_C', True), ('convst', True, None, False),
            ('conv1_2_3d_dropout', True, None, True), ('convst_dropout', True, None, False)]


@pytest.mark.parametrize('op_code, search, key, channels_last', NETWORKS,
                         ids=[f"{n[0]}{'_search' if n[1] else ''}{'_cl' if n[3] else ''}" for n in NETWORKS])
def test_networks_give_the_same_logits_gradients_and_statistics_by_any_plan(op_code, search, key, channels_last,
                                                                            monkeypatch):
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code=op_code, search=search, conv_config=RELEASED.get(key),
                          dropout=0).double().use_channels_last(channels_last)
    for op in model.cakes_ops():
        randomised_bn(op.bn)
    clip = torch.randn(1, 6, 48, 48, dtype=torch.float64)
    want, want_grads, want_eval, ref = logits_and_grads(model, clip, 'branches', monkeypatch)
    for plan in ('stacked', 'merge(0+1+2)', ''):  # '' measures and chooses per op
        got, grads, got_eval, planned = logits_and_grads(model, clip, plan, monkeypatch)
        assert close(got, want) and close(got_eval, want_eval), plan
        assert len(grads) == len(want_grads) > 0
        for a, b in zip(grads, want_grads):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-8 * b.abs().max().item()), plan
        assert planned.state_dict().keys() == ref.state_dict().keys()
        for a, b in zip(planned.state_dict().values(), ref.state_dict().values()):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-9, atol=1e-12), plan  # stats moved once
        assert all(op.plans for op in planned.cakes_ops())


def test_measuring_leaves_rng_statistics_and_state_dict_alone(monkeypatch):
    monkeypatch.delenv(plans.ENV, raising=False)
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code='conv1_2_3d_dropout', dropout=0)
    keys = {k: v.shape for k, v in model.state_dict().items()}
    clip = torch.randn(1, 6, 32, 32)
    op = model.cakes_ops()[0]
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    x = torch.randn(1, 64, 2, 8, 8)
    torch.set_rng_state(rng)
    stats = op.norm.running_mean.clone()
    op.policy = plans.TIMED
    name = plans.plan_for(op.train(), x, op.branch_channels(torch.arange(64)))
    assert name in plans.candidates(op) and list(op.plans.values()) == [name]
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(op.norm.running_mean, stats)
    model(clip)
    assert {k: v.shape for k, v in model.state_dict().items()} == keys


def test_a_plan_is_chosen_from_warm_runs_and_only_when_clearly_faster_than_the_branches(monkeypatch):
    """The first run of a plan is not timed (the library sets up its shapes then); the branches and the plans
    near the fastest are timed again in the other order; a plan replaces the branches only when it wins by
    plans.MARGIN on every function timed (every channel draw of a dropout supernet)."""
    order = []
    branches, merge01, merge012, stacked = map(plans.parse, ('branches', 'merge(0+1)', 'merge(0+1+2)', 'stacked'))
    cost = {branches: 10.0, merge01: 9.9, merge012: 9.5, stacked: 30.0}
    monkeypatch.setattr(timing, 'op_step', lambda op, x, name, train, draw: lambda: order.append(name))
    monkeypatch.setattr(timing, 'seconds', lambda fn, device: (fn(), cost[order[-1]] + 50 * (len(order) <= 4))[1])
    monkeypatch.setattr(choice, 'TIMED_ROUNDS', 2)
    times = choice.measure(None, torch.zeros(2, 1), list(cost), [None])
    names = list(cost)
    assert order == names + names + [merge012, merge01, branches]  # 'stacked' is out of the race
    assert times == {name: [c] for name, c in cost.items()}  # the slow first runs are not among them
    assert choice.fastest(times) == merge012  # 5% faster
    assert choice.fastest({branches: [10.0], merge01: [9.9]}) == branches  # 1%: noise
    # faster in total, but not for the second channel draw
    assert choice.fastest({branches: [10.0, 10.0], merge01: [5.0, 10.0]}) == branches
    assert choice.fastest({branches: [10.0, 10.0], merge01: [5.0, 9.0]}) == merge01
    assert choice.fastest({plans.Merge(): [1.0]}) == plans.Merge()


def test_plans_are_exported_loaded_and_reused_without_measuring(monkeypatch, tmp_path):
    monkeypatch.delenv(plans.ENV, raising=False)
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code='conv1_2_3d', dropout=0)
    clip = torch.randn(1, 6, 32, 32)
    model(clip)
    table = plans.plan_table(model)
    assert set(table) == {name for name, m in model.named_modules() if isinstance(m, CakesOp)}
    torch.save({'plans': table}, tmp_path / 'c.pth')
    loaded = torch.load(tmp_path / 'c.pth', weights_only=True)['plans']
    assert loaded == table
    other = TemporalModel(5, 2, op_code='conv1_2_3d', dropout=0)
    plans.load_plans(nn.DataParallel(other), loaded)
    monkeypatch.setattr(choice, 'measure', lambda *a: pytest.fail('measured again'))
    other(clip)
    assert plans.plan_table(other) == table


def test_the_plan_cache_survives_deepcopy_and_replication(monkeypatch):
    monkeypatch.delenv(plans.ENV, raising=False)
    op = make_op([('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)], 1)
    x = torch.randn(1, 4, 3, 8, 8, dtype=torch.float64)
    op(x)
    op(torch.cat([x, x]))  # another batch size: the same key
    assert len(op.plans) == 1
    assert copy.deepcopy(op).plans == op.plans
    # what nn.parallel.replicate (CUDA only) makes of each module: replicas share the choice
    replica = op._replicate_for_data_parallel()
    assert replica.plans is op.plans
    monkeypatch.setattr(choice, 'measure', lambda *a: pytest.fail('a replica measured'))
    replica(x)
    assert op.state_dict().keys() == make_op([('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)], 1).state_dict().keys()


def test_folded_eval_weights_follow_weight_changes(monkeypatch):
    monkeypatch.setenv(plans.ENV, 'merge(0+1+2)')
    op = make_op([('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)], 1).eval()
    x = torch.randn(1, 4, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        op(x)
        op.convs[0][0].weight.add_(1.0)  # as an optimizer step does
        op.bn.running_var.mul_(2)
        assert close(op(x), plans.BRANCHES.forward(op, x))


def test_an_unknown_forced_plan_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(plans.ENV, 'fastest')
    op = make_op([('kxkxk', 2), ('1xkxk', 3)], 1)
    with pytest.raises(UsageError, match='CAKES_PLAN'):
        op(torch.randn(1, 4, 3, 8, 8, dtype=torch.float64))


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 6, 3, padding=1, bias=False), nn.BatchNorm3d(6), nn.ReLU(),
                         nn.Conv3d(6, 5, 5, stride=2, padding=2), nn.BatchNorm3d(5)).double()


@pytest.mark.parametrize('k', [3, 5])
def test_converted_networks_of_all_seven_kinds_give_the_same_function(k, monkeypatch):
    net = small_net()
    if k == 3:
        net[3] = nn.Conv3d(6, 5, 3, stride=2, padding=1).double()
    supernet = convert.to_supernet(net, kinds=convert.KINDS)
    for m in supernet.modules():
        if isinstance(m, DropoutSupernetOp):
            randomised_bn(m.norm)
    config = convert.prune_config(supernet)
    pruned = convert.to_pruned(net, config, supernet=supernet)
    x = torch.randn(2, 2, 6, 10, 10, dtype=torch.float64)
    for model in (supernet, pruned):
        want, want_grads, want_eval, _ = logits_and_grads(model, x, 'branches', monkeypatch)
        for plan in ('stacked', 'merge(0+1+2+3+4+5+6)', ''):
            got, grads, got_eval, _ = logits_and_grads(model, x, plan, monkeypatch)
            assert close(got, want) and close(got_eval, want_eval), plan
            for a, b in zip(grads, want_grads):
                assert torch.allclose(a, b, rtol=1e-6, atol=1e-8 * b.abs().max().item()), plan


def test_released_form_evaluation_keeps_predictions_and_loss(monkeypatch, capsys):
    """float32 as --evaluate runs a released checkpoint: the same top-1/top-5 and the loss within 1e-5 relative
    by every plan (folded BN, merged or stacked kernels), the branch form as reference."""
    torch.manual_seed(0)
    model = TemporalModel(7, 2, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P']).eval()
    for op in model.cakes_ops():
        randomised_bn(op.bn)
    clips, labels = torch.randn(4, 6, 64, 64), torch.tensor([0, 3, 5, 6])
    results = {}
    for plan in ('branches', 'stacked', 'merge(0+1+2)', 'merge(0+2)', ''):
        monkeypatch.setenv(plans.ENV, plan)
        for channels_last in (False, True):
            with torch.no_grad():
                logits = copy.deepcopy(model).use_channels_last(channels_last)(clips)
            results[plan, channels_last] = logits
    want = results['branches', False]
    loss = nn.functional.cross_entropy(want, labels)
    largest = 0.0
    for logits in results.values():
        assert torch.equal(logits.topk(5).indices, want.topk(5).indices)
        assert abs(nn.functional.cross_entropy(logits, labels) - loss) <= 1e-5 * loss
        largest = max(largest, (logits - want).abs().max().item())
    with capsys.disabled():
        print(f'\nlargest logit difference to the branch form: {largest:.2e} (logits up to '
              f'{want.abs().max().item():.2e})')


def test_under_torch_distributed_rank_0_times_each_training_key_and_evaluation_waits_for_no_one(monkeypatch):
    """Rank 1's side, the collective stood in for (two real processes: test_ops_plans_ranks.py)."""
    monkeypatch.delenv(plans.ENV, raising=False)
    monkeypatch.setattr(sharing, 'distributed', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_rank', lambda: 1)
    monkeypatch.setattr(choice, 'measure', lambda *a: pytest.fail('only rank 0 measures'))
    sent, chosen = [], iter([plans.STACKED, plans.parse('merge(0+1+2)')])

    def broadcast(box, src):
        assert src == 0
        sent.append(box[0])
        box[0] = ('plan', next(chosen))  # rank 0's choice
    monkeypatch.setattr(torch.distributed, 'broadcast_object_list', broadcast)
    op = make_op([('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)], 1)
    x = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    op(x)
    assert sent == [None] and list(op.plans.values()) == [plans.STACKED]
    op(x[:, :, :2])  # another training key (as another dtype or device would be): timed afresh by rank 0
    assert sent == [None, None] and list(op.plans.values()) == [plans.STACKED, plans.parse('merge(0+1+2)')]
    with torch.no_grad():
        op.eval()(x)  # evaluation: the plan of the same input's training key, no collective
        op(x[:, :, :, :4])  # an input never trained on: the branch form, no collective
        assert op.plans[plans.Key.of(op, x)] == plans.STACKED
        assert op.plans[plans.Key.of(op, x[:, :, :, :4])] == plans.BRANCHES
    assert len(sent) == 2 and len(op.plans) == 4
