"""The layouts beyond Something-Something: custom lists, --split, PATH LABEL rows, dense sampling, bad input."""
import os

import numpy as np
import pytest
import torch

from conftest_data import grey, make_dataset, plain_frames, write_frames, write_text
from cakes.data import build_dataset, class_names
from cakes.data.lists import detect_template, get_layout
from cakes.data.sampling import dense_train_indices, dense_val_indices
from cakes.errors import UsageError

CUSTOM = dict(train_list='lists/train.txt', val_list='lists/val.txt')


def custom_frames(root, template='frame{:03d}.jpg'):
    for folder, count in (('a/x', 5), ('a/y', 7), ('b/z', 4)):
        write_frames(os.path.join(root, 'clips', folder), plain_frames(count, 64, 48), template)
    write_text(os.path.join(root, 'lists/train.txt'), 'clips/a/x 5 0\nclips/a/y 7 2\n')
    write_text(os.path.join(root, 'lists/val.txt'), 'clips/b/z 4 1\n')


def test_custom_frame_folders_detect_the_template_and_name_classes_by_label(tmp_path):
    custom_frames(tmp_path)
    assert class_names('custom', tmp_path, **CUSTOM) == ['0', '1', '2']
    val = build_dataset('custom', tmp_path, 'val', 2, input_size=32, uint8=True, **CUSTOM)
    assert val.source.frame_name == 'frame{:03d}.jpg'
    clip, label = val[0]
    assert label == 1 and clip.shape == (6, 32, 32)
    assert [int(clip[3 * k, 0, 0]) for k in range(2)] == [grey(2), grey(4)]


def test_custom_category_file_and_given_template(tmp_path):
    custom_frames(tmp_path, 'img_{:05d}.jpg')
    write_text(tmp_path / 'names.txt', 'ape\nbee\ncat\ndog\n')
    assert class_names('custom', tmp_path, category='names.txt', **CUSTOM) == ['ape', 'bee', 'cat', 'dog']
    with pytest.raises(UsageError, match='no usable video'):  # a given template that the files do not have
        build_dataset('custom', tmp_path, 'val', 2, image_tmpl='{:05d}.jpg', **CUSTOM)[0]
    write_text(tmp_path / 'names.txt', 'ape\nbee\n')
    with pytest.raises(UsageError, match=r'lists/train.txt:2: label 2 is outside the 2 categories'):
        build_dataset('custom', tmp_path, 'train', 2, category='names.txt', **CUSTOM)


def test_custom_path_label_rows_of_video_files_are_counted_and_cached(tmp_path, capfd):
    from cakes.data.synthetic import panning_frames, write_video_file
    os.makedirs(tmp_path / 'v')
    for name, count in (('one', 9), ('two', 5)):
        write_video_file(str(tmp_path / 'v' / f'{name}.mp4'), panning_frames(count, 32, 32, cell=8))
    write_text(tmp_path / 'lists/train.txt', 'v/one.mp4 0\nv/gone.mp4 1\nv/two.mp4 1\n')
    write_text(tmp_path / 'lists/val.txt', 'v/two.mp4 1\n')
    train = build_dataset('custom', tmp_path, 'train', 2, input_size=32, **CUSTOM)
    assert [(v.folder, v.num_frames) for v in train.videos] == [('v/one.mp4', 9), ('v/gone.mp4', 3), ('v/two.mp4', 5)]
    assert sorted(line.split()[:2] for line in open(tmp_path / 'lists/video_frame_counts.txt')) == [
        ['v/one.mp4', '9'], ['v/two.mp4', '5']]
    np.random.seed(0)
    assert train[1][0].shape == (6, 32, 32)  # the missing video is replaced by another, and counted
    assert train.problem_counts()['missing_videos'] == 1
    assert 'missing video' in capfd.readouterr().err


