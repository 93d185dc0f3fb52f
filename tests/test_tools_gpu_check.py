"""scripts/gpu_check.py's parts that run without a GPU: its arguments, checks, table, the no-GPU exit, and the
training steps it runs (here on the CPU)."""
import pytest
import torch

from conftest_data import load_script, run_script

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def gpu_check():
    return load_script('gpu_check')


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2():
    done = run_script('gpu_check', '--no_timing', env={'CUDA_VISIBLE_DEVICES': '', 'PATH': '/usr/bin:/bin'})
    assert done.returncode == 2 and done.stdout == ''
    assert done.stderr.count('\n') == 1 and done.stderr.startswith('error: no GPU visible')


@pytest.mark.parametrize('argv, message', [(['--steps', '0'], '--steps must be at least 1'),
                                           (['--input_size', '16'], 'at least 32')])
def test_bad_arguments_are_one_clear_error(gpu_check, argv, message):
    from cakes.errors import UsageError
    with pytest.raises(UsageError, match=message):
        gpu_check.parse_args(argv)
    assert gpu_check.parse_args([]).timing_batch == 12


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
    args = gpu_check.parse_args(['--num_segments', '4', '--input_size', '32', '--steps', '2'])
    model = gpu_check.build(args, precision='bf16')
    losses, seen = gpu_check.train_steps(model, torch.device('cpu'), 'bf16', gpu_check.batches(args, 2, 2))
    assert gpu_check.check_dtypes(seen, 'bf16')[1] and gpu_check.check_finite(losses)[1]
    assert torch.nn.functional.conv3d is not gpu_check.conv_dtypes  # the recorder is taken out again
    scores, seen = gpu_check.ten_crop_scores(model, torch.device('cpu'), 'bf16', args)
    assert scores.shape == (2, 174) and torch.isfinite(scores).all() and seen == {'bfloat16'}
