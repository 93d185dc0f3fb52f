"""What class is this video? The five most likely classes of each video file or frame folder.

    python predict.py --resume CKPT video.webm 12345/ [--json] [--test_crops 3 --twice_sample]

The network and the class names come from the checkpoint's description; a released checkpoint has none:
give the model flags it was trained with (as for main.py) and --category category.txt (as many names as its
classifier has classes). The probabilities are the softmax of the mean logits of the views (what TSM's --softmax
writes: no flag needed), or with --average_probabilities the mean of the views' probabilities. An input that cannot
be read is named in one line on stderr, the others are still predicted, and the exit status is 1.
"""
import argparse
import json
import os
import sys

from cakes.runtime import tune_process

tune_process()  # before torch loads OpenMP and allocates

import torch  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.cli.model_flags import add_model_flags, load_network  # noqa: E402
from cakes.conv_config import read_user_configs  # noqa: E402
from cakes.data import Views, add_view_flags  # noqa: E402
from cakes.data.inputs import InputError, load_views  # noqa: E402
from cakes.engine.views import average_views, view_logits  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models.inference import fold_batchnorm  # noqa: E402

TOP = 5
CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config.py')  # your conv_configs


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('paths', nargs='+', metavar='PATH', help='video files (anything FFmpeg decodes) or frame folders '
                   '(00001.jpg or 000001.jpg, ...)')
    p.add_argument('--json', action='store_true', help='one JSON object per input instead of text')
    p.add_argument('-b', '--batch-size', type=int, default=4, help='views per forward (memory)')
    add_view_flags(p, softmax=False)  # the probabilities shown already are the softmax of the mean logits
    add_model_flags(p)
    return p


def probabilities(model, views, protocol, batch_size):
    """Class probabilities of one video from its (V, T*3, s, s) views: the softmax of the mean logits (what TSM's
    --softmax writes), or with --average_probabilities the mean of the views' probabilities."""
    mean_probabilities = protocol.averaging == 'probabilities'
    with torch.no_grad():
        scores = average_views(view_logits(model, views[None], torch.device('cpu'), chunk=batch_size),
                               mean_probabilities)[0]
    return scores if mean_probabilities else scores.softmax(-1)


def show(path, probs, names, views, as_json):
    top = probs.topk(min(TOP, len(names)))
    best = [(int(c), names[c], float(p)) for p, c in zip(top.values, top.indices)]
    if as_json:
        print(json.dumps({'path': path, 'views': views.count, 'top5': [
            {'label': c, 'class': name, 'probability': round(p, 6)} for c, name, p in best]}), flush=True)
        return
    print(path)
    for _, name, p in best:
        print(f'  {100 * p:6.2f}%  {name}')
    sys.stdout.flush()


def main(argv=None):
    args = build_parser().parse_args(argv)
    views = Views.from_args(args)
    if args.batch_size < 1:
        raise UsageError(f'-b {args.batch_size}: the number of views per forward must be at least 1')
    configs = read_user_configs(CONFIG_FILE) if args.conv_config else None
    model, description, input_size = load_network(args, configs)
    # the fastest CPU form: BN folded, channels_last_3d, each CAKES op by its plan (cakes.ops.plans)
    model = fold_batchnorm(model).use_channels_last()
    failed = 0
    for path in args.paths:
        try:
            clips = load_views(path, views, description['num_segments'], input_size)
        except InputError as e:
            print(f'error: {e}', file=sys.stderr, flush=True)
            failed += 1
            continue
        show(path, probabilities(model, clips, views, args.batch_size), description['class_names'], views, args.json)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
