"""Where each dataset keeps its files, and the video lists: read for the loader, written by the tools."""
import os
import sys
from typing import NamedTuple

from cakes.files import write_text_atomic
from cakes.errors import UsageError

MIN_FRAMES = 3  # shorter videos are dropped from a list, as in the released code


class Layout(NamedTuple):
    category: str  # paths relative to the dataset root
    train_list: str
    val_list: str
    frames: str
    frame_name: str  # file name of a 1-based frame index
    tool: str  # the script that makes the lists
    videos: str = ''  # the folder of the video files, read when there is no frame folder ('': none)
    video_name: str = ''  # file name of a video from its FOLDER

    def split_list(self, split):
        return self.train_list if split == 'train' else self.val_list

    def describe(self, dataset):
        lists = ', '.join((self.category, self.train_list, self.val_list))
        videos = f' or videos in ROOT/{self.videos}/{self.video_name.format("FOLDER")}' if self.videos else ''
        return (f'the {dataset} layout expects ROOT/{{{lists}}} and frames in '
                f'ROOT/{self.frames}/FOLDER/{self.frame_name.format(1)}{videos} (make the lists with {self.tool})')

    def reads_videos(self, root):
        """True when the frames come from the video files: they are there and the frame folder is not."""
        return bool(self.videos) and (not os.path.exists(os.path.join(root, self.frames))
                                      and os.path.isdir(os.path.join(root, self.videos)))


_V1 = 'something-something-v1/'
LAYOUTS = {
    'somethingv1': Layout(_V1 + 'category.txt', _V1 + 'train_videofolder.txt', _V1 + 'val_videofolder.txt',
                          _V1 + '20bn-something-something-v1', '{:05d}.jpg', 'scripts/gen_lists_somethingv1.py'),
    'somethingv2': Layout('category.txt', 'train_video_folder.txt', 'val_video_folder.txt',
                          '20bn-something-something-v2-frames', '{:06d}.jpg', 'scripts/gen_lists_somethingv2.py',
                          '20bn-something-something-v2', '{}.webm'),
}


class Video(NamedTuple):
    folder: str
    num_frames: int
    label: int


def get_layout(dataset):
    if dataset not in LAYOUTS:
        raise UsageError(f"unknown dataset '{dataset}': choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[dataset]


def existing_path(dataset, root_path, relative, what):
    """`root_path/relative`, or a UsageError naming it and the expected layout when it is missing."""
    path = os.path.join(root_path, relative)
    if not os.path.exists(path):
        raise UsageError(f'missing {what} {path}: {get_layout(dataset).describe(dataset)}')
    return path


def read_categories(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_list(path, num_classes):
    """The videos of a `FOLDER NUM_FRAMES LABEL` list that have at least MIN_FRAMES frames."""
    videos = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            video = _parse_row(line, f'{path}:{number}')
            if not 0 <= video.label < num_classes:
                raise UsageError(f'{path}:{number}: label {video.label} is outside the {num_classes} categories')
            if video.num_frames >= MIN_FRAMES:
                videos.append(video)
    return videos


def _parse_row(line, where):
    fields = line.split()
    try:
        folder, num_frames, label = fields
        return Video(folder, int(num_frames), int(label))
    except ValueError:
        raise UsageError(f"{where}: expected 'FOLDER NUM_FRAMES LABEL', got {line.strip()!r}") from None


def count_frames(folder):
    return sum(1 for entry in os.scandir(folder) if entry.name.endswith('.jpg'))


def write_lines(path, lines):
    """Through a temporary file and a rename: a stopped run leaves the old list or the new one, never half."""
    write_text_atomic(path, ''.join(line + '\n' for line in lines))


def video_rows(frames_dir, entries):
    """`FOLDER NUM_FRAMES LABEL` for each (folder, label) that has a frame folder; the others are reported."""
    if not os.path.isdir(frames_dir):
        raise UsageError(f'missing frame folder {frames_dir}: unpack or extract the frames there first')
    counts = {folder: count_frames(os.path.join(frames_dir, folder)) for folder, _ in entries
              if os.path.isdir(os.path.join(frames_dir, folder))}
    return counted_rows(entries, counts, f'without a frame folder in {frames_dir}')


def counted_rows(entries, counts, why_missing):
    """`FOLDER NUM_FRAMES LABEL` for each (folder, label) in counts; one warning names the others."""
    rows = [f'{folder} {counts[folder]} {label}' for folder, label in entries if folder in counts]
    missing = [folder for folder, _ in entries if folder not in counts]
    if missing:
        shown = ', '.join(missing[:10]) + (', ...' if len(missing) > 10 else '')
        print(f'warning: left out {len(missing)} listed videos {why_missing}: {shown}', file=sys.stderr, flush=True)
    return rows


def video_file_counts(root, layout, folders, jobs):
    """{folder: num_frames} of the listed videos that decode, counted from the video files (cached beside the
    lists), and why the others are left out; one warning line per video that does not decode."""
    from cakes.data.frame_counts import CACHE_NAME, count_videos  # PyAV and torch, only when reading videos
    videos_dir = os.path.join(root, layout.videos)
    paths = {folder: os.path.join(videos_dir, layout.video_name.format(folder)) for folder in folders}
    paths = {folder: path for folder, path in paths.items() if os.path.isfile(path)}
    counts, failures = count_videos(paths, os.path.join(root, os.path.dirname(layout.train_list), CACHE_NAME), jobs)
    for folder, error in sorted(failures.items()):
        print(f'warning: {error}: leaving video {folder} out', file=sys.stderr, flush=True)
    return counts, f'without a decodable video in {videos_dir}'


def make_lists(root, dataset, categories, train_entries, val_entries, jobs=1):
    """Count the frames of every listed (folder, label), then write the category file and both lists.
    Frames are counted in the frame folders or, for a layout with videos and no frame folder, by decoding
    the videos in `jobs` processes."""
    layout = LAYOUTS[dataset]
    frames_dir = os.path.join(root, layout.frames)
    if layout.reads_videos(root):
        counts, why_missing = video_file_counts(root, layout, dict(train_entries + val_entries), jobs)
        train, val = (counted_rows(entries, counts, why_missing) for entries in (train_entries, val_entries))
    else:
        if layout.videos and not os.path.isdir(frames_dir):
            raise UsageError(f'missing frame folder {frames_dir} or video folder {os.path.join(root, layout.videos)}: '
                             f'unpack the videos or extract their frames there first')
        train, val = video_rows(frames_dir, train_entries), video_rows(frames_dir, val_entries)
    write_lists(root, layout, categories, train, val)
    print(f'wrote {len(categories)} categories, {len(train)} training and {len(val)} validation videos '
          f'in the {dataset} layout under {root}')


def write_lists(root, layout, categories, train_rows, val_rows):
    """Write the category file and both lists where `layout` keeps them under root."""
    for relative, lines in ((layout.category, categories), (layout.train_list, train_rows),
                            (layout.val_list, val_rows)):
        os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
        write_lines(os.path.join(root, relative), lines)
