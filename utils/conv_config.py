"""`--conv_config`: a key of `config.conv_configs`, or the path of a conv_config.txt written by --prune."""
import ast
import os

from .errors import UsageError


def resolve_conv_config(value):
    """'' -> None; a known key -> its list; an existing file -> the list it holds as a Python literal."""
    if not value:
        return None
    import config
    if value in config.conv_configs:
        return config.conv_configs[value]
    if os.path.isfile(value):
        try:
            with open(value) as f:
                blocks = ast.literal_eval(f.read())
        except (ValueError, SyntaxError) as e:
            raise UsageError(f"conv_config file '{value}' is not a Python list of dicts: {e}") from None
        if not isinstance(blocks, list):
            raise UsageError(f"conv_config file '{value}' must hold a list with one dict per block")
        return blocks
    raise UsageError(f"unknown --conv_config '{value}': use one of {', '.join(config.conv_configs)} "
                     "(keys of conv_configs in config.py) or the path of a conv_config.txt")
