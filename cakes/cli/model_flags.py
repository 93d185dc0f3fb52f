"""The trained network of a checkpoint, for tools that only run it (predict.py, scripts/export_onnx.py,
scripts/pareto.py): from the checkpoint's description, or for released checkpoints (no description) from main.py's
model flags, with as many classes as the checkpoint's classifier (named by --category where names are printed).
The flags are read against a description as main.py reads them (cakes.cli.network)."""
from cakes.conv_config import resolve_conv_config
from cakes.data.lists import read_categories
from cakes.errors import UsageError
from cakes.models import create_model
from cakes.models.checkpoint import load_checkpoint, load_weights, model_state
from cakes.models.description import check_classes, checkpoint_classes, describe, input_size, read_description
from cakes.models.factory import defaults

from .network import FLAGS, network_flags


def add_model_flags(parser, resume=True, names=True):
    """--resume and --input_size (`resume`), main.py's model flags and, for a tool that prints class names,
    --category. A model flag left out is None: the description's value, else main.py's default."""
    if resume:
        parser.add_argument('--resume', required=True, metavar='CKPT', help='the trained network')
        parser.add_argument('--input_size', type=int, metavar='S', help="crop size (default: the size the network "
                            'was trained at, from its description; 224 for a released checkpoint)')
    model = parser.add_argument_group(
        'the model flags of main.py', 'not needed for a checkpoint that describes its network (given, they must '
        "agree with it); a released checkpoint (without a description) takes them, default main.py's; its "
        'classifier gives the number of classes')
    if names:
        model.add_argument('--category', default='', metavar='FILE', help="the dataset's category.txt (class names "
                           'of a released checkpoint)')
    model.add_argument('--op_code')
    model.add_argument('--conv_config', help='a released config, a key of conv_configs in config.py, or a file')
    model.add_argument('--arch', choices=['resnet50', 'resnet101'])
    model.add_argument('--num_segments', type=int)
    model.add_argument('--search', action='store_true', default=None)
    model.add_argument('--dropout', '--dp', type=float, help="a released checkpoint's (default 0.3, main.py's; "
                       'a description has its own)')


def model_description(args, checkpoint, path, configs=None, names=True):
    """The description of `checkpoint` (loaded from `path`), whose model flags given in `args` must agree with it;
    for a released checkpoint one made from the model flags (main.py's defaults for those left out), the
    classifier's number of classes and (`names`: the tool prints them) the class names of --category.
    `configs`: your conv_configs, for a --conv_config name."""
    description = read_description(checkpoint)
    given = {flag: getattr(args, flag) for flag in FLAGS if getattr(args, flag) is not None}
    values, _ = network_flags(given, description, configs)
    if description is not None:
        return description
    classes = checkpoint_classes(model_state(checkpoint), path)
    category = getattr(args, 'category', '')
    if names and not category:
        raise UsageError(f"'{path}' does not describe its network (a released checkpoint): give --category "
                         f'category.txt to name its {classes} classes, and the model flags it was trained with '
                         '(--op_code, --conv_config, ...)')
    class_names = read_names(category) if category else None
    if class_names is not None:
        check_classes(classes, class_names, path, f'--category {category}')
    network = {**defaults(), **values}
    if args.dropout is not None:
        network['dropout'] = args.dropout
    return describe(network['op_code'], network['search'], resolve_conv_config(network['conv_config'], configs),
                    network['arch'], network['num_segments'], network['dropout'], class_names, num_class=classes)


def read_names(category):
    try:
        return read_categories(category)
    except OSError as e:
        raise UsageError(f'cannot read --category {category}: {e.strerror}') from None


def load_network(args, configs=None, names=True):
    """(model in eval mode with the checkpoint's weights, its description, the crop size: --input_size, else the
    size it was trained at); `configs` and `names`: see model_description."""
    checkpoint = load_checkpoint(args.resume)
    description = model_description(args, checkpoint, args.resume, configs, names)
    size = input_size(description) if args.input_size is None else args.input_size
    if size < 1:
        raise UsageError(f'--input_size {size}: the crop size must be at least 1')
    try:
        model = create_model(**description)
    except UsageError as e:
        raise UsageError(f'cannot build the network of {args.resume}: {e}') from None
    load_weights(model, model_state(checkpoint))
    return model.eval(), description, size
