"""Where each dataset keeps its files, and the video lists: read for the loader, written by the tools."""
import os
import re
import sys
from typing import NamedTuple

from cakes.files import write_text_atomic
from cakes.errors import UsageError

MIN_FRAMES = 3  # shorter videos are dropped from a list, as in the released code


VIDEO_EXTENSIONS = ('.mp4', '.avi', '.webm', '.mkv', '.mov', '.m4v', '.mpg', '.mpeg', '.flv', '.wmv')
FRAME_TEMPLATES = ('{:05d}.jpg', '{:06d}.jpg', 'img_{:05d}.jpg', 'image_{:05d}.jpg', 'frame_{:05d}.jpg')


class Layout(NamedTuple):
    """Where a dataset keeps its files below --root_path. `{split}` in a list name is the --split number;
    `{subset}` in the frame or video folder is train or val (Kinetics keeps one folder per subset)."""
    category: str  # paths relative to the dataset root
    train_list: str
    val_list: str
    frames: str
    frame_name: str  # file name of a 1-based frame index ('': detected from the first listed folder)
    tool: str  # the script that makes the lists
    videos: str = ''  # the folder of the video files, read when there is no frame folder ('': none)
    video_name: str = ''  # file name of a video from its FOLDER ('{}': the list's PATH has the extension)
    splits: tuple = ()  # the --split numbers (UCF101, HMDB51)
    released_flips: bool = False  # names without left/right pairs swap the released SSV pairs (synthetic SSV)
    path_label_rows: bool = False  # also `PATH LABEL` rows (MMAction2's video lists): frames counted on loading
    split: int = 1  # the --split in use

    def split_list(self, split):
        return (self.train_list if split == 'train' else self.val_list).format(split=self.split)

    def frame_dir(self, subset):
        return self.frames.format(subset=subset)

    def video_dir(self, subset):
        return self.videos.format(subset=subset)

    def describe(self, dataset):
        if not self.frames and not self.videos:  # custom
            return ('--train_list, --val_list and --category are relative to --root_path, and so is each PATH '
                    '(lines PATH NUM_FRAMES LABEL or PATH LABEL)')
        lists = ', '.join(name.format(split=self.split) for name in (self.category, self.train_list, self.val_list))
        frame = self.frame_name.format(1) if self.frame_name else 'FRAME'
        videos = f' or videos in ROOT/{self.video_dir("{train,val}")}/{self.video_name.format("FOLDER")}' \
            if self.videos else ''
        return (f'the {dataset} layout expects ROOT/{{{lists}}} and frames in '
                f'ROOT/{self.frame_dir("{train,val}")}/FOLDER/{frame}{videos} (make the lists with {self.tool})')

    def reads_videos(self, root, subset='train'):
        """True when the frames come from the video files: they are there and the frame folder is not."""
        return bool(self.videos) and (not os.path.exists(os.path.join(root, self.frame_dir(subset)))
                                      and os.path.isdir(os.path.join(root, self.video_dir(subset))))


_V1 = 'something-something-v1/'
_TOOL = 'scripts/gen_lists.py --dataset '
_IMG = 'img_{:05d}.jpg'  # MMAction2's and TSM's frame names for the datasets they extract themselves


def _mmaction(name, videos='videos', frames='rawframes', lists='{name}_{subset}_list.txt', **kw):
    """A layout below ROOT/NAME/ in MMAction2's folders: NAME/category.txt, the two lists, NAME/rawframes/PATH/
    img_00001.jpg or NAME/videos/PATH (PATH with its extension)."""
    train, val = (f'{name}/' + lists.format(name=name, subset=subset) for subset in ('train', 'val'))
    return Layout(f'{name}/category.txt', train, val, f'{name}/{frames}', _IMG, _TOOL + name, f'{name}/{videos}',
                  '{}', path_label_rows=True, **kw)


