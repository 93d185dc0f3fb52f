"""--evaluate under test protocols: view averaging, the protocol line, per-class accuracy, the scores file, the
confusion matrix, and two gloo processes against one."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main
from conftest import RUN, TINY, run_main
from conftest_scale import free_port
from cakes.models import create_model
from cakes.data.lists import read_list
from cakes.engine.class_report import class_accuracy, confusion_matrix
from cakes.models.checkpoint import released_state
from cakes.engine.views import average_views, view_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL_LIST = os.path.join('something-something-v1', 'val_videofolder.txt')

pytestmark = pytest.mark.usefixtures('single_thread')


def test_logits_and_softmax_averaging_can_disagree():
    # Two confident views of class 0 and one very confident of class 1.
    logits = torch.tensor([[[4.0, 0, 0], [4.0, 0, 0], [0, 10.0, 0]]])
    mean_logits = average_views(logits)
    assert torch.allclose(mean_logits, torch.tensor([[8 / 3, 10 / 3, 0]]))
    probs = average_views(logits, probabilities=True)
    a = [math.exp(4) / (math.exp(4) + 2), 1 / (math.exp(4) + 2)]
    b = [1 / (math.exp(10) + 2), math.exp(10) / (math.exp(10) + 2)]
    expected = [(2 * a[0] + b[0]) / 3, (2 * a[1] + b[1]) / 3, (2 * a[1] + b[0]) / 3]
    assert torch.allclose(probs, torch.tensor([expected]), atol=1e-6)
    assert mean_logits.argmax().item() == 1 and probs.argmax().item() == 0
    target = torch.tensor([0])
    # loss on the average: cross-entropy of the mean logits, NLL of the mean probability
    log_sum = math.log(math.exp(8 / 3) + math.exp(10 / 3) + 1)
    assert view_loss(mean_logits, target).item() == pytest.approx(log_sum - 8 / 3, rel=1e-5)
    assert view_loss(probs, target, probabilities=True).item() == pytest.approx(-math.log(expected[0]), rel=1e-5)


def test_softmax_loss_stays_finite_when_the_target_has_no_probability():
    scores = torch.tensor([[1.0, 0.0]])
    # -log of the smallest normal float32, 2 ** -126
    assert view_loss(scores, torch.tensor([1]), probabilities=True).item() == pytest.approx(126 * math.log(2))


def test_class_accuracy_and_confusion():
    confusion = confusion_matrix([0, 0, 0, 1, 2, 2], [0, 1, 0, 1, 0, 0], 4)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    accuracy, mean = class_accuracy(confusion)
    assert accuracy[:3].tolist() == pytest.approx([200 / 3, 100, 0]) and math.isnan(accuracy[3])
    assert mean == pytest.approx((200 / 3 + 100 + 0) / 3)  # over the classes with videos


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A tiny released-layout checkpoint whose classifier is large enough that the classes are well apart (no
    near-ties for float noise to flip)."""
    torch.manual_seed(0)
    model = create_model(num_segments=2)
    torch.nn.init.normal_(model.new_fc.weight, 0, 0.1)
    path = str(tmp_path_factory.mktemp('ckpt') / 'model.pth.tar')
    torch.save({'epoch': 3, 'state_dict': released_state(model), 'best_prec1': 12.5}, path)
    yield path
    os.remove(path)


def evaluate(data, out, checkpoint, capsys, *extra):
    run_main(data, out, '--evaluate', '--resume', checkpoint, *extra)
    return capsys.readouterr().out


def results(printed):
    return [line for line in printed.splitlines() if line.startswith('Testing Results: ')]


def test_default_evaluation_prints_no_protocol_and_one_view_flags_give_its_numbers(data, checkpoint, tmp_path,
                                                                                     capsys):
    default = evaluate(data, tmp_path / 'a', checkpoint, capsys)
    assert 'per video' not in default and 'class accuracy' not in default
    scores = tmp_path / 'one.npz'
    one_view = evaluate(data, tmp_path / 'b', checkpoint, capsys, '--save_scores', str(scores))
    lines = one_view.splitlines()
    at = lines.index(results(one_view)[0])
    assert lines[at - 1] == '1 crop x 1 clip per video, logits averaged'
    assert results(one_view) == results(default)  # the released numbers
    untimed = (lambda text: re.sub(r'Time [0-9.]+ \([0-9.]+\)', 'Time', text))
    assert untimed(default.split('Testing Results')[0]) == untimed('\n'.join(lines[:at - 1]) + '\n')


