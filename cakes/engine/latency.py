"""main.py's latency tables: the table of the pruned networks of a run's supernet on the device at hand, for
--prune --target_ms / --target_speedup (a time budget) and for --reweight latency (the search's L1 weights)."""
import torch

from cakes.models.latency import VideoNetwork
from cakes.ops import latency
from cakes.ops.plans import sharing

from .precision import amp_dtype, channels_last


def device_at_hand():
    return torch.device('cuda') if torch.cuda.is_available() else torch.device('cpu')


def run_setting(args, device, batch, train):
    """The setting main.py runs a network in: the device, `batch` clips per device, --amp, the memory format
    (--channels_last, --no_channels_last, else main.py's default for the device), eval or a train step."""
    return latency.Setting(device, batch, amp_dtype(args.amp), channels_last(args), train)


def video_network(args, num_class):
    return VideoNetwork(args.op_code, args.arch, args.num_segments, args.input_size, num_class)


def prune_table(args, num_class, log=print):
    """(VideoNetwork, Setting, table) of --prune's time budget: --latency_batch clips, --latency_mode, read
    from --latency_table FILE when it exists (measured for this run), else from the cache or measured."""
    network = video_network(args, num_class)
    setting = run_setting(args, device_at_hand(), args.latency_batch, args.latency_mode == 'train')
    return network, setting, network.table(setting, args.latency_table or None, log=log)


def search_costs(args, num_class, device, batch, log=print):
    """--reweight latency: per searchable op, {kind: ms of all C channels of that kind} (latency.branch_costs)
    of the table of the run's train step (`batch` clips per device, the run's --amp and memory format).
    Under torch.distributed rank 0 measures (or reads) the table and every rank takes its costs: each rank
    measuring its own would give each different weights, and the ranks' replicas would drift apart."""
    def measure():
        setting = run_setting(args, device, batch, True)
        table = video_network(args, num_class).table(setting, args.latency_table or None, log=log)
        return latency.branch_costs(table)
    if not sharing.distributed():
        return measure()
    return sharing.on_rank_0(measure, 'measuring the latency table for --reweight latency')


def weights_text(costs):
    """The distinct per-op weights of `costs` (from search_costs), e.g. '27 ops 0.62/0.25/0.13 (kxkxk/1xkxk/kx1x1)'."""
    seen = {}
    for cost in costs:
        total = sum(cost.values())
        shares = '/'.join(f'{ms / total:.2f}' for ms in cost.values())
        label = f"{shares} ({'/'.join(cost)})"
        seen[label] = seen.get(label, 0) + 1
    return ', '.join(f'{count} op{"s" * (count > 1)} {label}' for label, count in seen.items())
