"""Where the frames of a listed video come from: a folder of JPEG files, or the video file itself.

Both tell whether a listed video is there (warning when not), then read {index: (3, H, W) uint8 RGB
tensor, or None when that frame is unreadable} for 1-based frame indices, or None (after a warning) when
the whole video is unusable; the dataset replaces what is missing.
"""
import os
import sys
import warnings

from torchvision.io import ImageReadMode, decode_jpeg, read_file

from cakes.data.decode import VideoError, decode_frames


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

    def frame_path(self, video, index):
        return os.path.join(self.directory, video.folder, self.frame_name.format(index))

    describe_frame = frame_path

    def has(self, video):
        folder = os.path.join(self.directory, video.folder)
        if not os.path.isdir(folder):
            warn(f'missing video folder {folder}, using another video')
        return os.path.isdir(folder)

    def read(self, video, indices):
        return {index: decode_frame(self.frame_path(video, index)) for index in set(indices)}


class VideoFiles:
    """DIRECTORY/{video_name}: the video files, decoded with PyAV; frame k is the k-th decoded frame."""
    what = 'videos'

    def __init__(self, directory, video_name):
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
