"""sigmoid-bce: binary cross-entropy through sigmoid outputs, dE/dz_k = o_k - y_k with no
assumption on the target. The rule sequence, every step verified, planted errors caught, the
worked example against finite differences, bad input, and the documents."""

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
from derive.derivations import sigmoid_bce
from derive.errors import RuleError, UsageError, VerificationError
from derive.model import Case, RuleMatrix
from derive.symbols import i, k, o, y

NAME = "sigmoid-bce"
RULES = [
    "definition",
    "sum_rule",
    "constant_factor",
    "chain_rule",
    "log_derivative",
    "elementwise_jacobian",
    "sifting",
    "algebra",
    "expand",
    "cancel",
]


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation(NAME)


@pytest.fixture(scope="module")
def report(symbolic):
    return symbolic.check()


def test_catalog_and_rule_sequence(symbolic):
    from derive.derivations import CATALOG

    assert NAME in derive.catalog()
    assert CATALOG[NAME].description == "Binary cross-entropy through sigmoid outputs: dE/dz_k = o_k - y_k"
    assert [s.rule for s in symbolic.steps] == RULES
    assert set(RULES) <= set(rules.RULES)


def test_result_needs_no_assumption(symbolic):
    assert symbolic.result.rhs == o[k] - y[k]
    assert symbolic.assumptions == () and symbolic.general is None and symbolic.pitfall is None
    assert "normalised" not in symbolic.setting.constraints
    assert all(not s.assumptions for s in symbolic.steps)


def test_the_sigmoid_jacobian_is_diagonal(symbolic):
    step = next(s for s in symbolic.steps if s.rule == "elementwise_jacobian")
    assert sp.expand(step.identity.rhs - o[i] * (1 - o[i]) * sp.KroneckerDelta(i, k)) == 0
    values = {type(c.condition): c.value for c in step.cases}
    assert sp.expand(values[sp.Eq] - o[k] * (1 - o[k])) == 0 and values[sp.Ne] == 0
    # The sum collapses to its term i = k: no sum is left after the sifting step.
    sift = next(s for s in symbolic.steps if s.rule == "sifting")
    assert sift.lhs.has(sp.Sum) and not sift.rhs.has(sp.Sum) and not sift.rhs.has(sp.KroneckerDelta)


def test_every_step_verifies(symbolic, report):
    assert report.passed
    whats = [c.what for c in report.checks]
    for n, step in enumerate(symbolic.steps, 1):
        assert whats.count(f"step {n} ({step.rule})") == 3  # exact, numeric and at larger H
    assert "step 6 (elementwise_jacobian): the cases" in whats
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


def test_wrong_sign_inside_a_step_is_caught(symbolic):
    # ln(1 - u) differentiated as +1/(1 - u): the sign of the inner derivative forgotten.
    n = RULES.index("log_derivative")
    inner = sp.Pow(1 - o[i], -1)
    wrong, paths = rules.rewrite(
        symbolic.steps[n].rhs,
        lambda e: isinstance(e, sp.Mul) and e.args[0] == -1 and inner in e.args,
        lambda e: rules.mul(*e.args[1:]),
    )
    assert len(paths) == 1
    assert wrong != symbolic.steps[n].rhs
    exact, numeric = _catches(symbolic, n, wrong)
    assert not exact.passed and not numeric.passed


def test_dropped_delta_is_caught(symbolic):
    n = RULES.index("elementwise_jacobian")
    wrong = symbolic.steps[n].rhs.xreplace({sp.KroneckerDelta(i, k): 1})
    exact, _ = _catches(symbolic, n, wrong)
    assert not exact.passed


def test_dropped_or_wrong_case_is_caught(symbolic):
    n = RULES.index("elementwise_jacobian")
    step = symbolic.steps[n]
    eq, ne = step.cases
    for kept in step.cases:
        check = verify._cases(symbolic.setting, replace(step, cases=(kept,)), n + 1)
        assert not check.passed and "no case covers" in check.detail
    # The shortcut's mistake for softmax would be right here, and vice versa: a non-zero
    # off-diagonal entry is wrong for the sigmoid.
    for cases in ((Case(eq.condition, -eq.value), ne), (eq, Case(ne.condition, -o[i] * o[k]))):
        check = verify._cases(symbolic.setting, replace(step, cases=cases), n + 1)
        assert not check.passed and "is wrong" in check.detail


def test_check_raises_on_a_planted_error(symbolic):
    steps = list(symbolic.steps)
    steps[7] = replace(steps[7], rhs=-steps[7].rhs)
    steps[8] = replace(steps[8], lhs=steps[7].rhs)
    with pytest.raises(VerificationError, match=r"step 8 \(algebra\) failed \(exact"):
        replace(symbolic, steps=tuple(steps)).check()


def test_wrong_result_fails_finite_differences(symbolic):
    # o_k (o_k - y_k): the diagonal of the Jacobian left in, as for a non-canonical pair.
    wrong = replace(symbolic.steps[-1], rhs=o[k] * (o[k] - y[k]))
    broken = replace(symbolic, steps=symbolic.steps[:-1] + (wrong,))
    assert not verify._finite_differences(broken, verify.Instances(symbolic.setting)).passed


def test_rule_refuses_a_wrong_derivative(symbolic):
    e = symbolic.steps[RULES.index("elementwise_jacobian")].lhs
    with pytest.raises(RuleError, match="not the derivative"):
        rules.elementwise_jacobian(e, sigmoid_bce.SETTING, sigmoid_bce.SIGMOID, o[i] * (1 + o[i]))


