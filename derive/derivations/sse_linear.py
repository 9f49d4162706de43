"""Squared error through linear outputs: dE/dz_k = o_k - y_k, for a symbolic number of outputs H.

The regression case of the classic question: with o_i = z_i the Jacobian is the identity, so the
chain rule's sum over the outputs keeps a single term and the single-product shortcut happens to
be exact. The planner derives the steps from derive/catalog/sse-linear.toml: sum rule, chain rule
through o_i, the power rule, the identity Jacobian with its two cases, the sum that collapses to
its term i = k, and the 1/2 that cancels the 2.
Targets are any real numbers; no assumption on them is needed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import sympy as sp

from derive import concrete
from derive.concrete import numbers
from derive.derivations.steps import planned
from derive.derivations.softmax_ce import cases_matrix
from derive.model import Definition, Derivation, Step
from derive.setting import Setting
from derive.symbols import E, H, i, k, o, y, z

LINEAR = Definition("linear", o[i], z[i])
LOSS = Definition("squared_error", E, sp.Rational(1, 2) * sp.Sum((o[i] - y[i]) ** 2, (i, 1, H)))
SETTING = Setting(wrt=z[k], definitions=(LOSS, LINEAR), constraints={})
SUBJECT = sp.Derivative(E, z[k])


def steps() -> tuple[Step, ...]:
    """The steps, planned from the catalog's spec file (derive/catalog/sse-linear.toml)."""
    return planned("sse-linear")


def inputs(classes: object, logits: Sequence | None, target: Sequence | None) -> concrete.Inputs | None:
    """The standard checks, except that a target is any real number per output (regression):
    negative, all zero, any sum."""
    if classes is None or target is None:
        return concrete.inputs(classes, logits, target)
    given = concrete.inputs(classes, logits, None)
    return replace(given, target=numbers(target, "--target", given.classes), given=given.given + ("target",))


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    given = inputs(classes, logits, target)  # bad input fails before any symbolic work
    all_steps = steps()
    result = all_steps[-1].rhs
    return Derivation(
        name="sse-linear",
        subject=SUBJECT,
        definitions=(LINEAR, LOSS),
        assumptions=(),
        steps=all_steps,
        setting=SETTING,
        concrete=concrete.loss_instance(given, SETTING, LOSS, result, cases_matrix(next(s for s in all_steps if s.rule == "elementwise_jacobian"), given.classes)) if given else None,
    )
