"""The engine: the rule sequence, every step verified, planted errors caught, examples, bad input."""

from dataclasses import replace

import mpmath
import pytest
import sympy as sp

import derive
from derive import verify
from derive.errors import UsageError, VerificationError
from derive.symbols import ExcludedSum, H, i, k, o, y

EXPECTED_RULES = [
    "definition",
    "sum_rule",
    "constant_factor",
    "chain_rule",
    "log_derivative",
    "softmax_jacobian",
    "split_sum",
    "algebra",
    "factor_out",
    "complement_sum",
    "expand",
    "cancel",
    "normalisation",
]


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation("softmax-ce")


@pytest.fixture(scope="module")
def report(symbolic):
    return symbolic.check()


def test_catalog():
    assert derive.catalog()[:3] == ["softmax-ce", "softmax", "log-softmax"]


def test_rule_sequence(symbolic):
    assert [s.rule for s in symbolic.steps] == EXPECTED_RULES


def test_result_is_output_minus_target(symbolic):
    assert isinstance(symbolic.result, sp.Eq)
    assert sp.expand(symbolic.result.rhs - (o[k] - y[k])) == 0
    assert symbolic.steps[-1].assumptions == ("normalised",)


def test_general_form_before_normalisation(symbolic):
    general = symbolic.general.rhs
    assert sp.expand(general - (o[k] * sp.Sum(y[i], (i, 1, H)) - y[k])) == 0
    assert not any("normalised" in s.assumptions for s in symbolic.steps[:-1])


def test_case_split_has_both_cases(symbolic):
    jac = next(s for s in symbolic.steps if s.rule == "softmax_jacobian")
    conditions = {type(c.condition) for c in jac.cases}
    assert conditions == {sp.Eq, sp.Ne}
    split = next(s for s in symbolic.steps if s.rule == "split_sum")
    assert {l.key for l in split.labels} >= {"terms_ne", "term_eq", "jacobian_ne", "jacobian_eq"}
    assert split.rhs.has(ExcludedSum)


def test_steps_form_a_chain(symbolic):
    assert symbolic.steps[0].lhs == symbolic.subject
    for a, b in zip(symbolic.steps, symbolic.steps[1:]):
        assert b.lhs == a.rhs


def test_every_step_verifies(report, symbolic):
    assert report.passed
    whats = [c.what for c in report.checks]
    for n, step in enumerate(symbolic.steps, 1):
        assert whats.count(f"step {n} ({step.rule})") == 3  # exact, numeric and at larger H
    assert "the result" in whats
    assert any(c.method.startswith("central finite differences") for c in report.checks)


def test_tree_prints_every_step(symbolic):
    text = str(symbolic)
    for rule in EXPECTED_RULES:
        assert rule in text


# --- planted errors -------------------------------------------------------------------------------
def _planted(symbolic, n, rhs):
    return replace(symbolic.steps[n], rhs=rhs)


@pytest.mark.parametrize(
    "n, plant",
    [
        (1, lambda e: -e),  # sum_rule with the sign flipped
        (5, lambda e: e.xreplace({sp.KroneckerDelta(i, k): 0})),  # the i = k case dropped
        (6, lambda e: e.func(e.args[0], e.args[1].func(e.args[1].args[0]))),  # split: the i = k term lost
        (12, lambda e: o[k] + y[k]),  # the final sign wrong
    ],
)
def test_planted_error_is_caught(symbolic, n, plant):
    step = _planted(symbolic, n, plant(symbolic.steps[n].rhs))
    cases = verify.Instances(symbolic.setting)
    exact = verify._exact(cases, step, n + 1)
    numeric = verify._numeric(cases, step, n + 1)
    assert not exact.passed and "lhs - rhs" in exact.detail
    assert not numeric.passed


def test_wrong_jacobian_case_is_caught(symbolic):
    split = symbolic.steps[6]
    wrong = split.rhs.xreplace({sp.Integer(1) - o[k]: o[k]})
    assert wrong != split.rhs
    assert not verify._exact(verify.Instances(symbolic.setting), replace(split, rhs=wrong), 7).passed


def test_check_raises_on_a_planted_error(symbolic):
    steps = list(symbolic.steps)
    steps[3] = replace(steps[3], rhs=-steps[3].rhs)
    with pytest.raises(VerificationError, match=r"chain.*step 5"):
        replace(symbolic, steps=tuple(steps)).check()
    # The same sign error carried into the next step keeps the chain, and is caught by the check.
    steps[4] = replace(steps[4], lhs=steps[3].rhs)
    with pytest.raises(VerificationError, match=r"step 4 \(chain_rule\) failed \(exact"):
        replace(symbolic, steps=tuple(steps)).check()


def test_wrong_result_fails_finite_differences(symbolic):
    wrong = replace(symbolic.steps[-1], rhs=o[k] - 2 * y[k])
    broken = replace(symbolic, steps=symbolic.steps[:-1] + (wrong,))
    check = verify._finite_differences(broken, verify.Instances(symbolic.setting))
    assert not check.passed


# --- concrete H -----------------------------------------------------------------------------------
def test_seed_example_for_three_classes():
    d = derive.derivation("softmax-ce", classes=3)
    ex = d.concrete.example
    assert ex.probabilities == (sp.Rational(1, 5), sp.Rational(3, 5), sp.Rational(1, 5))
    assert ex.target == (1, 0, 0)
    assert ex.loss == sp.log(5)
    assert abs(float(ex.loss) - 1.6094379124341003) < 1e-15
    assert ex.gradient == (sp.Rational(-4, 5), sp.Rational(3, 5), sp.Rational(1, 5))
    report = d.check()
    assert any(c.what == "the gradient for H = 3" for c in report.checks)
    assert any(c.what == "the Jacobian for H = 3" for c in report.checks)


