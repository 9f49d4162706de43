"""mse-softmax: half the sum of squared errors through a softmax layer, whose gradient is
o_k ((o_k - y_k) - sum_i o_i (o_i - y_i)) and not o_k - y_k. The rule sequence, every step
verified, planted errors caught (steps, cases, the counterexample's claims and numbers, the
concrete H), the worked example against finite differences, bad input, and the documents."""

import json
import random
from dataclasses import replace

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import concrete, rules, verify
from derive.cli import app
from derive.derivations import mse_softmax
from derive.errors import RuleError, UsageError, VerificationError
from derive.model import Case, Claim, RuleMatrix
from derive.symbols import H, i, k, o, y, z

NAME = "mse-softmax"
RULES = [
    "definition",
    "sum_rule",
    "chain_rule",
    "power_rule",
    "factor_out",
    "algebra",
    "softmax_jacobian",
    "split_sum",
    "algebra",
    "factor_out",
    "complement_sum",
    "expand",
    "cancel",
    "common_factor",
]
RESULT = o[k] * ((o[k] - y[k]) - sp.Sum(o[i] * (o[i] - y[i]), (i, 1, H)))


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation(NAME)


@pytest.fixture(scope="module")
def report(symbolic):
    return symbolic.check()


def test_catalog_and_rule_sequence(symbolic):
    from derive.derivations import CATALOG

    assert NAME in derive.catalog()
    assert CATALOG[NAME].description.startswith("Squared error through a softmax layer: the gradient is NOT o_k - y_k")
    assert [s.rule for s in symbolic.steps] == RULES
    assert set(RULES) <= set(rules.RULES)


def test_result_needs_no_assumption(symbolic):
    assert sp.expand(symbolic.result.rhs - RESULT) == 0
    assert symbolic.assumptions == () and symbolic.general is None and symbolic.pitfall is None
    assert not any(s.assumptions for s in symbolic.steps)


def test_the_power_rule_and_the_half(symbolic):
    power = next(s for s in symbolic.steps if s.rule == "power_rule")
    # The planner states the rule, d u^2 / du = 2 u; the step shows its instance 2 (o_i - y_i).
    u = sp.Symbol("u")
    assert power.identity == sp.Eq(sp.Derivative(u**2, u), 2 * u, evaluate=False)
    assert any(isinstance(m, sp.Mul) and {sp.Integer(2), o[i] - y[i]} <= set(m.args) for m in sp.preorder_traversal(power.rhs))
    # The 2 leaves the sum beside the 1/2, and the next step cancels them.
    assert symbolic.steps[4].rhs.has(sp.Rational(1, 2)) and not symbolic.steps[5].rhs.has(sp.Rational(1, 2))


def test_every_step_verifies(symbolic, report):
    assert report.passed
    whats = [c.what for c in report.checks]
    for n, step in enumerate(symbolic.steps, 1):
        assert whats.count(f"step {n} ({step.rule})") == 3  # exact, numeric and at larger H
    assert "step 7 (softmax_jacobian): the cases" in whats
    assert any(c.what == "the result" and "finite differences" in c.method for c in report.checks)
    assert "counterexample: shortcut is wrong" in whats
    assert "counterexample: cross_entropy holds" in whats
    assert "counterexample: the numbers of the classic example" in whats
    assert "counterexample: the numbers of the confident example" in whats


# --- planted errors -------------------------------------------------------------------------------
def _catches(d, n, rhs):
    step = replace(d.steps[n], rhs=rhs)
    cases = verify.Instances(d.setting)
    return verify._exact(cases, step, n + 1), verify._numeric(cases, step, n + 1)


@pytest.mark.parametrize("n", [1, 3, 7, 9, 13])
def test_flipped_sign_is_caught(symbolic, n):
    exact, numeric = _catches(symbolic, n, -symbolic.steps[n].rhs)
    assert not exact.passed and "lhs - rhs" in exact.detail
    assert not numeric.passed


def test_wrong_sign_of_the_off_diagonal_term_is_caught(symbolic):
    split = symbolic.steps[7]
    wrong = split.rhs.xreplace({rules.neg(rules.mul(o[i], o[k])): rules.mul(o[i], o[k])})
    assert wrong != split.rhs
    exact, numeric = _catches(symbolic, 7, wrong)
    assert not exact.passed and not numeric.passed


def test_missing_half_is_caught(symbolic):
    # Forgetting the 1/2 of the error: twice the gradient.
    exact, numeric = _catches(symbolic, 5, 2 * symbolic.steps[5].rhs)
    assert not exact.passed and not numeric.passed


