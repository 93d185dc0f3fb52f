"""Which plan an op runs: the candidates and their cost, their timing on the op's own input, the rule that keeps
the branch form unless another plan is clearly faster, and the policy that says whether to time at all.

An op chooses at its first forward with a new key (forms.Key) and keeps the choice in `op.plans`, a plain dict:
not in the state_dict, copied by deepcopy and shared with nn.DataParallel's replicas (shallow copies of the op).
Under torch.distributed rank 0 times and every rank takes its choice (sharing.on_rank_0).
"""
import contextlib
import functools
import math
import os
import threading
from dataclasses import dataclass

import torch

from cakes.errors import UsageError

from .. import timing
from . import sharing
from .forms import BRANCHES, STACKED, Key, Merge, parse

ENV = 'CAKES_PLAN'
# Clips of the op's own input (a DataParallel replica's or a torchrun process's share of -b) that are timed.
# CPU: one. A CPU convolution of one clip already keeps every core busy (time per clip hardly changes with the
# batch), so one clip ranks the plans as the whole batch would, at the cost of one clip per plan and run.
# CUDA: 16. A GPU is far from busy on one clip; 16 covers a replica's share at the usual -b (24 over 8 GPUs
# gives 3) and 1-GPU runs up to -b 16 exactly, while a timed step stays well under 10 ms in every layer.
CAP = {'cpu': 1, 'cuda': 16}
# Plans doing more than this times the branch form's multiply-adds are not timed. A GPU made busy by MIN_WORK
# spends its time in multiply-adds, so a plan doing 25% more of them cannot win there; a CPU often can
# (fewer, larger convolutions; no concatenation).
COST_LIMIT = {'cpu': 1.75, 'cuda': 1.25}
# Multiply-adds of one timed step of the branch form (at the timed batch; three convolutions' worth with
# gradients: the forward and the two gradients) below which the op keeps the branch form untimed. On a GPU
# such a step is over in about the time the host spends around it: tens of kernel launches (weight padding and
# concatenation, the convolutions, autograd.grad's backward nodes) at 5-10 us each, a few tenths of a
# millisecond, while 5e10 multiply-adds take 0.25-0.5 ms at the 100-200 T/s a recent GPU sustains in these
# convolutions. Below it the timing ranks the host's overhead, not the GPU's work, and the choice is noise.
# On the CPU the host's work is part of what the run pays, so there is no minimum.
MIN_WORK = {'cpu': 0, 'cuda': 5e10}
TIMED_ROUNDS = 2  # timed runs of the branches and the finalists, after an untimed one of every plan
FINALIST = 1.3  # plans timed again: within this factor of the fastest first timed run
MARGIN = 0.03  # another plan replaces the branch form when it is faster by at least this fraction
DROPOUT_SPLITS = 2  # sampled channel splits a dropout supernet's plan is timed on

_LOCK = threading.RLock()  # one choice at a time: DataParallel's replica threads wait for the first
_OFF = threading.Lock()
_off_depth = 0


# ---------------------------------------------------------------- the policy

@dataclass(frozen=True)
class Policy:
    """How an op chooses the plan of a key it has none for. `forced` None: time the candidates (the default);
    BRANCHES: the branch form everywhere, nothing chosen or recorded; another plan: that plan wherever it applies,
    the branch form elsewhere. Its text is CAKES_PLAN's: '' (timed), 'branches', 'stacked', 'merge(0+1+2)'..."""
    forced: object = None

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def parse(text):
        if not text:
            return TIMED
        try:
            return Policy(parse(text))
        except ValueError:
            raise UsageError(f"unknown {ENV}='{text}': give 'branches', 'stacked' or a merge plan such as "
                             "'merge(0+1+2)'") from None

    @staticmethod
    def from_env():
        return Policy.parse(os.environ.get(ENV, ''))


TIMED = Policy()
BRANCH_FORM = Policy(BRANCHES)


