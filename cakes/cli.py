"""Turn a UsageError into one line on stderr and exit status 2, never a traceback."""
import sys

from .errors import UsageError


def run_cli(main, argv=None):
    try:
        return main(argv)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        sys.exit(2)