def test_dropped_or_wrong_case_is_caught(symbolic):
    n = RULES.index("softmax_jacobian")
    step = symbolic.steps[n]
    for kept in step.cases:
        check = verify._cases(symbolic.setting, replace(step, cases=(kept,)), n + 1)
        assert not check.passed and "no case covers" in check.detail
    eq, ne = step.cases
    for cases in ((Case(eq.condition, -eq.value), ne), (eq, Case(ne.condition, -ne.value))):
        check = verify._cases(symbolic.setting, replace(step, cases=cases), n + 1)
        assert not check.passed and "is wrong" in check.detail


def test_check_raises_on_a_planted_error(symbolic):
    steps = list(symbolic.steps)
    steps[2] = replace(steps[2], rhs=-steps[2].rhs)
    steps[3] = replace(steps[3], lhs=steps[2].rhs)
    with pytest.raises(VerificationError, match=r"step 3 \(chain_rule\) failed \(exact"):
        replace(symbolic, steps=tuple(steps)).check()


def test_wrong_result_fails_finite_differences(symbolic):
    shortcut = replace(symbolic.steps[-1], rhs=o[k] - y[k])
    broken = replace(symbolic, steps=symbolic.steps[:-1] + (shortcut,))
    assert not verify._finite_differences(broken, verify.Instances(symbolic.setting)).passed


# --- the counterexample: the shortcut o_k - y_k is wrong, as claims and as numbers ------------------
def test_the_shortcut_is_claimed_wrong_and_cross_entropy_right(symbolic):
    claims = {c.key: c for c in symbolic.counterexample.claims}
    assert claims["shortcut"].holds is False and claims["shortcut"].equation.rhs == o[k] - y[k]
    assert claims["shortcut"].assumptions == ("normalised",)  # wrong even for a target that sums to one
    assert claims["cross_entropy"].holds is True and claims["cross_entropy"].equation.rhs == o[k] - y[k]


def test_claims_that_are_wrongly_marked_are_caught(symbolic):
    shortcut = next(c for c in symbolic.counterexample.claims if c.key == "shortcut")
    as_if_right = replace(shortcut, holds=True)
    check = verify._claim(as_if_right, verify.Instances(shortcut.setting), "counterexample")
    assert not check.passed and "fails at H = " in check.detail
    # The true gradient, claimed wrong, must be caught as holding everywhere.
    true = Claim("result", sp.Eq(shortcut.equation.lhs, symbolic.result.rhs, evaluate=False), False, shortcut.setting)
    check = verify._claim(true, verify.Instances(true.setting), "counterexample")
    assert not check.passed and check.detail == "it holds everywhere"


def test_the_seed_numbers_exactly(symbolic):
    classic, confident = symbolic.counterexample.comparisons
    assert classic.key == "classic" and confident.key == "confident"
    ex = classic.example
    assert ex.probabilities == (sp.Rational(1, 5), sp.Rational(3, 5), sp.Rational(1, 5))
    assert ex.target == (1, 0, 0)
    assert ex.gradient == (sp.Rational(-26, 125), sp.Rational(27, 125), sp.Rational(-1, 125))
    assert classic.shortcut == (sp.Rational(-4, 5), sp.Rational(3, 5), sp.Rational(1, 5))
    assert ex.loss == sp.Rational(13, 25)
    assert sum(ex.gradient) == 0
    # Saturated: the true class gets about 1/50 of the cross-entropy gradient.
    c = confident.example
    assert c.probabilities == (sp.Rational(1, 100), sp.Rational(98, 100), sp.Rational(1, 100))
    assert 50 < confident.shortcut[0] / c.gradient[0] < 52


@pytest.mark.parametrize(
    "plant, message",
    [
        (lambda c: replace(c, example=replace(c.example, gradient=(c.example.gradient[0] + sp.Rational(1, 1000),) + c.example.gradient[1:])), "gradient entry 1"),
        (lambda c: replace(c, shortcut=c.shortcut[:2] + (-c.shortcut[2],)), "shortcut entry 3"),
        (lambda c: replace(c, example=replace(c.example, loss=c.example.loss + 1)), "loss"),
        (lambda c: replace(c, example=replace(c.example, probabilities=(c.example.probabilities[1], c.example.probabilities[0], c.example.probabilities[2]))), "output 1"),
    ],
)
def test_wrong_counterexample_numbers_are_caught(symbolic, plant, message):
    classic = symbolic.counterexample.comparisons[0]
    check = verify._comparison(symbolic, plant(classic))
    assert not check.passed and message in check.detail
    assert verify._comparison(symbolic, classic).passed


