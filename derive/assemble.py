"""A derivation from a spec: parse, plan, and assemble the :class:`~derive.model.Derivation`
that verification checks and the templates render, like every catalog entry."""

from __future__ import annotations

import sympy as sp

from derive import spec as specs
from derive.model import Derivation
from derive.errors import UsageError
from derive.planner import plan


def build(spec: specs.Spec) -> Derivation:
    """Plan the steps of ``spec`` and assemble its derivation (unchecked: ``check()`` verifies);
    each further variable of the spec is a part of it, planned the same way."""
    from dataclasses import replace

    first, *others = specs.variables(spec)
    main = _derivation(first)
    parts = tuple(replace(_derivation(s), name=f"by {s.wrt.strip()}") for s in others) + _special(spec)
    return replace(main, parts=parts) if parts else main


def _special(spec: specs.Spec) -> tuple[Derivation, ...]:
    """Each special case of the spec (gamma = 0) as a part: the definitions with the name set to
    its value, planned and verified again from the start, so the document shows what the result
    becomes there by steps of its own rather than by substituting into it."""
    from dataclasses import replace

    from derive.lang import parse_expression, parse_variable
    from derive.model import Definition

    out = []
    problem = specs.problem(replace(spec, also=(), special=(), classes=None, lets=(), sizes=())) if spec.special else None
    for name, text in spec.special:
        symbol, value = parse_variable(name), parse_expression(text)
        if not any(d.value.has(symbol) for d in problem.definitions):
            raise UsageError(f"special case {name} = {text}: no definition uses {name}")
        changed = tuple(Definition("special", d.symbol, d.value.xreplace({symbol: value})) if d.value.has(symbol) else d for d in problem.definitions)
        special = replace(problem, definitions=changed)
        planned = plan(special)
        out.append(
            Derivation(
                name=f"at {name} = {text}",
                subject=sp.Derivative(special.quantity, special.wrt),
                definitions=tuple(d for d in changed if d.key == "special"),
                assumptions=tuple(a for a in special.assumptions if any(a.key in s.assumptions for s in planned.steps)),
                steps=planned.steps,
                setting=specs.setting(special),
            )
        )
    return tuple(out)


def _derivation(spec: specs.Spec) -> Derivation:
    problem = specs.problem(spec)
    planned = plan(problem)
    subject = sp.Derivative(problem.quantity, problem.wrt)
    last = planned.steps[-1].rhs
    general = None
    if any(s.assumptions for s in planned.steps) and planned.general != last:
        general = sp.Eq(subject, planned.general, evaluate=False)
    worked = None
    if spec.classes is not None or ((spec.lets or spec.sizes) and not specs.uses_classes(problem)):
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
        words=(("title", spec.title),) * bool(spec.title)
        + tuple((f"describe {name}", text) for name, text in _described(spec))
        + tuple((f"public {leaf}", name) for name, leaf in spec.names),
    )


def _described(spec: specs.Spec) -> tuple[tuple[str, str], ...]:
    """The spec's words per name, and for a layer given its upstream gradient, what L and g are."""
    own = dict(spec.describe)
    if spec.upstream is not None:
        out, grad = spec.upstream
        own.setdefault("L", rf"the loss downstream of the layer, through its output \({out}\): its derivative by \({out}\) is \({grad}\)")
        own.setdefault(grad, rf"the upstream gradient, the derivative of \(L\) by \({out}\), given")
    return tuple(own.items())
