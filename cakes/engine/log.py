"""Every line the run prints also goes to its log file, as the released loop does."""
import os

from cakes.progress import ProgressBar


class RunLog:
    """`console`: print (rank 0 only under torchrun). On a terminal the per-iteration lines give way to a
    progress bar on the console; the log file always gets the released lines."""

    def __init__(self, path=None, console=True):
        self.path = path
        self.console = console
        self.bar = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def __call__(self, line=''):
        if self.console:
            if self.bar:
                self.bar.clear()
            print(line, flush=True)
        self.record(line)

    def record(self, line):
        """To the log file only."""
        if self.path:
            with open(self.path, 'a') as f:
                f.write(line + '\n')

    def progress(self, title, total, start=0):
        """Show a progress bar until end_progress() when stdout is a terminal; returns it, or None."""
        bar = ProgressBar(title, total, start) if self.console else None
        self.bar = bar if bar and bar.live else None  # piped: the released per-iteration lines instead
        return self.bar

    def step(self, line):
        """A released per-iteration line: to the file always, to the console unless a bar shows the progress."""
        if self.bar:
            self.record(line)
        else:
            self(line)

    def end_progress(self):
        if self.bar:
            self.bar.finish()
            self.bar = None
