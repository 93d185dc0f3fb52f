"""Execution plans of the CAKES ops: other ways of computing an op's concatenated branch outputs, chosen per op by
timing them once (as cudnn.benchmark does for algorithms), with the same parameters and the same state_dict.

- forms: the plans (Branches, Merge, Stacked), how each assembles its weights and runs, the BN folded in eval,
  and the Key a plan is chosen for;
- choice: the candidates, their timing on the op's own input, the rule, the Policy (CAKES_PLAN by default;
  main.py sets it per run) and `off()`;
- sharing: plan tables in checkpoints (`plan_table`, `load_plans`) and rank 0's choice under torch.distributed.

The time itself is taken by cakes.ops.timing. One forward: `forward` -> `plan_for` (the op's plan for this
key, chosen once) -> the plan's `forward` (or `outputs` for a dropout supernet).
"""
from .choice import (BRANCH_FORM, CAP, COST_LIMIT, ENV, MIN_WORK, TIMED, Policy, candidates, off, plan_for,
                     run_policy, use_policy)
from .forms import BRANCHES, STACKED, Branches, Key, Merge, Plan, Stacked, parse, run_conv
from .sharing import PlanError, load_plans, plan_table, planned_ops


def forward(op, x):
    """A CakesOp's forward: its plan for `x`, then `op.out` (in eval without gradients, the BN folded into the
    plan's weights)."""
    return plan_for(op, x).forward(op, x)


def dropout_outputs(op, x, channels):
    """A dropout supernet's convolutions of its filters `channels` (per branch), concatenated, by its plan."""
    return plan_for(op, x, channels).outputs(op, x, channels)


__all__ = ['BRANCH_FORM', 'BRANCHES', 'CAP', 'COST_LIMIT', 'ENV', 'MIN_WORK', 'STACKED', 'TIMED', 'Branches', 'Key',
           'Merge', 'Plan', 'PlanError', 'Policy', 'Stacked', 'candidates', 'dropout_outputs', 'forward',
           'load_plans', 'off', 'parse', 'plan_for', 'plan_table', 'planned_ops', 'run_conv', 'run_policy',
           'use_policy']
