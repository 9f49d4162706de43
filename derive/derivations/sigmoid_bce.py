"""Binary cross-entropy through sigmoid outputs: dE/dz_k = o_k - y_k, for a symbolic number of
outputs H.

Each output is a sigmoid of its own logit and has its own binary target (multi-label: the targets
need not sum to one). The planner derives the steps from derive/catalog/sigmoid-bce.toml: sum
rule, constant factors, chain rule through o_i, the derivatives of ln o_i and ln(1 - o_i), the
diagonal Jacobian of the sigmoid, the sum that collapses to its term i = k, and the algebra in
which o_k (1 - o_k) cancels the denominators.
No assumption on the target is needed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import sympy as sp

from derive import concrete, rules
from derive.concrete import numbers
from derive.derivations.steps import planned
from derive.errors import UsageError
from derive.derivations.softmax_ce import cases_matrix
from derive.model import Definition, Derivation, Step
from derive.setting import Setting
from derive.symbols import E, H, i, k, o, y, z

SIGMOID = Definition("sigmoid", o[i], 1 / (1 + sp.exp(-z[i])))
LOSS = Definition(
    "binary_cross_entropy",
    E,
    -sp.Sum(
        rules.add(
            rules.mul(y[i], sp.log(o[i])),
            rules.mul(rules.add(sp.Integer(1), rules.neg(y[i])), sp.log(rules.add(sp.Integer(1), rules.neg(o[i])))),
        ),
        (i, 1, H),
    ),
)
SETTING = Setting(wrt=z[k], definitions=(LOSS, SIGMOID), constraints={})
SUBJECT = sp.Derivative(E, z[k])


def steps() -> tuple[Step, ...]:
    """The steps, planned from the catalog's spec file (derive/catalog/sigmoid-bce.toml), the
    error's terms in the order it is written here."""
    return planned("sigmoid-bce", written=(LOSS,))


MAX_LOGIT = 1000
"""The worked example computes 1 - sigma(z) to full precision with |z| / ln 10 extra digits."""


def inputs(classes: object, logits: Sequence | None, target: Sequence | None) -> concrete.Inputs | None:
    """The standard checks, except that each target entry is a probability of its own: any value
    in [0, 1], and they need not sum to one (an all-zero target is a valid multi-label target)."""
    if classes is None:
        return concrete.inputs(classes, logits, target)
    given = concrete.inputs(classes, logits, None)
    if any(abs(v) > MAX_LOGIT for v in given.logits):
        raise UsageError(f"--logits entries must lie between -{MAX_LOGIT} and {MAX_LOGIT}: beyond, a sigmoid output is 0 or 1 to more than 400 digits")
    if target is None:
        return given
    t_ = numbers(target, "--target", given.classes)
    if any(t < 0 or t > 1 for t in t_):
        raise UsageError("--target entries must lie between 0 and 1: each is the probability of its own label")
    return replace(given, target=t_, given=given.given + ("target",))


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    given = inputs(classes, logits, target)  # bad input fails before any symbolic work
    all_steps = steps()
    result = all_steps[-1].rhs
    return Derivation(
        name="sigmoid-bce",
        subject=SUBJECT,
        definitions=(SIGMOID, LOSS),
        assumptions=(),
        steps=all_steps,
        setting=SETTING,
        concrete=concrete.loss_instance(given, SETTING, LOSS, result, cases_matrix(next(s for s in all_steps if s.rule == "elementwise_jacobian"), given.classes)) if given else None,
    )
