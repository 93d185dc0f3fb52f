"""Latency tables of video networks (TemporalModel): the op shapes of a network read off its supernet on the meta
device, the pruned network of a config built as main.py runs it, its table (cakes.ops.latency) and the measured
time of whole networks beside their prediction. main.py --prune --target_ms, --reweight latency,
scripts/latency_table.py and scripts/benchmark_time_budget.py all take their tables from here."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import torch

from cakes.errors import UsageError
from cakes.ops import latency, pruned_op_code
from cakes.ops import timing
from cakes.runtime import keep_heap, release_heap

from .factory import create_model


@dataclass(frozen=True)
class VideoNetwork:
    """What a video network's table is measured for, besides the setting: op code (a CAKES op code; the pruned
    networks' is measured), backbone, frames, crop size and classes (the classifier is part of the rest)."""
    op_code: str
    arch: str = 'resnet50'
    frames: int = 8
    input_size: int = 224
    num_class: int = 174

    def text(self):
        return (f'TemporalModel {self.arch} {pruned_op_code(self.op_code)}, {self.frames} frames of '
                f'{self.input_size}x{self.input_size}, {self.num_class} classes')

    def shapes(self):
        """The op shapes of the network, from its CAKES supernet on the meta device (shapes only)."""
        with torch.device('meta'):
            supernet = create_model(op_code=pruned_op_code(self.op_code), num_class=2, num_segments=self.frames,
                                    arch=self.arch, search=True, dropout=0)
        return latency.op_shapes(supernet, self.clip(1, 'meta'))

    def clip(self, batch, device='cpu'):
        """A random (batch, frames x 3, H, W) input (a seeded generator: every rank and run draws the same)."""
        generator = torch.Generator().manual_seed(0)
        shape = (batch, self.frames * 3, self.input_size, self.input_size)
        return torch.randn(shape, generator=generator).to(device) if device != 'meta' else torch.zeros(
            shape, device='meta')

    def builder(self, setting):
        """config -> the pruned network of that config, on the setting's device, in its memory format and
        autocast, as main.py runs it (seeded weights: times do not depend on them)."""
        def build(config):
            torch.manual_seed(0)
            model = create_model(op_code=pruned_op_code(self.op_code), conv_config=config, num_class=self.num_class,
                                 num_segments=self.frames, arch=self.arch)
            return model.to(setting.device).use_channels_last(setting.channels_last).use_autocast(setting.amp)
        return build

    def table(self, setting, path=None, repeats=3, log=print):
        """The latency table of this network in `setting`: from `path` or the cache when measured before (it
        must have been measured for this run), else measured (cakes.ops.latency.latency_table)."""
        return latency.latency_table(self.shapes(), setting, self.text(), self.builder(setting),
                                     self.clip(setting.batch), path, repeats, log)

    def measure(self, configs, setting, repeats=3, per_process=None):
        """{name: measured ms} of the networks of `configs` ({name: config}), timed together in alternating
        rounds (cakes.ops.timing.fastest_in_rounds), as the table's rest was.

        `per_process`: time them instead in fresh processes of that many networks each (in alternating rounds
        within each), one process after another. A process that has run the train steps of many networks holds a
        fragmented heap that page-faults in every step (here ten ResNet-50 train steps at batch 1 in one process
        measured up to 15% slower than each alone, and at batch 8 they took 24 GB), which a run of one network
        never sees; two compared in one process see the same drift of the machine's speed (alone, each in its own
        process, the same network measured up to 4% apart from one process to the next)."""
        if per_process is None:
            build = self.builder(setting)
            x = self.clip(setting.batch, setting.device)
            steps = {name: latency.network_step(build(config), x, setting) for name, config in configs.items()}
            return {name: s * 1e3 for name, s in timing.fastest_in_rounds(steps, setting.device, repeats).items()}
        names = list(configs)
        modes = (torch.get_num_threads(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        measured = {}
        # The fresh processes need their own memory: hand back what this one keeps but no longer uses.
        release_heap()
        if setting.device.type == 'cuda':
            torch.cuda.empty_cache()
            # 'cuda' means this process's current device (its rank's); in a fresh process it would be cuda:0.
            setting = replace(setting, device=torch.device('cuda', torch.cuda.current_device()))
        for start in range(0, len(names), per_process):
            group = {name: configs[name] for name in names[start:start + per_process]}
            # Spawned: nothing of this process's heap (or CUDA context) comes along.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
                measured.update(pool.submit(measure_fresh, self, group, setting, repeats, modes).result())
        return measured


def measure_fresh(network, configs, setting, repeats, modes):
    """`network.measure` in a spawned process, set up as main.py sets up its own: the heap kept, and the parent's
    threads and cuDNN modes (`modes`; the OpenMP setting comes in the environment)."""
    keep_heap()
    threads, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = modes
    torch.set_num_threads(threads)
    return network.measure(configs, setting, repeats)


def full_config(config, table):
    """A config (per op {kind: width}) with every kind of the table's ops present, 0 where it has none."""
    return [{kind: widths.get(kind, 0) for kind in shape.kinds} for widths, shape in zip(config, table.shapes)]


def predicted_ms(config, table, network=None):
    """The predicted ms of a network of `config` (a pruned network's widths; kinds it lacks are 0) on `table`, a
    table measured for that network (`network`, a VideoNetwork: a table of ops of other shapes or kinds is a
    UsageError naming both networks)."""
    if network is not None and not priced_by(network, table):
        raise UsageError(f"the latency table was measured for {table.key['network']}, not {network.text()}: give a "
                         'table of this network (scripts/latency_table.py)')
    if len(config) != len(table.shapes):
        raise UsageError(f"the latency table was measured for {len(table.shapes)} CAKES ops ({table.key['network']}), "
                         f'the config has {len(config)}: give a table of this network')
    return latency.predicted_time(full_config(config, table), table)


def priced_by(network, table):
    """Whether `table` prices `network`: ops of the same input, stride and C, their kinds among the table's (a
    conv1_2d network is a conv1_2_3d one without 3D channels)."""
    ours, theirs = network.shapes(), table.shapes
    return len(ours) == len(theirs) and all(
        (a.in_channels, a.input, a.stride, a.width) == (b.in_channels, b.input, b.stride, b.width)
        and set(a.kinds) <= set(b.kinds) for a, b in zip(ours, theirs))