def test_a_shortcut_that_agrees_is_no_counterexample(symbolic):
    classic = symbolic.counterexample.comparisons[0]
    agreeing = replace(symbolic.counterexample, shortcut=RESULT)
    d = replace(symbolic, counterexample=agreeing)
    check = verify._comparison(d, replace(classic, shortcut=classic.example.gradient))
    assert not check.passed and "no counterexample" in check.detail


# --- the rules this derivation added ----------------------------------------------------------------
def test_power_rule_is_general():
    u, c = sp.Symbol("u"), sp.Symbol("c")
    step = rules.power_rule(sp.Derivative((u - c) ** 3, u))
    assert sp.expand(step.rhs - 3 * (u - c) ** 2) == 0
    assert sp.expand(rules.power_rule(sp.Derivative(u**2, u)).rhs - 2 * u) == 0
    with pytest.raises(RuleError):
        rules.power_rule(sp.Derivative((2 * u - c) ** 2, u))  # the base's slope is not 1
    with pytest.raises(RuleError):
        rules.power_rule(sp.Derivative(sp.log(u), u))


def test_expand_keeps_a_sum_whole():
    a, b, c = sp.symbols("a b c")
    expr = rules.mul(a, rules.add(b, a - c))
    assert rules.expand(expr, keep=(a - c,)).rhs.has(a - c)
    assert not rules.expand(expr).rhs.has(a - c)


# --- concrete H -----------------------------------------------------------------------------------
def _loss(logits, target):
    """E = 1/2 sum (o_i - y_i)^2 from the logits, through log-sum-exp (independent of the engine)."""
    top = max(logits)
    weights = [mpmath.exp(v - top) for v in logits]
    total = mpmath.fsum(weights)
    return mpmath.fsum((w / total - t) ** 2 for w, t in zip(weights, target)) / 2


def test_our_example_for_three_classes():
    d = derive.derivation(NAME, classes=3)
    ex = d.concrete.example
    assert [float(p) for p in ex.probabilities] == pytest.approx([0.2, 0.6, 0.2], abs=1e-25)
    assert [float(g) for g in ex.gradient] == pytest.approx([-0.208, 0.216, -0.008], abs=1e-25)
    assert float(ex.loss) == pytest.approx(0.52, abs=1e-25)
    report = d.check()
    whats = [c.what for c in report.checks]
    assert {"the gradient for H = 3", "the Jacobian for H = 3", "the worked example"} <= set(whats)


def test_planted_concrete_errors_are_caught():
    d = derive.derivation(NAME, classes=4)
    c = d.concrete
    assert [x.passed for x in concrete.checks(d)] == [True, True, True]
    wrong_gradient = replace(c, gradient=c.gradient[:2] + (c.gradient[2] + o[1] * o[3],) + c.gradient[3:])
    jac = c.jacobian
    wrong_jacobian = replace(c, jacobian=RuleMatrix(jac.size, jac.row, jac.col, jac.diagonal, -jac.off))
    ex = c.example
    wrong_example = replace(c, example=replace(ex, gradient=ex.gradient[:1] + (ex.gradient[1] + sp.Float("1e-12"),) + ex.gradient[2:]))
    wrong_loss = replace(c, example=replace(ex, loss=ex.loss + sp.Float("1e-10")))
    failed = concrete.checks(replace(d, concrete=wrong_gradient))
    assert [x.passed for x in failed] == [False, True, True] and "entry 3" in failed[0].detail
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_jacobian))] == [True, False, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_example))] == [True, True, False]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_loss))] == [True, True, False]
    with pytest.raises(VerificationError, match="gradient for H = 4"):
        replace(d, concrete=wrong_gradient).check()


def _random_inputs(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 7)
    logits = [f"{rng.uniform(-4, 4):.6f}" for _ in range(n)]
    target = [f"{rng.uniform(0, 1):.4f}" for _ in range(n)]  # need not sum to one
    return n, logits, target


