"""A derivation from a spec: parse, plan, and assemble the :class:`~derive.model.Derivation`
that verification checks and the templates render, like every catalog entry."""

from __future__ import annotations

import sympy as sp

from derive import spec as specs
from derive.model import Derivation
from derive.planner import plan


def build(spec: specs.Spec) -> Derivation:
    """Plan the steps of ``spec`` and assemble its derivation (unchecked: ``check()`` verifies)."""
    problem = specs.problem(spec)
    planned = plan(problem)
    subject = sp.Derivative(problem.quantity, problem.wrt)
    last = planned.steps[-1].rhs
    general = None
    if any(s.assumptions for s in planned.steps) and planned.general != last:
        general = sp.Eq(subject, planned.general, evaluate=False)
    worked = None
    if spec.classes is not None:
        from derive import worked as examples

        worked = examples.build(problem, spec, subject, last, planned.general if general is not None else None)
    elif spec.lets or spec.sizes:
        from derive.errors import UsageError

        raise UsageError("--let and --size set a worked example's numbers: give --classes N as well")
    return Derivation(
        name=spec.name,
        subject=subject,
        definitions=problem.definitions,
        assumptions=tuple(a for a in problem.assumptions if any(a.key in s.assumptions for s in planned.steps)),
        steps=planned.steps,
        setting=specs.setting(problem),
        general=general,
        worked=worked,
        words=(("title", spec.title),) * bool(spec.title) + tuple((f"describe {name}", text) for name, text in spec.describe),
    )