def test_jacobian_and_gradient_shapes():
    d = derive.derivation("softmax-ce", classes=4)
    assert d.concrete.jacobian.shape == (4, 4)
    assert d.concrete.jacobian[0, 0] == o[1] * (1 - o[1])
    assert d.concrete.jacobian[0, 1] == -o[1] * o[2]
    assert len(d.concrete.gradient) == 4


def _finite_difference(logits, target, m, h=mpmath.mpf("1e-20")):
    from derive.concrete import loss_value

    with mpmath.workdps(60):
        up, down = list(logits), list(logits)
        up[m] += h
        down[m] -= h
        return (loss_value(up, target) - loss_value(down, target)) / (2 * h)


@pytest.mark.parametrize(
    "logits, target",
    [
        (["1000", "0", "-1000"], ["0", "1", "0"]),
        (["0.5", "-1.25", "3"], ["0.2", "0.3", "0.5"]),
        (["2", "1", "0.1", "-7"], ["0", "0", "0", "1"]),
    ],
)
def test_user_examples_agree_with_finite_differences(logits, target):
    d = derive.derivation("softmax-ce", classes=len(logits), logits=logits, target=target)
    ex = d.concrete.example
    assert all(mpmath.isfinite(float(p)) for p in ex.probabilities)
    zs = [mpmath.mpf(v) for v in logits]
    ts = [mpmath.mpf(v) for v in target]
    for m in range(len(logits)):
        assert abs(_finite_difference(zs, ts, m) - mpmath.mpf(str(ex.gradient[m]))) < 1e-9
    assert abs(sum(float(g) for g in ex.gradient)) < 1e-12
    d.check()


def test_extreme_logits_have_finite_loss():
    d = derive.derivation("softmax-ce", classes=3, logits=["1000", "0", "-1000"], target=["0", "1", "0"])
    assert abs(float(d.concrete.example.loss) - 1000) < 1e-9


def test_planted_example_error_is_caught():
    from derive.concrete import softmax_ce_example_check as example_check

    d = derive.derivation("softmax-ce", classes=3)
    ex = d.concrete.example
    assert example_check(ex).passed
    wrong = replace(ex, gradient=(ex.gradient[0], ex.gradient[1], -ex.gradient[2]))
    assert not example_check(wrong).passed


# --- the pitfall ----------------------------------------------------------------------------------
def test_pitfall_claims_and_numbers(symbolic):
    p = symbolic.pitfall
    holds = {c.key: c.holds for c in p.claims}
    assert holds["output_gradient"] and holds["full_chain"] and holds["regression"]
    assert holds["shortcut"] is False
    # The shortcut agrees for the target class and says 0 for the others.
    assert p.shortcut == (sp.Rational(-4, 5), 0, 0)
    assert p.example.gradient == (sp.Rational(-4, 5), sp.Rational(3, 5), sp.Rational(1, 5))
    assert p.quotient[1] == sp.Rational(5, 2) and p.direct[1] == 0


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "softmax-cee"}, "did you mean 'softmax-ce'"),
        ({"classes": 0}, "at least 1"),
        ({"classes": -3}, "at least 1"),
        ({"classes": "abc"}, "whole number"),
        ({"classes": 2.5}, "whole number"),
        ({"classes": 10**7}, "at most"),
        ({"classes": 3, "logits": ["1", "2"]}, "needs 3 numbers"),
        ({"classes": 3, "logits": ["1", "x", "2"]}, "not a number"),
        ({"classes": 3, "logits": ["1", "nan", "2"]}, "finite"),
        ({"classes": 3, "logits": ["1", "inf", "2"]}, "finite"),
        ({"classes": 3, "target": ["1", "0"]}, "needs 3 numbers"),
        ({"classes": 3, "target": ["1.5", "-0.5", "0"]}, "negative"),
        ({"logits": ["1", "2"]}, "^--logits needs --classes"),
    ],
)
def test_bad_parameters_raise_usage_errors(kwargs, message):
    kwargs = {"name": "softmax-ce", **kwargs}
    with pytest.raises(UsageError, match=message):
        derive.derivation(**kwargs)


def test_planted_concrete_errors_are_caught():
    from derive.concrete import checks
    from derive.model import RuleMatrix

    d = derive.derivation("softmax-ce", classes=4)
    assert all(c.passed for c in checks(d))
    wrong_gradient = replace(d.concrete, gradient=d.concrete.gradient[:2] + (o[3] + y[3],) + d.concrete.gradient[3:])
    failed = checks(replace(d, concrete=wrong_gradient))
    assert not failed[0].passed and "entry 3" in failed[0].detail
    jac = d.concrete.jacobian
    wrong_jacobian = replace(d.concrete, jacobian=RuleMatrix(jac.size, jac.row, jac.col, o[i] * (1 + o[i]), jac.off))
    failed = checks(replace(d, concrete=wrong_jacobian))
    assert failed[0].passed and not failed[1].passed and "(1, 1)" in failed[1].detail
    with pytest.raises(VerificationError, match="Jacobian"):
        replace(d, concrete=wrong_jacobian).check()