def run_policy(seeded):
    """The policy of a main.py run: CAKES_PLAN as rank 0 reads it, for every rank (read once; a value set on
    some nodes only cannot split the ranks). Under --seed (`seeded`) nothing is timed: plans chosen on the
    machine's clock would make two runs of one seed differ, so the ops run the branch form (the released
    computation, as cuDNN's deterministic mode is set then) unless CAKES_PLAN forces a plan."""
    policy = Policy.parse(sharing.rank_0s(os.environ.get(ENV, '')))
    return BRANCH_FORM if seeded and policy.forced is None else policy


def use_policy(model, policy):
    """Every planning op of `model` follows `policy` (None: CAKES_PLAN, read at each forward)."""
    for _, op in sharing.planned_ops(model):
        op.policy = policy
    return model


@contextlib.contextmanager
def off():
    """Inside, in every thread, every op runs the branch form by its own modules and chooses nothing: counting
    FLOPs per branch module (cakes.complexity, cakes.ops.search.channel_costs) needs them to run."""
    global _off_depth
    with _OFF:
        _off_depth += 1
    try:
        yield
    finally:
        with _OFF:
            _off_depth -= 1


# ---------------------------------------------------------------- the choice

def plan_for(op, x, channels=None):
    """The plan `op` runs on `x`: the branch form inside `off()`, in a trace or an export, on meta tensors, or
    when its policy says so; else its plan for the input's key, chosen at the first forward with that key.
    `channels`: a dropout supernet's filters per branch in this forward."""
    if _off_depth or torch.jit.is_tracing() or torch.compiler.is_compiling() or x.device.type == 'meta':
        return BRANCHES
    policy = Policy.from_env() if op.policy is None else op.policy
    if policy.forced == BRANCHES:
        return BRANCHES
    key = Key.of(op, x)
    plan = op.plans.get(key)
    if plan is None:
        with _LOCK:
            plan = op.plans.get(key) or choose(op, x, key, policy, channels)
            op.plans[key] = plan
    return plan


def choose(op, x, key, policy, channels=None):
    """The plan of a new key: the forced one where it applies; the branch form where timing cannot tell
    (`worth_timing`); else the fastest by `fastest`. Under torch.distributed a training step's key is timed
    by rank 0 for every rank (they all reach it at the same step: DDP steps in lock-step); any other key
    (evaluation: each rank evaluates its own shard, possibly none, so no rank may wait for another there) takes
    the plan of the same input's training key, else the branch form."""
    options = candidates(op)
    if policy.forced is not None:
        return policy.forced if policy.forced in options else BRANCHES
    x = x[:CAP.get(x.device.type, 1)]
    draws = splits(op, x, channels)
    options = worth_timing(op, x, options, draws)
    if len(options) < 2:
        return BRANCHES
    if not sharing.distributed():
        return fastest(measure(op, x, options, draws))
    if not key.trains:
        return op.plans.get(key.in_training(), BRANCHES)
    return sharing.on_rank_0(lambda: fastest(measure(op, x, options, draws)), f'timing the execution plans for {key}')


def candidates(op):
    """Every plan that applies to `op`, the branch form first: each partition of its branches into merged
    groups (5 for three branches; only the full merge for more), 'merge()' for one branch, and the stacked
    plan when the op does not stride in time."""
    n = len(op.convs)
    options = [BRANCHES]
    if n > 1:
        partitions = set_partitions(list(range(n))) if n <= 3 else [[list(range(n))]]
        merges = {Merge(tuple(tuple(g) for g in p if len(g) > 1)) for p in partitions}
        options += sorted((m for m in merges if m.groups), key=lambda m: (len(str(m)), str(m)))
    elif n == 1:
        options.append(Merge())
    if STACKED.applies(op):
        options.append(STACKED)
    return options


