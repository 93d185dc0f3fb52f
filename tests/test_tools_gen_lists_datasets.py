"""scripts/gen_lists.py on small copies of the official annotation files of each dataset."""
import json
import os
import re

import pytest

from conftest_data import load_script, write_text
from cakes.cli import run_cli
from cakes.data import build_dataset, class_names


def frames(folder, count, name='img_{:05d}.jpg'):
    os.makedirs(folder, exist_ok=True)
    for index in range(1, count + 1):
        write_text(os.path.join(folder, name.format(index)), 'x')


def read(path):
    with open(path) as f:
        return f.read()


def generate(root, dataset, *extra):
    run_cli(load_script('gen_lists').main, [str(root), '--dataset', dataset, *extra])


def test_kinetics_from_frame_folders_in_class_folders_or_flat(tmp_path, capsys):
    header = 'label,youtube_id,time_start,time_end,split,is_cc\n'
    write_text(tmp_path / 'kinetics400/annotations/train.csv',
               header + 'air drumming,abc,10,20,train,0\nabseiling,def,0,10,train,0\nabseiling,gone,5,15,train,0\n')
    write_text(tmp_path / 'kinetics400/annotations/validate.csv', header + 'air drumming,xyz,30.0,40.0,val,0\n')
    frames(tmp_path / 'kinetics400/rawframes_train/air_drumming/abc_000010_000020', 5)
    frames(tmp_path / 'kinetics400/rawframes_train/abseiling/def_000000_000010', 4)
    frames(tmp_path / 'kinetics400/rawframes_val/xyz_000030_000040', 6)  # flat, as the cvdfoundation tarballs
    generate(tmp_path, 'kinetics400')
    assert read(tmp_path / 'kinetics400/category.txt') == 'abseiling\nair drumming\n'
    assert read(tmp_path / 'kinetics400/kinetics400_train_list.txt') == \
        'air_drumming/abc_000010_000020 5 1\nabseiling/def_000000_000010 4 0\n'
    assert read(tmp_path / 'kinetics400/kinetics400_val_list.txt') == 'xyz_000030_000040 6 1\n'
    assert 'left out 1 listed videos without a frame folder' in capsys.readouterr().err


@pytest.fixture
def ucf_root(tmp_path):
    lists = tmp_path / 'ucf101/ucfTrainTestlist'
    write_text(lists / 'classInd.txt', '1 ApplyEyeMakeup\n2 HandstandPushups\n')
    for split in (1, 2, 3):
        first, second = ('g01', 'g02') if split == 1 else ('g02', 'g01')
        write_text(lists / f'trainlist0{split}.txt', f'ApplyEyeMakeup/v_ApplyEyeMakeup_{first}_c01.avi 1\n'
                                                     f'HandstandPushups/v_HandStandPushups_{first}_c01.avi 2\n')
        write_text(lists / f'testlist0{split}.txt', f'ApplyEyeMakeup/v_ApplyEyeMakeup_{second}_c01.avi\n')
    return tmp_path


def test_ucf101_three_splits_from_videos_with_a_broken_one(ucf_root, capsys):
    from cakes.data.synthetic import panning_frames, write_video_file
    videos = ucf_root / 'ucf101/videos'
    for name, count in (('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01', 5), ('ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01', 7),
                        ('HandstandPushups/v_HandStandPushups_g01_c01', 4)):
        os.makedirs(os.path.dirname(videos / name), exist_ok=True)
        write_video_file(str(videos / f'{name}.avi'), panning_frames(count, 32, 32, cell=8))
    write_text(videos / 'HandstandPushups/v_HandStandPushups_g02_c01.avi', 'not a video')
    generate(ucf_root, 'ucf101', '-j', '1')
    root = ucf_root / 'ucf101'
    assert read(root / 'category.txt') == 'ApplyEyeMakeup\nHandstandPushups\n'
    assert read(root / 'ucf101_train_split_1.txt') == ('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 5 0\n'
                                                       'HandstandPushups/v_HandStandPushups_g01_c01.avi 4 1\n')
    assert read(root / 'ucf101_val_split_1.txt') == 'ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 7 0\n'
    assert read(root / 'ucf101_train_split_2.txt') == 'ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 7 0\n'
    err = capsys.readouterr().err
    assert f"cannot open {videos / 'HandstandPushups/v_HandStandPushups_g02_c01.avi'} as a video" in err
    assert 'without a decodable video in' in err and '(split 2): HandstandPushups/v_HandStandPushups_g02_c01.avi' in err
    assert len(read(root / 'video_frame_counts.txt').splitlines()) == 3  # resumable: the cache beside the lists
    dataset = build_dataset('ucf101', ucf_root, 'val', 2, input_size=32, split_number=2)
    assert [(v.folder, v.num_frames) for v in dataset.videos] == [('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi', 5)]
    assert dataset[0][0].shape == (6, 32, 32)


