"""Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k, for a symbolic number of classes H.

The steps follow the order of reasoning of the classic derivation: sum rule, constant factor,
chain rule, derivative of the log, the softmax Jacobian with its two cases, splitting the sum at
i = k, the algebra, and only at the end the assumption that the target sums to one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import sympy as sp

from derive import concrete, rules
from derive.errors import UsageError
from derive.model import Assumption, Claim, Definition, Derivation, Pitfall, Step
from derive.setting import Setting
from derive.symbols import E, H, i, j, k, o, y, z

SOFTMAX = Definition("softmax", o[i], sp.exp(z[i]) / sp.Sum(sp.exp(z[j]), (j, 1, H)))
LOSS = Definition("cross_entropy", E, -sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)))
NORMALISED = Assumption("normalised", sp.Eq(sp.Sum(y[i], (i, 1, H)), 1, evaluate=False))

SETTING = Setting(wrt=z[k], definitions=(LOSS, SOFTMAX))


def steps() -> tuple[Step, ...]:
    """Compose the rules, each applied to the previous step's result."""
    then = rules.Chain()

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
    return tuple(then.steps)


def pitfall() -> Pitfall:
    """Why dividing by do_j/dz_j fails: every o_i depends on z_j, so the chain rule sums over i.

    The counterexample uses the seed's numbers, O = (0.2, 0.6, 0.2) and y = (1, 0, 0).
    """
    at_j = replace(SETTING, wrt=z[j], index=j)
    dE_do = sp.Derivative(E, o[j])
    do_dz = sp.Derivative(o[j], z[j])
    full = sp.Sum(sp.Derivative(E, o[i]) * sp.Derivative(o[i], z[j]), (i, 1, H))
    # Linear outputs with half the sum of squares: the seed comment's regression case.
    linear = Setting(
        wrt=z[j],
        index=j,
        definitions=(
            Definition("squared_error", E, sp.Rational(1, 2) * sp.Sum((o[i] - y[i]) ** 2, (i, 1, H))),
            Definition("linear", o[i], z[i]),
        ),
    )
    claims = (
        Claim("output_gradient", sp.Eq(dE_do, -y[j] / o[j], evaluate=False), True, at_j),
        Claim("softmax_diagonal", sp.Eq(do_dz, o[j] * (1 - o[j]), evaluate=False), True, at_j),
        Claim("shortcut", sp.Eq(sp.Derivative(E, z[j]), rules.mul(dE_do, do_dz), evaluate=False), False, at_j, ("normalised",)),
        Claim("shortcut_value", sp.Eq(rules.mul(dE_do, do_dz), rules.mul(-y[j] / o[j], o[j] * (1 - o[j])), evaluate=False), True, at_j),
        Claim("shortcut_result", sp.Eq(rules.mul(-y[j] / o[j], o[j] * (1 - o[j])), y[j] * (o[j] - 1), evaluate=False), True, at_j),
        Claim("full_chain", sp.Eq(sp.Derivative(E, z[j]), full, evaluate=False), True, at_j),
        Claim("full_value", sp.Eq(full, o[j] - y[j], evaluate=False), True, at_j, ("normalised",)),
        Claim("regression", sp.Eq(sp.Derivative(E, z[j]), rules.mul(dE_do, do_dz), evaluate=False), True, linear),
        Claim("regression_value", sp.Eq(rules.mul(dE_do, do_dz), o[j] - y[j], evaluate=False), True, linear),
    )
    ex = concrete.example(3)
    return Pitfall(
        claims=claims,
        example=ex,
        shortcut=tuple(t * (p - 1) for p, t in zip(ex.probabilities, ex.target)),
        quotient=tuple((p - t) / (p * (1 - p)) for p, t in zip(ex.probabilities, ex.target)),
        direct=tuple(-t / p for p, t in zip(ex.probabilities, ex.target)),
    )


def build(classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None) -> Derivation:
    if classes is None and (logits is not None or target is not None):
        raise UsageError("--logits and --target need --classes: the worked example is for a concrete number of classes")
    # Bad input fails before any symbolic work.
    instance = None
    if classes is not None:
        n = concrete.classes_of(classes)
        instance = concrete.concrete(n, concrete.example(n, logits, target))
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
        pitfall=pitfall(),
        concrete=instance,
    )
