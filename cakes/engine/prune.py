"""--prune: the pruned conv_config of a supernet, printed, written to ./conv_config.txt as released and beside the
supernet checkpoint, with a picture of its kernel mix."""
import os

from cakes import ops
from cakes.files import free_backup_name, write_text_atomic
from cakes.models import create_model
from cakes.models.budget import prune_video_to_budget, video_flops
from cakes.models.checkpoint import load_weights, model_state, prune_output_prefix
from cakes.models.description import checkpoint_classes
from cakes.ops.search import prune_to_time as prune_to_time_budget
from cakes.plot import describe_config, save_config_picture

from .latency import prune_table


def prune(args, source):
    """Load the supernet, print its pruned conv_config and write it to ./conv_config.txt and beside the
    supernet checkpoint. `args`: the run's Settings; `source`: the supernet's checkpoint (cakes.engine.run)."""
    state = model_state(source.take(args.prune_model_path))
    classes = checkpoint_classes(state, args.prune_model_path)
    model = create_model(op_code=args.op_code, num_class=classes, num_segments=args.num_segments, arch=args.arch,
                         search=args.search, dropout=args.dropout if 'new_fc.weight' in state else 0)
    load_weights(model, state)
    timed = args.target_ms is not None or args.target_speedup is not None
    if timed:
        config = prune_to_time(args, model, classes)
    elif args.target_gflops is not None:
        config = prune_to_gflops(args, model)
    else:
        config = ops.prune_config(model.cakes_ops(), multiple=args.width_multiple)
    text = str(config)  # a Python literal of plain ints, as config.py takes it
    print(text)
    prefix = prune_output_prefix(args.prune_model_path)
    # A budget's config has a name of its own: RUN_conv_config.txt stays the one --finetune copies channels for.
    # ... and so has a width multiple's: --finetune copies the channels of the released rule only.
    budget, title = budget_names(args)
    output = prefix + '_conv_config' + budget + ('' if args.width_multiple == 1 else f'_m{args.width_multiple}')
    write_pruned_config(text + '\n', output + '.txt')
    name = os.path.basename(prefix) + title + (
        '' if args.width_multiple == 1 else f', widths multiples of {args.width_multiple}')
    picture = output + '.png'
    save_config_picture([describe_config(name, config, args.num_segments, args.input_size, classes)],
                        picture)
    print(f'kernel mix picture written to {picture}')


def budget_names(args):
    """(the file name's suffix, the picture title's line) of the run's budget; ('', '') for the released rule."""
    if args.target_gflops is not None:
        return f'_{args.target_gflops:g}gflops', f'\npruned to at most {args.target_gflops:g} GFLOPs'
    what = f'{args.latency_mode}, batch {args.latency_batch}'
    if args.target_ms is not None:
        return f'_{args.target_ms:g}ms', f'\npruned to at most {args.target_ms:g} ms predicted ({what})'
    if args.target_speedup is not None:
        return (f'_{args.target_speedup:g}x', f"\npruned to the released rule's time / {args.target_speedup:g} "
                f'predicted ({what})')
    return '', ''


def write_pruned_config(text, beside):
    """./conv_config.txt as released (a different config already there is moved to ./conv_config.txt.bak, or
    .bak.1, .bak.2, ... when that is taken: never lost), and the same file beside the supernet checkpoint."""
    released = 'conv_config.txt'
    if os.path.isfile(released):
        with open(released) as f:
            previous = f.read()
        if previous != text:
            backup = free_backup_name(released)
            os.replace(released, backup)
            print(f'moved the previous ./conv_config.txt (another config) to ./{backup}')
    write_text_atomic(released, text)
    print('conv_config written to ./conv_config.txt: paste it into conv_configs in config.py')
    write_text_atomic(beside, text)
    print(f'conv_config also written beside the supernet: {beside}')


def prune_to_gflops(args, model):
    budget = prune_video_to_budget(model, args.target_gflops * 1e9, args.input_size, args.width_multiple)
    print(f'FLOPs budget {args.target_gflops:g} GFLOPs: pruned network {budget.flops / 1e9:.3f} GFLOPs, '
          f'{args.target_gflops - budget.flops / 1e9:.3f} below the target ({args.num_segments} frames, '
          f'{args.input_size}x{args.input_size}; lambda {budget.lam * 1e9:.4g} per GFLOP'
          + BUDGET_NOTES[(budget.lam > 0) - (budget.lam < 0)] + ')')
    return budget.config


# By the sign of lambda: the released rule trimmed to the budget, kept as it is, or spending what it leaves.
BUDGET_NOTES = {1: '', 0: ': the released rule already fits', -1: ': costlier kernels spend the budget'}


def prune_to_time(args, model, classes):
    """--target_ms / --target_speedup: the config of most kept |BN scale| predicted within the time, on the table
    of this device (cakes.engine.latency.prune_table); printed beside the released rule's: predicted and measured
    ms (the two networks timed at the end, in the table's setting) and FLOPs."""
    network, setting, table = prune_table(args, classes)
    searchable = model.cakes_ops()
    budget = prune_to_time_budget(searchable, table, args.target_ms, args.target_speedup, args.width_multiple)
    released = ops.prune_config(searchable, multiple=args.width_multiple)
    measured = network.measure({'pruned': budget.config, 'released': released}, setting)
    flops = video_flops(args.op_code, args.arch, args.num_segments, args.input_size, classes)
    key = table.key
    target = budget.released_ms / args.target_speedup if args.target_ms is None else args.target_ms
    print(f"time budget {target:.4g} ms: {key['mode']}, batch {key['batch']}, {key['dtype']}, {key['memory_format']}, "
          f"{key['device']} (table {table.seconds:.0f} s to measure)")
    print(f"  pruned:   predicted {budget.predicted_ms:8.2f} ms, measured {measured['pruned']:8.2f} ms, "
          f'{flops(budget.config) / 1e9:7.3f} GFLOPs, kept |BN scale| {budget.kept:.4f} '
          f'(no config within the target keeps more than {budget.bound:.4f})')
    print(f"  released: predicted {budget.released_ms:8.2f} ms, measured {measured['released']:8.2f} ms, "
          f'{flops(released) / 1e9:7.3f} GFLOPs')
    return budget.config
