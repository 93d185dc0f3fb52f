"""Clips per second of the data pipeline in one process, or of the plain PIL pipeline with --reference.

With --ssv2_videos N instead of --root_path: makes N videos of SSV2's size in a temporary folder (VP9 .webm,
240 pixels high, 427 wide, 12 frames per second, 2 to 6 seconds, about 200 kbit/s), extracts their frames to
JPEG, and measures the clips from the videos beside the clips from the frames, then where the time of a clip
from video goes (open, decode, convert to RGB, transforms) and what decoder threads change.

Runs on one thread, as each DataLoader worker does. The last line printed is a JSON object with clips_per_s.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.data import DATASETS, build_dataset  # noqa: E402
from cakes.data.decode import count_frames, decode_frames, decoded, open_video, to_tensor  # noqa: E402
from cakes.data.lists import LAYOUTS, write_lists  # noqa: E402
from cakes.data.reference import pil_item  # noqa: E402
from cakes.data.sources import VideoFiles  # noqa: E402
from cakes.data.synthetic import panning_frames, write_video_file  # noqa: E402
from cakes.data.video_dataset import stack_channels_last  # noqa: E402
from cakes.errors import UsageError  # noqa: E402

SSV2 = LAYOUTS['somethingv2']
WIDTH, HEIGHT, FPS = 427, 240, 12  # an SSV2 video
SECONDS = (2, 6)
NOISE = 3  # grey levels of sensor noise, so that the encoder spends its bit rate as on camera footage
STEPS = ('open', 'decode', 'convert', 'transform')


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument('--root_path')
    data.add_argument('--ssv2_videos', type=int, metavar='N', help='make N SSV2-sized videos and compare the '
                                                                   'video path with the frame path on them')
    parser.add_argument('--dataset', choices=DATASETS, default='somethingv1')
    parser.add_argument('--num_segments', type=int, default=8)
    parser.add_argument('--split', choices=('train', 'val'), required=True)
    parser.add_argument('--input_size', type=int, default=224)
    parser.add_argument('--limit', type=int, help='clips to load (default: the whole list)')
    parser.add_argument('--repeats', type=int, default=3, help='passes over the clips (--ssv2_videos; best kept)')
    path = parser.add_mutually_exclusive_group()
    path.add_argument('--reference', action='store_true', help='the plain PIL pipeline')
    path.add_argument('--uint8', action='store_true', help='uint8 clips, to be normalised on the device')
    args = parser.parse_args(argv)
    if args.ssv2_videos is not None and (args.ssv2_videos < 1 or args.reference):
        parser.error('--ssv2_videos needs at least 1 video and goes without --reference')
    return args


def timed(load, count, seed=0):
    """(wall seconds, CPU seconds of this process) to load clips 0..count-1 from the same random draws."""
    np.random.seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(count):
        load(index)
    return time.perf_counter() - start, time.process_time() - cpu


def clips_per_second(args):
    dataset = build_dataset(args.dataset, args.root_path, args.split, args.num_segments, args.input_size,
                            uint8=args.uint8)
    if args.reference and isinstance(dataset.source, VideoFiles):
        raise UsageError(f'--reference reads JPEG frames, and {args.root_path} has the videos only: '
                         f'extract the frames with scripts/extract_frames.py')
    load = (lambda index: pil_item(dataset, index)) if args.reference else dataset.__getitem__
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    seconds, _ = timed(load, count)
    path = 'reference PIL' if args.reference else 'uint8' if args.uint8 else 'float'
    print(f'{args.dataset} {args.split}, {path} path: {count} clips in {seconds:.2f} s')
    return count / seconds


def make_ssv2_videos(root, count):
    """Write `count` SSV2-sized videos with lists and category file under root (the SSV2 layout, videos only);
    returns {ID: frames}."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, SSV2.videos))
    lengths = {}
    for number in range(1, count + 1):
        frames = panning_frames(int(rng.integers(SECONDS[0] * FPS, SECONDS[1] * FPS + 1)), WIDTH, HEIGHT,
                                seed=number, step=3, cell=24)
        noise = rng.integers(-NOISE, NOISE + 1, frames.shape)
        frames = np.clip(frames + noise, 0, 255).astype(np.uint8)
        path = os.path.join(root, SSV2.videos, SSV2.video_name.format(number))
        write_video_file(path, frames, fps=FPS)
        lengths[str(number)] = count_frames(path)
    rows = [f'{video} {length} {number % 174}' for number, (video, length) in enumerate(lengths.items())]
    write_lists(root, SSV2, [f'class {i}' for i in range(174)], rows, rows)
    return lengths


def extract_frames(video_root, frame_root):
    """The frame path's copy of video_root: lists, and every frame as JPEG, as scripts/extract_frames.py
    would write it with ffmpeg (-q:v 2, about JPEG quality 95)."""
    shutil.copytree(video_root, frame_root, ignore=shutil.ignore_patterns(SSV2.videos))
    for entry in os.scandir(os.path.join(video_root, SSV2.videos)):
        folder = os.path.join(frame_root, SSV2.frames, entry.name.split('.')[0])
        os.makedirs(folder)
        with open_video(entry.path) as container:
            for number, frame in decoded(container, entry.path):
                frame.to_image().save(os.path.join(folder, SSV2.frame_name.format(number)), quality=95)


