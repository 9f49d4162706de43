"""sse-linear: half the sum of squared errors through linear outputs, dE/dz_k = o_k - y_k for any
real targets. The rule sequence, every step verified, planted errors caught, the worked example
against finite differences, bad input, and the documents."""

import json
import random
import shutil
from dataclasses import replace

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import concrete, rules, verify
from derive.cli import app
from derive.derivations import sse_linear
from derive.errors import RuleError, UsageError, VerificationError
from derive.model import Case, RuleMatrix
from derive.symbols import i, k, o, y

NAME = "sse-linear"
RULES = ["definition", "sum_rule", "chain_rule", "power_rule", "elementwise_jacobian", "sifting", "algebra"]


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation(NAME)


@pytest.fixture(scope="module")
def report(symbolic):
    return symbolic.check()


def test_catalog_and_rule_sequence(symbolic):
    from derive.derivations import CATALOG

    assert NAME in derive.catalog()
    assert CATALOG[NAME].description == "Squared error through linear outputs: dE/dz_k = o_k - y_k"
    assert [s.rule for s in symbolic.steps] == RULES
    assert set(RULES) <= set(rules.RULES)


def test_result_needs_no_assumption(symbolic):
    assert symbolic.result.rhs == o[k] - y[k]
    assert symbolic.assumptions == () and symbolic.general is None and symbolic.pitfall is None
    assert "normalised" not in symbolic.setting.constraints


def test_the_jacobian_is_the_identity(symbolic):
    step = next(s for s in symbolic.steps if s.rule == "elementwise_jacobian")
    assert step.identity.rhs == sp.KroneckerDelta(i, k)
    assert {type(c.condition): c.value for c in step.cases} == {sp.Eq: 1, sp.Ne: 0}
    # The 2 of the power rule and the 1/2 of the error meet in the last step.
    assert symbolic.steps[-2].rhs.has(sp.Rational(1, 2)) and symbolic.steps[-2].rhs.has(sp.Integer(2))


def test_every_step_verifies(symbolic, report):
    assert report.passed
    whats = [c.what for c in report.checks]
    for n, step in enumerate(symbolic.steps, 1):
        assert whats.count(f"step {n} ({step.rule})") == 3  # exact, numeric and at larger H
    assert "step 5 (elementwise_jacobian): the cases" in whats
    assert any(c.what == "the result" and "finite differences" in c.method for c in report.checks)


# --- planted errors -------------------------------------------------------------------------------
def _catches(d, n, rhs):
    step = replace(d.steps[n], rhs=rhs)
    cases = verify.Instances(d.setting)
    return verify._exact(cases, step, n + 1), verify._numeric(cases, step, n + 1)


@pytest.mark.parametrize("n", range(1, len(RULES)))
def test_flipped_sign_is_caught(symbolic, n):
    exact, numeric = _catches(symbolic, n, -symbolic.steps[n].rhs)
    assert not exact.passed and "lhs - rhs" in exact.detail
    assert not numeric.passed


def test_missing_half_is_caught(symbolic):
    # The classic factor-two slip: the 2 of the power rule without the 1/2 of the error.
    n = RULES.index("algebra")
    exact, numeric = _catches(symbolic, n, 2 * (o[k] - y[k]))
    assert not exact.passed and not numeric.passed


def test_dropped_or_wrong_case_is_caught(symbolic):
    n = RULES.index("elementwise_jacobian")
    step = symbolic.steps[n]
    eq, ne = step.cases
    for kept in step.cases:
        check = verify._cases(symbolic.setting, replace(step, cases=(kept,)), n + 1)
        assert not check.passed and "no case covers" in check.detail
    for cases in ((Case(eq.condition, sp.Integer(2)), ne), (eq, Case(ne.condition, sp.Integer(1)))):
        check = verify._cases(symbolic.setting, replace(step, cases=cases), n + 1)
        assert not check.passed and "is wrong" in check.detail


def test_check_raises_on_a_planted_error(symbolic):
    steps = list(symbolic.steps)
    steps[3] = replace(steps[3], rhs=-steps[3].rhs)
    steps[4] = replace(steps[4], lhs=steps[3].rhs)
    with pytest.raises(VerificationError, match=r"step 4 \(power_rule\) failed \(exact"):
        replace(symbolic, steps=tuple(steps)).check()


def test_wrong_result_fails_finite_differences(symbolic):
    wrong = replace(symbolic.steps[-1], rhs=2 * (o[k] - y[k]))
    broken = replace(symbolic, steps=symbolic.steps[:-1] + (wrong,))
    assert not verify._finite_differences(broken, verify.Instances(symbolic.setting)).passed


def test_rule_refuses_a_wrong_derivative(symbolic):
    e = symbolic.steps[RULES.index("elementwise_jacobian")].lhs
    with pytest.raises(RuleError, match="not the derivative"):
        rules.elementwise_jacobian(e, sse_linear.SETTING, sse_linear.LINEAR, o[i])