LAYOUTS = {
    'somethingv1': Layout(_V1 + 'category.txt', _V1 + 'train_videofolder.txt', _V1 + 'val_videofolder.txt',
                          _V1 + '20bn-something-something-v1', '{:05d}.jpg', 'scripts/gen_lists_somethingv1.py',
                          released_flips=True),
    'somethingv2': Layout('category.txt', 'train_video_folder.txt', 'val_video_folder.txt',
                          '20bn-something-something-v2-frames', '{:06d}.jpg', 'scripts/gen_lists_somethingv2.py',
                          '20bn-something-something-v2', '{}.webm', released_flips=True),
    'kinetics400': _mmaction('kinetics400', videos='videos_{subset}', frames='rawframes_{subset}'),
    'ucf101': _mmaction('ucf101', lists='{name}_{subset}_split_{{split}}.txt', splits=(1, 2, 3)),
    'hmdb51': _mmaction('hmdb51', lists='{name}_{subset}_split_{{split}}.txt', splits=(1, 2, 3)),
    'jester': Layout('jester/category.txt', 'jester/train_videofolder.txt', 'jester/val_videofolder.txt',
                     'jester/20bn-jester-v1', '{:05d}.jpg', _TOOL + 'jester', path_label_rows=True),
    'diving48': _mmaction('diving48', videos='rgb'),
    # Everything from the flags: --train_list, --val_list (PATH relative to ROOT), --category, --image_tmpl.
    'custom': Layout('', '', '', '', '', 'your own tool', '', '{}', path_label_rows=True),
}


class Video(NamedTuple):
    folder: str
    num_frames: int
    label: int


