"""The log-softmax Jacobian: d ln o_i / d z_k = delta_ik - o_k, for a symbolic number of classes H.

The chain rule through o_i, the derivative of the log, the softmax Jacobian, and the o_i that
cancels; the Kronecker delta then gives the two cases.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from derive import concrete, rules
from derive.derivations.softmax_ce import SOFTMAX, cases_matrix
from derive.model import Derivation, Step
from derive.setting import Setting
from derive.symbols import i, k, o, z

SUBJECT = sp.Derivative(sp.log(o[i]), z[k])
SETTING = Setting(wrt=z[k], definitions=(SOFTMAX,), constraints={}, outer=(i,))


def steps() -> tuple[Step, ...]:
    """Compose the rules, each applied to the previous step's result."""
    then = rules.Chain()

    e = then(rules.chain_rule(SUBJECT, SETTING))
    e = then(rules.log_derivative(e))
    e = then(rules.softmax_jacobian(e, SETTING))
    e = then(rules.algebra(e))
    then(rules.delta_cases(e, SUBJECT))
    return tuple(then.steps)


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    all_steps = steps()
    return Derivation(
        name="log-softmax",
        subject=SUBJECT,
        definitions=(SOFTMAX,),
        assumptions=(),
        steps=all_steps,
        setting=SETTING,
        concrete=concrete.jacobian_instance("log-softmax", classes, logits, target, lambda n: cases_matrix(all_steps[-1], n)),
    )
