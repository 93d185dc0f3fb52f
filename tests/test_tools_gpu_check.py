"""scripts/gpu_check.py: every stage run end to end on the CPU (--device cpu), and its parts: arguments, checks,
table, the no-GPU exit, DataParallel's stand-in threads, the convolution recorder, time limits."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import PLAN_ENV, TINY
from conftest_data import REPO, load_script, run_script

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def gpu_check():
    return load_script('gpu_check')


@pytest.fixture
def plans_timed(monkeypatch):
    """As a user's run: CAKES_PLAN unset, so that the ops time and choose their plans (conftest's default is
    the branch form, which chooses nothing)."""
    monkeypatch.delenv(PLAN_ENV, raising=False)


def test_every_stage_runs_on_the_cpu_and_prints_its_rows():
    """The whole script, as on a GPU machine but with tiny shapes: it must finish, print every stage's rows and
    exit 0, so that no stage can break unseen."""
    done = subprocess.run([sys.executable, os.path.join('scripts', 'gpu_check.py'), '--device', 'cpu',
                           '--steps', '2', '--repeats', '1', '--json'], cwd=REPO, capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if k != PLAN_ENV}, 'OMP_NUM_THREADS': '1'},
                          timeout=1200)  # as a user's run: plans timed (conftest's CAKES_PLAN left out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows = json.loads(lines[-1])
    assert lines[-2] == 'all checks passed' and 'FAIL' not in done.stdout
    assert [line.split(':')[0] for line in lines[1:5]] == ['precision', 'torchrun', 'main', 'timing']
    assert any(line.startswith('stage seconds: precision ') for line in lines)
    have = {(r['check'], r['wrapper'], r['precision']) for r in rows}
    for wrapper in ('replica threads', 'torchrun'):
        for precision in ('fp32', 'bf16'):
            assert {('conv dtypes', wrapper, precision), ('losses', wrapper, precision)} <= have
        # fp16 runs, or a row says why not
        assert ('conv dtypes', wrapper, 'fp16') in have or ('precision', wrapper, 'fp16') in have
        assert {('supernet dtypes', wrapper, 'bf16'), ('supernet losses', wrapper, 'bf16')} <= have
    assert {('10-crop dtypes', 'replica threads', 'bf16'), ('10-crop scores', 'replica threads', 'bf16')} <= have
    assert {('losses agree', 'replica threads vs torchrun', p) for p in ('fp32', 'bf16')} <= have
    main_rows = [r for r in rows if r['check'].startswith('main.py')]
    assert [(r['check'], r['wrapper']) for r in main_rows] == [
        ('main.py epoch', 'one process'), ('main.py resume', 'one process'),
        ('main.py epoch', 'torchrun'), ('main.py resume', 'torchrun')]
    assert all('Prec@1' in r['result'] for r in main_rows)
    assert all(r['result'].endswith("the checkpoint's plans run, none chosen") for r in main_rows[1::2])
    timed = {(r['check'], r['wrapper']) for r in rows if r['check'].endswith('ms/clip')}
    assert timed == {(f'{mode} ms/clip', f"{net} {impl}{' (main.py' + chr(39) + 's)' if impl == 'planned_cl' else ''}")
                     for mode in ('eval', 'train') for net in ('conv3d', 'CAKES123D_P')
                     for impl in ('plain', 'planned', 'channels_last', 'planned_cl')}
    chosen = [r for r in rows if r['check'] == 'plans chosen']
    assert {r['wrapper'] for r in chosen} == {f'CAKES123D_P {impl} {mode}' for impl in ('planned', 'planned_cl')
                                              for mode in ('eval', 'train')}
    for r in chosen:  # every one of the 16 CAKES ops counted once
        assert sum(int(part.split()[-1]) for part in r['result'].split(', ')) == 16


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2():
    done = run_script('gpu_check', '--no_timing', env={'CUDA_VISIBLE_DEVICES': '', 'PATH': '/usr/bin:/bin'})
    assert done.returncode == 2 and done.stdout == ''
    assert done.stderr.count('\n') == 1 and done.stderr.startswith('error: no GPU visible')
    assert '--device cpu' in done.stderr


@pytest.mark.parametrize('argv, message', [(['--steps', '0'], '--steps must be at least 1'),
                                           (['--input_size', '16'], 'at least 32'),
                                           (['--timeout', '0'], '--timeout must be at least 1')])
def test_bad_arguments_are_one_clear_error(gpu_check, argv, message):
    from cakes.errors import UsageError
    with pytest.raises(UsageError, match=message):
        gpu_check.parse_args(argv)


def test_sizes_and_stages_follow_the_device_and_the_flags(gpu_check):
    gpu = gpu_check.parse_args([])
    assert (gpu.input_size, gpu.timing_batch, gpu.timing_frames, gpu.timing_size) == (112, 12, 8, 224)
    assert gpu.stages == ['precision', 'torchrun', 'main', 'timing']
    cpu = gpu_check.parse_args(['--device', 'cpu', '--input_size', '48'])
    assert (cpu.input_size, cpu.timing_batch, cpu.timing_size) == (48, 2, 32)
    assert gpu_check.parse_args(['--no_timing', '--no_torchrun']).stages == ['precision', 'main']
    assert gpu_check.parse_args(['--stages', 'timing', 'main']).stages == ['main', 'timing']


def test_the_checks(gpu_check):
    assert gpu_check.check_dtypes({'bfloat16'}, 'bf16') == ('bfloat16', True)
    assert gpu_check.check_dtypes({'bfloat16', 'float16'}, 'bf16') == ('bfloat16, float16', False)  # some replica
    assert gpu_check.check_dtypes(set(), 'fp32')[1] is False
    assert gpu_check.check_finite([2.5, 2.25]) == ('2.5000 2.2500', True)
    assert gpu_check.check_finite([2.5, float('nan')])[1] is False and gpu_check.check_finite([])[1] is False
    assert gpu_check.check_agree([5.0, 4.0], [5.0, 4.0 * (1 + 5e-4)], 'fp32')[1] is True
    assert gpu_check.check_agree([5.0, 4.0], [5.0, 4.0 * (1 + 5e-3)], 'fp32')[1] is False
    assert gpu_check.check_agree([5.0, 4.0], [5.0, 4.0 * (1 + 5e-3)], 'bf16')[1] is True
    assert gpu_check.check_agree([5.0], [5.0, 4.0], 'bf16')[1] is False
    assert gpu_check.check_memory(2 ** 30, 10 * 2 ** 30) == ('1.00 GiB of 10.0 GiB', True)
    assert gpu_check.check_memory(9.5 * 2 ** 30, 10 * 2 ** 30)[1] is False


def test_the_table_aligns_its_columns_and_names_the_failures(gpu_check):
    rows = [gpu_check.row('conv dtypes', 'DataParallel', 'bf16', ('float16', False)),
            gpu_check.row('losses', 'torchrun', 'fp32', ('5.1000', True)),
            gpu_check.row('train ms/clip', 'conv3d plain', 'fp32', '12.50')]
    lines = gpu_check.format_table(rows).splitlines()
    assert lines[0].split() == ['check', 'wrapper', 'precision', 'result', 'status']
    assert len({line.index(rows[0]['wrapper'][:2]) if i else line.index('wrapper')
                for i, line in enumerate(lines[:2])}) == 1
    assert lines[1].endswith('FAIL') and lines[2].endswith('ok') and lines[3].endswith('12.50')
    assert gpu_check.failed(rows) == rows[:1]


def test_its_training_steps_run_convolutions_in_the_precision_asked(gpu_check):
    # 4 frames: oneDNN's bf16 Conv3d weight gradient is wrong for 2 frames and a temporal kernel of 3.
    args = gpu_check.parse_args(['--device', 'cpu', '--steps', '2'])
    originals = F.conv2d, F.conv3d
    model = gpu_check.build(args, precision='bf16')
    losses, seen = gpu_check.train_steps(model, torch.device('cpu'), 'bf16', gpu_check.batches(args, 2, 2))
    assert gpu_check.check_dtypes(seen, 'bf16')[1] and gpu_check.check_finite(losses)[1]
    assert (F.conv2d, F.conv3d) == originals  # the recorders are taken out again
    scores, seen = gpu_check.ten_crop_scores(model, torch.device('cpu'), 'bf16', args)
    assert scores.shape == (2, 174) and torch.isfinite(scores).all() and seen == {'bfloat16'}
    assert (F.conv2d, F.conv3d) == originals


def test_the_recorder_sees_2d_convolutions_from_every_thread(gpu_check):
    """The plans run frames as a 2D batch (F.conv2d): those count too, whichever thread runs them."""
    def convolve():
        F.conv2d(torch.randn(1, 2, 5, 5, dtype=torch.bfloat16), torch.randn(2, 2, 3, 3, dtype=torch.bfloat16))

    with gpu_check.conv_dtypes() as seen:
        F.conv3d(torch.randn(1, 2, 3, 5, 5), torch.randn(2, 2, 1, 3, 3))
        thread = threading.Thread(target=convolve)
        thread.start()
        thread.join()
    assert seen == {'float32', 'bfloat16'}


def small_model(gpu_check, amp=None):
    args = gpu_check.parse_args(['--device', 'cpu'])
    return gpu_check.build(args, precision='fp32').use_autocast(amp), torch.randint(0, 256, (4, 12, 32, 32)) / 255.


def test_replica_threads_compute_what_the_model_computes_in_threads_of_their_own(gpu_check, plans_timed):
    model, clips = small_model(gpu_check)
    model.eval()  # BN on running statistics: the parts give what the whole batch gives
    threads = set()
    model.base_model.register_forward_hook(lambda *_: threads.add(threading.get_ident()))
    output = gpu_check.ThreadReplicas(model, 2)(clips)
    output.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    assert len(threads) == 2 and threading.get_ident() not in threads
    planned = [m for m in model.modules() if isinstance(getattr(m, 'plans', None), dict)]
    assert planned and all(m.plans for m in planned)  # chosen in the replica threads, kept in the model
    model.zero_grad(set_to_none=True)
    expected = model(clips)
    expected.sum().backward()
    assert torch.allclose(output, expected, rtol=1e-4, atol=1e-4)
    assert all(torch.allclose(p.grad, g, rtol=1e-3, atol=1e-5) for p, g in zip(model.parameters(), grads))
    # as DataParallel's replicas: no parameters of their own, the original's plans
    replicas = gpu_check.replicate(model, 2)
    assert all(not list(r.parameters()) for r in replicas)
    copies = [m for m in replicas[1].modules() if isinstance(getattr(m, 'plans', None), dict)]
    assert len(copies) == len(planned) and all(c.plans is m.plans for c, m in zip(copies, planned))


def test_replica_threads_enter_autocast_as_dataparallel_does(gpu_check):
    """parallel_apply enters autocast without a dtype in each thread: float16 on CUDA, which the stand-in
    reproduces; the model's own autocast (use_autocast) must win, as it must on GPUs."""
    model, clips = small_model(gpu_check)
    for amp, expected in ((None, {'float16'}), (torch.bfloat16, {'bfloat16'})):
        stand_in = gpu_check.ThreadReplicas(model.use_autocast(amp).eval(), 2)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), gpu_check.conv_dtypes() as seen:
            stand_in(clips)
        assert seen == expected


