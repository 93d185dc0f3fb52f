"""How an op chooses its plan where it runs: nn.DataParallel replicas (threads, as DataParallel runs them) timed on
their own share with their weights' gradients, the batch cap, the rules that leave an op untimed on a GPU, the
policy (CAKES_PLAN, main.py's, --seed), plans off for counting FLOPs, BN folding without affine parameters, and
plan tables of earlier checkpoints."""
import threading

import pytest
import torch
from torch import nn

from cakes.complexity import count_flops
from cakes.configs import RELEASED
from cakes.errors import UsageError
from cakes.models import TemporalModel
from cakes.models.inference import fold_batchnorm
from cakes.ops import CakesOp, plans, timing
from cakes.ops.plans import choice
from cakes.ops.search import channel_costs

pytestmark = pytest.mark.usefixtures('single_thread')

MIX = [('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)]


def make_op(branches=MIX, in_channels=4, stride=1):
    torch.manual_seed(0)
    op = CakesOp(branches, in_channels, stride)
    op.policy = plans.TIMED
    return op


def replicate(module):
    """What nn.parallel.replicate (CUDA only) makes of `module` for one device, on the CPU: every submodule a
    `_replicate_for_data_parallel` copy, which has no parameters; each parameter a plain, non-leaf tensor
    attribute computed from the original (a broadcast there), an absent one (bias=False) None."""
    copies = {m: m._replicate_for_data_parallel() for m in module.modules()}
    for m, replica in copies.items():
        for name, child in m._modules.items():
            replica._modules[name] = copies[child]
        for name, p in m._parameters.items():
            if p is None:
                replica._parameters[name] = None  # as torch's replicate keeps an absent bias
            else:
                setattr(replica, name, p * 1)
    return copies[module]


def test_dataparallel_replicas_time_their_share_with_their_weights_gradients_once(monkeypatch):
    monkeypatch.setitem(choice.CAP, 'cpu', 8)
    op = make_op()
    replicas = [replicate(op) for _ in range(2)]
    assert all(list(r.parameters()) == [] and r.plans is op.plans for r in replicas)
    timed_batches, differentiated, measured = [], [], []
    op_step, grad, measure = timing.op_step, torch.autograd.grad, choice.measure
    monkeypatch.setattr(timing, 'op_step', lambda op, x, *a, **k: timed_batches.append(x.shape[0]) or op_step(
        op, x, *a, **k))
    monkeypatch.setattr(torch.autograd, 'grad', lambda y, inputs, *a, **k: differentiated.append(inputs) or grad(
        y, inputs, *a, **k))
    monkeypatch.setattr(choice, 'measure', lambda *a: measured.append(a[0]) or measure(*a))
    batch = torch.randn(6, 4, 3, 8, 8)
    outputs, errors = {}, []

    def run(i):  # as nn.parallel.parallel_apply runs each replica on its share of the batch
        try:
            outputs[i] = replicas[i](batch[3 * i:3 * i + 3])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(outputs) == 2
    assert len(measured) == 1 and len(op.plans) == 1  # one replica timed, the other took its plan
    assert set(timed_batches) == {3}  # the replica's whole share (under the cap), not one clip
    timer = measured[0]
    weights = [branch[0].weight for branch in timer.convs]
    assert differentiated and all(any(t is w for t in inputs) for inputs in differentiated for w in weights)
    assert all(inputs[0].shape[0] == 3 for inputs in differentiated)  # and the input's gradient


@pytest.mark.parametrize('share, cap, timed', [(3, 2, 2), (1, 2, 1), (5, 1, 1)])
def test_plans_are_timed_on_the_ops_own_batch_up_to_the_cap(share, cap, timed, monkeypatch):
    monkeypatch.setitem(choice.CAP, 'cpu', cap)
    batches = []
    op_step = timing.op_step
    monkeypatch.setattr(timing, 'op_step', lambda op, x, *a, **k: batches.append(x.shape[0]) or op_step(
        op, x, *a, **k))
    make_op()(torch.randn(share, 4, 3, 8, 8))
    assert batches and set(batches) == {timed}


def test_work_counts_the_branch_forms_multiply_adds():
    op = make_op(stride=2)
    x = torch.randn(2, 4, 3, 9, 9)
    out = 3 * 5 * 5  # frames kept (no temporal stride), 9 px at stride 2 with padding: 5
    by_hand = 2 * out * 4 * (2 * 27 + 3 * 9 + 1 * 3)
    assert choice.work(op, x, train=False) == by_hand
    assert choice.work(op, x, train=True) == 3 * by_hand
    channels = [torch.tensor([0]), torch.tensor([], dtype=torch.long), torch.tensor([0])]
    assert choice.work(op, x, False, channels) == 2 * out * 4 * (27 + 3)


def test_an_op_whose_work_is_below_the_devices_minimum_keeps_the_branch_form_untimed(monkeypatch):
    """The CPU given a GPU's minimum: the choice then depends on the op's multiply-adds only."""
    x = torch.randn(2, 4, 3, 8, 8)
    with torch.no_grad():
        needed = choice.work(make_op(), x[:1], train=False)  # the CPU's cap: one clip
    measured = []
    monkeypatch.setattr(choice, 'measure', lambda op, x, names, draws: measured.append(names) or {
        n: [1.0 if n == plans.STACKED else 2.0] for n in names})
    for minimum, want in ((needed + 1, plans.BRANCHES), (needed, plans.STACKED)):
        monkeypatch.setitem(choice.MIN_WORK, 'cpu', minimum)
        op = make_op().eval()
        with torch.no_grad():
            op(x)
        assert list(op.plans.values()) == [want]
    assert len(measured) == 1


def test_on_a_gpu_plans_far_above_the_branch_forms_multiply_adds_are_not_timed(monkeypatch):
    op = make_op([('kxkxk', 8), ('1xkxk', 3), ('kx1x1', 1)])
    x = torch.randn(1, 4, 3, 8, 8)
    sizes = [tuple(branch[0].kernel_size) for branch in op.convs]
    costs = {str(n): n.cost(sizes, list(op.widths)) for n in plans.candidates(op)}
    # multiply-adds per output position and input channel, by hand: the branch form 8 * 27 + 3 * 9 + 1 * 3
    assert costs == pytest.approx({'branches': 1, 'merge(0+1)': (11 * 27 + 3) / 246, 'merge(0+2)': (9 * 27 + 27) / 246,
                                   'merge(1+2)': (4 * 27 + 8 * 27) / 246, 'merge(0+1+2)': 12 * 27 / 246,
                                   'stacked': (8 * 27 + 3 * 9 + 1 * 27) / 246})
    # a partial merge costing what merging everything costs is never timed (merge(1+2))
    for device, want in (('cpu', ['branches', 'merge(0+1)', 'merge(0+2)', 'merge(0+1+2)', 'stacked']),
                         ('cuda', ['branches', 'merge(0+1)', 'merge(0+2)', 'stacked'])):
        monkeypatch.setitem(choice.COST_LIMIT, 'cpu', choice.COST_LIMIT[device])
        assert [str(n) for n in choice.worth_timing(op, x, plans.candidates(op), [None])] == want, device
    assert choice.worth_timing(op, x.to('meta'), plans.candidates(op), [None]) == []  # no timing set up there


def test_the_policy_says_whether_and_what_to_choose(monkeypatch):
    assert plans.Policy.parse('') == plans.TIMED and plans.Policy.parse('branches') == plans.BRANCH_FORM
    assert plans.Policy.parse('merge(0+2)').forced == plans.Merge(((0, 2),))
    with pytest.raises(UsageError, match="unknown CAKES_PLAN='fastest'"):
        plans.Policy.parse('fastest')
    monkeypatch.delenv(plans.ENV, raising=False)
    assert plans.run_policy(seeded=False) == plans.TIMED
    assert plans.run_policy(seeded=True) == plans.BRANCH_FORM  # --seed: nothing timed
    monkeypatch.setenv(plans.ENV, 'stacked')
    assert plans.run_policy(seeded=True).forced == plans.STACKED  # a forced plan is as deterministic
    # the model's policy, not the environment's, once set; DataParallel replicas share it
    monkeypatch.setattr(choice, 'measure', lambda *a: pytest.fail('timed under the branch form'))
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P'], dropout=0)
    assert model.use_plans(plans.BRANCH_FORM) is model
    assert all(op.policy == plans.BRANCH_FORM and op._replicate_for_data_parallel().policy == plans.BRANCH_FORM
               for op in model.cakes_ops())
    model(torch.randn(1, 6, 32, 32))
    assert plans.plan_table(model) == {}
    model.use_plans(None)  # the library's default: CAKES_PLAN
    model(torch.randn(1, 6, 32, 32))
    table = plans.plan_table(model)
    assert len(table) == 16 and {v for ops in table.values() for v in ops.values()} == {'stacked'}


def test_flops_are_counted_on_the_branch_form_whatever_the_plan(monkeypatch):
    """plans.off() around the counting: a forced plan (zero-padded taps) would count more, and no FLOPs per
    branch module."""
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P'], dropout=0)
    want = count_flops(model.use_plans(plans.BRANCH_FORM), 2, 32)
    costs = channel_costs(model, torch.zeros(1, 6, 32, 32), model.cakes_ops())
    model.use_plans(plans.Policy(plans.STACKED))
    assert count_flops(model, 2, 32) == want
    assert channel_costs(model, torch.zeros(1, 6, 32, 32), model.cakes_ops()) == costs
    assert all(cost > 0 for op in costs for cost in op.values())
    with plans.off():
        model(torch.randn(1, 6, 32, 32))
    assert plans.plan_table(model) == {}  # nothing chosen inside
    model(torch.randn(1, 6, 32, 32))
    assert plans.plan_table(model)


def test_the_key_carries_the_dtype_autocast_runs_the_convolutions_in():
    op = make_op()
    x = torch.randn(1, 4, 3, 8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        key = plans.Key.of(op, x)
    assert str(key) == 'Nx4x3x8x8|bfloat16|cpu|contiguous|train|grad' and plans.Key.parse(str(key)) == key
    assert plans.Key.of(op, x).dtype == 'float32'


def affine_free(model):
    """`model` with every BN replaced by one without affine parameters, its statistics such that folding
    matters."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm3d):
                bn = nn.BatchNorm3d(child.num_features, affine=False)
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2)
                setattr(module, name, bn)
    return model


def test_batchnorm_without_affine_parameters_is_folded():
    torch.manual_seed(0)
    model = affine_free(TemporalModel(5, 2, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P'],
                                      dropout=0)).eval()
    assert not model.cakes_ops()[0].bn.affine and not model.base_model.layer1[0].bn1.affine
    clip = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        want = model.use_plans(plans.BRANCH_FORM)(clip)
        tolerance = 1e-4 * want.abs().max().item()
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
        assert torch.allclose(folded(clip), want, rtol=1e-4, atol=tolerance)
        # the plans fold the op's BN into their weights too
        planned = model.use_plans(plans.Policy(plans.parse('merge(0+1+2)')))(clip)
        assert any(op.folded_weights for op in model.cakes_ops())
        assert torch.allclose(planned, want, rtol=1e-4, atol=tolerance)


def test_plan_tables_of_earlier_checkpoints_load_and_write_back_unchanged():
    torch.manual_seed(0)
    model = TemporalModel(5, 2, op_code='conv1_2_3d', conv_config=RELEASED['CAKES123D_P'], dropout=0)
    table = {'base_model.layer1.0.convT': {'Nx64x2x12x12|float32|cpu|cl|train|grad': 'merge(0+2)',
                                           'Nx64x2x12x12|float32|cpu|cl|eval|nograd': 'stacked'},
             'base_model.layer4.2.convT': {'Nx512x2x2x2|bfloat16|cuda|contiguous|train|grad': 'branches'},
             'no.such.module': {'Nx1|float32|cpu|cl|train|grad': 'stacked'}}
    plans.load_plans(model, table)
    op = model.base_model.layer1[0].convT
    assert op.plans[plans.Key((64, 2, 12, 12), 'float32', 'cpu', 'cl', True, True)] == plans.Merge(((0, 2),))
    assert plans.plan_table(model) == {k: v for k, v in table.items() if k != 'no.such.module'}
    with pytest.raises(UsageError, match="'base_model.layer1.0.convT'"):
        plans.load_plans(model, {'base_model.layer1.0.convT': {'Nx64|float32|cpu': 'stacked'}})
    with pytest.raises(UsageError, match='does not fit'):
        plans.load_plans(model, {'base_model.layer1.0.convT': {next(iter(table['base_model.layer1.0.convT'])):
                                                               'merge(0+5)'}})


def test_a_replica_folds_its_own_weights_even_at_the_address_of_earlier_ones():
    """DataParallel broadcasts fresh weight copies to every replica at each forward; after an optimizer step the
    caching allocator may give the new copies the address (and version 0) of the old ones. A replica's eval
    forward must fold the weights it holds, not a cache of earlier copies."""
    op = make_op().eval()
    op.policy = plans.Policy(plans.parse('merge(0+1+2)'))
    x = torch.randn(1, 4, 3, 8, 8)
    storage = {name: p.detach().clone() for name, p in op.named_parameters()}

    def replica_at_the_same_address():  # fresh tensors over one storage per weight, version alike
        replica = replicate(op)
        for name, tensor in storage.items():
            module, _, attribute = name.rpartition('.')
            setattr(replica.get_submodule(module), attribute, torch.empty(0).set_(tensor.untyped_storage(), 0,
                                                                              tensor.shape, tensor.stride()))
        return replica
    with torch.no_grad():
        before = replica_at_the_same_address()(x)
        for name, tensor in storage.items():  # the optimizer changed the originals; the next copies land here
            tensor.mul_(-1 if 'convs' in name else 1)
        after = replica_at_the_same_address()(x)
        for name, p in op.named_parameters():
            p.copy_(storage[name])
        op.policy = plans.BRANCH_FORM
        expected = op(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-5)
