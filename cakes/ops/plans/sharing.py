"""How plans outlive an op and agree across processes: plan tables in checkpoints, and under torch.distributed
rank 0's value (a choice, a policy) given to every rank, an error there raised on every rank alike.

A plan table is plain data, {module name: {key: plan name}} (`str` of forms.Key and of a plan), so that
torch.load(weights_only=True) reads it and checkpoints written by earlier versions load unchanged.
"""
import torch

from cakes.errors import UsageError

from .forms import Key, parse


class PlanError(RuntimeError):
    """Choosing a plan failed on rank 0; raised on every rank with the same message."""


def planned_ops(model):
    """(name, op) of every module of `model` that chooses plans (CakesOp, DropoutSupernetOp)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(getattr(m, 'plans', None), dict)]


def plan_table(model):
    """{module name: {key: plan name}} of the ops' plans (a wrapper's `module` looked through)."""
    model = getattr(model, 'module', model)
    return {name: {str(k): str(v) for k, v in m.plans.items()} for name, m in planned_ops(model) if m.plans}


def load_plans(model, table):
    """Give the ops of `model` the plans of `table` (from plan_table), replacing theirs; names of modules that
    `model` lacks are ignored. A key or plan that does not read, or a plan that does not fit its op, is a
    UsageError naming the op."""
    model = getattr(model, 'module', model)
    for name, m in planned_ops(model):
        loaded = {}
        for key, plan in (table or {}).get(name, {}).items():
            try:
                key, plan = Key.parse(str(key)), parse(str(plan))
            except ValueError as e:
                raise UsageError(f"the saved execution plans of '{name}' do not read: {e}") from None
            if not plan.applies(m):
                raise UsageError(f"the saved execution plan '{plan}' of '{name}' does not fit its "
                                 f'{len(m.convs)} branches')
            loaded[key] = plan
        m.plans.clear()
        m.plans.update(loaded)
    return model


def distributed():
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def rank_0s(value):
    """Rank 0's `value` (plain data) on every rank; `value` itself outside torch.distributed."""
    if not distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def on_rank_0(decide, what):
    """`decide()` run on rank 0 only, its result on every rank. When it raises there (out of memory, a cuDNN
    error), every rank raises PlanError with the same message, instead of the others waiting for a result
    until the collective's timeout. Every rank must call this at the same point (a training step's key)."""
    outcome, cause = None, None
    if torch.distributed.get_rank() == 0:
        try:
            outcome = ('plan', decide())
        except Exception as error:  # noqa: BLE001 - whatever it is, every rank must hear of it
            outcome, cause = ('error', f'{type(error).__name__}: {error}'), error
    kind, value = rank_0s(outcome)
    if kind == 'error':
        raise PlanError(f'{what} failed on rank 0: {value} (CAKES_PLAN=branches runs the branch form without '
                        'timing)') from cause
    return value
