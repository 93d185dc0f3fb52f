"""Building main.py's Settings (cakes.settings): which flags the command line gives, the network flags a checkpoint's
description fills, and what the flags leave to the checkpoint directory and the machine (--auto_resume's checkpoint,
-j), each decided once."""
import dataclasses
import os

from cakes.engine.checkpoint import checkpoint_path
from cakes.engine.loaders import cap_workers
from cakes.models.description import input_size
from cakes.settings import Settings

from .network import FLAGS, network_flags

# The default of every flag in the parse that finds those given: no command line gives it. (argparse.SUPPRESS
# set as a parser default would be written into the namespace and converted by each flag's type.)
NOT_GIVEN = object()


def parse_flags(build_parser, argv=None):
    """(the flags, with the parser's defaults for those left out; the names of those the command line gives)."""
    flags = build_parser().parse_args(argv)
    marked = build_parser()
    marked.set_defaults(**dict.fromkeys(vars(flags), NOT_GIVEN))
    given = {name for name, value in vars(marked.parse_args(argv)).items() if value is not NOT_GIVEN}
    return flags, given


def described_settings(flags, given, description, configs=None):
    """Settings from the flags, where those of the network left out take the values of `description` (None: a
    released checkpoint, or none): the network flags (a given one must agree), --dropout (its classifier layout
    depends on it) and --input_size (the size it was trained at). `configs`: your conv_configs.
    Returns (settings, the network flags taken from the description)."""
    finetune = flags.finetune if not flags.prune else ''
    network, filled = network_flags({flag: getattr(flags, flag) for flag in FLAGS if flag in given}, description,
                                    configs, finetune)
    if description is not None and 'dropout' not in given:
        network['dropout'] = description['dropout']
    if 'input_size' not in given:
        network['input_size'] = input_size(description)
    return Settings(**{**vars(flags), **network}), filled


def for_this_run(settings, given):
    """The settings with what the checkpoint directory and the machine decide: --auto_resume continues the run's
    own checkpoint when there is one (not initialising from --finetune again), and -j is at most the CPUs this
    process may use. Returns (settings, the lines the run logs about it)."""
    changes, notes = {}, []
    if settings.auto_resume:
        path = checkpoint_path(settings)
        if not os.path.isfile(path):
            notes.append(f"=> --auto_resume: no checkpoint '{path}' yet, starting fresh")
        else:
            changes['resume'] = path
            if settings.finetune:
                notes.append(f"=> --auto_resume: '{path}' continues a run that --finetune started; not "
                             'initialising again')
                changes['finetune'] = ''
    workers, note = cap_workers(settings.workers, 'workers' in given)
    changes['workers'] = workers
    notes += [note] if note else []
    return dataclasses.replace(settings, **changes), notes