def test_a_subprocess_past_its_time_limit_is_ended_with_its_children(gpu_check, tmp_path):
    pids = tmp_path / 'pids'
    script = ('import subprocess, sys, time\n'
              'child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])\n'
              f'open({str(pids)!r}, "w").write(str(child.pid))\n'
              'time.sleep(60)\n')
    start = time.time()
    status, _, _ = gpu_check.run_command([sys.executable, '-c', script], timeout=3)
    assert status is None and time.time() - start < 30
    child = int(pids.read_text())
    time.sleep(0.5)
    assert not os.path.exists(f'/proc/{child}') or 'State:\tZ' in open(f'/proc/{child}/status').read()
    assert gpu_check.failure(None, '', 3) == 'timed out after 3 s'


def test_a_stage_past_its_time_limit_is_a_fail_row(gpu_check):
    args = gpu_check.parse_args(['--device', 'cpu', '--timeout', '1'])
    rows = gpu_check.torchrun_checks(args, {})
    assert rows == [gpu_check.row('torchrun', 'torchrun', '-', ('timed out after 1 s', False))]


def test_a_stage_that_raises_is_a_fail_row_and_the_others_run(gpu_check, capsys):
    def broken():
        raise TypeError('time_setting() takes 4 arguments')
    times = {}
    rows = gpu_check.run_stage('timing', broken, times)
    assert rows == [gpu_check.row('timing', '-', '-', ('TypeError: time_setting() takes 4 arguments', False))]
    assert 'Traceback' in capsys.readouterr().err and 'timing' in times


