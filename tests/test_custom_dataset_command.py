"""The `--dataset custom` commands of docs/datasets.md, run as written on a tiny dataset of one's own: they
train, validate, write the checkpoint the second command names, and evaluate it."""
import os
import re
import shlex
import shutil

import pytest
import torch

from conftest import TINY
from conftest_data import plain_frames, write_frames, write_text

pytestmark = pytest.mark.usefixtures('single_thread')

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'datasets.md')
MARKER = '<!-- custom-dataset-command:'
CLASSES = ['pouring', 'stirring', 'whisking']
# The docs' frame count is kept (8, the default); the rest of TINY makes it small: 48x48 crops, batch 2, no
# workers, no ImageNet weights.
SMALL = TINY[:TINY.index('--num_segments')] + TINY[TINY.index('--num_segments') + 2:]


def documented_commands(text):
    """The commands of the fenced block after the marker, continuation lines joined, split as a shell does."""
    block = re.search(re.escape(MARKER) + r'.*?\n```bash\n(.*?)```', text, re.S).group(1)
    return [shlex.split(line) for line in block.replace('\\\n', ' ').splitlines() if line.strip()]


def write_dataset(root):
    """The layout the docs describe: classes.txt, train.txt and val.txt (PATH NUM_FRAMES LABEL), frame folders
    clips/NAME/img_00001.jpg: a few videos of a few tiny frames."""
    rows = {'train': [('clips/a', 5, 0), ('clips/b', 4, 1), ('clips/c', 6, 2), ('clips/d', 5, 1)],
            'val': [('clips/e', 5, 0), ('clips/f', 4, 2), ('clips/g', 5, 1)]}
    write_text(os.path.join(root, 'classes.txt'), ''.join(name + '\n' for name in CLASSES))
    for split, videos in rows.items():
        write_text(os.path.join(root, f'{split}.txt'), ''.join(f'{p} {n} {label}\n' for p, n, label in videos))
        for path, frames, _ in videos:
            write_frames(os.path.join(root, path), plain_frames(frames, width=64, height=48), 'img_{:05d}.jpg')


def as_run(command, root, out):
    """`python main.py ARGS` with ROOT and DIR filled in: the arguments of main.main."""
    assert command[:2] == ['python', 'main.py'], command
    return [re.sub(r'^DIR(?=/|$)', str(out), arg.replace('ROOT', str(root))) for arg in command[2:]]


def test_the_documented_custom_dataset_commands_train_and_evaluate(tmp_path, monkeypatch, capsys):
    import main
    from cakes.cli import run_cli
    from cakes.conv_config import conv_configs
    commands = documented_commands(open(DOCS).read())
    assert len(commands) == 2 and all('--dataset' in c and c[c.index('--dataset') + 1] == 'custom' for c in commands)
    root, out = tmp_path / 'my_dataset', tmp_path / 'runs'
    write_dataset(root)
    monkeypatch.chdir(tmp_path)
    train, evaluate = (as_run(command, root, out) for command in commands)

    try:
        run_cli(main.main, train + SMALL + ['--epochs', '1'])  # one epoch, not the docs' 30
        printed = capsys.readouterr().out
        assert 'Epoch: [0][0/2]' in printed and len(re.findall(r'^Testing Results: ', printed, re.M)) == 1
        checkpoint = evaluate[evaluate.index('--resume') + 1]  # the path the docs give: the training run wrote it
        description = torch.load(checkpoint, weights_only=True)['description']
        assert description['class_names'] == CLASSES and description['num_segments'] == 8
        assert description['op_code'] == 'conv1_2_3d' and description['conv_config'] == conv_configs()['CAKES123D_P']

        run_cli(main.main, evaluate + SMALL)
        printed = capsys.readouterr().out
        assert 'Epoch: ' not in printed and len(re.findall(r'^Testing Results: Prec@1 [\d.]+ ', printed, re.M)) == 1
    finally:  # a ResNet-50 checkpoint is hundreds of MB: leave nothing behind
        shutil.rmtree(out, ignore_errors=True)
