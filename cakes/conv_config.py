"""`--conv_config`: a key of `conv_configs` in the project's config.py, or the path of a conv_config.txt
written by --prune."""
import ast
import functools
import importlib.util
import os

from .errors import UsageError

# config.py stays at the top of the clone, where users paste into it; the package reads it from there.
CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'config.py')


@functools.lru_cache(maxsize=None)
def conv_configs():
    """The `conv_configs` dictionary of config.py (the six released configs and the user's own)."""
    if not os.path.isfile(CONFIG_FILE):
        raise UsageError(f"no config.py at '{CONFIG_FILE}': install cakes from its clone (pip install -e .) to "
                         'use configs by key, or give the path of a conv_config.txt')
    spec = importlib.util.spec_from_file_location('cakes_user_config', CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.conv_configs


def resolve_conv_config(value):
    """'' -> None; a known key -> its list; an existing file -> the list it holds as a Python literal."""
    if not value:
        return None
    known = conv_configs() if os.path.isfile(CONFIG_FILE) else {}
    if value in known:
        return known[value]
    if os.path.isfile(value):
        return read_conv_config(value)
    raise UsageError(f"unknown --conv_config '{value}': use one of {', '.join(known)} "
                     "(keys of conv_configs in config.py) or the path of a conv_config.txt")


def read_conv_config(path):
    """The list of dicts a conv_config.txt holds as a Python literal."""
    try:
        with open(path) as f:
            blocks = ast.literal_eval(f.read())
    except (ValueError, SyntaxError) as e:
        raise UsageError(f"conv_config file '{path}' is not a Python list of dicts: {e}") from None
    if not isinstance(blocks, list):
        raise UsageError(f"conv_config file '{path}' must hold a list with one dict per block")
    return blocks
