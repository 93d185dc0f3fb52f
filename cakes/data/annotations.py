"""The official annotation files of Kinetics-400, UCF101, HMDB51, Jester and Diving48, read for the list tool.

Each reader takes the dataset root and returns (class names in label order, {(subset, split): [(video stem,
label)]}), subset train or val, split the official split (1 where there is one). The video stem (the file name
without its extension, also the name of its frame folder) is what the tool looks the videos up by.
"""
import csv
import json
import os

from cakes.errors import UsageError


def _open(path, what):
    if not os.path.isfile(path):
        raise UsageError(f'missing {path}: put the official {what} there')
    return open(path, newline='')


def _lines(path, what):
    with _open(path, what) as f:
        return [line.strip() for line in f if line.strip()]


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def kinetics400(root):
    """kinetics400/annotations/{train,validate}.csv (label,youtube_id,time_start,time_end,split,...): classes
    sorted by name; a video is YOUTUBEID_START_END with the times as 6 digits, as the downloaders name them."""
    folder = os.path.join(root, 'kinetics400', 'annotations')
    rows = {}
    for subset, name in (('train', 'train.csv'), ('val', 'validate.csv')):
        path = os.path.join(folder, name)
        with _open(path, 'Kinetics-400 CSV files (train.csv, validate.csv)') as f:
            try:
                rows[subset] = [(row['label'], f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
                                               f"{int(float(row['time_end'])):06d}") for row in csv.DictReader(f)]
            except (KeyError, TypeError, ValueError):
                raise UsageError(f'{path}: expected the columns label,youtube_id,time_start,time_end') from None
    categories = sorted({name for subset in rows.values() for name, _ in subset})
    labels = {name: label for label, name in enumerate(categories)}
    return categories, {(subset, 1): [(video, labels[name]) for name, video in entries]
                        for subset, entries in rows.items()}


def ucf101(root):
    """ucf101/ucfTrainTestlist/: classInd.txt (`1 ApplyEyeMakeup`, ids from 1), trainlist0N.txt (`CLASS/VIDEO.avi
    ID`) and testlist0N.txt (`CLASS/VIDEO.avi`), N = 1, 2, 3; the class of a video is its folder."""
    folder = os.path.join(root, 'ucf101', 'ucfTrainTestlist')
    what = 'UCF101 split files (ucfTrainTestlist/)'
    path = os.path.join(folder, 'classInd.txt')
    try:
        ids = {int(number): name for number, name in (line.split() for line in _lines(path, what))}
    except ValueError:
        raise UsageError(f"{path}: expected lines 'ID CLASS'") from None
    categories = [ids.get(i) for i in range(1, len(ids) + 1)]
    if None in categories:
        raise UsageError(f'{path}: expected the class ids 1..{len(ids)}, each once')
    labels = {name.lower(): label for label, name in enumerate(categories)}  # folder 'HandstandPushups' vs v_HandStand
    entries = {}
    for split in (1, 2, 3):
        for subset, name in (('train', f'trainlist0{split}.txt'), ('val', f'testlist0{split}.txt')):
            path = os.path.join(folder, name)
            rows = []
            for number, line in enumerate(_lines(path, what), 1):
                video = line.split()[0]
                label = labels.get(video.split('/')[0].lower())
                if '/' not in video or label is None:
                    raise UsageError(f"{path}:{number}: expected 'CLASS/VIDEO.avi' with a class of classInd.txt, "
                                     f'got {line!r}')
                rows.append((_stem(video), label))
            entries[subset, split] = rows
    return categories, entries


def hmdb51(root):
    """hmdb51/testTrainMulti_7030_splits/CLASS_test_splitN.txt (`VIDEO.avi 1`: 1 training, 2 testing, 0 unused),
    N = 1, 2, 3: the classes sorted by name."""
    folder = os.path.join(root, 'hmdb51', 'testTrainMulti_7030_splits')
    if not os.path.isdir(folder):
        raise UsageError(f'missing {folder}: put the official HMDB51 split files there')
    suffix = '_test_split1.txt'
    categories = sorted(name[:-len(suffix)] for name in os.listdir(folder) if name.endswith(suffix))
    if not categories:
        raise UsageError(f'no CLASS{suffix} in {folder}: put the official HMDB51 split files there')
    entries = {(subset, split): [] for subset in ('train', 'val') for split in (1, 2, 3)}
    for label, name in enumerate(categories):
        for split in (1, 2, 3):
            path = os.path.join(folder, f'{name}_test_split{split}.txt')
            for number, line in enumerate(_lines(path, 'HMDB51 split files'), 1):
                fields = line.split()
                if len(fields) != 2 or fields[1] not in ('0', '1', '2'):
                    raise UsageError(f"{path}:{number}: expected 'VIDEO.avi 0|1|2', got {line!r}")
                if fields[1] != '0':
                    entries['train' if fields[1] == '1' else 'val', split].append((_stem(fields[0]), label))
    return categories, entries


def jester(root):
    """jester/jester-v1-labels.csv (a class a line, in label order), jester-v1-train.csv and
    jester-v1-validation.csv (`ID;class`), as Something-Something V1's."""
    folder = os.path.join(root, 'jester')
    what = 'Jester CSV files'
    categories = _lines(os.path.join(folder, 'jester-v1-labels.csv'), what)
    labels = {name: label for label, name in enumerate(categories)}
    entries = {}
    for subset, name in (('train', 'jester-v1-train.csv'), ('val', 'jester-v1-validation.csv')):
        path = os.path.join(folder, name)
        rows = []
        for number, line in enumerate(_lines(path, what), 1):
            video, _, name = line.partition(';')
            if name not in labels:
                raise UsageError(f"{path}:{number}: expected 'ID;class' with a class of the labels file, got {line!r}")
            rows.append((video, labels[name]))
        entries[subset, 1] = rows
    return categories, entries


def _json(path, what):
    with _open(path, what) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise UsageError(f'{path} is not valid JSON ({error}): download it again') from None


def diving48(root):
    """diving48/Diving48_vocab.json (per label its [takeoff, somersault, twist, flight]; the class name is the
    four joined by spaces), Diving48_V2_train.json and Diving48_V2_test.json ([{"vid_name", "label", ...}])."""
    folder = os.path.join(root, 'diving48')
    what = 'Diving48 JSON files (V2)'
    path = os.path.join(folder, 'Diving48_vocab.json')
    try:
        categories = [' '.join(map(str, parts)) for parts in _json(path, what)]
    except TypeError:
        raise UsageError(f'{path}: expected a list of [takeoff, somersault, twist, flight] per label') from None
    entries = {}
    for subset, name in (('train', 'Diving48_V2_train.json'), ('val', 'Diving48_V2_test.json')):
        path = os.path.join(folder, name)
        try:
            rows = [(str(video['vid_name']), int(video['label'])) for video in _json(path, what)]
        except (KeyError, TypeError, ValueError):
            raise UsageError(f'{path}: expected objects with a vid_name and a label') from None
        bad = next((label for _, label in rows if not 0 <= label < len(categories)), None)
        if bad is not None:
            raise UsageError(f'{path}: label {bad} is outside the {len(categories)} classes of Diving48_vocab.json')
        entries[subset, 1] = rows
    return categories, entries


READERS = {'kinetics400': kinetics400, 'ucf101': ucf101, 'hmdb51': hmdb51, 'jester': jester, 'diving48': diving48}
