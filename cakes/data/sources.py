"""Where the frames of a listed video come from: a folder of JPEG files, or the video file itself.

Both tell whether a listed video is there (warning when not), then read {index: (3, H, W) uint8 RGB
tensor, or None when that frame is unreadable} for 1-based frame indices, or None (after a warning) when
the whole video is unusable; the dataset replaces what is missing.
"""
import os
import sys
import warnings

from torchvision.io import ImageReadMode, decode_jpeg, read_file

from cakes.data.decode import VideoError, decode_frames, pyav
from cakes.data.lists import MIN_FRAMES, frame_folder


def warn(message):
    print(f'warning: {message}', file=sys.stderr, flush=True)


def decode_frame(path):
    """(3, H, W) uint8 RGB, or None when the file is missing or not a readable JPEG."""
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec, a new dependency; they
            # stay the fastest JPEG path available here (libjpeg-turbo straight into a tensor).
            warnings.simplefilter('ignore', DeprecationWarning)
            return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None


class FrameFolders:
    """DIRECTORY/FOLDER/{frame_name}: frames extracted to JPEG files, one folder per video."""
    what = 'frame folders'

    def __init__(self, directory, frame_name):
        self.directory = directory
        self.frame_name = frame_name

    def folder(self, video):
        return os.path.join(self.directory, frame_folder(video.folder))

    def frame_path(self, video, index):
        return os.path.join(self.folder(video), self.frame_name.format(index))

    describe_frame = frame_path

    def has(self, video):
        folder = self.folder(video)
        if not os.path.isdir(folder):
            warn(f'missing video folder {folder}, using another video')
        return os.path.isdir(folder)

    def read(self, video, indices):
        return {index: decode_frame(self.frame_path(video, index)) for index in set(indices)}

    def with_counts(self, videos, cache_dir=None):
        """`videos` with the frames of the `PATH LABEL` rows counted (files with the frames' extension); a
        missing folder keeps MIN_FRAMES, to be replaced when it is loaded, as a listed one is."""
        extension = os.path.splitext(self.frame_name.format(1))[1]

        def count(video):
            folder = self.folder(video)
            if not os.path.isdir(folder):
                return MIN_FRAMES
            return sum(1 for entry in os.scandir(folder) if entry.name.endswith(extension))
        return [video if video.num_frames is not None else video._replace(num_frames=count(video))
                for video in videos]


class VideoFiles:
    """DIRECTORY/{video_name}: the video files, decoded with PyAV; frame k is the k-th decoded frame."""
    what = 'videos'

    def __init__(self, directory, video_name):
        pyav()  # a missing PyAV is one clear error here, not one in every loader worker
        self.directory = directory
        self.video_name = video_name

    def video_path(self, video):
        return os.path.join(self.directory, self.video_name.format(video.folder))

    def describe_frame(self, video, index):
        return f'{index} of {self.video_path(video)} (the video is shorter than its list says)'

    def has(self, video):
        path = self.video_path(video)
        if not os.path.isfile(path):
            warn(f'missing video {path}, using another video')
        return os.path.isfile(path)

    def read(self, video, indices):
        """A frame past the end of the video is unreadable; a video that does not decode is unusable."""
        path = self.video_path(video)
        try:
            frames = decode_frames(path, indices)
        except VideoError as error:
            warn(f'{error}, using another video')
            return None
        return {index: frames.get(index) for index in set(indices)}

    def with_counts(self, videos, cache_dir):
        """`videos` with the frames of the `PATH LABEL` rows counted by decoding the videos, remembered in
        cache_dir/video_frame_counts.txt (frame_counts: a stopped count goes on where it was). A missing or
        undecodable video keeps MIN_FRAMES, to be replaced when it is loaded, as a listed one is."""
        from cakes.data.frame_counts import CACHE_NAME, count_videos
        paths = {video.folder: self.video_path(video) for video in videos if video.num_frames is None}
        if not paths:
            return videos
        paths = {folder: path for folder, path in paths.items() if os.path.isfile(path)}
        counts, failures = count_videos(paths, os.path.join(cache_dir, CACHE_NAME), os.cpu_count() or 1)
        for error in failures.values():
            warn(error)
        return [video if video.num_frames is not None else
                video._replace(num_frames=counts.get(video.folder, MIN_FRAMES)) for video in videos]
