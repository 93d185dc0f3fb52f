"""Plans under torch.distributed, in two real processes (gloo): rank 0's CAKES_PLAN for both, rank 0 times every
new training key (another autocast dtype included) for both, evaluation joins no collective, and an error in
rank 0's timing reaches both ranks as the same error instead of a wait. This file is also the processes' script."""
import datetime
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """What each of the two ranks reported ([rank 0's, rank 1's]); CAKES_PLAN=stacked is set on rank 0 only."""
    from conftest_scale import free_port
    out, port = tmp_path_factory.mktemp('ranks'), str(free_port())
    env = {k: v for k, v in os.environ.items() if k != 'CAKES_PLAN'}
    env.update(OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    processes = [subprocess.Popen([sys.executable, os.path.abspath(__file__), str(rank), port, str(out)],
                                  env=dict(env, **({'CAKES_PLAN': 'stacked'} if rank == 0 else {})),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
                 for rank in range(2)]
    for process in processes:
        printed, _ = process.communicate(timeout=240)
        assert process.returncode == 0, printed
    return [json.loads((out / f'rank{rank}.json').read_text()) for rank in range(2)]


def test_rank_0s_cakes_plan_is_every_ranks(ranks):
    assert [r['policy'] for r in ranks] == ['stacked', 'stacked']


def test_rank_0_times_each_new_training_key_for_every_rank(ranks):
    # rank 0's clock favours 'stacked' in float32 and merge(0+2) under bfloat16 autocast, rank 1's 'branches'
    assert [r['measured'] for r in ranks] == [2, 0]
    want = {'Nx4x3x8x8|float32|cpu|contiguous|train|grad': 'stacked',
            'Nx4x3x8x8|bfloat16|cpu|contiguous|train|grad': 'merge(0+2)'}
    assert ranks[1]['plans'] == want
    # rank 0 alone evaluated, without a collective: the training plan of the same input, the branch form else
    assert ranks[0]['plans'] == {**want, 'Nx4x3x8x8|float32|cpu|contiguous|eval|nograd': 'stacked',
                                 'Nx4x3x5x5|float32|cpu|contiguous|eval|nograd': 'branches'}


def test_an_error_in_rank_0s_timing_is_every_ranks(ranks):
    errors = [r['error'] for r in ranks]
    assert errors[0] == errors[1]
    assert errors[0].startswith('PlanError: timing the execution plans for Nx4x3x8x8|float32|cpu|contiguous|train|'
                                'grad failed on rank 0: RuntimeError: CUDNN_STATUS_INTERNAL_ERROR (a stand-in)')


def worker(rank, port, out):
    """One rank: the policy, a CakesOp trained and evaluated, then a failing timing; its report as JSON."""
    import torch
    from cakes.ops import CakesOp, plans, timing
    from cakes.ops.plans import choice
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=port, RANK=str(rank), WORLD_SIZE='2')
    torch.distributed.init_process_group('gloo', timeout=datetime.timedelta(seconds=60))
    report = {'policy': str(plans.run_policy(seeded=True).forced)}

    measured, real_measure = [], choice.measure

    def measure(op, x, names, draws):
        measured.append(names)
        favourite = plans.BRANCHES if rank else \
            plans.parse('merge(0+2)') if torch.is_autocast_enabled('cpu') else plans.STACKED
        return {n: [1.0 if n == favourite else 2.0] * len(draws) for n in names}
    choice.measure = measure
    torch.manual_seed(0)
    op = CakesOp([('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)], 4, 1)
    op.policy = plans.TIMED
    x = torch.randn(2, 4, 3, 8, 8)
    op(x).sum().backward()
    with torch.autocast('cpu', dtype=torch.bfloat16):  # as a resume with another --amp
        op(x).float().sum().backward()
    if rank == 0:  # evaluation on one rank only: a collective here would wait for ever (until the timeout)
        with torch.no_grad():
            op.eval()(x)
            op(x[..., :5, :5].contiguous())
    torch.distributed.barrier()
    report.update(measured=len(measured), plans=plans.plan_table(op)[''])

    def failing(fn, device):
        raise RuntimeError('CUDNN_STATUS_INTERNAL_ERROR (a stand-in)')
    timing.seconds = failing
    choice.measure = real_measure  # timing the plans for real, with a clock that fails
    other = CakesOp([('kxkxk', 2), ('1xkxk', 3), ('kx1x1', 1)], 4, 1)
    other.policy = plans.TIMED
    try:
        other(x)
        report['error'] = None
    except plans.PlanError as e:
        report['error'] = f'{type(e).__name__}: {e}'
    torch.distributed.destroy_process_group()
    with open(os.path.join(out, f'rank{rank}.json'), 'w') as f:
        json.dump(report, f)


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