def test_three_crops_two_clips_scores_file_and_class_report(data, checkpoint, tmp_path, capsys):
    scores_path, picture = tmp_path / 'scores.npz', tmp_path / 'confusion.png'
    printed = evaluate(data, tmp_path, checkpoint, capsys, '--test_crops', '3', '--twice_sample',
                       '--save_scores', str(scores_path), '--confusion', str(picture))
    assert '3 crops x 2 clips per video, logits averaged\nTesting Results: ' in printed
    saved = np.load(scores_path, allow_pickle=False)
    videos = read_list(os.path.join(data, VAL_LIST), 174)
    assert saved['ids'].tolist() == [video.folder for video in videos] and saved['ids'].dtype.kind == 'U'
    assert saved['labels'].tolist() == [video.label for video in videos]
    assert saved['scores'].dtype == np.float32 and saved['scores'].shape == (len(videos), 174)
    assert saved['class_names'][86].startswith('class 086')
    assert str(saved['protocol']) == '3 crops x 2 clips per video, logits averaged'
    # the printed accuracy is the saved scores' accuracy
    right = (saved['scores'].argmax(1) == saved['labels']).mean() * 100
    assert f'Prec@1 {right:.3f} ' in results(printed)[0]
    # per-class: the mean on the console, every class with videos in the log
    _, mean = class_accuracy(confusion_matrix(saved['labels'], saved['scores'].argmax(1), 174))
    assert f'Mean class accuracy: {mean:.3f}% over 2 classes with videos (172 classes have none)' in printed
    log = open(tmp_path / 'log' / f'{RUN}.csv').read()
    assert log.count('  class 086 moving') == 1 and log.count('  class 087 moving') == 1
    assert 'Per-class accuracy' in log and 'Per-class accuracy' not in printed
    with Image.open(picture) as image:
        assert image.width > 2000 and image.height > 2000  # 174 legible names need room


def test_softmax_is_tsms_softmax_of_the_mean_logits_and_probability_averaging_has_its_own_flag(
        data, checkpoint, tmp_path, capsys):
    def scored(name, *flags):
        path = tmp_path / f'{name}.npz'
        printed = evaluate(data, tmp_path / name, checkpoint, capsys, '--test_crops', '5', '--save_scores', str(path),
                           *flags)
        return printed, np.load(path, allow_pickle=False)

    logits_printed, logits = scored('logits')
    softmax_printed, softmax = scored('softmax', '--softmax')
    assert '5 crops x 1 clip per video, logits averaged, then softmax\nTesting Results: ' in softmax_printed
    # TSM: the same Prec@1, Prec@5 and loss; the scores written are the softmax of the mean logits
    assert results(softmax_printed) == results(logits_printed)
    assert np.allclose(softmax['scores'], torch.from_numpy(logits['scores']).softmax(-1).numpy(), atol=1e-6)
    assert str(softmax['protocol']) == '5 crops x 1 clip per video, logits averaged, then softmax'
    # PySlowFast's protocol: the mean of the views' probabilities, its own loss
    mean_printed, mean = scored('mean', '--average_probabilities')
    assert '5 crops x 1 clip per video, softmax probabilities averaged\nTesting Results: ' in mean_printed
    assert results(mean_printed) != results(logits_printed)
    assert np.allclose(mean['scores'].sum(1), 1, atol=1e-5)


