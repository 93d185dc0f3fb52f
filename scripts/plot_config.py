"""Draw each block's kernel mix (3D/2D/1D shares, blocks in network order) of one or more conv_configs, side by
side, with parameters and GFLOPs, e.g.
    python scripts/plot_config.py CAKES12D_P CAKES12D_C CAKES23D_P CAKES23D_C CAKES123D_P CAKES123D_C --out six.png
A CONFIG is a key of conv_configs in config.py, a conv_config.txt, or a checkpoint: its description's
conv_config, else its branch widths, or for a supernet the widths pruning would choose; a search checkpoint
that kept the history of how its config settled (cakes.ops.settling) also has its distance curve drawn beside.
A checkpoint's network has the checkpoint's classes (a config.py key or a conv_config.txt: the released 174).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cakes.cli import run_cli  # noqa: E402
from cakes.conv_config import conv_configs, read_conv_config, read_user_configs  # noqa: E402
from cakes.models.checkpoint import cakes_widths, load_checkpoint, model_state, prune_output_prefix  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models import read_description  # noqa: E402
from cakes.models.description import checkpoint_classes  # noqa: E402
from cakes.models.latency import VideoNetwork, predicted_ms  # noqa: E402
from cakes.ops.latency import load_table  # noqa: E402
from cakes.ops.search import count_kept, kept_indices  # noqa: E402
from cakes.ops.settling import CHECKPOINT_KEY, SettlingHistory  # noqa: E402
from cakes.plot import describe_config, save_config_picture  # noqa: E402

CONFIG_FILE = os.path.join(ROOT, 'config.py')  # your conv_configs


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('configs', nargs='+', metavar='CONFIG', help='config.py key, conv_config.txt or checkpoint')
    p.add_argument('--out', required=True, help='the PNG to write')
    p.add_argument('--num_segments', type=int, default=None,
                   help='frames the GFLOPs are counted at (default: a checkpoint\'s own, else 8)')
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--latency_table', default=None, metavar='FILE.json',
                   help="a latency table of the configs' network (scripts/latency_table.py): each panel shows its "
                        'predicted ms')
    return p.parse_args(argv)


RELEASED_CLASSES = 174  # a config without a checkpoint: Something-Something V1's, as released


def load_config(value, known=None):
    """(name, config, frames or None, classes) of a CONFIG argument."""
    return load_source(value, known)[:4]


def load_source(value, known=None):
    """(name, config, frames or None, classes, SettlingHistory or None) of a CONFIG argument; `known`: the configs
    by name (default the released)."""
    known = conv_configs() if known is None else known
    if value in known:
        return value, known[value], None, RELEASED_CLASSES, None
    if not os.path.isfile(value):
        raise UsageError(f"'{value}' is neither a key of conv_configs in config.py ({', '.join(known)}) "
                         'nor a file (conv_config.txt or checkpoint)')
    if value.endswith('.txt'):
        return os.path.basename(value), read_conv_config(value), None, RELEASED_CLASSES, None
    checkpoint = load_checkpoint(value)
    name = os.path.basename(prune_output_prefix(value))
    description = read_description(checkpoint)
    history = checkpoint_history(checkpoint, value)
    if description and description['conv_config'] is not None:
        return name, description['conv_config'], description['num_segments'], description['num_class'], history
    state = model_state(checkpoint)
    if description:  # a supernet's: its widths are read off its BN scales
        return name, state_config(state, value), description['num_segments'], description['num_class'], history
    return name, state_config(state, value), None, checkpoint_classes(state, value), history


def checkpoint_history(checkpoint, path):
    """The settling history a search checkpoint kept, or None."""
    state = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if state is None:
        return None
    try:
        return SettlingHistory.from_state(state)
    except UsageError as e:
        raise UsageError(f"'{path}': its {CHECKPOINT_KEY} is {e}") from None


def state_config(state, path):
    """Per block {kind: width}: a supernet's (BN over more channels than the block width) as pruning would
    choose them, a pruned network's as they are."""
    blocks = cakes_widths(state)
    if not blocks:
        raise UsageError(f"'{path}' has no CAKES branches (convT.convs): not a CAKES network or supernet")
    config = []
    for block, widths in blocks.items():
        scale = state.get(f'base_model.{block}.convT.norm.weight', state.get(f'base_model.{block}.convT.out.0.weight'))
        width = state[f'base_model.{block}.conv1.weight'].shape[0]
        if scale is not None and scale.numel() > width:
            starts = [sum(list(widths.values())[:i]) for i in range(len(widths))]
            kept = kept_indices(scale, len(widths))
            widths = count_kept(kept, [(kind, start, w) for (kind, w), start in zip(widths.items(), starts)])
        config.append({kind: int(w) for kind, w in widths.items()})
    return config


def main(argv=None):
    args = parse_args(argv)
    known = conv_configs(read_user_configs(CONFIG_FILE))
    table = load_table(args.latency_table) if args.latency_table else None
    entries, histories = [], []
    for value in args.configs:
        name, config, frames, classes, history = load_source(value, known)
        entries.append(describe_config(name, config, args.num_segments or frames or 8, args.input_size, classes))
        if table is not None:
            e = entries[-1]
            network = VideoNetwork(e['op_code'], e['arch'], e['num_segments'], e['input_size'], classes)
            e['ms'] = predicted_ms(config, table, network)
        if history is not None:
            histories.append((name, history))
            print(f'{name}: {history.stop_text()}')
    if len({entry['arch'] for entry in entries}) > 1:
        raise UsageError('the configs are of different backbones: draw them in separate pictures')
    print(f"written {save_config_picture(entries, args.out, histories)}: " + ', '.join(
        f"{e['name']} {e['params'] / 1e6:.2f} M params {e['flops'] / 1e9:.2f} GFLOPs"
        + (f" {e['ms']:.1f} ms predicted" if 'ms' in e else '') for e in entries))


if __name__ == '__main__':
    run_cli(main)
