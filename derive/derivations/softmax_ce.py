"""Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k, for a symbolic number of classes H.

The steps follow the order of reasoning of the classic derivation: sum rule, constant factor,
chain rule, derivative of the log, the softmax Jacobian with its two cases, splitting the sum at
i = k, the algebra, and only at the end the assumption that the target sums to one.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from derive import rules
from derive.model import Assumption, Definition, Derivation, Step
from derive.setting import Setting
from derive.symbols import E, H, ExcludedSum, i, j, k, o, y, z

SOFTMAX = Definition("softmax", o[i], sp.exp(z[i]) / sp.Sum(sp.exp(z[j]), (j, 1, H)))
LOSS = Definition("cross_entropy", E, -sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)))
NORMALISED = Assumption("normalised", sp.Eq(sp.Sum(y[i], (i, 1, H)), 1))

SETTING = Setting(wrt=z[k], definitions=(LOSS, SOFTMAX))


def steps() -> tuple[Step, ...]:
    """Compose the rules, each applied to the previous step's result."""
    out: list[Step] = []

    def then(step: Step) -> sp.Expr:
        out.append(step)
        return step.rhs

    e = then(rules.definition(sp.Derivative(E, z[k]), LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.constant_factor(e, SETTING))
    e = then(rules.chain_rule(e, SETTING))
    e = then(rules.log_derivative(e))
    jacobian = rules.softmax_jacobian(e, SETTING)
    e = then(jacobian)
    e = then(rules.split_sum(e, jacobian.identity.rhs, jacobian.cases))
    e = then(rules.algebra(e))
    e = then(rules.factor_out(e, SETTING))
    e = then(rules.complement_sum(e))
    e = then(rules.expand(e))
    e = then(rules.cancel(e))
    e = then(rules.normalisation(e, NORMALISED.statement))
    return tuple(out)


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    all_steps = steps()
    general = next(s for s in all_steps if s.rule == "cancel")
    return Derivation(
        name="softmax-ce",
        subject=sp.Derivative(E, z[k]),
        definitions=(SOFTMAX, LOSS),
        assumptions=(NORMALISED,),
        steps=all_steps,
        setting=SETTING,
        general=sp.Eq(sp.Derivative(E, z[k]), general.rhs, evaluate=False),
    )
