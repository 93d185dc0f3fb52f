"""Something-Something V1/V2 clips for training and validation (SPEC section 3)."""
import functools

from cakes.data.lists import LAYOUTS, MIN_FRAMES, existing_path, get_layout, read_categories, read_list
from cakes.data.transforms import normalize_uint8
from cakes.data.video_dataset import VideoDataset
from cakes.data.views import ViewDataset, Views, add_view_flags
from cakes.errors import UsageError

DATASETS = tuple(LAYOUTS)
SPLITS = ('train', 'val')


def class_names(dataset, root_path):
    """The lines of the dataset's category file: the class names in label order."""
    layout = get_layout(dataset)
    return read_categories(existing_path(dataset, root_path, layout.category, 'category file'))


def num_classes(dataset, root_path):
    return len(class_names(dataset, root_path))


def build_dataset(dataset, root_path, split, num_segments, input_size=224, train=None, uint8=False, views=None):
    """The `split` list of `dataset` under `root_path`; `train` (default: split == 'train') selects random
    sampling and the training transform, otherwise centred sampling and the validation transform. `views`
    (a views.Views test protocol, with uint8) gives every view of each video instead of one clip."""
    if split not in SPLITS:
        raise UsageError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    if num_segments < 1 or input_size < 1:
        raise UsageError(f'num_segments {num_segments} and input_size {input_size} must both be at least 1')
    layout = get_layout(dataset)
    classes = num_classes(dataset, root_path)
    list_path = existing_path(dataset, root_path, layout.split_list(split), f'{split} list')
    frames_dir = existing_path(dataset, root_path, layout.frames, 'frame folder')
    videos = read_list(list_path, classes)
    if not videos:
        raise UsageError(f'no video with at least {MIN_FRAMES} frames in {list_path}: '
                         f'regenerate it with {layout.tool}')
    make = VideoDataset if views is None else functools.partial(ViewDataset, views=views)
    return make(videos, frames_dir, layout.frame_name, num_segments, input_size,
                split == 'train' if train is None else train, uint8)


__all__ = ['DATASETS', 'class_names', 'num_classes', 'Views', 'add_view_flags', 'build_dataset', 'normalize_uint8']
