"""The command lines' side of cakes: run_cli (a UsageError becomes one line on stderr and exit status 2, never a
traceback), main.py's settings built from its flags (settings.py), the network flags read against a checkpoint's
description (network.py) and the model flags of the tools that run a trained network (model_flags.py)."""
import sys

from cakes.errors import UsageError


def run_cli(main, argv=None):
    try:
        return main(argv)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        sys.exit(2)
