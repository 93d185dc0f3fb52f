"""Dataset layouts, categories and lists: what build_dataset and num_classes accept and refuse."""
import os

import pytest

from conftest_data import make_dataset, write_text
from cakes.data import DATASETS, build_dataset, num_classes
from cakes.errors import UsageError


@pytest.mark.parametrize('dataset', [name for name in DATASETS if name != 'custom'])  # custom: test_data_layouts
@pytest.mark.parametrize('slash', ['', '/'])
def test_layouts_load_with_or_without_trailing_slash(tmp_path, dataset, slash):
    make_dataset(tmp_path, dataset, train=[('7', 5, 3), ('8', 4, 9)], val=[('9', 6, 1)], classes=12)
    root = str(tmp_path) + slash
    assert num_classes(dataset, root) == 12
    train = build_dataset(dataset, root, 'train', 4)
    assert [(v.folder, v.num_frames, v.label) for v in train.videos] == [('7', 5, 3), ('8', 4, 9)]
    assert train.train
    val = build_dataset(dataset, root, 'val', 4)
    assert len(val) == 1 and not val.train


def test_train_flag_overrides_split(tmp_path):
    make_dataset(tmp_path, train=[('1', 5, 0)], val=[('2', 5, 0)])
    assert not build_dataset('somethingv1', tmp_path, 'train', 4, train=False).train
    assert build_dataset('somethingv1', tmp_path, 'val', 4, train=True).train


def test_videos_with_fewer_than_3_frames_are_dropped(tmp_path):
    make_dataset(tmp_path, train=[('1', 2, 0), ('2', 3, 1), ('3', 0, 2), ('4', 9, 3)])
    assert [v.folder for v in build_dataset('somethingv1', tmp_path, 'train', 8).videos] == ['2', '4']


def test_list_of_only_short_videos_is_an_error(tmp_path):
    make_dataset(tmp_path, train=[('1', 2, 0)])
    with pytest.raises(UsageError, match='no video with at least 3 frames'):
        build_dataset('somethingv1', tmp_path, 'train', 8)


@pytest.mark.parametrize('dataset, relative, what', [
    ('somethingv1', 'something-something-v1/category.txt', 'category file'),
    ('somethingv1', 'something-something-v1/train_videofolder.txt', 'train list'),
    ('somethingv1', 'something-something-v1/20bn-something-something-v1', 'frame folder'),
    ('somethingv2', 'category.txt', 'category file'),
    ('somethingv2', 'train_video_folder.txt', 'train list'),
    ('somethingv2', '20bn-something-something-v2-frames', 'frame folder'),
])
def test_missing_file_names_path_and_layout(tmp_path, dataset, relative, what):
    make_dataset(tmp_path, dataset, train=[('1', 5, 0)])
    path = tmp_path / relative
    if path.is_dir():
        os.rename(path, str(path) + '.moved')
    else:
        path.unlink()
    with pytest.raises(UsageError) as error:
        build_dataset(dataset, tmp_path, 'train', 8)
    message = str(error.value)
    assert f'missing {what} {path}' in message
    assert f'{dataset} layout' in message and '\n' not in message


def test_missing_category_file_in_num_classes(tmp_path):
    with pytest.raises(UsageError, match='missing category file .*category.txt'):
        num_classes('somethingv2', tmp_path)


def test_unknown_dataset_and_split(tmp_path):
    make_dataset(tmp_path, train=[('1', 5, 0)])
    with pytest.raises(UsageError, match="unknown dataset 'kinetics'.*somethingv1, somethingv2"):
        num_classes('kinetics', tmp_path)
    with pytest.raises(UsageError, match="unknown split 'test'"):
        build_dataset('somethingv1', tmp_path, 'test', 8)


@pytest.mark.parametrize('row, problem', [
    ('1 5', "expected 'FOLDER NUM_FRAMES LABEL'"),
    ('1 five 0', "expected 'FOLDER NUM_FRAMES LABEL'"),
    ('1 5 174', 'label 174 is outside the 174 categories'),
])
def test_bad_list_rows_name_file_and_line(tmp_path, row, problem):
    make_dataset(tmp_path, train=[('1', 5, 0)])
    list_path = tmp_path / 'something-something-v1' / 'train_videofolder.txt'
    write_text(list_path, f'1 5 0\n{row}\n')
    with pytest.raises(UsageError, match=f'{list_path}:2: {problem}'):
        build_dataset('somethingv1', tmp_path, 'train', 8)
