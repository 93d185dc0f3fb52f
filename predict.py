"""What class is this video? The five most likely classes of each video file or frame folder.

    python predict.py --resume CKPT video.webm 12345/ [--json] [--test_crops 3 --twice_sample]

The network and the class names come from the checkpoint's description; a released checkpoint has none:
give the model flags it was trained with (as for main.py) and --category category.txt. An input that cannot
be read is named in one line on stderr, the others are still predicted, and the exit status is 1.
"""
import argparse
import json
import sys

from cakes.runtime import tune_process

tune_process()  # before torch loads OpenMP and allocates

import torch  # noqa: E402

from cakes.cli import run_cli  # noqa: E402
from cakes.conv_config import resolve_conv_config  # noqa: E402
from cakes.data import Views, add_view_flags  # noqa: E402
from cakes.data.inputs import InputError, load_views  # noqa: E402
from cakes.data.lists import read_categories  # noqa: E402
from cakes.engine.checkpoint import load_checkpoint, load_weights, model_state  # noqa: E402
from cakes.engine.views import average_views, view_logits  # noqa: E402
from cakes.errors import UsageError  # noqa: E402
from cakes.models.description import build_from_description, describe, read_description  # noqa: E402
from cakes.models.inference import fold_batchnorm  # noqa: E402

TOP = 5


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('paths', nargs='+', metavar='PATH', help='video files (anything FFmpeg decodes) or frame folders '
                   '(00001.jpg or 000001.jpg, ...)')
    p.add_argument('--resume', required=True, metavar='CKPT', help='the trained network')
    p.add_argument('--json', action='store_true', help='one JSON object per input instead of text')
    p.add_argument('--input_size', type=int, default=224, help='crop size the network was trained with')
    p.add_argument('-b', '--batch-size', type=int, default=4, help='views per forward (memory)')
    add_view_flags(p)
    released = p.add_argument_group('released checkpoints (without a description): the model flags of main.py')
    released.add_argument('--category', default='', metavar='FILE', help="the dataset's category.txt (class names)")
    released.add_argument('--op_code', default='conv3d')
    released.add_argument('--conv_config', default='', help='a key of conv_configs in config.py, or a file')
    released.add_argument('--arch', default='resnet50', choices=['resnet50', 'resnet101'])
    released.add_argument('--num_segments', type=int, default=8)
    released.add_argument('--search', action='store_true')
    released.add_argument('--dropout', '--dp', type=float, default=0.3)
    return p


def model_description(args, checkpoint):
    """The checkpoint's own description, or one made from the model flags and --category."""
    description = read_description(checkpoint)
    if description is not None:
        return description
    if not args.category:
        raise UsageError(f"'{args.resume}' does not describe its network (a released checkpoint): give --category "
                         'category.txt and the model flags it was trained with (--op_code, --conv_config, ...)')
    try:
        names = read_categories(args.category)
    except OSError as e:
        raise UsageError(f'cannot read --category {args.category}: {e.strerror}') from None
    return describe(args.op_code, args.search, resolve_conv_config(args.conv_config), args.arch, args.num_segments,
                    args.dropout, names)


def load_network(args):
    """(eval model with BN folded, description)."""
    checkpoint = load_checkpoint(args.resume)
    description = model_description(args, checkpoint)
    try:
        model = build_from_description(description)
    except ValueError as e:
        raise UsageError(f'cannot build the network of {args.resume}: {e}') from None
    load_weights(model, model_state(checkpoint))
    return fold_batchnorm(model), description


def probabilities(model, views, args):
    """Class probabilities of one video from its (V, T*3, s, s) views."""
    with torch.no_grad():
        scores = average_views(view_logits(model, views[None], torch.device('cpu'), chunk=args.batch_size),
                               args.softmax)[0]
    return scores if args.softmax else scores.softmax(-1)


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
    if args.batch_size < 1 or args.input_size < 1:
        raise UsageError('-b and --input_size must be at least 1')
    model, description = load_network(args)
    failed = 0
    for path in args.paths:
        try:
            clips = load_views(path, views, description['num_segments'], args.input_size)
        except InputError as e:
            print(f'error: {e}', file=sys.stderr, flush=True)
            failed += 1
            continue
        show(path, probabilities(model, clips, args), description['class_names'], views, args.json)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
