"""scripts/gen_lists_somethingv{1,2}.py on small copies of the official files."""
import json
import os
import re
import shutil

import pytest

from conftest_data import load_script, run_script, write_text
from cakes.cli import run_cli

V1 = 'something-something-v1'


def make_frames(frames_dir, counts):
    for folder, count in counts.items():
        os.makedirs(os.path.join(frames_dir, folder))
        for index in range(1, count + 1):
            write_text(os.path.join(frames_dir, folder, f'{index:05d}.jpg'), 'x')


@pytest.fixture
def v1_root(tmp_path):
    write_text(tmp_path / V1 / f'{V1}-labels.csv', 'Pushing something from right to left\nDropping something\n'
                                                   'Pushing something from left to right\n')
    write_text(tmp_path / V1 / f'{V1}-train.csv', '11;Dropping something\n12;Pushing something from right to left\n'
                                                  '13;Dropping something\n')
    write_text(tmp_path / V1 / f'{V1}-validation.csv', '21;Pushing something from left to right\n')
    make_frames(tmp_path / V1 / '20bn-something-something-v1', {'11': 4, '12': 2, '21': 7})
    return tmp_path


def read(path):
    with open(path) as f:
        return f.read()


def test_v1_lists(v1_root, capsys):
    run_cli(load_script('gen_lists_somethingv1').main, [str(v1_root)])
    assert read(v1_root / V1 / 'category.txt') == ('Dropping something\nPushing something from left to right\n'
                                                   'Pushing something from right to left\n')
    assert read(v1_root / V1 / 'train_videofolder.txt') == '11 4 0\n12 2 2\n'
    assert read(v1_root / V1 / 'val_videofolder.txt') == '21 7 1\n'
    err = capsys.readouterr().err
    assert 'left out 1 listed videos without a frame folder' in err and ': 13' in err


