"""Make the lists of Kinetics-400, UCF101, HMDB51, Jester or Diving48 from its official annotation files.

    python scripts/gen_lists.py --dataset ucf101 ROOT [-j N]

Reads the official files where the layout keeps them below ROOT (README, "Other datasets"), finds each listed
video by its name in the frame folders or, when there are none, among the video files (decoded in -j processes
to count their frames; the counts go to ROOT/DATASET/video_frame_counts.txt as they come, so a stopped run
resumes), and writes DATASET/category.txt and the lists (`PATH NUM_FRAMES LABEL`; UCF101 and HMDB51: all three
splits). Listed videos that are missing or do not decode are named in a warning and left out. For
Something-Something use scripts/gen_lists_somethingv1.py and gen_lists_somethingv2.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cakes.cli import run_cli  # noqa: E402
from cakes.data.annotations import READERS  # noqa: E402
from cakes.data.lists import make_split_lists  # noqa: E402
from cakes.errors import UsageError  # noqa: E402


def generate(root, dataset, jobs=1):
    """Read every input, count the frames, then write: an error leaves no partial output."""
    categories, entries = READERS[dataset](root)
    make_split_lists(root, dataset, categories, entries, jobs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', help='dataset root, the --root_path of training')
    parser.add_argument('--dataset', required=True, choices=sorted(READERS))
    parser.add_argument('-j', '--jobs', type=int, default=os.cpu_count(),
                        help='processes decoding videos at once (when counting from the videos)')
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise UsageError(f'-j {args.jobs}: give at least 1 process')
    generate(args.root, args.dataset, args.jobs)


if __name__ == '__main__':
    run_cli(main)
