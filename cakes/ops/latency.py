"""Latency tables: the time of each kernel kind of a network's CAKES ops as a function of its width, measured on
the device at hand, and the network's time predicted from them for any config.

A table holds, for each distinct op shape of a network (input channels, input T x H x W, stride, the C channels
the op keeps), the time of one convolution of each kind to w of the C channels, for w on a grid fine enough to
see the device's steps (`width_grid`), run as the network runs it: the convolution the op's plans run
(cakes.ops.plans.run_conv) on the network's batch, in its memory format and dtype (autocast), as an eval forward
(no gradients) or a train step (forward, then the gradients of input and weight). Beside them, per op shape, the
stacked plan's time and what an op spends around its convolutions (`overhead_steps`); once per network, the rest
of it, the part no config changes. An op's time for given widths is that of the plan cakes.ops.plans would
choose (cakes.ops.op_time), the network's the rest plus its ops' (`predicted_time`).
"""
import contextlib
import hashlib
import itertools
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from cakes.errors import UsageError
from cakes.files import write_text_atomic

from . import plans, timing
from .kernels import kernel_shape, kind_of_size
from .cakes import CakesOp
from .forward import eval_forward
from .op_time import OpTimes
from .supernet import DropoutSupernetOp
from .registry import default_widths


# ---------------------------------------------------------------- what a table is measured for

