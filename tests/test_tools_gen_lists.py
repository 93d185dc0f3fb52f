"""scripts/gen_lists_somethingv{1,2}.py on small copies of the official files."""
import json
import os
import re

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
