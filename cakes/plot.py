"""Pictures of what a search found: each block's kernel mix (3D/2D/1D shares of its channels) as stacked bars,
one panel per config, with the network's parameters and GFLOPs. Used by scripts/plot_config.py, --prune
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
    figure = Figure(figsize=(12, 0.9 + 1.9 * len(entries)), layout='constrained')
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
    return figure


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
                    + (f" ({entry['num_segments']} frames)" if with_frames else ''))


def png_bytes(figure, dpi=100):
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


def save_config_picture(entries, path):
    """Draw the described configs and write the PNG atomically."""
    data = png_bytes(config_figure(entries))
    write_atomic(path, lambda f: f.write(data))
    return path