def clip_steps(dataset, count, seed=0):
    """CPU seconds per step of dataset clips 0..count-1 from video, and the frames decoded for them."""
    np.random.seed(seed)
    seconds, frames_decoded = dict.fromkeys(STEPS, 0.0), 0
    for index in range(count):
        video = dataset.videos[index]
        path = dataset.source.video_path(video)
        indices = dataset.sample(video)
        wanted, frames = set(indices), {}
        clock = time.process_time()
        with open_video(path) as container:
            seconds['open'] += time.process_time() - clock
            clock = time.process_time()
            for number, frame in decoded(container, path, max(wanted)):
                now = time.process_time()
                seconds['decode'] += now - clock
                if number in wanted:
                    frames[number] = to_tensor(frame)
                clock = time.process_time()
                seconds['convert'] += clock - now
                frames_decoded += 1
        seconds['decode'] += time.process_time() - clock
        clock = time.process_time()
        dataset.clip(stack_channels_last([frames[i] for i in indices]), video.label)
        seconds['transform'] += time.process_time() - clock
    return seconds, frames_decoded


def decoder_threads(dataset, count, threads, seed=0):
    """(wall, CPU) seconds to decode the frames of clips 0..count-1 with `threads` decoder threads."""
    np.random.seed(seed)
    work = [(dataset.source.video_path(video), dataset.sample(video)) for video in dataset.videos[:count]]
    return timed(lambda index: decode_frames(work[index][0], work[index][1], threads), count)


def compare_videos_and_frames(args):
    """Measure and print both paths on the same videos; returns the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        video_root, frame_root = os.path.join(tmp, 'videos'), os.path.join(tmp, 'frames')
        started = time.perf_counter()
        lengths = make_ssv2_videos(video_root, args.ssv2_videos)
        extract_frames(video_root, frame_root)
        print(f'{len(lengths)} videos of {WIDTH}x{HEIGHT} at {FPS} fps, {min(lengths.values())} to '
              f'{max(lengths.values())} frames (mean {np.mean(list(lengths.values())):.1f}), '
              f'{sum(e.stat().st_size for e in os.scandir(os.path.join(video_root, SSV2.videos))) / len(lengths) / 1e3:.0f} kB '
              f'each; made and extracted in {time.perf_counter() - started:.0f} s')
        datasets = {root_name: build_dataset('somethingv2', root, args.split, args.num_segments, args.input_size,
                                             uint8=args.uint8)
                    for root_name, root in (('video', video_root), ('frames', frame_root))}
        count = len(lengths) if args.limit is None else min(args.limit, len(lengths))
        best = {name: min((timed(dataset.__getitem__, count) for _ in range(args.repeats)), key=lambda t: t[1])
                for name, dataset in datasets.items()}
        for name, (wall, cpu) in best.items():
            print(f'{name} path: {count / wall:.1f} clips/s, {1000 * cpu / count:.1f} ms CPU per clip '
                  f'({args.split}, {args.num_segments} frames, {"uint8" if args.uint8 else "float"} clips)')
        steps, frames_decoded = min((clip_steps(datasets['video'], count) for _ in range(args.repeats)),
                                    key=lambda result: sum(result[0].values()))
        print('video clip, CPU ms: ' + ', '.join(f'{step} {1000 * steps[step] / count:.2f}' for step in STEPS)
              + f'; {frames_decoded / count:.1f} frames decoded per clip, '
              f'{1000 * steps["decode"] / frames_decoded:.3f} ms each')
        threads = {label: min((decoder_threads(datasets['video'], count, n) for _ in range(args.repeats)),
                              key=lambda t: t[1]) for label, n in (('1 thread', 1), ('FFmpeg threads', 0))}
        print('decoding a clip, ms wall/CPU: ' + ', '.join(f'{label} {1000 * wall / count:.1f}/{1000 * cpu / count:.1f}'
                                                           for label, (wall, cpu) in threads.items()))
    return {'clips_per_s': {name: round(count / wall, 1) for name, (wall, _) in best.items()},
            'cpu_ms_per_clip': {name: round(1000 * cpu / count, 1) for name, (_, cpu) in best.items()},
            'video_cpu_ms': {step: round(1000 * steps[step] / count, 2) for step in STEPS},
            'frames_decoded_per_clip': round(frames_decoded / count, 1),
            'decode_ms_per_frame': round(1000 * steps['decode'] / frames_decoded, 3),
            'decode_ms_wall_cpu': {label: [round(1000 * t / count, 1) for t in wall_cpu]
                                   for label, wall_cpu in threads.items()}}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.ssv2_videos is not None:
        print(json.dumps(compare_videos_and_frames(args)))
    else:
        print(json.dumps({'clips_per_s': round(clips_per_second(args), 1)}))


if __name__ == '__main__':
    run_cli(main)
