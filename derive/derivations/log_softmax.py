"""The log-softmax Jacobian: d ln o_i / d z_k = delta_ik - o_k, for a symbolic number of classes H.

The planner derives the steps from derive/catalog/log-softmax.toml: the chain rule through o_i,
the derivative of the log, the softmax Jacobian, and the o_i that cancels; the Kronecker delta
then gives the two cases.
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

SUBJECT = sp.Derivative(sp.log(o[i]), z[k])
SETTING = Setting(wrt=z[k], definitions=(SOFTMAX,), constraints={}, outer=(i,))


def steps() -> tuple[Step, ...]:
    """The steps, planned from the catalog's spec file (derive/catalog/log-softmax.toml), whose
    quantity l_i is written ln o_i here."""
    return planned("log-softmax", names={sp.IndexedBase("l")[i]: sp.log(o[i])})


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
