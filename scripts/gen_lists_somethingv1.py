"""Make the SSV1 lists from the official CSV files, as TRN does.

Reads ROOT/something-something-v1/something-something-v1-{labels,train,validation}.csv and the frame
folders in ROOT/something-something-v1/20bn-something-something-v1/; writes category.txt (names
sorted), train_videofolder.txt and val_videofolder.txt (`ID NUM_FRAMES LABEL`) beside them.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.data.lists import make_lists  # noqa: E402
from cakes.cli import run_cli  # noqa: E402
from cakes.errors import UsageError  # noqa: E402

PREFIX = 'something-something-v1/something-something-v1-'


def read_lines(path):
    if not os.path.isfile(path):
        raise UsageError(f'missing {path}: put the official SSV1 CSV files in {os.path.dirname(path)}')
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_rows(path, labels):
    """(ID, label) for each `ID;class name` row of an official split file."""
    rows = []
    for number, line in enumerate(read_lines(path), 1):
        video_id, _, name = line.partition(';')
        if name not in labels:
            raise UsageError(f"{path}:{number}: expected 'ID;class name' with a class of the labels file, got {line!r}")
        rows.append((video_id, labels[name]))
    return rows


def generate(root):
    """Read every input, count the frames, then write: an error leaves no partial output."""
    categories = sorted(read_lines(os.path.join(root, PREFIX + 'labels.csv')))
    labels = {name: label for label, name in enumerate(categories)}
    train, val = (read_rows(os.path.join(root, PREFIX + name), labels) for name in ('train.csv', 'validation.csv'))
    make_lists(root, 'somethingv1', categories, train, val)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', help='dataset root, the --root_path of training')
    args = parser.parse_args(argv)
    generate(args.root)


if __name__ == '__main__':
    run_cli(main)