# --- concrete H -----------------------------------------------------------------------------------
def test_our_example_for_three_outputs():
    d = derive.derivation(NAME, classes=3)
    ex = d.concrete.example
    ln3 = float(sp.log(3))
    assert [float(p) for p in ex.probabilities] == pytest.approx([0, ln3, 0], abs=1e-25)
    assert [float(g) for g in ex.gradient] == pytest.approx([-1, ln3, 0], abs=1e-25)
    assert float(ex.loss) == pytest.approx((1 + ln3**2) / 2, abs=1e-15)
    assert d.concrete.jacobian.as_matrix() == sp.eye(3)
    assert all(c.passed for c in d.check().checks)


def test_planted_concrete_errors_are_caught():
    d = derive.derivation(NAME, classes=4)
    c = d.concrete
    assert [x.passed for x in concrete.checks(d)] == [True, True, True]
    wrong_gradient = replace(c, gradient=c.gradient[:3] + (2 * c.gradient[3],))
    wrong_jacobian = replace(c, jacobian=RuleMatrix(4, i, k, sp.Integer(1), sp.Integer(1)))
    ex = c.example
    wrong_example = replace(c, example=replace(ex, gradient=ex.gradient[:1] + (ex.gradient[1] * (1 + sp.Float("1e-12")),) + ex.gradient[2:]))
    wrong_loss = replace(c, example=replace(ex, loss=2 * ex.loss))
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_gradient))] == [False, True, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_jacobian))] == [True, False, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_example))] == [True, True, False]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_loss))] == [True, True, False]
    with pytest.raises(VerificationError, match="Jacobian for H = 4"):
        replace(d, concrete=wrong_jacobian).check()


def _loss(logits, target):
    return mpmath.fsum((z - t) ** 2 for z, t in zip(logits, target)) / 2


def _random_inputs(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    return n, [f"{rng.uniform(-50, 50):.6f}" for _ in range(n)], [f"{rng.uniform(-50, 50):.6f}" for _ in range(n)]


@pytest.mark.parametrize("n, logits, target", [_random_inputs(s) for s in range(4)] + [(3, ["1000", "0", "-1000"], ["-2.5", "0", "7"])])
def test_examples_agree_with_finite_differences(n, logits, target):
    d = derive.derivation(NAME, classes=n, logits=logits, target=target)
    ex = d.concrete.example
    with mpmath.workdps(60):
        zs = [mpmath.mpf(v) for v in logits]
        ts = [mpmath.mpf(v) for v in target]
        h = mpmath.mpf("1e-20")
        for m in range(n):
            up, down = list(zs), list(zs)
            up[m] += h
            down[m] -= h
            numeric = (_loss(up, ts) - _loss(down, ts)) / (2 * h)
            assert abs(numeric - mpmath.mpf(str(ex.gradient[m]))) < 1e-9, m
    assert all(c.passed for c in d.check().checks)


def test_targets_are_any_real_numbers():
    d = derive.derivation(NAME, classes=3, target=["-2", "0", "0"])
    assert [float(g) for g in d.concrete.example.gradient] == pytest.approx([2, float(sp.log(3)), 0])
    md = derive.render(d, "md")
    assert "does not sum to one" not in md and "| output $`o_i`$ |" in md


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": 3, "target": ["1", "0"]}, "needs 3 numbers"),
        ({"classes": 3, "target": ["1", "x", "0"]}, "not a number"),
        ({"classes": 3, "target": ["1", "inf", "0"]}, "finite"),
        ({"classes": 3, "logits": ["1", "2"]}, "needs 3 numbers"),
        ({"logits": ["1", "0", "0"]}, "^--logits needs --classes"),
        ({"classes": "two"}, "whole number"),
    ],
)
def test_bad_input_raises_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        derive.derivation(NAME, **kwargs)


def test_command_line_bad_input_is_one_line_exit_2():
    result = CliRunner().invoke(app, [NAME, "--classes", "2", "--target", "1,a", "-o", "-"])
    assert result.exit_code == 2
    assert "not a number" in result.output and "Traceback" not in result.output


# --- documents ------------------------------------------------------------------------------------
def test_command_line_renders_every_text_format(tmp_path):
    for fmt in ("md", "tex", "json"):
        out = tmp_path / f"doc.{fmt}"
        result = CliRunner().invoke(app, [NAME, "--classes", "3", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 1000
    md = (tmp_path / "doc.md").read_text()
    assert "the Jacobian is the identity matrix" in md and "that shortcut is wrong" in md
    assert r"\frac{1}{2} \cdot 2 \left(o_k - y_k\right)" in md


def test_json_example_keys():
    doc = json.loads(derive.render(derive.derivation(NAME, classes=2, logits=["0.5", "-1"], target=["-3", "2.25"]), "json"))
    assert doc["name"] == NAME and doc["classes"] == 2 and doc["assumptions"] == [] and doc["general"] is None
    assert set(doc["example"]) == {"logits", "probabilities", "target", "loss", "gradient"}
    assert doc["example"]["target"] == [-3.0, 2.25]
    assert doc["example"]["gradient"] == pytest.approx([3.5, -3.25])
    assert doc["example"]["loss"] == pytest.approx((3.5**2 + 3.25**2) / 2)
    assert [s["rule"] for s in doc["steps"]] == RULES


def test_pdf_builds():
    if not shutil.which("pdflatex"):
        pytest.skip("TeX Live is not installed")
    pdf = derive.render(derive.derivation(NAME, classes=3), "pdf")
    assert pdf.startswith(b"%PDF")
