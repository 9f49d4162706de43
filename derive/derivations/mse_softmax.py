"""Squared error through a softmax layer, for a symbolic number of classes H: the gradient is
dE/dz_k = o_k ((o_k - y_k) - sum_i o_i (o_i - y_i)), not o_k - y_k.

The planner derives the steps from derive/catalog/mse-softmax.toml: the same path as softmax-ce
(sum rule, chain rule, the softmax Jacobian with its two cases, splitting the sum at i = k) with
the power rule in place of the derivative of the log. The 2 of the power rule cancels the 1/2 of
the error before the Jacobian comes in, but nothing cancels the softmax Jacobian: squared
error is not the canonical partner of softmax, and the factor o_k stays in the gradient. No
assumption on the target is needed.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from derive import concrete
from derive.derivations.steps import planned
from derive.derivations.softmax_ce import SOFTMAX, jacobian_of
from derive.derivations.softmax_ce import SETTING as CROSS_ENTROPY
from derive.model import Claim, Comparison, Counterexample, Definition, Derivation, Example, Step
from derive.setting import Setting
from derive.symbols import E, H, i, k, o, y, z

LOSS = Definition("squared_error", E, sp.Rational(1, 2) * sp.Sum((o[i] - y[i]) ** 2, (i, 1, H)))
SETTING = Setting(wrt=z[k], definitions=(LOSS, SOFTMAX))
SUBJECT = sp.Derivative(E, z[k])


def steps() -> tuple[Step, ...]:
    """The steps, planned from the catalog's spec file (derive/catalog/mse-softmax.toml)."""
    return planned("mse-softmax")


SHORTCUT = o[k] - y[k]
"""What the gradient is for cross-entropy, and what it is tempting to expect here too."""
CONFIDENT = 98
"""The weight of class 2 in the second comparison: o = (0.01, 0.98, 0.01), confidently wrong."""


def counterexample(result: sp.Expr) -> Counterexample:
    """The shortcut o_k - y_k shown wrong: for a symbolic H (even for a target that sums to one),
    while it is right for cross-entropy; and at the classic example's numbers and at a confident
    wrong prediction, where the factor o_k makes the true gradient small."""
    cross_entropy = sp.Derivative(-sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)), z[k])
    squared = sp.Derivative(LOSS.value, z[k])
    claims = (
        Claim("shortcut", sp.Eq(squared, SHORTCUT, evaluate=False), False, SETTING, ("normalised",)),
        Claim("cross_entropy", sp.Eq(cross_entropy, SHORTCUT, evaluate=False), True, CROSS_ENTROPY, ("normalised",)),
    )
    comparisons = (
        _comparison("classic", (0, sp.log(3), 0), (1, 0, 0), result),
        _comparison("confident", (0, sp.log(CONFIDENT), 0), (1, 0, 0), result),
    )
    return Counterexample(claims=claims, shortcut=SHORTCUT, comparisons=comparisons)


def _comparison(key: str, logits: tuple, target: tuple, result: sp.Expr) -> Comparison:
    """Exact numbers: the outputs from the logits, the derived gradient and the shortcut at them."""
    n = len(logits)
    logits = tuple(map(sp.sympify, logits))
    target = tuple(map(sp.Integer, target))
    weights = [sp.exp(v) for v in logits]
    outputs = tuple(w / sum(weights) for w in weights)
    at = {o[m + 1]: outputs[m] for m in range(n)} | {y[m + 1]: target[m] for m in range(n)}

    def value(formula: sp.Expr, m: int) -> sp.Expr:
        return formula.xreplace({k: sp.Integer(m), H: sp.Integer(n)}).doit().xreplace(at)

    loss = sp.Rational(1, 2) * sum((p - t) ** 2 for p, t in zip(outputs, target))
    example = Example(logits, target, outputs, loss, tuple(value(result, m) for m in range(1, n + 1)))
    return Comparison(key, example, tuple(value(SHORTCUT, m) for m in range(1, n + 1)))


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    # Bad input fails before any symbolic work.
    given = concrete.inputs(classes, logits, target)
    all_steps = steps()
    result = all_steps[-1].rhs
    return Derivation(
        name="mse-softmax",
        subject=SUBJECT,
        definitions=(SOFTMAX, LOSS),
        assumptions=(),
        steps=all_steps,
        setting=SETTING,
        concrete=concrete.loss_instance(given, SETTING, LOSS, result, jacobian_of(all_steps, given.classes)) if given else None,
        counterexample=counterexample(result),
    )