def test_ucf101_unknown_class_names_the_line(ucf_root, capsys):
    write_text(ucf_root / 'ucf101/ucfTrainTestlist/testlist02.txt', 'Juggling/v_Juggling_g01_c01.avi\n')
    with pytest.raises(SystemExit):
        generate(ucf_root, 'ucf101')
    assert re.match(r"error: .*testlist02.txt:1: expected 'CLASS/VIDEO.avi' with a class of classInd.txt",
                    capsys.readouterr().err)
    assert not os.path.exists(ucf_root / 'ucf101/category.txt')


def test_hmdb51_split_files(tmp_path):
    splits = tmp_path / 'hmdb51/testTrainMulti_7030_splits'
    for name, videos in (('wave', ('w1', 'w2', 'w3')), ('brush_hair', ('b1', 'b2', 'b3'))):
        for split in (1, 2, 3):
            ids = {videos[0]: '1', videos[1]: '2' if split == 1 else '1', videos[2]: '0'}
            write_text(splits / f'{name}_test_split{split}.txt', ''.join(f'{v}.avi {i} \n' for v, i in ids.items()))
        for video in videos:
            frames(tmp_path / 'hmdb51/rawframes' / name / video, 3)
    generate(tmp_path, 'hmdb51')
    assert class_names('hmdb51', tmp_path) == ['brush_hair', 'wave']
    assert read(tmp_path / 'hmdb51/hmdb51_train_split_1.txt') == 'brush_hair/b1 3 0\nwave/w1 3 1\n'
    assert read(tmp_path / 'hmdb51/hmdb51_val_split_1.txt') == 'brush_hair/b2 3 0\nwave/w2 3 1\n'
    assert read(tmp_path / 'hmdb51/hmdb51_train_split_3.txt') == 'brush_hair/b1 3 0\nbrush_hair/b2 3 0\n' \
                                                                 'wave/w1 3 1\nwave/w2 3 1\n'
    assert read(tmp_path / 'hmdb51/hmdb51_val_split_3.txt') == ''


def test_jester_csv_files(tmp_path):
    write_text(tmp_path / 'jester/jester-v1-labels.csv', 'Swiping Left\nSwiping Right\nTurning Hand Clockwise\n'
                                                         'Turning Hand Counterclockwise\nNo gesture\n')
    write_text(tmp_path / 'jester/jester-v1-train.csv', '1;Swiping Right\n2;No gesture\n')
    write_text(tmp_path / 'jester/jester-v1-validation.csv', '3;Turning Hand Clockwise\n')
    for video, count in (('1', 4), ('2', 5), ('3', 6)):
        frames(tmp_path / 'jester/20bn-jester-v1' / video, count, '{:05d}.jpg')
    generate(tmp_path, 'jester')
    assert read(tmp_path / 'jester/train_videofolder.txt') == '1 4 1\n2 5 4\n'
    assert read(tmp_path / 'jester/val_videofolder.txt') == '3 6 2\n'
    # A flip mirrors a swipe and a turn: both pairs swap, found by name.
    assert build_dataset('jester', tmp_path, 'train', 2).flip_labels == {0: 1, 1: 0, 2: 3, 3: 2}


def test_diving48_json_files(tmp_path):
    write_text(tmp_path / 'diving48/Diving48_vocab.json', json.dumps([['Back', '15som', 'NoTwis', 'PIKE'],
                                                                      ['Forward', '25som', '1Twis', 'FREE']]))
    write_text(tmp_path / 'diving48/Diving48_V2_train.json', json.dumps([
        {'vid_name': '-abc_00001', 'label': 1, 'start_frame': 0, 'end_frame': 50}]))
    write_text(tmp_path / 'diving48/Diving48_V2_test.json', json.dumps([{'vid_name': 'x_00002', 'label': 0}]))
    frames(tmp_path / 'diving48/rawframes/-abc_00001', 5)
    frames(tmp_path / 'diving48/rawframes/x_00002', 3)
    generate(tmp_path, 'diving48')
    assert read(tmp_path / 'diving48/category.txt') == 'Back 15som NoTwis PIKE\nForward 25som 1Twis FREE\n'
    assert read(tmp_path / 'diving48/diving48_train_list.txt') == '-abc_00001 5 1\n'
    assert read(tmp_path / 'diving48/diving48_val_list.txt') == 'x_00002 3 0\n'
    # No left/right names: flipped clips keep their label (not the Something-Something pairs).
    assert build_dataset('diving48', tmp_path, 'train', 2).flip_labels == {}


@pytest.mark.parametrize('dataset, missing', [('kinetics400', 'kinetics400/annotations/train.csv'),
                                              ('ucf101', 'ucf101/ucfTrainTestlist/classInd.txt'),
                                              ('hmdb51', 'hmdb51/testTrainMulti_7030_splits'),
                                              ('jester', 'jester/jester-v1-labels.csv'),
                                              ('diving48', 'diving48/Diving48_vocab.json')])
def test_missing_annotation_file_is_one_line(tmp_path, capsys, dataset, missing):
    with pytest.raises(SystemExit) as exit_info:
        generate(tmp_path, dataset)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: missing {tmp_path / missing}: put the official') and err.count('\n') == 1
