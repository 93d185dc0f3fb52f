"""Pictures of what a search found: each block's kernel mix (3D/2D/1D shares of its channels) as stacked bars,
one panel per config, with the network's parameters and GFLOPs, and beside them, when the search kept a
history, how its config settled epoch by epoch. Used by scripts/plot_config.py, --prune
(RUN_conv_config.png) and TensorBoard in search runs. matplotlib loads only when a picture is drawn."""
import io

import torch

from cakes.complexity import count_flops, count_params
from cakes.files import write_atomic
from cakes.errors import UsageError
from cakes.models import DEPTHS, block_widths, create_model
from cakes.ops import CAKES_OPS, op_spec

# kind -> (legend name, colour); stacked bottom to top in this order.
KIND_STYLE = {'kxkxk': ('3D 3x3x3', '#c0392b'), '1xkxk': ('2D 1x3x3', '#2e86c1'), 'kx1x1': ('1D 3x1x1', '#f1c40f')}


def config_op_code(config):
    """The CAKES op code with the fewest branches that has every kind the config names."""
    kinds = {kind for block in config for kind in block}
    fitting = [code for code in CAKES_OPS if kinds <= set(op_spec(code).kinds)]
    if not fitting:
        raise UsageError(f"conv_config names kinds {sorted(kinds)} that no CAKES op code has together")
    return min(fitting, key=lambda code: len(op_spec(code).kinds))


def config_arch(config):
    """The backbone whose blocks have the widths the config's blocks sum to."""
    widths = [sum(block.values()) for block in config]
    for arch in DEPTHS:
        if block_widths(arch) == widths:
            return arch
    raise UsageError(f'conv_config with {len(config)} blocks of widths {widths[:4]}... fits no backbone '
                     f"({', '.join(DEPTHS)})")


def describe_config(name, config, num_segments=8, input_size=224, num_class=174):
    """What a panel shows: the config and the parameters and FLOPs of its network (counted on meta)."""
    op_code, arch = config_op_code(config), config_arch(config)
    with torch.device('meta'):
        model = create_model(op_code=op_code, conv_config=config, num_class=num_class, num_segments=num_segments,
                             arch=arch)
    return {'name': name, 'config': config, 'arch': arch, 'op_code': op_code, 'params': count_params(model),
            'flops': count_flops(model, num_segments, input_size), 'num_segments': num_segments,
            'input_size': input_size}


def block_labels(arch):
    """'1.0', '1.1', ... per block, and the index of the first block of each stage."""
    labels, starts = [], []
    for stage, depth in enumerate(DEPTHS[arch], 1):
        starts.append(len(labels))
        labels += [f'{stage}.{i}' for i in range(depth)]
    return labels, starts


def config_figure(entries):
    """A matplotlib Figure: one panel per described config (see `describe_config`), blocks in network order."""
    from matplotlib.figure import Figure
    figure = Figure(figsize=(12, config_height(entries)), layout='constrained')
    draw_configs(figure, entries)
    return figure


def config_height(entries):
    return 0.9 + 1.9 * len(entries)


def draw_configs(figure, entries):
    """The panels of `config_figure` into `figure` (a Figure or a SubFigure)."""
    axes = figure.subplots(len(entries), 1, squeeze=False, sharex=True)[:, 0]
    mixed = len({entry['num_segments'] for entry in entries}) > 1
    for ax, entry in zip(axes, entries):
        draw_panel(ax, entry, mixed)
    labels, starts = block_labels(entries[0]['arch'])
    axes[-1].set_xticks(range(len(labels)), labels, fontsize=8)
    axes[-1].set_xlabel('block (stage.index), network order')
    for stage, start in enumerate(starts, 1):
        end = starts[stage] if stage < len(starts) else len(labels)
        axes[0].text((start + end - 1) / 2, 1.04, f'layer{stage}', ha='center', va='bottom', fontsize=9,
                     transform=axes[0].get_xaxis_transform())
    frames = {entry['num_segments'] for entry in entries}
    size = entries[0]['input_size']
    at = f'{frames.pop()} frames, ' if len(frames) == 1 else 'GFLOPs at each panel\'s frames, '
    figure.suptitle(f'Kernel mix per block ({at}{size}x{size})', fontsize=11)


