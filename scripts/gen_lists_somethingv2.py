"""Make the SSV2 lists from the official JSON files, as TSM does.

Reads ROOT/something-something-v2-{labels,train,validation}.json and the frame folders in
ROOT/20bn-something-something-v2-frames/; writes ROOT/category.txt (line number = label id),
train_video_folder.txt and val_video_folder.txt (`ID NUM_FRAMES LABEL`).

Without the frame folder, the frames are counted by decoding the videos ROOT/20bn-something-something-v2/ID.webm
in -j processes; the counts go to ROOT/video_frame_counts.txt as they come, so a stopped run resumes.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.data.lists import make_lists  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.errors import UsageError  # noqa: E402

PREFIX = 'something-something-v2-'


def read_json(path):
    if not os.path.isfile(path):
        raise UsageError(f'missing {path}: put the official SSV2 JSON files in {os.path.dirname(path)}')
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise UsageError(f'{path} is not valid JSON ({error}): download it again') from None


def read_categories(path):
    """Class names ordered by their ids, which must be 0..N-1."""
    try:
        ids = {name: int(label) for name, label in read_json(path).items()}
    except (AttributeError, ValueError):
        raise UsageError(f'{path}: expected an object mapping class names to ids') from None
    categories = sorted(ids, key=ids.get)
    if [ids[name] for name in categories] != list(range(len(categories))):
        raise UsageError(f'{path}: expected the label ids 0..{len(categories) - 1}, each once')
    return categories


def read_rows(path, labels):
    """(ID, label) for each video of an official split file; the template without brackets is the class."""
    rows = []
    for video in read_json(path):
        try:
            name = video['template'].replace('[', '').replace(']', '')
            rows.append((str(video['id']), labels[name]))
        except (KeyError, TypeError, AttributeError):
            raise UsageError(f'{path}: expected objects with an id and the template of a known class, '
                             f'got {video!r}') from None
    return rows


def generate(root, jobs=1):
    """Read every input, count the frames, then write: an error leaves no partial output."""
    categories = read_categories(os.path.join(root, PREFIX + 'labels.json'))
    labels = {name: label for label, name in enumerate(categories)}
    train, val = (read_rows(os.path.join(root, PREFIX + name), labels) for name in ('train.json', 'validation.json'))
    make_lists(root, 'somethingv2', categories, train, val, jobs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', help='dataset root, the --root_path of training')
    parser.add_argument('-j', '--jobs', type=int, default=os.cpu_count(),
                        help='processes decoding videos at once (when counting from the videos)')
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise UsageError(f'-j {args.jobs}: give at least 1 process')
    generate(args.root, args.jobs)


if __name__ == '__main__':
    run_cli(main)