def test_a_failure_names_the_error_line(gpu_check):
    err = 'W1204 warning\nerror: unknown CAKES_PLAN=\'x\'\n[rank0] torchrun: failed\n'
    assert gpu_check.failure(2, err, 10) == "exit 2: error: unknown CAKES_PLAN='x'"
    err = ('[rank1]: cakes.ops.plans.sharing.PlanError: timing failed on rank 0: RuntimeError: x\n'
           'torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n==== main.py FAILED\n')
    assert gpu_check.failure(1, err, 10) == ('exit 1: [rank1]: cakes.ops.plans.sharing.PlanError: timing failed on '
                                             'rank 0: RuntimeError: x')
    assert gpu_check.failure(1, 'Traceback\n  File x\nRuntimeError: CUDA out of memory\n', 10) == \
        'exit 1: RuntimeError: CUDA out of memory'
    assert gpu_check.failure(1, '', 10) == 'exit 1: no output'


def test_refusing_new_plans_stops_an_op_that_would_choose_and_not_one_that_has_its_plans(gpu_check, plans_timed):
    from cakes.ops import plans
    from cakes.ops.plans import choice
    model, clips = small_model(gpu_check)
    model.eval()
    with torch.no_grad():
        expected = model(clips)  # chooses (times) its plans
    fresh = small_model(gpu_check)[0].eval()
    original = choice.choose
    with gpu_check.refusing_new_plans():
        with torch.no_grad(), pytest.raises(RuntimeError, match=gpu_check.NEW_PLAN):
            fresh(clips)
        plans.load_plans(fresh, plans.plan_table(model))
        with torch.no_grad():
            assert torch.allclose(fresh(clips), expected, rtol=1e-4, atol=1e-4)
    assert choice.choose is original


def test_a_resume_from_a_checkpoint_without_its_plans_is_stopped(gpu_check, plans_timed, data, tmp_path):
    """What the main stage's resume runs (main.py, refusing new plans) stops at the first plan it would choose."""
    from conftest import RUN, run_main
    cakes = ['--op_code', 'conv1_2_3d', '--conv_config', 'CAKES123D_P', '--no_tensorboard']
    run_main(data, tmp_path, *cakes, '--epochs', '1')
    path = tmp_path / 'checkpoint' / f'{RUN}_checkpoint.pth.tar'
    state = torch.load(path, weights_only=True)
    assert state['plans']
    state['plans'] = {}  # as an older checkpoint, or one whose plans were not saved
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=gpu_check.NEW_PLAN):
        gpu_check.resume_without_choosing(['--root_path', data, '--checkpoint_dir', str(tmp_path), *TINY, *cakes,
                                           '--epochs', '2', '--resume', str(path)])
