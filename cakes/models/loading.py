"""The trained network of a checkpoint, for tools that only run it (predict.py, scripts/export_onnx.py,
scripts/pareto.py): from the checkpoint's description, or for released checkpoints (no description) from main.py's
model flags, with as many classes as the checkpoint's classifier (named by --category where names are printed).
The flags are reconciled with a description as main.py does."""
from cakes.conv_config import resolve_conv_config
from cakes.data.lists import read_categories
from cakes.errors import UsageError

from .checkpoint import load_checkpoint, load_weights, model_state
from .description import build_from_description, describe, input_size, read_description
from .flags import RELEASED, check_classes, checkpoint_classes, fill_network_flags


def add_model_flags(parser, resume=True, names=True):
    """--resume and --input_size (`resume`), main.py's model flags and, for a tool that prints class names,
    --category. A model flag left out stays None: model_description fills it as main.py does
    (cakes.models.flags)."""
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
    model.add_argument('--dropout', '--dp', type=float, default=0.3, help="a released checkpoint's (as main.py: "
                       'a description has its own)')


def model_description(args, checkpoint, names=True):
    """The checkpoint's own description (model flags given must agree with it), or one made from the model flags,
    the classifier's number of classes and (`names`: the tool prints them) the class names of --category."""
    description = read_description(checkpoint)
    fill_network_flags(args, RELEASED, description)
    if description is not None:
        return description
    classes = checkpoint_classes(model_state(checkpoint), args.resume)
    category = getattr(args, 'category', '')
    if names and not category:
        raise UsageError(f"'{args.resume}' does not describe its network (a released checkpoint): give --category "
                         f'category.txt to name its {classes} classes, and the model flags it was trained with '
                         '(--op_code, --conv_config, ...)')
    class_names = read_names(category) if category else None
    if class_names is not None:
        check_classes(classes, class_names, args.resume, f'--category {category}')
    return describe(args.op_code, args.search, resolve_conv_config(args.conv_config), args.arch, args.num_segments,
                    args.dropout, class_names, num_class=classes)


def read_names(category):
    try:
        return read_categories(category)
    except OSError as e:
        raise UsageError(f'cannot read --category {category}: {e.strerror}') from None


def load_network(args, names=True):
    """(model in eval mode with the checkpoint's weights, its description; `names`: see model_description);
    --input_size filled from it."""
    checkpoint = load_checkpoint(args.resume)
    description = model_description(args, checkpoint, names)
    if args.input_size is None:
        args.input_size = input_size(description)
    if args.input_size < 1:
        raise UsageError(f'--input_size {args.input_size}: the crop size must be at least 1')
    try:
        model = build_from_description(description)
    except ValueError as e:
        raise UsageError(f'cannot build the network of {args.resume}: {e}') from None
    load_weights(model, model_state(checkpoint))
    return model.eval(), description
