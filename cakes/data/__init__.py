"""Video clips for training and validation: Something-Something (SPEC section 3), Kinetics-400, UCF101, HMDB51,
Jester, Diving48 and any list (the `custom` dataset); the layouts are the rows of lists.LAYOUTS."""
import functools
import os

from cakes.data.lists import (LAYOUTS, MIN_FRAMES, detect_template, existing_path, frame_folder, get_layout,
                              list_labels, read_categories, read_list)
from cakes.data.sources import FrameFolders, VideoFiles
from cakes.data.transforms import flip_labels, normalize_uint8
from cakes.data.video_dataset import VideoDataset
from cakes.data.views import ViewDataset, Views, add_view_flags
from cakes.errors import UsageError

DATASETS = tuple(LAYOUTS)
SPLITS = ('train', 'val')
# The flags of add_dataset_flags and the keywords of build_dataset and class_names that take them.
OPTIONS = {'split': 'split_number', 'train_list': 'train_list', 'val_list': 'val_list', 'category': 'category',
           'image_tmpl': 'image_tmpl'}


def add_dataset_flags(parser):
    """The flags that choose a dataset's files (main.py); --dataset itself takes DATASETS."""
    parser.add_argument('--split', type=int, default=None, choices=(1, 2, 3),
                        help='the official split of ucf101 and hmdb51 (default 1)')
    parser.add_argument('--train_list', default='', metavar='FILE',
                        help='training list instead of the layout\'s, relative to --root_path: lines '
                             'PATH NUM_FRAMES LABEL (frame folders) or PATH LABEL (video files; not somethingv1/v2)')
    parser.add_argument('--val_list', default='', metavar='FILE', help='validation list, as --train_list')
    parser.add_argument('--category', default='', metavar='FILE',
                        help="class names, one a line in label order, relative to --root_path (custom: "
                             "default the labels as text)")
    parser.add_argument('--image_tmpl', default='', metavar='TEMPLATE',
                        help="frame file names, e.g. 'img_{:05d}.jpg' (default: the layout's; custom: detected)")


def dataset_options(args):
    """{option: value} of the dataset flags in parsed `args`, for build_dataset and class_names."""
    return {keyword: getattr(args, flag) for flag, keyword in OPTIONS.items()}


def class_names(dataset, root_path, **options):
    """The lines of the dataset's category file: the class names in label order (custom without one: the
    labels of its lists as text, 0 .. the largest)."""
    layout = get_layout(dataset, **options)
    if not layout.category:
        lists = [existing_path(dataset, root_path, layout.split_list(split), f'{split} list', layout)
                 for split in SPLITS]
        return [str(label) for label in range(list_labels(lists))]
    return read_categories(existing_path(dataset, root_path, layout.category, 'category file', layout))


def class_source(dataset, root_path, **options):
    """Where class_names reads the names, as an error names it: the --category file given, the layout's category
    file, or (custom without --category) the labels of the lists."""
    layout = get_layout(dataset, **options)
    if options.get('category'):
        return f'--category {os.path.join(root_path, layout.category)}'
    if not layout.category:
        return (f'--train_list {layout.train_list} with --val_list {layout.val_list} (no --category: classes 0 to '
                'the largest label)')
    return f'the {dataset} {os.path.basename(layout.category)} under {root_path}'


def num_classes(dataset, root_path, **options):
    return len(class_names(dataset, root_path, **options))


def frame_source(dataset, root_path, split='train', videos=(), **options):
    """The frame folders of `dataset` under root_path or, when only they are there, its video files. custom
    (frames and videos both in ROOT) reads what the first listed PATH that exists is, a folder or a file."""
    layout = get_layout(dataset, **options)
    if not layout.frames and not layout.videos:
        return _custom_source(layout, root_path, videos)
    if layout.reads_videos(root_path, split):
        return VideoFiles(os.path.join(root_path, layout.video_dir(split)), layout.video_name)
    directory = existing_path(dataset, root_path, layout.frame_dir(split), 'frame folder', layout)
    return FrameFolders(directory, layout.frame_name)


def _custom_source(layout, root_path, videos):
    first = next((video.folder for video in videos if os.path.exists(os.path.join(root_path, video.folder))), None)
    if first is None:
        raise UsageError(f'none of the listed paths is under --root_path {root_path}: PATH in a custom list is a '
                         'frame folder or video file relative to --root_path')
    if os.path.isfile(os.path.join(root_path, first)):
        return VideoFiles(root_path, '{}')
    template = layout.frame_name or detect_template(os.path.join(root_path, frame_folder(first)))
    if template is None:
        raise UsageError(f'cannot tell the frame file names in {os.path.join(root_path, first)}: give --image_tmpl '
                         "(e.g. 'img_{:05d}.jpg'; frames numbered from 1)")
    return FrameFolders(root_path, template)


def build_dataset(dataset, root_path, split, num_segments, input_size=224, train=None, uint8=False, views=None,
                  dense=False, **options):
    """The `split` list of `dataset` under `root_path`; `train` (default: split == 'train') selects random
    sampling and the training transform, otherwise centred sampling and the validation transform. `views`
    (a views.Views test protocol, with uint8) gives every view of each video instead of one clip; `dense`
    samples T frames 64 // T apart instead of TSN segments. `options`: the dataset flags (dataset_options)."""
    if split not in SPLITS:
        raise UsageError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    if num_segments < 1 or input_size < 1:
        raise UsageError(f'num_segments {num_segments} and input_size {input_size} must both be at least 1')
    layout = get_layout(dataset, **options)
    names = class_names(dataset, root_path, **options)
    list_path = existing_path(dataset, root_path, layout.split_list(split), f'{split} list', layout)
    videos = read_list(list_path, len(names), layout.path_label_rows)
    source = frame_source(dataset, root_path, split, videos, **options)
    videos = [video for video in source.with_counts(videos, os.path.dirname(list_path))
              if video.num_frames >= MIN_FRAMES]
    if not videos:
        raise UsageError(f'no video with at least {MIN_FRAMES} frames in {list_path}: '
                         f'regenerate it with {layout.tool}')
    train = split == 'train' if train is None else train
    where = os.path.join(root_path, layout.category) if layout.category else 'the labels'
    flips = flip_labels(names, where, layout.released_flips) if train else {}
    make = VideoDataset if views is None else functools.partial(ViewDataset, views=views)
    return make(videos, source, num_segments, input_size, train, uint8, flips, dense)


__all__ = ['DATASETS', 'OPTIONS', 'class_names', 'class_source', 'num_classes', 'frame_source', 'Views',
           'add_view_flags', 'add_dataset_flags', 'dataset_options', 'build_dataset', 'normalize_uint8']