# --- concrete H -----------------------------------------------------------------------------------
def test_our_example_for_three_outputs():
    d = derive.derivation(NAME, classes=3)
    ex = d.concrete.example
    assert [float(p) for p in ex.probabilities] == [0.5, 0.75, 0.5]
    assert [float(g) for g in ex.gradient] == [-0.5, 0.75, 0.5]
    assert abs(float(ex.loss) - 4 * float(sp.log(2))) < 1e-25
    assert all(sp.expand(g - (o[m] - y[m])) == 0 for g, m in zip(d.concrete.gradient, (1, 2, 3), strict=True))
    assert d.concrete.jacobian.as_matrix() == sp.diag(*[o[m] * (1 - o[m]) for m in (1, 2, 3)])
    assert all(c.passed for c in d.check().checks)


def test_planted_concrete_errors_are_caught():
    d = derive.derivation(NAME, classes=4)
    c = d.concrete
    assert [x.passed for x in concrete.checks(d)] == [True, True, True]
    wrong_gradient = replace(c, gradient=c.gradient[:2] + (c.gradient[2] + sp.Rational(1, 10**9),) + c.gradient[3:])
    wrong_jacobian = replace(c, jacobian=RuleMatrix(4, i, k, o[i] * (1 - o[i]), -o[i] * o[k]))
    ex = c.example
    wrong_example = replace(c, example=replace(ex, gradient=(ex.gradient[0] + sp.Float("1e-15"),) + ex.gradient[1:]))
    wrong_loss = replace(c, example=replace(ex, loss=ex.loss * (1 + sp.Float("1e-12"))))
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_gradient))] == [False, True, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_jacobian))] == [True, False, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_example))] == [True, True, False]
    assert [x.passed for x in concrete.checks(replace(d, concrete=wrong_loss))] == [True, True, False]
    with pytest.raises(VerificationError, match="gradient for H = 4"):
        replace(d, concrete=wrong_gradient).check()


def _loss(logits, target):
    """E = sum_i [ln(1 + e^{-z_i}) + (1 - y_i) z_i]: the binary cross-entropy without 1 - sigma."""
    return mpmath.fsum(mpmath.log1p(mpmath.exp(-z)) + (1 - t) * z for z, t in zip(logits, target))


def _random_inputs(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    logits = [f"{rng.uniform(-6, 6):.6f}" for _ in range(n)]
    target = [rng.choice(["0", "1", f"{rng.random():.4f}"]) for _ in range(n)]
    return n, logits, target


@pytest.mark.parametrize("n, logits, target", [_random_inputs(s) for s in range(4)] + [(3, ["1000", "0", "-1000"], ["0", "1", "1"]), (3, ["40", "-3", "2"], ["0", "0", "0"])])
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
        assert abs(_loss(zs, ts) - mpmath.mpf(str(ex.loss))) < 1e-9 * max(1, abs(_loss(zs, ts)))
    assert all(c.passed for c in d.check().checks)


def test_multi_label_target_needs_no_normalisation():
    d = derive.derivation(NAME, classes=3, target=["1", "1", "0"])
    ex = d.concrete.example
    assert [float(g) for g in ex.gradient] == pytest.approx([-0.5, -0.25, 0.5])
    md = derive.render(d, "md")
    assert "does not sum to one" not in md


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": 3, "target": ["1.5", "0", "0"]}, "between 0 and 1"),
        ({"classes": 3, "target": ["-0.1", "0", "0"]}, "between 0 and 1"),
        ({"classes": 3, "target": ["1", "0"]}, "needs 3 numbers"),
        ({"classes": 3, "target": ["1", "x", "0"]}, "not a number"),
        ({"classes": 3, "logits": ["1001", "0", "0"]}, "between -1000 and 1000"),
        ({"classes": 3, "logits": ["1", "nan", "0"]}, "finite"),
        ({"target": ["1", "0", "0"]}, "^--target needs --classes"),
        ({"classes": 0}, "at least 1"),
    ],
)
def test_bad_input_raises_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        derive.derivation(NAME, **kwargs)


def test_command_line_bad_target_is_one_line_exit_2():
    result = CliRunner().invoke(app, [NAME, "--classes", "2", "--target", "2,0", "-o", "-"])
    assert result.exit_code == 2
    assert "between 0 and 1" in result.output and "Traceback" not in result.output


# --- documents ------------------------------------------------------------------------------------
def test_command_line_renders_every_text_format(tmp_path):
    for fmt in ("md", "tex", "json"):
        out = tmp_path / f"doc.{fmt}"
        result = CliRunner().invoke(app, [NAME, "--classes", "3", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 1000
    md = (tmp_path / "doc.md").read_text()
    assert r"\frac{1 - y_i}{1 - o_i}" in md and "canonical link of the Bernoulli likelihood" in md
    assert "| 2 | $`\\ln 3 \\approx 1.0986`$ | $`0.75`$ | $`0`$ | $`0.75`$ |" in md
    tex = (tmp_path / "doc.tex").read_text()
    assert r"\begin{cases}" in tex


def test_json_example_keys():
    doc = json.loads(derive.render(derive.derivation(NAME, classes=3, target=["1", "0", "1"]), "json"))
    assert doc["name"] == NAME and doc["classes"] == 3 and doc["assumptions"] == [] and doc["general"] is None
    assert set(doc["example"]) == {"logits", "probabilities", "target", "loss", "gradient"}
    assert doc["example"]["target"] == [1.0, 0.0, 1.0]
    assert doc["example"]["gradient"] == pytest.approx([-0.5, 0.75, -0.5])
    assert [s["rule"] for s in doc["steps"]] == RULES
    assert all(c["passed"] for c in doc["checks"])


def test_pdf_builds():
    if not shutil.which("pdflatex"):
        pytest.skip("TeX Live is not installed")
    pdf = derive.render(derive.derivation(NAME, classes=3), "pdf")
    assert pdf.startswith(b"%PDF")
