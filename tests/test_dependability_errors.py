"""User errors are one line and exit status 2; damaged data is counted and reported, never fatal."""
import os
import re
import shutil

import pytest

from cakes.engine.run import check_batch
from cakes.data.synthetic import make_synthetic_data
from conftest import run_main
from cakes.errors import UsageError

FRAMES = os.path.join('something-something-v1', '20bn-something-something-v1')

pytestmark = pytest.mark.usefixtures('single_thread')


def cli(data, out, *extra):
    run_main(data, out, '--epochs', '1', *extra)


def error_line(capsys, data, out, *argv):
    with pytest.raises(SystemExit) as exit_info:
        cli(data, out, *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


def test_check_batch_needs_a_sample_per_gpu():
    check_batch(8, 8)
    check_batch(3, 0)
    with pytest.raises(UsageError, match='-b 2 is smaller than the 4 visible GPUs.*CUDA_VISIBLE_DEVICES'):
        check_batch(2, 4)
    with pytest.raises(UsageError, match='at least 1'):
        check_batch(0, 0)


def write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def test_configs_of_the_wrong_shape(data, tmp_path, capsys):
    short = write(tmp_path / 'short.txt', "[{'kxkxk': 64}]")
    assert '1 blocks but the network has 16' in error_line(capsys, data, tmp_path, '--op_code', 'conv1_2_3d',
                                                            '--conv_config', short)
    not_a_list = write(tmp_path / 'dict.txt', "{'kxkxk': 64}")
    assert 'one dict per block' in error_line(capsys, data, tmp_path, '--op_code', 'conv1_2_3d',
                                              '--conv_config', not_a_list)
    garbage = write(tmp_path / 'garbage.txt', 'conv_configs = [')
    assert 'not a Python list' in error_line(capsys, data, tmp_path, '--op_code', 'conv1_2_3d',
                                             '--conv_config', garbage)


@pytest.mark.parametrize('argv, needle', [
    (['-b', '0'], 'at least 1'),
    (['-b', '8'], 'fewer than -b 8'),
    (['--seed', '-1'], '--seed -1'),
    (['--auto_resume', '--resume', 'x.pth.tar'], '--auto_resume'),
    (['--op_code', 'conv1_2d', '--conv_config', 'CAKES23D_P'], "branch names of 'conv1_2d'"),
    (['--evaluate', '--resume', 'nowhere/x.pth.tar'], "'nowhere/x.pth.tar' not found"),
], ids=['batch0', 'batch-over-list', 'seed', 'auto+resume', 'config-of-another-op', 'missing-checkpoint'])
def test_bad_input_is_one_line(data, tmp_path, capsys, argv, needle):
    assert needle in error_line(capsys, data, tmp_path, *argv)


def test_missing_dataset_files_name_the_file(data, tmp_path, capsys):
    root = tmp_path / 'copy'
    shutil.copytree(data, root)
    os.remove(root / 'something-something-v1' / 'val_videofolder.txt')
    assert 'val_videofolder.txt' in error_line(capsys, str(root), tmp_path / 'out')


def test_argparse_errors_keep_their_usage_line(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(data, tmp_path, '--dataset', 'kinetics')
    assert exit_info.value.code == 2 and "invalid choice: 'kinetics'" in capsys.readouterr().err


def damage(root):
    """Train videos 1-4, val 5-7 (6 frames each): a missing train video, a train video whose frames after
    the first are garbage, and one garbage val frame (frame 2 of video 5, which centred sampling reads)."""
    frames = os.path.join(root, FRAMES)
    shutil.rmtree(os.path.join(frames, '2'))
    for index in range(2, 7):
        with open(os.path.join(frames, '3', f'{index:05d}.jpg'), 'wb') as f:
            f.write(b'\xff\xd8 not a jpeg at all')
    with open(os.path.join(frames, '5', '00002.jpg'), 'wb') as f:
        f.write(os.urandom(300))


def test_corrupt_frames_and_missing_videos_are_counted_not_fatal(single_thread, tmp_path, capsys):
    root = str(tmp_path / 'damaged')
    make_synthetic_data(root, train=4, val=3, frames=6)
    damage(root)
    cli(root, tmp_path / 'out', '--seed', '0')
    printed = capsys.readouterr().out
    train_report = re.search(r'^data problems this epoch: (\d+) corrupt frames \(replaced by frame 1\), '
                             r'(\d+) missing videos \(replaced\)$', printed, re.M)
    assert train_report and int(train_report[1]) >= 1 and int(train_report[2]) >= 1
    assert ('data problems in validation: 1 corrupt frames (replaced by frame 1), 0 missing videos (replaced)\n'
            'Testing Results: ') in printed  # counts reset after the training report
    log = open(tmp_path / 'out' / 'log' / 'I3D_somethingv1_resnet50_segment2_.csv').read()
    assert train_report[0] in log
    assert os.path.exists(tmp_path / 'out' / 'checkpoint' / 'I3D_somethingv1_resnet50_segment2__checkpoint.pth.tar')
