"""How cakes times an op: the step of a CAKES op as the network runs it, and the seconds of a callable on a
device. The plans' choice (cakes.ops.plans), the per-op report (cakes.ops.plan_report) and
scripts/benchmark_model.py time with these, so that every figure is taken the same way.
"""
import time

import torch


def op_step(op, x, plan, train, channels=None, convs_only=False):
    """A callable running one step of `op` (a CakesOp or a dropout supernet) on `x` by `plan` (a plan of
    cakes.ops.plans), as the network runs it:

    - `train`: the branch convolutions, then the gradients of the input and of every branch weight by
      torch.autograd.grad: the backward's two convolutions per branch, and nothing written to `.grad`. The BN,
      which would move its running statistics, is left out: it costs every plan alike.
    - otherwise, without gradients: the whole op (its BN folded into the plan's weights, then its ReLU) when no
      module of it moves statistics (BN in eval), else its convolutions.

    `channels`: a dropout supernet's filters per branch (one draw; the convolutions only); `convs_only`: the
    convolutions alone in eval too. The weights are read from the branch modules' `.weight` attributes, so a
    nn.DataParallel replica is timed on them too: its `parameters()` are empty (torch's replicate turns them
    into plain tensor attributes)."""
    x = x.detach().requires_grad_(train)
    if train:
        weights = [t for branch in op.convs for t in (branch[0].weight, branch[0].bias)
                   if t is not None and t.requires_grad]
        return train_step(lambda: plan.outputs(op, x, channels), [x] + weights)
    whole = channels is None and not convs_only and not any(
        m.training and getattr(m, 'running_mean', None) is not None for m in op.modules())

    def step():
        with torch.no_grad():
            return plan.forward(op, x) if whole else plan.outputs(op, x, channels)
    return step


def train_step(forward, inputs, grads=None):
    """A callable: `forward()`, then the gradients of its output with respect to `inputs` (torch.autograd.grad,
    so no `.grad` is touched). `grads`: a dict, shared by steps whose outputs have the same layout, keeping the
    output's gradient made at the first run: in a network it arrives ready from the layer after, so a latency
    table leaves making it out of the op's time."""
    def step():
        with torch.enable_grad():
            y = forward()
            if grads is None:
                grad = torch.ones_like(y)
            else:
                layout = (tuple(y.shape), y.stride(), y.dtype, y.device)
                if layout not in grads:
                    grads[layout] = torch.ones_like(y)
                grad = grads[layout]
            torch.autograd.grad(y, inputs, grad, allow_unused=True)
    return step


def seconds(fn, device):
    """Seconds of one run of `fn` on `device`. On CUDA: CUDA events recorded around it once the work queued
    before has finished (the device's time, which includes any wait for the host); elsewhere perf_counter."""
    if device.type == 'cuda':
        with torch.cuda.device(device):
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_seconds(fn, device, repeats=3, warmup=1):
    """The fastest of `repeats` timed runs of `fn`, after `warmup` untimed ones (the libraries set up a new
    shape's kernels, and cuDNN's benchmark mode searches its algorithms, in a first run)."""
    for _ in range(warmup):
        fn()
    return min(seconds(fn, device) for _ in range(repeats))


def fastest_in_rounds(steps, device, rounds):
    """{key: fastest seconds} of the callables `steps`: one untimed run of each (the libraries set up a new
    shape's kernels then), then `rounds` timed rounds over all of them, every other round in reverse order, so
    that a change of the machine's speed during the measurement touches every step alike (latency tables)."""
    for step in steps.values():
        step()
    best = dict.fromkeys(steps, float('inf'))
    order = list(steps)
    for r in range(rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            best[key] = min(best[key], seconds(steps[key], device))
    return best