def draw_panel(ax, entry, with_frames=False):
    config = entry['config']
    widths = torch.tensor([sum(block.values()) for block in config], dtype=torch.float64)
    bottom = torch.zeros(len(config), dtype=torch.float64)
    for kind, (label, colour) in KIND_STYLE.items():
        counts = torch.tensor([block.get(kind, 0) for block in config], dtype=torch.float64)
        if kind in op_spec(entry['op_code']).kinds:
            share = counts / widths
            overall = 100 * counts.sum() / widths.sum()
            ax.bar(range(len(config)), share.tolist(), 0.8, bottom.tolist(), color=colour,
                   label=f'{label}: {overall:.0f}% of channels')
            bottom += share
    _, starts = block_labels(entry['arch'])
    for start in starts[1:]:
        ax.axvline(start - 0.5, color='black', linestyle='--', linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.6, len(config) - 0.4)
    ax.set_yticks([0, 0.5, 1], ['0', '50%', '100%'], fontsize=8)
    ax.set_ylabel('share of\nchannels', fontsize=9)
    ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=9, frameon=False,
              alignment='left',
              title=f"{entry['name']}\n{entry['params'] / 1e6:.2f} M params, {entry['flops'] / 1e9:.2f} GFLOPs"
                    + (f" ({entry['num_segments']} frames)" if with_frames else '')
                    + (f"\n{entry['ms']:.1f} ms predicted" if entry.get('ms') is not None else ''))


def settling_figure(entries, histories):
    """The panels of `config_figure` and beside them how the search settled: for each (name, SettlingHistory)
    of `histories` (cakes.ops.settling) the distance at each validation point, its threshold and where the
    search stopped, with the epochs that saved."""
    from matplotlib.figure import Figure
    figure = Figure(figsize=(17, max(config_height(entries), 3.8)), layout='constrained')
    left, right = figure.subfigures(1, 2, width_ratios=[12, 5])
    draw_configs(left, entries)
    draw_distances(right.subplots(), histories)
    return figure


# The curves' colours (in turn); with several curves each one's stop and saving take its colour.
CURVE_COLOURS = ('#1f4e79', '#8e44ad', '#117a65', '#a04000')


def draw_distances(ax, histories):
    """The distance curve of each (name, SettlingHistory), with a line per threshold and where each stopped."""
    rules = {(history.eps, history.patience) for _, history in histories if history.eps is not None}
    for eps, patience in sorted(rules):  # one line per threshold, however many curves share it
        ax.axhline(eps, color='grey', linestyle=':', label=f'EPS {eps:g} ({patience} in a row below: stop)')
    for i, (name, history) in enumerate(histories):
        draw_curve(ax, history, f'{name}: ' if len(histories) > 1 else '', CURVE_COLOURS[i % len(CURVE_COLOURS)])
    top = max([d for _, history in histories for d in history.distances + [history.eps or 0]] + [0.05])
    end = max([0] + [e for _, history in histories for e in history.epochs + [history.total_epochs or 0]])
    ax.set_ylim(0, min(1, top * 1.15))
    ax.set_xlim(0, end + 0.5)
    ax.set_xlabel('epochs trained')
    ax.set_ylabel('share of searchable channels whose\nkept state changed since the last point', fontsize=9)
    ax.set_title('How the config settled (Early-Bird distance)', fontsize=11)
    ax.legend(fontsize=8, loc='best')


def draw_curve(ax, history, prefix, colour):
    """One history: `prefix` names it when several share the axes, and then its stop takes its colour."""
    ax.plot(history.epochs, history.distances, marker='o', markersize=3, color=colour,
            label=f'{prefix}distance' if prefix else 'distance to the previous point')
    if not history.distances:
        ax.text(0.5, 0.5, f'{prefix}no distance yet (fewer than two validation points)', ha='center',
                transform=ax.transAxes, fontsize=9)
    if not history.settled:
        return
    stop = history.settled_epoch
    of = f' of {history.total_epochs}' if history.total_epochs is not None else ''
    ax.axvline(stop, color=colour if prefix else '#c0392b', linestyle='--',
               label=f'{prefix}stopped after epoch {stop}{of}')
    if history.epochs_saved:
        ax.axvspan(stop, history.total_epochs, color=colour if prefix else '#27ae60', alpha=0.1,
                   label=f"{prefix}{history.epochs_saved} epoch{'' if history.epochs_saved == 1 else 's'} saved")


def png_bytes(figure, dpi=100):
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


def save_config_picture(entries, path, histories=()):
    """Draw the described configs, beside the distance curves of `histories` when there are any (see
    `settling_figure`), and write the PNG atomically."""
    data = png_bytes(settling_figure(entries, histories) if histories else config_figure(entries))
    write_atomic(path, lambda f: f.write(data))
    return path
