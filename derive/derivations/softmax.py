"""The softmax Jacobian: d o_i / d z_k = o_i (delta_ik - o_k), for a symbolic number of classes H.

From the definition by the quotient rule: the numerator depends on z_k only when i = k, the
denominator always (by the sum rule, the Kronecker delta picks one term of it); the two fractions
that remain are outputs again, and the shared factor o_i gives the compact form and its two cases.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from derive import concrete, rules
from derive.derivations.softmax_ce import SOFTMAX, cases_matrix
from derive.model import Derivation, Step
from derive.setting import Setting
from derive.symbols import i, k, o, z

SUBJECT = sp.Derivative(o[i], z[k])
SETTING = Setting(wrt=z[k], definitions=(SOFTMAX,), constraints={}, outer=(i,))


def steps() -> tuple[Step, ...]:
    """Compose the rules, each applied to the previous step's result."""
    then = rules.Chain()

    e = then(rules.definition(SUBJECT, SOFTMAX))
    e = then(rules.quotient_rule(e))
    e = then(rules.sum_rule(e))
    e = then(rules.exp_derivative(e, SETTING))
    e = then(rules.sifting(e))
    e = then(rules.split_fraction(e))
    e = then(rules.outputs(e, SOFTMAX))
    e = then(rules.common_factor(e))
    then(rules.delta_cases(e, SUBJECT))
    return tuple(then.steps)


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    all_steps = steps()
    return Derivation(
        name="softmax",
        subject=SUBJECT,
        definitions=(SOFTMAX,),
        assumptions=(),
        steps=all_steps,
        setting=SETTING,
        concrete=concrete.jacobian_instance("softmax", classes, logits, target, lambda n: cases_matrix(all_steps[-1], n)),
    )