def test_softmax_and_probability_averaging_together_are_refused(data, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate(data, tmp_path, checkpoint, capsys, '--softmax', '--average_probabilities')
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1 and 'not both' in err


def test_test_flags_need_evaluate(data, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(data, tmp_path, '--test_crops', '3')
    assert exit_info.value.code == 2
    assert '--test_crops sets how --evaluate tests: add --evaluate' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_main(data, tmp_path, '--evaluate', '--resume', checkpoint, '--twice_sample', '--dense_sample')
    assert 'not both' in capsys.readouterr().err


def test_a_released_checkpoint_of_other_classes_than_the_dataset_is_one_line(data, tmp_path, capsys):
    path = str(tmp_path / 'ten.pth.tar')
    torch.save({'epoch': 1, 'state_dict': released_state(create_model(num_class=10, num_segments=2)), 'best_prec1': 0},
               path)
    with pytest.raises(SystemExit) as exit_info:
        run_main(data, tmp_path, '--evaluate', '--resume', path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1
    assert f"'{path}' holds a network for 10 classes but the somethingv1 category.txt under {data} lists 174" in err
    with pytest.raises(SystemExit) as exit_info:
        run_main(data, tmp_path, '--average_probabilities')
    assert '--average_probabilities sets how --evaluate tests: add --evaluate' in capsys.readouterr().err


def test_two_gloo_processes_evaluate_every_video_once_as_one_process(data, checkpoint, tmp_path, capsys):
    flags = ['--evaluate', '--resume', checkpoint, '--test_crops', '3', '--twice_sample']
    one = evaluate(data, tmp_path / 'one', checkpoint, capsys, *flags[3:], '--save_scores',
                   str(tmp_path / 'one.npz'))
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
               str(free_port()), os.path.join(REPO, 'main.py'), '--root_path', data, '--checkpoint_dir',
               str(tmp_path / 'two'), *TINY, '-b', '4', *flags, '--save_scores', str(tmp_path / 'two.npz')]
    done = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    assert results(done.stdout) == results(one)
    assert done.stdout.count('3 crops x 2 clips per video, logits averaged') == 1  # rank 0 only
    a, b = np.load(tmp_path / 'one.npz'), np.load(tmp_path / 'two.npz')
    assert a['ids'].tolist() == b['ids'].tolist() and len(set(b['ids'].tolist())) == len(b['ids'])
    assert np.allclose(a['scores'], b['scores'], atol=1e-5)


def test_console_shows_the_best_and_worst_classes_and_the_log_all(tmp_path, capsys):
    from cakes.engine.class_report import report_classes
    from cakes.engine.log import RunLog
    # class c has 10 videos of which c are right (classes 1..9), class 0 and 10 none
    labels = [c for c in range(1, 10) for _ in range(10)]
    predictions = [c if i < c else 0 for c in range(1, 10) for i in range(10)]
    report_classes(RunLog(str(tmp_path / 'run.csv')), confusion_matrix(labels, predictions, 11),
                   [f'name {c}' for c in range(11)])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == 'Mean class accuracy: 50.000% over 9 classes with videos (2 classes have none)'
    assert [line.split()[0] for line in printed[1:]] == ['best'] * 3 + ['worst'] * 3
    assert [line.split()[-1] for line in printed[1:]] == ['9', '8', '7', '3', '2', '1']
    assert printed[1] == '  best   90.000% (9/10)  name 9'
    log = open(tmp_path / 'run.csv').read().splitlines()
    assert log[0] == printed[0] and len(log) == 2 + 9 and log[2] == '     1   10.000% (1/10)  name 1'


def test_under_a_protocol_b_counts_views_so_batches_stay_small_and_scores_do_not_change(data, checkpoint, tmp_path,
                                                                                       capsys):
    from cakes.data import Views
    from cakes.engine.loaders import make_loader
    args = main.build_parser().parse_args(['--root_path', data, '--checkpoint_dir', str(tmp_path), *TINY])
    views = Views(crops=3, twice=True)  # 6 views a video
    for b, videos in ((4, 1), (12, 2), (36, 3)):  # -b 4: one video (6 views), the fewest a batch can hold
        batch, _ = next(iter(make_loader(args, 'val', b, views)))
        assert batch.shape[:2] == (videos, 6) and batch.shape[0] * 6 <= max(b, 6)
    protocol = ['--test_crops', '3', '--twice_sample']
    small = evaluate(data, tmp_path / 'small', checkpoint, capsys, *protocol, '-b', '4', '--save_scores',
                     str(tmp_path / 'small.npz'))
    large = evaluate(data, tmp_path / 'large', checkpoint, capsys, *protocol, '-b', '36', '--save_scores',
                     str(tmp_path / 'large.npz'))
    assert 'Test: [2/3]' in small and 'Test: [0/1]' in large  # 3 videos in 3 batches, or in one
    assert results(small) == results(large)
    assert np.allclose(np.load(tmp_path / 'small.npz')['scores'], np.load(tmp_path / 'large.npz')['scores'],
                       atol=1e-5)
