"""`--conv_config`: a released config's key, a key of `conv_configs` in the clone's config.py, or the path of a
conv_config.txt written by --prune."""
import ast
import functools
import importlib.util
import os

from .configs import RELEASED
from .errors import UsageError

# The user's config.py at the top of the clone the package runs from (editable install, or main.py in the clone,
# which puts the clone first on sys.path). An installed copy (site-packages) has no clone beside it: a
# pyproject.toml marks the clone, so that another project's top-level config.py there is never read.
CLONE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(CLONE, 'config.py')


def user_config_file():
    """config.py of the clone, or None (an installed package, or a clone without one)."""
    in_clone = os.path.isfile(os.path.join(CLONE, 'pyproject.toml'))
    return CONFIG_FILE if in_clone and os.path.isfile(CONFIG_FILE) else None


@functools.lru_cache(maxsize=None)
def conv_configs():
    """The six released configs (cakes.configs) with the `conv_configs` of the clone's config.py over them (its
    keys add to or replace the released ones)."""
    path = user_config_file()
    if path is None:
        return dict(RELEASED)
    spec = importlib.util.spec_from_file_location('cakes_user_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    user = getattr(module, 'conv_configs', None)
    if not isinstance(user, dict):
        raise UsageError(f"'{path}' must define conv_configs as a dict of name -> list of block dicts")
    return {**RELEASED, **user}


def resolve_conv_config(value):
    """'' -> None; a known key -> its list; an existing file -> the list it holds as a Python literal."""
    if not value:
        return None
    known = conv_configs()
    if value in known:
        return known[value]
    if os.path.isfile(value):
        return read_conv_config(value)
    raise UsageError(f"unknown --conv_config '{value}': use one of {', '.join(known)} "
                     "(the released configs and those of config.py) or the path of a conv_config.txt")


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