def set_partitions(items):
    """Every partition of `items` into groups."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    found = []
    for partition in set_partitions(rest):
        found.append([[first]] + partition)
        for i in range(len(partition)):
            found.append(partition[:i] + [[first] + partition[i]] + partition[i + 1:])
    return found


def splits(op, x, channels):
    """The channel draws a plan is timed on: [None] for a CakesOp; for a dropout supernet, whose widths change
    every step, DROPOUT_SPLITS draws from a generator of its own in training (the same on every rank and run,
    the step's own draws left alone), the kept channels in eval."""
    if channels is None:
        return [None]
    if not op.training:
        return [channels]
    generator = torch.Generator().manual_seed(0)
    draw = type(op).sample_channels  # the class's own: not an instance's wrapper of the step's draw
    return [[i.to(x.device) for i in op.branch_channels(draw(op, generator))] for _ in range(DROPOUT_SPLITS)]


def work(op, x, train, channels=None):
    """Multiply-adds of one step of the branch form on `x`, three convolutions' worth with gradients."""
    total = 0
    for i, branch in enumerate(op.convs):
        conv = branch[0]
        width = conv.out_channels if channels is None else len(channels[i])
        out = math.prod((size + 2 * p - k) // s + 1
                        for size, k, s, p in zip(x.shape[2:], conv.kernel_size, conv.stride, conv.padding))
        total += x.shape[0] * width * out * conv.in_channels * math.prod(conv.kernel_size)
    return total * (3 if train else 1)


def worth_timing(op, x, options, draws):
    """The candidates worth timing on `x` (already capped to CAP clips); none where timing cannot tell them
    apart. The criterion depends on shapes only, so every rank and every run decides alike:
    - none on a device other than the CPU and CUDA (no timing is set up for it);
    - none when the branch form's step does fewer multiply-adds than MIN_WORK for the device (`work`, at the
      timed batch, for the first draw of a dropout supernet): on a GPU it would be timed below the host's own
      overhead;
    - of the others, those within COST_LIMIT times the branch form's multiply-adds for the device, and no
      partial merge costing as much as merging everything (which runs fewer, larger convolutions)."""
    device = x.device.type
    if device not in CAP or work(op, x, torch.is_grad_enabled(), draws[0]) < MIN_WORK[device]:
        return []
    sizes = [tuple(branch[0].kernel_size) for branch in op.convs]
    widths = [branch[0].out_channels for branch in op.convs]
    everything = Merge((tuple(range(len(op.convs))),))
    full = everything.cost(sizes, widths) if everything in options else math.inf
    return [n for n in options if n.cost(sizes, widths) <= COST_LIMIT[device]
            and not (isinstance(n, Merge) and n != everything and n.cost(sizes, widths) >= 0.95 * full)]


def measure(op, x, options, draws):
    """{plan: [seconds of each draw]}: the step of each plan (timing.op_step) on `x`.

    One untimed run of every plan (the libraries set up a new shape's kernels then, so a first run says
    little), one timed run of each, then TIMED_ROUNDS - 1 more, in alternating order so that no plan always runs
    after the same one, of the branch form and the plans within FINALIST of the fastest; each keeps its fastest
    run per draw.
    """
    train = torch.is_grad_enabled()
    steps = {plan: [timing.op_step(op, x, plan, train, draw) for draw in draws] for plan in options}

    def run(plan):
        return [timing.seconds(step, x.device) for step in steps[plan]]
    for plan in options:
        run(plan)
    times = {plan: run(plan) for plan in options}
    for r in range(1, TIMED_ROUNDS):
        best = min(map(sum, times.values()))
        finalists = [n for n in options if n == BRANCHES or sum(times[n]) <= FINALIST * best]
        for plan in (finalists[::-1] if r % 2 else finalists):
            times[plan] = [min(a, b) for a, b in zip(times[plan], run(plan))]
    return times


def fastest(times):
    """The plan of least total time in `times` (from measure), but the branch form unless that plan beats it by
    MARGIN on every draw timed (each channel draw of a dropout supernet): within timing noise, or faster for
    one draw and not another, a plan is not worth the risk of being slower."""
    plan = min(times, key=lambda n: sum(times[n]))
    if BRANCHES in times and any(t > (1 - MARGIN) * b for t, b in zip(times[plan], times[BRANCHES])):
        return BRANCHES
    return plan
