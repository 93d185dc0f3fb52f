"""Every line the run prints also goes to its log file, as the released loop does."""
import os


class RunLog:
    def __init__(self, path=None):
        self.path = path
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def __call__(self, line=''):
        print(line, flush=True)
        if self.path:
            with open(self.path, 'a') as f:
                f.write(line + '\n')
