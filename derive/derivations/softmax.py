"""The softmax Jacobian: d o_i / d z_k = o_i (delta_ik - o_k), for a symbolic number of classes H.

The planner derives the steps from derive/catalog/softmax.toml, by the quotient rule from the
definition (the Jacobian cites no lemma for itself): the numerator depends on z_k only when
i = k, the denominator always (by the sum rule, the Kronecker delta picks one term of it); the
two fractions that remain are outputs again, and the shared factor o_i gives the compact form
and its two cases.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from derive import concrete
from derive.derivations.steps import planned
from derive.derivations.softmax_ce import SOFTMAX, cases_matrix
from derive.model import Derivation, Step
from derive.setting import Setting
from derive.symbols import i, k, o, z

SUBJECT = sp.Derivative(o[i], z[k])
SETTING = Setting(wrt=z[k], definitions=(SOFTMAX,), constraints={}, outer=(i,))


def steps() -> tuple[Step, ...]:
    """The steps, planned from the catalog's spec file (derive/catalog/softmax.toml)."""
    return planned("softmax")


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
