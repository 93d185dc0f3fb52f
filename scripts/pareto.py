"""Accuracy against cost of evaluated checkpoints, beside the published CAKES results on SSV1, e.g.
    python scripts/pareto.py --run a_scores.npz a_best.pth.tar --run b_scores.npz b_best.pth.tar --out pareto.png
Each run is the `--save_scores` file of its evaluation (arrays 'ids', 'labels', 'scores': videos x classes)
and the checkpoint it evaluated, whose description (op_code, conv_config, arch, num_segments) gives its
parameters and GFLOPs (complexity counter at --input_size); a released checkpoint (no description) takes main.py's
model flags (--op_code, --conv_config, ...: the same for every released run) and its classifier's number of
classes. Top-1 is over the videos in the scores file.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.cli.model_flags import add_model_flags, model_description  # noqa: E402
from cakes.complexity import count_flops, count_params  # noqa: E402
from cakes.conv_config import read_user_configs  # noqa: E402
from cakes.files import write_atomic  # noqa: E402
from cakes.models.checkpoint import load_checkpoint, prune_output_prefix  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models import create_model  # noqa: E402
from cakes.models.latency import VideoNetwork, predicted_ms  # noqa: E402
from cakes.ops.latency import load_table  # noqa: E402
from cakes.plot import png_bytes  # noqa: E402

COMPLEXITY = os.path.join(ROOT, 'tests', 'data', 'complexity.json')
CONFIG_FILE = os.path.join(ROOT, 'config.py')  # your conv_configs
# The paper's SSV1 top-1 (center crop, 1 clip): (label, op_code, conv_config, frames, top-1).
PUBLISHED = [('CAKES-C 1,2D', 'conv1_2d', 'CAKES12D_C', 8, 46.8), ('CAKES-P 2,3D', 'convst', 'CAKES23D_P', 8, 47.4),
             ('CAKES-P 1,2,3D', 'conv1_2_3d', 'CAKES123D_P', 8, 47.2),
             ('CAKES-C 1,2D', 'conv1_2d', 'CAKES12D_C', 16, 48.0), ('CAKES-P 2,3D', 'convst', 'CAKES23D_P', 16, 48.6),
             ('CAKES-P 1,2,3D', 'conv1_2_3d', 'CAKES123D_P', 16, 49.4)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--run', nargs=2, action='append', required=True, metavar=('SCORES.npz', 'CKPT'),
                   help='the --save_scores file of an evaluation and the checkpoint evaluated (repeat per run)')
    p.add_argument('--out', required=True, help='the PNG to write')
    p.add_argument('--input_size', type=int, default=224, help='crop size the runs were evaluated at')
    p.add_argument('--latency_table', default=None, metavar='FILE.json',
                   help="a latency table of the runs' network (scripts/latency_table.py): each run's predicted ms is "
                        'printed and shown beside it')
    add_model_flags(p, resume=False, names=False)
    return p.parse_args(argv)


def top1(scores_path):
    """Top-1 (%) and the number of videos of a --save_scores file."""
    try:
        with np.load(scores_path, allow_pickle=False) as f:
            labels, scores = f['labels'], f['scores']
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"'{scores_path}' is not a --save_scores file with arrays 'labels' and 'scores': "
                         f'{e}') from None
    if scores.ndim != 2 or labels.shape != (scores.shape[0],) or not len(labels):
        raise UsageError(f"'{scores_path}': 'scores' must be videos x classes and 'labels' one per video "
                         f'(got {scores.shape} and {labels.shape})')
    return 100.0 * float((scores.argmax(axis=1) == labels).mean()), len(labels)


def run_point(scores_path, checkpoint_path, input_size=224, flags=None, configs=None):
    """{'label', 'top1', 'videos', 'params', 'flops'} of an evaluated checkpoint; `flags` (the parsed model
    flags) build a released checkpoint's network, `configs`: your conv_configs, for a --conv_config name."""
    accuracy, videos = top1(scores_path)
    flags = flags if flags is not None else parse_args(['--run', '', '', '--out', ''])
    # each run fills the flags it leaves out from its own checkpoint
    description = model_description(flags, load_checkpoint(checkpoint_path), checkpoint_path, configs, names=False)
    with torch.device('meta'):
        model = create_model(**description)
    label = f"{os.path.basename(prune_output_prefix(checkpoint_path))} {description['num_segments']}f"
    return {'label': label, 'top1': accuracy, 'videos': videos, 'params': count_params(model),
            'flops': count_flops(model, description['num_segments'], input_size),
            'conv_config': description['conv_config'],
            'network': VideoNetwork(description['op_code'], description['arch'], description['num_segments'],
                                    input_size, description['num_class'])}


def published_points():
    """The published results with parameters and FLOPs from the complexity reference."""
    with open(COMPLEXITY) as f:
        reference = {(row['op_code'], row['conv_config']): row for row in json.load(f)}
    return [{'label': f'{label} {frames}f', 'top1': accuracy, 'params': reference[(op_code, key)]['params'],
             'flops': reference[(op_code, key)][f'flops_{frames}f']}
            for label, op_code, key, frames, accuracy in PUBLISHED]


def pareto_figure(runs, published):
    from matplotlib.figure import Figure
    figure = Figure(figsize=(13, 5.5), layout='constrained')
    axes = figure.subplots(1, 2, sharey=True)
    for ax, (key, scale, unit) in zip(axes, [('flops', 1e9, 'GFLOPs'), ('params', 1e6, 'parameters (M)')]):
        ax.scatter([p[key] / scale for p in published], [p['top1'] for p in published], marker='s', color='grey',
                   label='published CAKES (SSV1, 1 clip)')
        for p in published:
            ax.annotate(p['label'], (p[key] / scale, p['top1']), xytext=(4, -10), textcoords='offset points',
                        fontsize=7, color='dimgray')
        for i, p in enumerate(runs):
            ax.scatter([p[key] / scale], [p['top1']], marker='o', s=50, color=f'C{i}',
                       label=f"{p['label']}: {p['top1']:.2f}% ({p['videos']} videos)")
        ax.set_xlabel(unit)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('top-1 (%)')
    axes[0].set_title('accuracy against FLOPs', fontsize=10)
    axes[1].set_title('accuracy against parameters', fontsize=10)
    axes[1].legend(loc='upper left', bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return figure


def main(argv=None):
    args = parse_args(argv)
    configs = read_user_configs(CONFIG_FILE) if args.conv_config else None
    runs = [run_point(scores, checkpoint, args.input_size, args, configs) for scores, checkpoint in args.run]
    table = load_table(args.latency_table) if args.latency_table else None
    for p in runs:
        if table is not None:
            if p['conv_config'] is None:
                raise UsageError(f"{p['label']} has no CAKES config: --latency_table predicts CAKES networks' time")
            p['ms'] = predicted_ms(p['conv_config'], table, p['network'])
            p['label'] += f" {p['ms']:.1f} ms"
        print(f"{p['label']}: top-1 {p['top1']:.3f} over {p['videos']} videos, {p['params'] / 1e6:.2f} M params, "
              f"{p['flops'] / 1e9:.2f} GFLOPs" + (f", {p['ms']:.1f} ms predicted" if 'ms' in p else ''))
    data = png_bytes(pareto_figure(runs, published_points()))
    write_atomic(args.out, lambda f: f.write(data))
    print(f'written {args.out}')


if __name__ == '__main__':
    run_cli(main)
