"""--prune: the pruned conv_config of a supernet, printed, written to ./conv_config.txt as released and beside the
supernet checkpoint, with a picture of its kernel mix (and of how the search settled, when the checkpoint kept
that history). A search that stops once its config has settled writes the same files beside its checkpoint."""
import os

from cakes import ops
from cakes.files import free_backup_name, write_text_atomic
from cakes.models import create_model
from cakes.models.budget import prune_video_to_budget, video_flops
from cakes.models.checkpoint import load_weights, model_state, prune_output_prefix
from cakes.models.description import checkpoint_classes
from cakes.ops.search import prune_to_time as prune_to_time_budget
from cakes.ops.settling import CHECKPOINT_KEY, SettlingHistory
from cakes.plot import describe_config, save_config_picture

from .latency import prune_table


def prune(args, source):
    """Load the supernet, print its pruned conv_config and write it to ./conv_config.txt and beside the
    supernet checkpoint. `args`: the run's Settings; `source`: the supernet's checkpoint (cakes.engine.run)."""
    checkpoint = source.take(args.prune_model_path)
    state = model_state(checkpoint)
    classes = checkpoint_classes(state, args.prune_model_path)
    model = create_model(op_code=args.op_code, num_class=classes, num_segments=args.num_segments, arch=args.arch,
                         search=args.search, dropout=args.dropout if 'new_fc.weight' in state else 0)
    load_weights(model, state)
    config, budget = pruned_config(args, model, classes)
    if budget is not None:
        print(budget_line(args, budget))
    text = str(config)  # a Python literal of plain ints, as config.py takes it
    print(text)
    history = saved_history(checkpoint)
    if history is not None:
        print(history.stop_text())
    write_pruned_config(text + '\n')
    for line in write_beside(args, config, args.prune_model_path, classes, history):
        print(line)


def pruned_config(args, model, classes=None):
    """(the config pruning chooses for the supernet `model` under the run's rule, its FLOPs Budget or None): the
    released rule (widths multiples of --width_multiple), the --target_gflops budget's, or the time budget's
    (--target_ms/--target_speedup, with --prune only: it prints its own figures)."""
    if args.target_ms is not None or args.target_speedup is not None:
        return prune_to_time(args, model, classes), None
    if args.target_gflops is None:
        return ops.prune_config(model.cakes_ops(), multiple=args.width_multiple), None
    budget = prune_video_to_budget(model, args.target_gflops * 1e9, args.input_size, args.width_multiple)
    return budget.config, budget


def saved_history(checkpoint):
    """The settling history a search checkpoint kept (cakes.ops.settling), or None."""
    state = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return None if state is None else SettlingHistory.from_state(state)


def output_prefix(args, supernet_path):
    """Where the config of `supernet_path` is written beside it, without the extension. A budget's config has a
    name of its own: RUN_conv_config.txt stays the one --finetune copies channels for; and so has a width
    multiple's: --finetune copies the channels of the released rule only."""
    return (prune_output_prefix(supernet_path) + '_conv_config' + budget_names(args)[0]
            + ('' if args.width_multiple == 1 else f'_m{args.width_multiple}'))


def write_beside(args, config, supernet_path, classes, history=None):
    """The config as text and its kernel mix picture (with `history`'s distance curve beside it) beside the
    supernet checkpoint. Returns the lines that say so."""
    output = output_prefix(args, supernet_path)
    write_text_atomic(output + '.txt', str(config) + '\n')
    name = os.path.basename(prune_output_prefix(supernet_path)) + budget_names(args)[1] + (
        '' if args.width_multiple == 1 else f', widths multiples of {args.width_multiple}')
    picture = output + '.png'
    save_config_picture([describe_config(name, config, args.num_segments, args.input_size, classes)], picture,
                        [] if history is None else [('search', history)])
    return [f'conv_config also written beside the supernet: {output}.txt',
            f'kernel mix picture written to {picture}']


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


def write_pruned_config(text):
    """./conv_config.txt as released (a different config already there is moved to ./conv_config.txt.bak, or
    .bak.1, .bak.2, ... when that is taken: never lost)."""
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


def budget_line(args, budget):
    return (f'FLOPs budget {args.target_gflops:g} GFLOPs: pruned network {budget.flops / 1e9:.3f} GFLOPs, '
            f'{args.target_gflops - budget.flops / 1e9:.3f} below the target ({args.num_segments} frames, '
            f'{args.input_size}x{args.input_size}; lambda {budget.lam * 1e9:.4g} per GFLOP'
            + BUDGET_NOTES[(budget.lam > 0) - (budget.lam < 0)] + ')')


# By the sign of lambda: the released rule trimmed to the budget, kept as it is, or spending what it leaves.
BUDGET_NOTES = {1: '', 0: ': the released rule already fits', -1: ': costlier kernels spend the budget'}


def prune_to_time(args, model, classes):
    """--target_ms / --target_speedup: the config of most kept |BN scale| predicted within the time, on the table
    of this device (cakes.engine.latency.prune_table); printed beside the released rule's: predicted and measured
    ms (the two networks timed at the end, in the table's setting, together in alternating rounds in a fresh
    process, as a run would be) and FLOPs."""
    network, setting, table = prune_table(args, classes)
    searchable = model.cakes_ops()
    budget = prune_to_time_budget(searchable, table, args.target_ms, args.target_speedup, args.width_multiple)
    released = ops.prune_config(searchable, multiple=args.width_multiple)
    measured = network.measure({'pruned': budget.config, 'released': released}, setting, per_process=2)
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