@pytest.mark.parametrize(
    "n, logits, target",
    [
        (3, None, None),
        (4, ["2", "1", "0.1", "-1"], ["0", "1", "0", "0"]),
        (3, ["1000", "0", "-1000"], ["0", "0", "1"]),
        *(_random_inputs(seed) for seed in range(3)),
    ],
)
def test_examples_agree_with_finite_differences(n, logits, target):
    d = derive.derivation(NAME, classes=n, logits=logits, target=target)
    ex = d.concrete.example
    with mpmath.workdps(60):
        zs = [mpmath.mpf(str(sp.N(v, 60))) for v in ex.logits]
        ts = [mpmath.mpf(str(sp.N(v, 60))) for v in ex.target]
        h = mpmath.mpf("1e-20")
        assert abs(_loss(zs, ts) - mpmath.mpf(str(sp.N(ex.loss, 40)))) < 1e-20
        for m in range(n):
            up, down = list(zs), list(zs)
            up[m] += h
            down[m] -= h
            numeric = (_loss(up, ts) - _loss(down, ts)) / (2 * h)
            assert abs(numeric - mpmath.mpf(str(sp.N(ex.gradient[m], 40)))) < 1e-9, m
    d.check()


def test_a_target_that_does_not_sum_to_one_needs_no_other_formula():
    d = derive.derivation(NAME, classes=3, target=["1", "1", "0"])
    assert d.concrete.assumptions == ()
    d.check()
    md = derive.render(d, "md")
    assert "does not sum to one" not in md


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"logits": ["1", "2"]}, "^--logits needs --classes"),
        ({"classes": 0}, "at least 1"),
        ({"classes": "x"}, "whole number"),
        ({"classes": 3, "logits": ["1", "2"]}, "needs 3 numbers"),
        ({"classes": 3, "target": ["1", "-1", "0"]}, "must not be negative"),
        ({"classes": 3, "target": ["0", "0", "0"]}, "all zeros"),
        ({"classes": 3, "logits": ["1", "nan", "0"]}, "finite"),
    ],
)
def test_bad_input_raises_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        derive.derivation(NAME, **kwargs)


def test_command_line_bad_input_is_one_line_exit_2():
    result = CliRunner().invoke(app, [NAME, "--classes", "3", "--logits", "1,2"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.output.count("\n") == 1


# --- documents ------------------------------------------------------------------------------------
def test_command_line_renders_every_text_format(tmp_path):
    for fmt in ("md", "tex", "json", "html"):
        path = tmp_path / f"out.{fmt}"
        result = CliRunner().invoke(app, [NAME, "--classes", "3", "-o", str(path)])
        assert result.exit_code == 0, result.output
        assert path.stat().st_size > 0
    md = (tmp_path / "out.md").read_text()
    assert "## The pitfall: the gradient is not output minus target" in md
    assert "opposite signs" in md and "| 3 | 0.2 | 0 | -0.008 | 0.2 | opposite signs |" in md
    assert "| 1 | 0.01 | 1 | -0.0194 | -0.99 |  |" in md
    assert r"\neq o_k - y_k" in md
    tex = (tmp_path / "out.tex").read_text()
    assert r"\section*{The pitfall: the gradient is not output minus target}" in tex
    assert "opposite signs" in (tmp_path / "out.html").read_text()
    listed = CliRunner().invoke(app, ["list"]).output
    assert NAME in listed and "NOT o_k - y_k" in listed


def test_json_example_keys():
    doc = json.loads(derive.render(derive.derivation(NAME, classes=3), "json"))
    assert doc["name"] == NAME and doc["classes"] == 3 and doc["general"] is None and doc["assumptions"] == []
    assert set(doc["example"]) == {"logits", "target", "loss", "gradient", "probabilities"}
    assert doc["example"]["gradient"] == pytest.approx([-0.208, 0.216, -0.008])
    counter = doc["counterexample"]
    assert counter["shortcut"] == "o_k - y_k"
    classic = counter["examples"][0]
    assert classic["name"] == "classic" and classic["probabilities"] == pytest.approx([0.2, 0.6, 0.2])
    assert classic["gradient"] == pytest.approx([-0.208, 0.216, -0.008]) and classic["shortcut"] == pytest.approx([-0.8, 0.6, 0.2])
    assert [s["rule"] for s in doc["steps"]] == RULES
    assert all(c["passed"] for c in doc["checks"])
    assert "example" not in json.loads(derive.render(derive.derivation(NAME), "json"))


def test_each_rule_use_has_its_own_words():
    md = derive.render(derive.derivation(NAME), "md")
    assert "**6. The one half cancels.**" in md and "**9. Simplify each term.**" in md
    assert "The $`2`$ does not depend on the summation index" in md
    assert "$`o_k`$ does not depend on the summation index $`i`$, so it comes out of the sum, and the minus sign with it." in md
    assert r"\ln o_i`$ depends on" not in md  # the chain rule's words are about the square here


def test_pdf_builds(pdflatex):
    pdf = derive.render(derive.derivation(NAME, classes=3), "pdf")
    assert pdf.startswith(b"%PDF")
