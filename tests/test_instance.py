"""The appendix of a loss derivation from its definitions (derive.concrete.loss_instance), against the hand-written one of
softmax-ce: the same gradient, loss and checks, and planted errors caught."""

from dataclasses import replace

import pytest
import sympy as sp

import derive
from derive import concrete
from derive.derivations import softmax_ce


def generic(classes, logits=None, target=None):
    d = derive.derivation("softmax-ce")
    given = concrete.inputs(classes, logits, target)
    c = concrete.loss_instance(given, softmax_ce.SETTING, softmax_ce.LOSS, d.result.rhs, concrete.jacobian(classes), general=d.general.rhs, assumptions=("normalised",))
    return replace(d, concrete=c)


@pytest.mark.parametrize(
    "classes, logits, target",
    [(3, None, None), (4, ["1", "2", "0.5", "-1"], ["0.1", "0.2", "0.3", "0.4"]), (3, None, ["1", "1", "0"]), (5, ["1000", "0", "-1000", "3", "2"], None)],
)
def test_generic_example_agrees_with_the_hand_written_one(classes, logits, target):
    d = generic(classes, logits, target)
    ours = derive.derivation("softmax-ce", classes=classes, logits=logits, target=target).concrete.example
    ex = d.concrete.example
    assert all(abs(float(a) - float(b)) < 1e-25 for a, b in zip(ex.gradient, ours.gradient))
    assert abs(float(ex.loss) - float(ours.loss)) < 1e-20 * max(1, abs(float(ours.loss)))
    assert all(c.passed for c in concrete.checks(d))


def test_generic_checks_catch_planted_errors():
    d = generic(4)
    c = d.concrete
    wrong_gradient = replace(c, gradient=(c.gradient[0] + sp.Rational(1, 10**9),) + c.gradient[1:])
    wrong_jacobian = replace(c, jacobian=concrete.log_jacobian(4))
    ex = c.example
    wrong_example = replace(c, example=replace(ex, gradient=ex.gradient[:2] + (ex.gradient[2] + sp.Float("1e-15"),) + ex.gradient[3:]))
    wrong_loss = replace(c, example=replace(ex, loss=ex.loss * (1 + sp.Float("1e-12"))))
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_gradient))] == [False, True, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_jacobian))] == [True, False, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_example))] == [True, True, False]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_loss))] == [True, True, False]
