"""A one-line progress bar with an ETA, rewritten in place with \\r, for runs watched on a terminal."""
import sys
import time

CLEAR_TO_END = '\x1b[K'


def clock(seconds):
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class ProgressBar:
    """`title [#####.....] done/total ETA h:mm:ss text`; the ETA extrapolates the mean time per step so far."""

    def __init__(self, title, total, start=0, stream=None, width=24):
        self.title = title
        self.total = total
        self.start = start  # a resumed epoch starts part-way: its ETA counts only the steps timed here
        self.stream = stream or sys.stdout
        self.width = width
        self.began = time.time()

    def update(self, done, text=''):
        timed = done - self.start
        eta = (time.time() - self.began) / timed * (self.total - done) if timed > 0 else 0.0
        filled = self.width * done // max(self.total, 1)
        bar = '#' * filled + '.' * (self.width - filled)
        self.stream.write(f'\r{self.title} [{bar}] {done}/{self.total} ETA {clock(eta)} {text}{CLEAR_TO_END}')
        self.stream.flush()

    def clear(self):
        """Blank the line so that a log line prints cleanly; the next update draws the bar again."""
        self.stream.write('\r' + CLEAR_TO_END)

    def finish(self):
        self.stream.write('\n')
        self.stream.flush()
