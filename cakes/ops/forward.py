"""One eval forward of a network to look at it: its shapes, what reads what, what it counts."""
import contextlib

import torch


def eval_forward(model, example_input, *contexts, pre_hooks=(), hooks=()):
    """Run `model` once in eval mode without gradients on `example_input`, inside `contexts` (e.g. a
    FlopCounterMode), with forward pre-hooks and hooks given as (module, fn) pairs; the hooks are removed and the
    model's training mode restored afterwards, even when the forward raises. Returns the output."""
    was_training = model.training
    with contextlib.ExitStack() as stack:
        for module, fn in pre_hooks:
            stack.callback(module.register_forward_pre_hook(fn).remove)
        for module, fn in hooks:
            stack.callback(module.register_forward_hook(fn).remove)
        stack.callback(model.train, was_training)
        stack.enter_context(torch.no_grad())
        for context in contexts:
            stack.enter_context(context)
        return model.eval()(example_input)