def test_custom_needs_both_lists_and_existing_paths(tmp_path):
    with pytest.raises(UsageError, match='--dataset custom needs --train_list FILE and --val_list FILE'):
        build_dataset('custom', tmp_path, 'train', 2, train_list='t.txt')
    write_text(tmp_path / 'lists/train.txt', 'nowhere/x 5 0\n')
    write_text(tmp_path / 'lists/val.txt', 'nowhere/y 5 0\n')
    with pytest.raises(UsageError, match='none of the listed paths is under --root_path'):
        build_dataset('custom', tmp_path, 'train', 2, **CUSTOM)


@pytest.mark.parametrize('empty', ['train', 'val'])
@pytest.mark.parametrize('category', ['', 'names.txt'], ids=['labels', 'category'])
def test_an_empty_custom_list_is_named_as_empty(tmp_path, empty, category):
    custom_frames(tmp_path)
    write_text(tmp_path / 'names.txt', 'ape\nbee\ncat\n')
    write_text(tmp_path / CUSTOM[f'{empty}_list'], '\n')  # a blank line is no video either
    with pytest.raises(UsageError) as error:
        build_dataset('custom', tmp_path, empty, 2, category=category, **CUSTOM)
    assert str(error.value) == (f"{tmp_path / CUSTOM[f'{empty}_list']} is empty: it lists no video (one a line: "
                                "'FOLDER NUM_FRAMES LABEL' or 'PATH LABEL')")


def test_an_empty_list_of_a_released_layout_is_named_as_empty(tmp_path):
    make_dataset(tmp_path, train=[('1', 5, 0)])
    with pytest.raises(UsageError, match=r"val_videofolder.txt is empty: it lists no video \(one a line: "
                                         r"'FOLDER NUM_FRAMES LABEL'\)"):
        build_dataset('somethingv1', tmp_path, 'val', 2)


@pytest.mark.parametrize('flags, source', [
    (('--category', 'names.txt'), '--category {root}/names.txt'),
    ((), '--train_list lists/train.txt with --val_list lists/val.txt (no --category: classes 0 to the largest label)'),
], ids=['category', 'labels'])
@pytest.mark.parametrize('start', ['--resume', '--finetune'])
def test_custom_class_count_errors_name_the_files_given(tmp_path, capsys, flags, source, start):
    from conftest import run_main
    custom_frames(tmp_path)
    write_text(tmp_path / 'names.txt', 'ape\nbee\ncat\n')
    checkpoint = str(tmp_path / 'five.pth.tar')  # a released-style checkpoint: classes read off its classifier
    state = {'module.new_fc.weight': torch.zeros(5, 8)}
    if start == '--finetune':  # a dropout supernet's layout (its ops' own BN), as --finetune needs
        state['module.base_model.layer1.0.convT.norm.weight'] = torch.zeros(4)
    torch.save({'epoch': 1, 'state_dict': state}, checkpoint)
    more = ('--evaluate',) if start == '--resume' else ('--op_code', 'conv1_2_3d', '--conv_config', 'CAKES123D_P')
    with pytest.raises(SystemExit):
        run_main(str(tmp_path), tmp_path / 'out', '--dataset', 'custom', '--train_list', CUSTOM['train_list'],
                 '--val_list', CUSTOM['val_list'], *flags, start, checkpoint, *more)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: '{checkpoint}' holds a network for 5 classes but {source.format(root=tmp_path)} lists 3: give the "
        "dataset flags it was trained on (--dataset, --root_path, --category)"]


def test_split_picks_the_lists_and_is_refused_elsewhere(tmp_path):
    make_dataset(tmp_path, 'ucf101', train=[('c/1', 5, 0)], val=[('c/2', 5, 1)], classes=3)
    os.rename(tmp_path / 'ucf101/ucf101_val_split_1.txt', tmp_path / 'ucf101/ucf101_val_split_3.txt')
    assert len(build_dataset('ucf101', tmp_path, 'val', 2, split_number=3)) == 1
    with pytest.raises(UsageError, match='missing val list .*ucf101_val_split_1.txt'):
        build_dataset('ucf101', tmp_path, 'val', 2)
    with pytest.raises(UsageError, match=r'--split 2: only ucf101, hmdb51 have splits \(kinetics400 has one'):
        get_layout('kinetics400', split_number=2)