def test_v1_unknown_class_writes_nothing(v1_root, capsys):
    write_text(v1_root / V1 / f'{V1}-validation.csv', '21;Juggling something\n')
    with pytest.raises(SystemExit) as exit_info:
        run_cli(load_script('gen_lists_somethingv1').main, [str(v1_root)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"error: {v1_root / V1 / f'{V1}-validation.csv'}:1: expected 'ID;class name' "
                                       "with a class of the labels file, got '21;Juggling something'\n")
    assert not os.path.exists(v1_root / V1 / 'category.txt')


def test_v1_cli_missing_labels(v1_root):
    os.remove(v1_root / V1 / f'{V1}-labels.csv')
    result = run_script('gen_lists_somethingv1', v1_root)
    assert result.returncode == 2
    assert result.stderr == f"error: missing {v1_root / V1 / f'{V1}-labels.csv'}: put the official SSV1 CSV files " \
                            f'in {v1_root / V1}\n'


def write_json(path, value):
    write_text(path, json.dumps(value))


@pytest.fixture
def v2_root(tmp_path):
    write_json(tmp_path / 'something-something-v2-labels.json',
               {'Approaching something with your camera': '0', 'Putting something on something': '2',
                'Moving something up': '1'})
    write_json(tmp_path / 'something-something-v2-train.json', [
        {'id': '5', 'label': 'putting a cup on a box', 'template': 'Putting [something] on [something]'},
        {'id': '6', 'label': 'moving a pen up', 'template': 'Moving [something] up'},
        {'id': '8', 'label': 'approaching', 'template': 'Approaching [something] with your camera'}])
    write_json(tmp_path / 'something-something-v2-validation.json', [
        {'id': '7', 'label': 'approaching a car', 'template': 'Approaching [something] with your camera'}])
    make_frames(tmp_path / '20bn-something-something-v2-frames', {'5': 3, '6': 9, '7': 5})
    return tmp_path


def test_v2_lists(v2_root, capsys):
    run_cli(load_script('gen_lists_somethingv2').main, [str(v2_root)])
    assert read(v2_root / 'category.txt') == ('Approaching something with your camera\nMoving something up\n'
                                              'Putting something on something\n')
    assert read(v2_root / 'train_video_folder.txt') == '5 3 2\n6 9 1\n'
    assert read(v2_root / 'val_video_folder.txt') == '7 5 0\n'
    assert 'left out 1 listed videos without a frame folder' in capsys.readouterr().err


@pytest.mark.parametrize('damage, message', [
    (lambda root: os.remove(root / 'something-something-v2-train.json'), 'missing .*v2-train.json'),
    (lambda root: write_text(root / 'something-something-v2-labels.json', '{'), 'labels.json is not valid JSON'),
    (lambda root: write_json(root / 'something-something-v2-labels.json', {'A': '0', 'B': '2'}),
     'expected the label ids 0..1'),
    (lambda root: write_json(root / 'something-something-v2-validation.json', [{'id': '7', 'template': 'Juggling'}]),
     'expected objects with an id and the template of a known class'),
    (lambda root: os.rename(root / '20bn-something-something-v2-frames', root / 'elsewhere'),
     'missing frame folder .*20bn-something-something-v2-frames'),
])
def test_v2_errors(v2_root, capsys, damage, message):
    damage(v2_root)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(load_script('gen_lists_somethingv2').main, [str(v2_root)])
    assert exit_info.value.code == 2
    assert re.match(f'error: .*{message}', capsys.readouterr().err)
    assert not os.path.exists(v2_root / 'category.txt')


def test_v2_cli_error_message(v2_root):
    os.remove(v2_root / 'something-something-v2-labels.json')
    result = run_script('gen_lists_somethingv2', v2_root)
    assert result.returncode == 2
    assert result.stderr == f"error: missing {v2_root / 'something-something-v2-labels.json'}: put the official " \
                            f'SSV2 JSON files in {v2_root}\n'


V2_VIDEOS = '20bn-something-something-v2'
VIDEO_FRAMES = {'5': 3, '6': 9, '7': 5}


@pytest.fixture(scope='module')
def v2_videos(tmp_path_factory):
    """The .webm videos of the v2_root videos, and a file that is no video for another listed one (8)."""
    from cakes.data.synthetic import panning_frames, write_video_file
    folder = tmp_path_factory.mktemp('v2_videos')
    for seed, (name, count) in enumerate(VIDEO_FRAMES.items()):
        write_video_file(str(folder / f'{name}.webm'), panning_frames(count, 32, 32, seed=seed, cell=8))
    write_text(folder / '8.webm', 'not a video')
    return folder


def video_root(v2_root, v2_videos):
    """v2_root with the videos instead of the frame folders."""
    shutil.rmtree(v2_root / '20bn-something-something-v2-frames')
    shutil.copytree(v2_videos, v2_root / V2_VIDEOS)
    return v2_root


@pytest.mark.parametrize('jobs', ['1', '2'])
def test_v2_lists_from_videos_equal_lists_from_frames(v2_root, v2_videos, capsys, jobs):
    run_cli(load_script('gen_lists_somethingv2').main, [str(v2_root)])
    from_frames = [read(v2_root / name) for name in ('category.txt', 'train_video_folder.txt', 'val_video_folder.txt')]
    capsys.readouterr()
    root = video_root(v2_root, v2_videos)
    run_cli(load_script('gen_lists_somethingv2').main, [str(root), '-j', jobs])
    assert [read(root / name) for name in ('category.txt', 'train_video_folder.txt', 'val_video_folder.txt')] \
        == from_frames
    err = capsys.readouterr().err
    assert f"warning: cannot open {root / V2_VIDEOS / '8.webm'} as a video" in err
    assert f'left out 1 listed videos without a decodable video in {root / V2_VIDEOS}: 8' in err
    assert re.search(r'^counting frames 4/4 in \d:\d\d:\d\d$', err, re.M) and '\r' not in err  # captured: no bar
    assert sorted(read(root / 'video_frame_counts.txt').splitlines()) == [
        f"{name} {count} {os.path.getsize(root / V2_VIDEOS / f'{name}.webm')}" for name, count in VIDEO_FRAMES.items()]


def test_v2_video_counts_resume_from_the_cache(v2_root, v2_videos, capsys, monkeypatch):
    import cakes.data.frame_counts as frame_counts
    root = video_root(v2_root, v2_videos)
    size = os.path.getsize(root / V2_VIDEOS / '6.webm')
    # 5 counted before; 6 counted when the file had another size; 7's line cut short by a kill
    write_text(root / 'video_frame_counts.txt', f"5 40 {os.path.getsize(root / V2_VIDEOS / '5.webm')}\n"
                                                f'6 40 {size + 1}\n7 5')
    counted = []
    monkeypatch.setattr(frame_counts, 'count_frames', lambda path: counted.append(os.path.basename(path)) or 11)
    run_cli(load_script('gen_lists_somethingv2').main, [str(root), '-j', '1'])
    assert sorted(counted) == ['6.webm', '7.webm', '8.webm']
    assert read(root / 'train_video_folder.txt') == '5 40 2\n6 11 1\n8 11 0\n'  # 8 'decodes' with the stand-in
    assert read(root / 'video_frame_counts.txt').splitlines()[:3] == [
        f"5 40 {os.path.getsize(root / V2_VIDEOS / '5.webm')}", f'6 40 {size + 1}', '7 5']
    assert frame_counts.read_cache(root / 'video_frame_counts.txt')['7'] == (11, os.path.getsize(root / V2_VIDEOS / '7.webm'))
    assert '1 of 4 videos counted before' in capsys.readouterr().err
    counted.clear()
    run_cli(load_script('gen_lists_somethingv2').main, [str(root), '-j', '1'])
    assert counted == []


def test_v2_without_frames_or_videos_names_both(v2_root, capsys):
    shutil.rmtree(v2_root / '20bn-something-something-v2-frames')
    with pytest.raises(SystemExit):
        run_cli(load_script('gen_lists_somethingv2').main, [str(v2_root)])
    assert capsys.readouterr().err == (
        f"error: missing frame folder {v2_root / '20bn-something-something-v2-frames'} or video folder "
        f'{v2_root / V2_VIDEOS}: unpack the videos or extract their frames there first\n')