def get_layout(dataset, split_number=None, train_list='', val_list='', category='', image_tmpl=''):
    """The layout of `dataset`, with the --split and the files the flags name instead of its own."""
    if dataset not in LAYOUTS:
        raise UsageError(f"unknown dataset '{dataset}': choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[dataset]
    if split_number is not None and split_number not in layout.splits:
        having = ', '.join(name for name, other in LAYOUTS.items() if other.splits)
        raise UsageError(f'--split {split_number}: only {having} have splits ({dataset} has one training and one '
                         'validation list; give others with --train_list and --val_list)')
    if dataset == 'custom' and not (train_list and val_list):
        raise UsageError('--dataset custom needs --train_list FILE and --val_list FILE (lines PATH NUM_FRAMES LABEL '
                         'for frame folders or PATH LABEL for video files, PATH relative to --root_path)')
    changes = {'train_list': train_list, 'val_list': val_list, 'category': category, 'frame_name': image_tmpl}
    layout = layout._replace(**{key: value for key, value in changes.items() if value})
    return layout._replace(split=split_number or 1)


def existing_path(dataset, root_path, relative, what, layout=None):
    """`root_path/relative`, or a UsageError naming it and the expected layout when it is missing."""
    path = os.path.join(root_path, relative)
    if not os.path.exists(path):
        layout = layout or get_layout(dataset)
        raise UsageError(f'missing {what} {path}: {layout.describe(dataset)}')
    return path


def read_categories(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_list(path, num_classes, path_label_rows=False):
    """The videos of a `FOLDER NUM_FRAMES LABEL` list that have at least MIN_FRAMES frames; with
    path_label_rows also `PATH LABEL` rows, whose num_frames is None (counted later). num_classes None: any
    label from 0 (a list without a category file)."""
    videos, rows = [], 0
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows += 1
            video = _parse_row(line, f'{path}:{number}', path_label_rows)
            if video.label < 0 or num_classes is not None and video.label >= num_classes:
                raise UsageError(f'{path}:{number}: label {video.label} is outside the {num_classes} categories'
                                 if num_classes is not None else f'{path}:{number}: negative label {video.label}')
            if video.num_frames is None or video.num_frames >= MIN_FRAMES:
                videos.append(video)
    if not rows:  # else the error would be about what the empty list leads to (no path found, no class)
        raise UsageError(f'{path} is empty: it lists no video (one a line: {_ROW_FORMS[path_label_rows]})')
    return videos


_ROW_FORMS = {False: "'FOLDER NUM_FRAMES LABEL'", True: "'FOLDER NUM_FRAMES LABEL' or 'PATH LABEL'"}


def _parse_row(line, where, path_label_rows):
    fields = line.split()
    try:
        if path_label_rows and len(fields) == 2:
            return Video(fields[0], None, int(fields[1]))
        folder, num_frames, label = fields
        return Video(folder, int(num_frames), int(label))
    except ValueError:
        raise UsageError(f'{where}: expected {_ROW_FORMS[path_label_rows]}, got {line.strip()!r}') from None


def list_labels(paths):
    """The number of classes that lists without a category file use: the largest label + 1."""
    return 1 + max(video.label for path in paths for video in read_list(path, None, True))


def frame_folder(path):
    """The frame folder of a listed PATH: a video file's path without its extension (as MMAction2 names the
    folders it extracts), else PATH itself."""
    stem, extension = os.path.splitext(path)
    return stem if extension.lower() in VIDEO_EXTENSIONS else path


def detect_template(folder):
    """The frame file template of a folder: a known one whose frame 1 is there, else the file name pattern of
    its first frame (NAME0001.EXT); None when the folder has neither."""
    for name in FRAME_TEMPLATES:
        if os.path.isfile(os.path.join(folder, name.format(1))):
            return name
    for entry in sorted(os.scandir(folder), key=lambda e: e.name) if os.path.isdir(folder) else ():
        match = re.fullmatch(r'(.*?)(0*1)(\.[A-Za-z]+)', entry.name)
        if match:
            prefix, digits, extension = match.groups()
            return prefix.replace('{', '{{').replace('}', '}}') + f'{{:0{len(digits)}d}}' + extension
    return None


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
    for relative, lines in ((layout.category, categories), (layout.split_list('train'), train_rows),
                            (layout.split_list('val'), val_rows)):
        os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
        write_lines(os.path.join(root, relative), lines)


def scan_videos(directory):
    """{stem: path relative to directory} of the video files below it."""
    found = {}
    for folder, _, files in os.walk(directory):
        for name in sorted(files):
            stem, extension = os.path.splitext(name)
            if extension.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, os.path.relpath(os.path.join(folder, name), directory))
    return found


def scan_frame_folders(directory, frame_name):
    """{name: path relative to directory} of the frame folders below it (folders with frame 1)."""
    found = {}
    for folder, subfolders, _ in os.walk(directory):
        leaves = [name for name in subfolders if os.path.isfile(os.path.join(folder, name, frame_name.format(1)))]
        for name in leaves:
            found.setdefault(name, os.path.relpath(os.path.join(folder, name), directory))
        subfolders[:] = sorted(set(subfolders) - set(leaves))  # no walking through the frames
    return found


def _subset_counts(root, layout, subset, stems, jobs):
    """({stem: PATH}, {PATH: num_frames}, why the others are missing) of the listed stems found in the
    subset's video folder (counted by decoding, cached beside the lists) or frame folder."""
    if layout.reads_videos(root, subset):
        from cakes.data.frame_counts import CACHE_NAME, count_videos  # PyAV and torch, only when reading videos
        directory = os.path.join(root, layout.video_dir(subset))
        paths = {stem: path for stem, path in scan_videos(directory).items() if stem in stems}
        cache = os.path.join(root, os.path.dirname(layout.train_list), CACHE_NAME)
        counts, failures = count_videos({path: os.path.join(directory, path) for path in paths.values()}, cache, jobs)
        for path, error in sorted(failures.items()):
            print(f'warning: {error}: leaving video {path} out', file=sys.stderr, flush=True)
        return paths, counts, f'without a decodable video in {directory}'
    directory = os.path.join(root, layout.frame_dir(subset))
    if not os.path.isdir(directory):
        videos = f' or video folder {os.path.join(root, layout.video_dir(subset))}' if layout.videos else ''
        raise UsageError(f'missing frame folder {directory}{videos}: unpack the videos or extract their frames '
                         'there first')
    paths = {stem: path for stem, path in scan_frame_folders(directory, layout.frame_name).items() if stem in stems}
    extension = os.path.splitext(layout.frame_name.format(1))[1]
    counts = {path: sum(1 for entry in os.scandir(os.path.join(directory, path)) if entry.name.endswith(extension))
              for path in paths.values()}
    return paths, counts, f'without a frame folder in {directory}'


def make_split_lists(root, dataset, categories, entries, jobs=1):
    """Find and count the videos of every list ({(subset, split): [(stem, label)]}) in the frame or video folder
    of its subset, then write the category file and the lists (`PATH NUM_FRAMES LABEL`, PATH relative to
    that folder). Listed videos that are missing or do not decode are named in a warning and left out."""
    layout = LAYOUTS[dataset]
    found = {}
    for subset in sorted({subset for subset, _ in entries}):
        stems = {stem for (other, _), rows in entries.items() if other == subset for stem, _ in rows}
        found[subset] = _subset_counts(root, layout, subset, stems, jobs)
    outputs = {}
    for (subset, split), rows in sorted(entries.items()):
        paths, counts, why_missing = found[subset]
        if layout.splits:
            why_missing += f' (split {split})'
        outputs[layout._replace(split=split).split_list(subset)] = counted_rows(
            [(paths.get(stem, stem), label) for stem, label in rows], counts, why_missing)
    for relative, lines in ((layout.category, categories), *outputs.items()):
        os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
        write_lines(os.path.join(root, relative), lines)
    written = ', '.join(f'{len(lines)} in {relative}' for relative, lines in outputs.items())
    print(f'wrote {len(categories)} categories and the {dataset} lists under {root}: {written}')