@pytest.mark.parametrize('dataset, row, problem', [
    ('somethingv1', '7 3', "expected 'FOLDER NUM_FRAMES LABEL', got '7 3'"),  # released format: three fields
    ('kinetics400', 'a/b.mp4', "expected 'FOLDER NUM_FRAMES LABEL' or 'PATH LABEL', got 'a/b.mp4'"),
    ('kinetics400', 'a/b.mp4 five', "expected 'FOLDER NUM_FRAMES LABEL' or 'PATH LABEL'"),
    ('hmdb51', 'x 4 9', 'label 9 is outside the 3 categories'),
])
def test_bad_rows_name_the_file_and_line(tmp_path, dataset, row, problem):
    make_dataset(tmp_path, dataset, train=[('1', 5, 0)], classes=3)
    path = tmp_path / get_layout(dataset).split_list('train')
    write_text(path, f'1 5 0\n{row}\n')
    with pytest.raises(UsageError) as error:
        build_dataset(dataset, tmp_path, 'train', 2)
    assert str(error.value).startswith(f'{path}:2: {problem}')


def test_frame_folder_of_a_video_path_drops_the_extension(tmp_path):
    """A list made from the videos reads the frames extracted beside them (MMAction2's folder names)."""
    make_dataset(tmp_path, 'diving48', train=[('v1', 5, 0)], val=[('v2', 4, 1)], classes=2)
    write_text(tmp_path / 'diving48/diving48_val_list.txt', 'v2.mp4 4 1\n')
    clip, label = build_dataset('diving48', tmp_path, 'val', 2, input_size=32, uint8=True)[0]
    assert label == 1 and int(clip[0, 0, 0]) == grey(2)  # centred: frames 2 and 4


def test_detect_template(tmp_path):
    write_text(tmp_path / 'a' / 'image_00001.jpg', 'x')
    write_text(tmp_path / 'b' / 'x{1}_0001.jpg', 'x')
    assert detect_template(tmp_path / 'a') == 'image_{:05d}.jpg'
    assert detect_template(tmp_path / 'b').format(1) == 'x{1}_0001.jpg'
    os.makedirs(tmp_path / 'c')
    assert detect_template(tmp_path / 'c') is None


def test_dense_train_draws_the_start_and_validation_takes_the_middle():
    starts = set()
    for seed in range(300):
        np.random.seed(seed)
        indices = dense_train_indices(100, 8)
        assert np.diff(indices).tolist() == [8] * 7
        starts.add(indices[0] - 1)
    assert starts == set(range(36))  # 0 .. n - 65, as TSM draws it
    assert dense_val_indices(100, 8) == [17 + 8 * k + 1 for k in range(8)]  # start 17 of 0..35
    assert dense_val_indices(100, 8) == dense_val_indices(100, 8)
    # shorter than 64 frames: from frame 1, wrapping around
    assert dense_val_indices(20, 4) == dense_train_indices(20, 4) == [1, 17, 13, 9]


def test_dense_dataset_samples_densely(tmp_path):
    make_dataset(tmp_path, 'jester', train=[('1', 20, 0)], val=[('2', 20, 0)], classes=2)
    val = build_dataset('jester', tmp_path, 'val', 4, input_size=32, uint8=True, dense=True)
    assert val.sample(val.videos[0]) == [1, 17, 13, 9]
    clip, _ = val[0]
    assert [int(clip[3 * k, 0, 0]) for k in range(4)] == [grey(1), grey(17), grey(13), grey(9)]
    assert build_dataset('jester', tmp_path, 'val', 4).sample(val.videos[0]) == [3, 8, 13, 18]  # TSN, as before


def test_custom_missing_list_names_it_and_what_paths_are_relative_to(tmp_path):
    with pytest.raises(UsageError) as error:
        build_dataset('custom', tmp_path, 'train', 2, **CUSTOM)
    assert str(error.value) == (f"missing train list {tmp_path / 'lists/train.txt'}: --train_list, --val_list and "
                                '--category are relative to --root_path, and so is each PATH (lines PATH NUM_FRAMES '
                                'LABEL or PATH LABEL)')
