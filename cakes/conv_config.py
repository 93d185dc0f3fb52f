"""`--conv_config`: a released config's name, a name of your own conv_configs, the path of a conv_config.txt
written by --prune, or the widths themselves. Your conv_configs live in config.py at the top of the clone: main.py
and the scripts read it and pass its dict in (the library never looks for it)."""
import ast
import importlib.util
import os

from .configs import RELEASED
from .errors import UsageError


def read_user_configs(path):
    """The `conv_configs` dict of the config.py at `path` ({} when there is no such file)."""
    if not os.path.isfile(path):
        return {}
    spec = importlib.util.spec_from_file_location('cakes_user_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    user = getattr(module, 'conv_configs', None)
    if not isinstance(user, dict):
        raise UsageError(f"'{path}' must define conv_configs as a dict of name -> list of block dicts")
    return user


def conv_configs(user=None):
    """The six released configs (cakes.configs) with `user` (your conv_configs) over them: its names add to or
    replace the released ones."""
    return {**RELEASED, **(user or {})}


def resolve_conv_config(value, user=None):
    """'' or None -> None; widths (a list of {kind: width}) -> themselves; a name of the released configs or of
    `user` -> its widths; an existing file -> the list it holds as a Python literal."""
    if value is None or value == '':
        return None
    if isinstance(value, list):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise UsageError(f'conv_config {value!r}: give a config name, a conv_config.txt or a list of '
                         '{kind: width} dicts')
    known = conv_configs(user)
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
