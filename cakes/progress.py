"""A one-line progress bar with an ETA: redrawn in place with \\r on a terminal; a pipe or a file gets plain
lines instead, without \\r or escape codes."""
import sys
import time

CLEAR_TO_END = '\x1b[K'
PLAIN_SECONDS = 60  # a pipe or a file gets a line at most this often, and the last one


def clock(seconds):
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def is_terminal(stream):
    """True when `stream` is a terminal (not a pipe, a file or a closed stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class ProgressBar:
    """`title [#####.....] done/total ETA h:mm:ss text` on a terminal; the ETA extrapolates the mean time per step
    so far. Elsewhere (`live` False) `title done/total ETA h:mm:ss text` lines, at most one per PLAIN_SECONDS,
    and `title total/total in h:mm:ss` when done."""

    def __init__(self, title, total, start=0, stream=None, width=24):
        self.title = title
        self.total = total
        self.start = start  # a resumed epoch starts part-way: its ETA counts only the steps timed here
        self.stream = stream or sys.stdout
        self.live = is_terminal(self.stream)
        self.width = width
        self.began = self.written = time.time()
        self.drawn = False  # on a terminal: a bar is on the line, for finish() to end

    def update(self, done, text=''):
        timed, now = done - self.start, time.time()
        eta = (now - self.began) / timed * (self.total - done) if timed > 0 else 0.0
        if self.live:
            filled = self.width * done // max(self.total, 1)
            bar = '#' * filled + '.' * (self.width - filled)
            self.stream.write(f'\r{self.title} [{bar}] {done}/{self.total} ETA {clock(eta)} {text}{CLEAR_TO_END}')
            self.drawn = True
        elif done >= self.total or now - self.written >= PLAIN_SECONDS:
            when = f'in {clock(now - self.began)}' if done >= self.total else f'ETA {clock(eta)}'
            self.stream.write(f'{self.title} {done}/{self.total} {when} {text}'.rstrip() + '\n')
            self.written = now
        else:
            return
        self.stream.flush()

    def clear(self):
        """Blank the line so that a log line prints cleanly; the next update draws the bar again."""
        if self.live:
            self.stream.write('\r' + CLEAR_TO_END)

    def finish(self):
        if self.drawn:
            self.stream.write('\n')
            self.stream.flush()
