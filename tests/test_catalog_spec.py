"""The catalog as data: softmax-ce's steps come from its spec file through the planner.

What the hand-written chain guaranteed stays here as the reference: the same rules, applied by
hand in the order of the classic derivation, give the same steps, labels and cases.
"""

from __future__ import annotations

import sympy as sp

from derive import rules
from derive.derivations import softmax_ce
from derive.files import catalog_spec
from derive.symbols import E, z, k


def hand_written() -> tuple:
    """The chain as it was composed by hand before the planner."""
    then = rules.Chain()
    at = softmax_ce.SETTING
    e = then(rules.definition(sp.Derivative(E, z[k]), softmax_ce.LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.constant_factor(e, at))
    e = then(rules.chain_rule(e, at))
    e = then(rules.log_derivative(e))
    jacobian = rules.softmax_jacobian(e, at)
    e = then(jacobian)
    e = then(rules.split_sum(e, jacobian.identity.rhs, jacobian.cases))
    e = then(rules.algebra(e))
    e = then(rules.factor_out(e, at))
    e = then(rules.complement_sum(e))
    e = then(rules.expand(e))
    e = then(rules.cancel(e))
    e = then(rules.normalisation(e, softmax_ce.NORMALISED.statement))
    return tuple(then.steps)


def test_the_spec_file_is_shipped():
    assert catalog_spec("softmax-ce").is_file()


def test_planned_steps_are_the_hand_written_ones():
    planned, reference = softmax_ce.steps(), hand_written()
    assert [s.rule for s in planned] == [s.rule for s in reference]
    for a, b in zip(planned, reference):
        assert (a.lhs, a.rhs, a.labels, a.cases, a.assumptions) == (b.lhs, b.rhs, b.labels, b.cases, b.assumptions), a.rule
        assert a.identity == b.identity or a.rule in {"definition", "chain_rule"}, a.rule