@dataclass(frozen=True)
class OpShape:
    """A CAKES op as the table sees it: what its convolutions read and the C channels it keeps."""
    in_channels: int
    input: tuple        # (T, H, W) of the op's input
    stride: tuple       # (t, h, w)
    width: int          # C
    kinds: tuple        # the op's kinds, in branch order
    k: int = 3

    def output(self):
        """(T', H', W') of the op's output."""
        return tuple((size + 2 * (self.k // 2) - self.k) // s + 1 for size, s in zip(self.input, self.stride))

    def text(self):
        t, h, w = self.input
        stride = '' if set(self.stride) == {1} else f", stride {'x'.join(map(str, self.stride))}"
        return f'{self.in_channels}x{t}x{h}x{w} -> {self.width}{stride}'


@dataclass(frozen=True)
class Setting:
    """How the network runs: device, batch, autocast dtype (None: float32), memory format, eval or train step."""
    device: torch.device
    batch: int = 1
    amp: torch.dtype = None
    channels_last: bool = False
    train: bool = False

    def context(self):
        """Gradients on for a train step, off for eval; autocast when the network runs under it."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.enable_grad() if self.train else torch.no_grad())
        if self.amp is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.amp))
        return stack

    def input(self, channels, size):
        """A random (batch, channels, *size) input in the setting's memory format."""
        x = torch.randn(self.batch, channels, *size, device=self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x.requires_grad_(self.train)

    def key(self):
        """What a table measured in this setting is valid for (the op shapes and the network aside)."""
        return {'device_type': self.device.type, 'device': device_name(self.device),
                'torch': torch_version(self.device),
                'dtype': str(self.amp or torch.float32).replace('torch.', ''),
                'memory_format': 'channels_last' if self.channels_last else 'contiguous',
                'mode': 'train' if self.train else 'eval', 'batch': self.batch}


def device_name(device):
    """The GPU's name, or the CPU's model and torch's number of threads (a CPU table holds for that many)."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), model)
    except OSError:
        pass
    return f'{model} ({torch.get_num_threads()} threads)'


def torch_version(device):
    """torch's version, and on CUDA cuDNN's and whether it benchmarks algorithms (the kernels, so the steps,
    change with both)."""
    if device.type == 'cuda' and torch.backends.cudnn.is_available():
        benchmark = ', benchmark' if torch.backends.cudnn.benchmark else ''
        return f'{torch.__version__} (cudnn {torch.backends.cudnn.version()}{benchmark})'
    return torch.__version__


def op_shapes(model, example_input):
    """The OpShape of each CAKES op of `model` (CakesOp or supernet), in network order, from one eval forward on
    `example_input` (on the meta device when model and input are there: shapes only, nothing computed)."""
    ops = [m for m in model.modules() if isinstance(m, (CakesOp, DropoutSupernetOp))]
    inputs = {}

    def record(op, args):
        inputs.setdefault(op, tuple(args[0].shape[2:]))
    eval_forward(model, example_input, pre_hooks=[(op, record) for op in ops])
    return [OpShape(op.convs[0][0].in_channels, inputs[op], tuple(op.convs[0][0].stride), kept_width(op),
                    tuple(op.kinds), op.k) for op in ops]


def kept_width(op):
    """C: the channels an op keeps (a supernet's n branches have C each)."""
    if isinstance(op, DropoutSupernetOp):
        return op.width
    return op.out_channels // len(op.kinds) if op.search else op.out_channels


def width_grid(width, ends=True):
    """The widths measured for an op keeping `width` channels: every one to 16, then every multiple of 8 and, with
    `ends`, the first and last width of each run of 8 between them (17, 23, 24, 25, 31, 32, ...), and the width
    itself. Devices compute channels in blocks (of 16 in oneDNN on AVX-512, tiles of 8 on tensor cores) and run
    unaligned widths on other kernels, so time is a step function of width, flat within each run, stepping at
    its ends: linear interpolation between these widths follows it."""
    grid = set(range(1, min(width, 16) + 1)) | {width}
    grid |= {m + d for m in range(16, width, 8) for d in ((1, 7, 8) if ends else (8,)) if m + d <= width}
    return sorted(grid)


def timed_kinds(kinds, k=3):
    """The op's kinds and the enclosing kinds its merge plans run (1xkxk with kx1x1 runs as kxkxk)."""
    sizes = [kernel_shape(kind, k)[0] for kind in kinds]
    timed = list(kinds)
    for n in range(2, len(kinds) + 1):
        for group in itertools.combinations(range(len(kinds)), n):
            kind = kind_of_size(tuple(max(sizes[i][a] for i in group) for a in range(3)))
            if kind not in timed:
                timed.append(kind)
    return tuple(timed)


# ---------------------------------------------------------------- steps

def in_setting(step, setting):
    """`step` run in the setting's context (gradients, autocast)."""
    def run():
        with setting.context():
            step()
    return run


# ---------------------------------------------------------------- measuring

def conv_steps(shape, setting, x, kinds, widths, grads):
    """{(kind, width): the step of one convolution of that kind to `width` of the C channels}, as the op's plans
    run it (weights in the network's memory format, autocast in the step; `grads`: the output gradients, see
    cakes.ops.timing.train_step)."""
    steps = {}
    for kind in kinds:
        size, padding = kernel_shape(kind, shape.k)
        full = torch.randn(shape.width, shape.in_channels, *size, device=setting.device)
        if setting.channels_last:  # as model.to(memory_format=...) leaves the branch weights
            full = full.contiguous(memory_format=torch.channels_last_3d)
        for width in widths:
            weight = full[:width].detach().requires_grad_(setting.train)
            forward = (lambda w=weight, p=padding: plans.run_conv(x, w, None, shape.stride, p))
            step = timing.train_step(forward, (x, weight), grads) if setting.train else forward
            steps[kind, width] = in_setting(step, setting)
    return steps


def stacked_steps(shape, setting, x, widths, grads):
    """{('stacked', width): step} of the stacked plan of an op of `width` kxkxk channels: one 2D convolution of
    the frames to k * width channels, then shifted sums (another op's stacked plan runs the same on its widths
    times their taps, over k, which need not be whole: measured on the coarse grid). With gradients the plan
    assembles its weight at every step; in eval once."""
    size, _ = kernel_shape('kxkxk', shape.k)
    full = torch.randn(shape.width, shape.in_channels, *size, device=setting.device)
    steps = {}
    for width in widths:
        weight = full[:width].detach().requires_grad_(setting.train)
        if setting.train:
            forward = (lambda w=weight: plans.STACKED.run(x, plans.STACKED.assemble([w], [None]), shape.stride))
            step = timing.train_step(forward, (x, weight), grads)
        else:
            built = plans.STACKED.assemble([weight], [None])
            step = (lambda b=built: plans.STACKED.run(x, b, shape.stride))
        steps['stacked', width] = in_setting(step, setting)
    return steps


def overhead_steps(shape, setting, grads):
    """{name: step} of what an op spends besides its convolutions that differs between configs and plans:
    'cat1'..'catN', concatenating 1..N outputs into the C channels (the branch form copies even one);
    in eval 'bn', the BN that the branch form runs and the other plans fold into their weights; in train
    'merge', assembling the weights of a merge of all C channels (kxkxk and a zero-padded kx1x1, half each)."""
    out, width = shape.output(), shape.width
    steps = {}
    for n in range(1, len(shape.kinds) + 1):
        pieces = [setting.input(width // n + (i < width % n), out) for i in range(min(n, width))]
        forward = (lambda p=pieces: torch.cat(p, dim=1))
        steps[f'cat{n}'] = in_setting(timing.train_step(forward, pieces, grads) if setting.train else forward, setting)
    if setting.train:
        weights = [torch.randn(w, shape.in_channels, *kernel_shape(kind, shape.k)[0], device=setting.device,
                               requires_grad=True)
                   for kind, w in (('kxkxk', width // 2), ('kx1x1', width - width // 2))]
        merge = plans.Merge(((0, 1),))
        steps['merge'] = in_setting(timing.train_step(lambda: merge.assemble(weights, [None, None])[0][1],
                                                      weights, grads), setting)
    else:
        y = setting.input(width, out)
        mean, var, weight, bias = (torch.rand(width, device=setting.device) + 0.5 for _ in range(4))
        steps['bn'] = in_setting(lambda: F.batch_norm(y, mean, var, weight, bias, False, 0.1, 1e-5), setting)
    return steps


def measure_shape(shape, setting, repeats, grid=width_grid):
    """One op shape's entry of a table: {'widths': [...], 'stacked_widths': [...], 'ms': {kind or 'stacked':
    [ms per width]}, 'overhead': {name: ms}}, every step timed in the same rounds (`time_steps`)."""
    widths = {'conv': grid(shape.width), 'stacked': grid(shape.width, ends=False)}
    x, grads = setting.input(shape.in_channels, shape.input), {}
    steps = conv_steps(shape, setting, x, timed_kinds(shape.kinds, shape.k), widths['conv'], grads)
    if shape.stride[0] == 1:
        steps.update(stacked_steps(shape, setting, x, widths['stacked'], grads))
    overhead = overhead_steps(shape, setting, grads)
    seconds = timing.fastest_in_rounds({**steps, **overhead}, setting.device, repeats)
    names = dict.fromkeys(name for name, _ in steps)
    return {'widths': widths['conv'], 'stacked_widths': widths['stacked'],
            'ms': {name: [seconds[name, w] * 1e3 for w in widths[name if name == 'stacked' else 'conv']]
                   for name in names},
            'overhead': {name: seconds[name] * 1e3 for name in overhead}}


def time_ops(shape, setting, rows, repeats=3):
    """Measured ms of whole CAKES ops of this shape with the branch widths of each row, as the network runs
    them: each chooses its plan at its first forward (cakes.ops.plans), then its step is timed as the plans'
    choice times one (cakes.ops.timing.op_step: in eval the whole op, BN folded; a train step its convolutions
    with the gradients of input and weights). To check the table's predictions against."""
    x, steps = setting.input(shape.in_channels, shape.input), {}
    for i, widths in enumerate(rows):
        op = CakesOp(list(zip(shape.kinds, widths)), shape.in_channels, shape.stride, k=shape.k).to(setting.device)
        if setting.channels_last:
            op = op.to(memory_format=torch.channels_last_3d)
        op.train(setting.train)
        with setting.context():
            plan = plans.plan_for(op, x)
        steps[i] = in_setting(timing.op_step(op, x, plan, setting.train), setting)
    seconds = timing.fastest_in_rounds(steps, setting.device, repeats)
    return [seconds[i] * 1e3 for i in range(len(rows))]


def network_step(model, x, setting):
    """The network's eval forward, or its train step (forward, backward of the summed output)."""
    model.train(setting.train)
    if not setting.train:
        return in_setting(lambda: model(x), setting)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()
    return in_setting(step, setting)


def rest_configs(shapes):
    """Two configs of different kernel mixes: the rest of the network is measured at the first (each kind a
    third of the channels, as a network without config) and checked at the second (a quarter of each kind but
    the second, which takes the rest)."""
    base = [dict(zip(s.kinds, default_widths(s.width, len(s.kinds)))) for s in shapes]
    check = []
    for s in shapes:
        widths = [s.width // 4] * len(s.kinds)
        widths[min(1, len(widths) - 1)] += s.width - sum(widths)
        check.append(dict(zip(s.kinds, widths)))
    return base, check


# ---------------------------------------------------------------- the table

FORMAT = 'cakes latency table'
VERSION = 2
CACHE_ENV = 'CAKES_LATENCY_CACHE'


def shape_json(shape):
    return {**asdict(shape), 'input': list(shape.input), 'stride': list(shape.stride), 'kinds': list(shape.kinds)}


def shape_from_json(data):
    return OpShape(int(data['in_channels']), tuple(data['input']), tuple(data['stride']), int(data['width']),
                   tuple(data['kinds']), int(data['k']))


def table_key(shapes, setting, network):
    """What a table holds for: the setting (device, torch, dtype, memory format, mode, batch), the network (a
    description of what is not its CAKES ops) and the shape of each of its ops, in network order."""
    return {**setting.key(), 'network': network, 'ops': [shape_json(s) for s in shapes]}


@dataclass
class LatencyTable:
    """A measured table: per distinct op shape, its `entries` (`measure_shape`); the rest of the network (ms);
    the rest checked on another config; the seconds measuring took."""
    key: dict
    entries: list
    rest_ms: float = 0.0
    check: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def shapes(self):
        """The op shape of each op, in network order."""
        return [shape_from_json(s) for s in self.key['ops']]

    @property
    def train(self):
        return self.key['mode'] == 'train'

    def entry(self, shape):
        return next(e for e in self.entries if shape_from_json(e['shape']) == shape)

    def op_times(self):
        """An OpTimes per op, in network order (ops of one shape share it)."""
        if getattr(self, '_op_times', None) is None:
            priced = {}
            for shape in self.shapes:
                if shape not in priced:
                    priced[shape] = OpTimes(shape, self.entry(shape), self.train, self.key['device_type'],
                                            self.key['batch'])
            self._op_times = [priced[shape] for shape in self.shapes]
        return self._op_times

    def ops_ms(self, config):
        """Predicted ms of the network's CAKES ops with `config` (per op {kind: width}, network order)."""
        check_config(config, self.shapes)
        return sum(float(times([[widths.get(kind, 0) for kind in times.shape.kinds]])[0])
                   for times, widths in zip(self.op_times(), config))

    def predicted_ms(self, config):
        return self.rest_ms + self.ops_ms(config)

    def to_json(self):
        return {'format': FORMAT, 'version': VERSION, 'key': self.key, 'entries': self.entries,
                'rest_ms': self.rest_ms, 'check': self.check, 'seconds': self.seconds}


def predicted_time(config, table):
    """The network's predicted time (ms) with `config` (per op {kind: width}, network order): the rest of the
    network plus each op's time (cakes.ops.op_time) from the table."""
    return table.predicted_ms(config)


def branch_costs(table):
    """Per op {kind: ms of all C channels of that kind}: the time each kind costs the op at the table's shapes
    (--reweight latency weighs a branch's channels by its share of these)."""
    return [{kind: times.ms[kind][-1].item() for kind in times.shape.kinds} for times in table.op_times()]


def check_config(config, shapes):
    if len(config) != len(shapes):
        raise UsageError(f'config has {len(config)} ops but the latency table {len(shapes)}: give one '
                         '{kind: width} per op in network order')
    for i, (widths, shape) in enumerate(zip(config, shapes)):
        if set(widths) - set(shape.kinds) or sum(widths.values()) != shape.width:
            raise UsageError(f'config op {i}: widths {widths} must be of the kinds {", ".join(shape.kinds)} and '
                             f'sum to {shape.width}, as the latency table measured')


def load_table(path):
    """The table a file holds; a UsageError when the file is not one."""
    def refuse(why):
        return UsageError(f"'{path}' is not a latency table ({why}): measure one with scripts/latency_table.py")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"latency table '{path}' not found: measure one with scripts/latency_table.py") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise refuse(f'not JSON: {e}') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise refuse(f"no 'format': '{FORMAT}'")
    if data.get('version') != VERSION:
        raise refuse(f"version {data.get('version')!r}, this cakes reads version {VERSION}")
    try:
        table = LatencyTable(data['key'], data['entries'], float(data['rest_ms']), data['check'],
                             float(data['seconds']))
        for shape in dict.fromkeys(table.shapes):
            entry = table.entry(shape)
            for name, ms in entry['ms'].items():
                widths = entry['stacked_widths' if name == 'stacked' else 'widths']
                if widths[-1] != shape.width or len(ms) != len(widths):
                    raise ValueError(f'the widths of {name} in op shape {shape.text()}')
        table.op_times()
    except (KeyError, TypeError, ValueError, StopIteration) as e:
        raise refuse(f'malformed: {type(e).__name__} {e}') from None
    return table


def save_table(table, path):
    write_text_atomic(path, json.dumps(table.to_json(), indent=1) + '\n')


KEY_NAMES = {'device_type': 'device type', 'device': 'device', 'torch': 'torch version', 'dtype': 'dtype',
             'memory_format': 'memory format', 'mode': 'mode', 'batch': 'batch per device', 'network': 'network', 'ops': 'op shapes'}


def check_key(table, key, path):
    """A UsageError naming the first thing the table was measured for that differs from this run's."""
    for name, text in KEY_NAMES.items():
        theirs, ours = table.key.get(name), key[name]
        if theirs == ours:
            continue
        if name == 'ops':
            theirs, ours = ([shape_from_json(s).text() for s in ops] for ops in (theirs or [], ours))
            i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            theirs = f'{len(theirs)} ops' + (f', op {i} {theirs[i]}' if i < len(theirs) else '')
            ours = f'{len(ours)} ops' + (f', op {i} {ours[i]}' if i < len(ours) else '')
        raise UsageError(f"latency table '{path}' was measured for {text} {theirs}, this run needs {ours}: give a "
                         'table measured for this run, or leave the table out to measure one')


def cache_folder():
    """$CAKES_LATENCY_CACHE, else cakes/latency in the user's cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'cakes', 'latency')


def cache_path(key):
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_folder(), f'latency-{digest}.json')


def latency_table(shapes, setting, network, build, example_input, path=None, repeats=3, log=print):
    """The table of a network: read from `path` when it exists (it must have been measured for this run), else
    from the cache folder when it holds one for this key, else measured (`measure_table`) and written to `path`
    or the cache. `build(config)` returns the pruned network of a config, ready to run in the setting."""
    key = table_key(shapes, setting, network)
    if path is not None and os.path.exists(path):
        table = load_table(path)
        check_key(table, key, path)
        log(f'latency table: {path} (measured in {table.seconds:.0f} s)')
        return table
    target = path or cache_path(key)
    if path is None and os.path.exists(target):
        try:
            table = load_table(target)
            check_key(table, key, target)
            log(f'latency table: {target} (cached, measured in {table.seconds:.0f} s)')
            return table
        except UsageError as e:
            log(f'latency table cache {target} unusable, measuring again: {e}')
    table = measure_table(shapes, setting, network, build, example_input, repeats, log)
    save_table(table, target)
    log(f'latency table written to {target} (measured in {table.seconds:.0f} s)')
    return table


def measure_table(shapes, setting, network, build, example_input, repeats=3, log=print):
    """Measure every distinct op shape of `shapes` (`measure_shape`), then the rest of the network: its time at
    one config less its ops' predicted time, checked at another config (`rest_configs`)."""
    start = time.perf_counter()
    table = LatencyTable(table_key(shapes, setting, network), [])
    distinct = list(dict.fromkeys(shapes))
    for i, shape in enumerate(distinct, 1):
        begin = time.perf_counter()
        entry = measure_shape(shape, setting, repeats)
        table.entries.append({'shape': shape_json(shape), **entry})
        kinds = [name for name in entry['ms'] if name != 'stacked']
        stacked = f', stacked at {len(entry["stacked_widths"])}' if 'stacked' in entry['ms'] else ''
        log(f'op shape {i}/{len(distinct)} {shape.text()}: {", ".join(kinds)} at {len(entry["widths"])} widths'
            f'{stacked}, in {time.perf_counter() - begin:.1f} s')
    base, check = rest_configs(shapes)
    x = example_input.to(setting.device)
    seconds = timing.fastest_in_rounds({name: network_step(build(config), x, setting)
                          for name, config in (('base', base), ('check', check))}, setting.device, repeats)
    table.rest_ms = seconds['base'] * 1e3 - table.ops_ms(base)
    table.check = {'measured_ms': seconds['check'] * 1e3, 'predicted_ms': table.predicted_ms(check),
                   'base_ms': seconds['base'] * 1e3}
    table.seconds = time.perf_counter() - start
    log(f'rest of the network {table.rest_ms:.1f} ms; checked on another mix: predicted '
        f"{table.check['predicted_ms']:.1f} ms, measured {table.check['measured_ms']:.1f} ms")
    return table
