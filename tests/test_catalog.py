"""The Jacobian derivations of the catalog: rule sequences, every step verified, planted errors
caught, worked examples against finite differences, bad input."""

import json
from dataclasses import replace

import mpmath
import pytest
import sympy as sp

import derive
from derive import verify
from derive.concrete import checks, jacobian_example_check
from derive.errors import UsageError, VerificationError
from derive.model import Case, RuleMatrix
from derive.symbols import i, k, o

EXPECTED_RULES = {
    "softmax": [
        "definition",
        "quotient_rule",
        "sum_rule",
        "exp_derivative",
        "sifting",
        "split_fraction",
        "outputs",
        "common_factor",
        "delta_cases",
    ],
    "log-softmax": ["chain_rule", "log_derivative", "softmax_jacobian", "algebra", "delta_cases"],
}
RESULTS = {
    "softmax": o[i] * (sp.KroneckerDelta(i, k) - o[k]),
    "log-softmax": sp.KroneckerDelta(i, k) - o[k],
}
CASES = {
    "softmax": {sp.Eq: o[i] * (1 - o[i]), sp.Ne: -o[i] * o[k]},
    "log-softmax": {sp.Eq: 1 - o[i], sp.Ne: -o[k]},
}
NAMES = list(EXPECTED_RULES)


@pytest.fixture(scope="module", params=NAMES)
def symbolic(request):
    return derive.derivation(request.param)


@pytest.fixture(scope="module")
def report(symbolic):
    return symbolic.check()


def test_catalog_lists_the_jacobians():
    from derive.derivations import CATALOG

    for name in NAMES:
        assert name in derive.catalog()
        assert "Jacobian" in CATALOG[name].description


def test_rule_sequence(symbolic):
    assert [s.rule for s in symbolic.steps] == EXPECTED_RULES[symbolic.name]


def test_rules_are_in_the_vocabulary(symbolic):
    from derive.rules import RULES

    assert {s.rule for s in symbolic.steps} <= set(RULES)


def test_result(symbolic):
    assert sp.expand(symbolic.result.rhs - RESULTS[symbolic.name]) == 0
    assert symbolic.assumptions == () and symbolic.pitfall is None and symbolic.general is None


def test_steps_form_a_chain(symbolic):
    assert symbolic.steps[0].lhs == symbolic.subject
    for a, b in zip(symbolic.steps, symbolic.steps[1:]):
        assert b.lhs == a.rhs


def test_case_split(symbolic):
    last = symbolic.steps[-1]
    assert last.rule == "delta_cases" and last.lhs == last.rhs
    assert last.identity.lhs == symbolic.subject
    values = {type(c.condition): c.value for c in last.cases}
    assert set(values) == {sp.Eq, sp.Ne}
    for kind, value in CASES[symbolic.name].items():
        assert sp.expand(values[kind] - value) == 0


def test_every_step_verifies(symbolic, report):
    assert report.passed
    whats = [c.what for c in report.checks]
    for n, step in enumerate(symbolic.steps, 1):
        assert whats.count(f"step {n} ({step.rule})") == 3  # exact, numeric and at larger H
        if step.cases and step.identity is not None:
            assert f"step {n} ({step.rule}): the cases" in whats
    exact = [c for c in report.checks if c.method.startswith("exact")]
    assert exact and all("every i, k" in c.method for c in exact)
    assert any(c.what == "the result" and "finite differences" in c.method for c in report.checks)


def test_the_derivative_of_the_exponential_uses_the_sifting_property():
    d = derive.derivation("softmax")
    sift = next(s for s in d.steps if s.rule == "sifting")
    j = sp.Symbol("j", integer=True, positive=True)
    assert sift.identity.lhs.has(sp.KroneckerDelta(j, k))
    assert not sift.rhs.has(sp.KroneckerDelta(j, k))


# --- planted errors -------------------------------------------------------------------------------
def _catches(d, n, rhs):
    step = replace(d.steps[n], rhs=rhs)
    cases = verify.Instances(d.setting)
    return verify._exact(cases, step, n + 1), verify._numeric(cases, step, n + 1)


@pytest.mark.parametrize("name, n", [("softmax", 1), ("softmax", 5), ("softmax", 7), ("log-softmax", 1), ("log-softmax", 3)])
def test_flipped_sign_is_caught(name, n):
    d = derive.derivation(name)
    exact, numeric = _catches(d, n, -d.steps[n].rhs)
    assert not exact.passed and "lhs - rhs" in exact.detail and "i = " in exact.detail
    assert not numeric.passed


@pytest.mark.parametrize("name, n", [("softmax", 3), ("softmax", 7), ("log-softmax", 3)])
def test_dropped_delta_is_caught(name, n):
    d = derive.derivation(name)
    wrong = d.steps[n].rhs.xreplace({sp.KroneckerDelta(i, k): 0})
    assert wrong != d.steps[n].rhs
    exact, numeric = _catches(d, n, wrong)
    assert not exact.passed


@pytest.mark.parametrize("name", NAMES)
def test_dropped_case_is_caught(name):
    d = derive.derivation(name)
    last = d.steps[-1]
    for kept in last.cases:
        check = verify._cases(d.setting, replace(last, cases=(kept,)), len(d.steps))
        assert not check.passed and "no case covers" in check.detail


@pytest.mark.parametrize("name", NAMES)
def test_wrong_case_is_caught(name):
    d = derive.derivation(name)
    last = d.steps[-1]
    eq, ne = last.cases
    for cases in ((Case(eq.condition, -eq.value), ne), (eq, Case(ne.condition, -ne.value))):
        check = verify._cases(d.setting, replace(last, cases=cases), len(d.steps))
        assert not check.passed and "is wrong" in check.detail


@pytest.mark.parametrize("name", NAMES)
def test_check_raises_on_a_planted_error(name):
    d = derive.derivation(name)
    last = d.steps[-1]
    broken = replace(d, steps=d.steps[:-1] + (replace(last, cases=last.cases[:1]),))
    with pytest.raises(VerificationError, match=r"the cases failed"):
        broken.check()
    steps = list(d.steps)
    steps[1] = replace(steps[1], rhs=-steps[1].rhs)
    steps[2] = replace(steps[2], lhs=steps[1].rhs)
    with pytest.raises(VerificationError, match=rf"step 2 \({steps[1].rule}\) failed \(exact"):
        replace(d, steps=tuple(steps)).check()


@pytest.mark.parametrize("name", NAMES)
def test_wrong_result_fails_finite_differences(name):
    d = derive.derivation(name)
    wrong = replace(d.steps[-1], rhs=d.steps[-1].rhs + o[k] * o[i])
    broken = replace(d, steps=d.steps[:-1] + (wrong,))
    assert not verify._finite_differences(broken, verify.Instances(d.setting)).passed


def test_finite_differences_written_out_where_the_evaluator_has_no_rule(monkeypatch):
    """Where the compiled evaluator has no rule, the function and the result are written out
    for each H instead; a wrong result still fails."""
    d = derive.derivation("softmax-ce")

    def no_rule(*args):
        raise TypeError("no rule")

    monkeypatch.setattr(verify, "_differences", no_rule)
    assert verify._finite_differences(d, verify.Instances(d.setting)).passed
    wrong = replace(d.steps[-1], rhs=d.steps[-1].rhs + o[k] * o[i])
    broken = replace(d, steps=d.steps[:-1] + (wrong,))
    assert not verify._finite_differences(broken, verify.Instances(d.setting)).passed


# --- concrete H -----------------------------------------------------------------------------------
EXACT = {
    "softmax": [[sp.Rational(4, 25), sp.Rational(-3, 25), sp.Rational(-1, 25)],
                [sp.Rational(-3, 25), sp.Rational(6, 25), sp.Rational(-3, 25)],
                [sp.Rational(-1, 25), sp.Rational(-3, 25), sp.Rational(4, 25)]],
    "log-softmax": [[sp.Rational(4, 5), sp.Rational(-3, 5), sp.Rational(-1, 5)],
                    [sp.Rational(-1, 5), sp.Rational(2, 5), sp.Rational(-1, 5)],
                    [sp.Rational(-1, 5), sp.Rational(-3, 5), sp.Rational(4, 5)]],
}


@pytest.mark.parametrize("name", NAMES)
def test_our_example_for_three_classes(name):
    d = derive.derivation(name, classes=3)
    ex = d.concrete.example
    assert ex.probabilities == (sp.Rational(1, 5), sp.Rational(3, 5), sp.Rational(1, 5))
    assert [list(row) for row in ex.jacobian] == EXACT[name]
    assert d.concrete.loss is None and d.concrete.gradient is None
    report = d.check()
    whats = [c.what for c in report.checks]
    assert "the Jacobian for H = 3" in whats and "the worked example" in whats
    assert not any(w.startswith("the gradient") for w in whats)


@pytest.mark.parametrize("name", NAMES)
def test_rule_matrix_entries(name):
    jac = derive.derivation(name, classes=4).concrete.jacobian
    assert jac.shape == (4, 4)
    m = sp.Matrix(4, 4, lambda r, c: RESULTS[name].xreplace({i: r + 1, k: c + 1}))
    assert sp.expand(jac.as_matrix() - m) == sp.zeros(4, 4)


def _function(name, logits, r):
    from derive.concrete import log_sum_exp

    lse = log_sum_exp(logits)
    return mpmath.exp(logits[r] - lse) if name == "softmax" else logits[r] - lse


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("logits", [["1000", "0", "-1000"], ["0.5", "-1.25", "3"], ["2", "1", "0.1", "-7"], None])
def test_examples_agree_with_finite_differences(name, logits):
    n = 5 if logits is None else len(logits)
    d = derive.derivation(name, classes=n, logits=logits)
    ex = d.concrete.example
    with mpmath.workdps(60):
        zs = [mpmath.mpf(str(sp.N(v, 60))) for v in ex.logits]
        h = mpmath.mpf("1e-20")
        for c in range(n):
            up, down = list(zs), list(zs)
            up[c] += h
            down[c] -= h
            for r in range(n):
                numeric = (_function(name, up, r) - _function(name, down, r)) / (2 * h)
                assert abs(numeric - mpmath.mpf(str(sp.N(ex.jacobian[r][c], 40)))) < 1e-9, (r, c)
    d.check()


@pytest.mark.parametrize("name", NAMES)
def test_planted_concrete_errors_are_caught(name):
    d = derive.derivation(name, classes=4)
    assert all(c.passed for c in checks(d))
    jac = d.concrete.jacobian
    wrong = replace(d.concrete, jacobian=RuleMatrix(jac.size, jac.row, jac.col, -jac.diagonal, jac.off))
    failed = checks(replace(d, concrete=wrong))
    assert not failed[0].passed and "(1, 1)" in failed[0].detail
    with pytest.raises(VerificationError, match="Jacobian"):
        replace(d, concrete=wrong).check()
    ex = d.concrete.example
    rows = [list(row) for row in ex.jacobian]
    rows[1][2] = -rows[1][2]
    bad = jacobian_example_check(replace(ex, jacobian=tuple(map(tuple, rows))), name)
    assert not bad.passed and "(2, 3)" in bad.detail


@pytest.mark.parametrize("name", NAMES)
def test_json_example_keys(name):
    doc = json.loads(derive.render(derive.derivation(name, classes=3), "json"))
    assert doc["name"] == name and doc["classes"] == 3
    assert set(doc["example"]) == {"logits", "jacobian"}
    for row, exact in zip(doc["example"]["jacobian"], EXACT[name]):
        assert row == pytest.approx([float(v) for v in exact])
    assert doc["assumptions"] == [] and doc["general"] is None
    assert [s["rule"] for s in doc["steps"]] == EXPECTED_RULES[name]
    assert all(c["passed"] for c in doc["checks"])
    assert "example" not in json.loads(derive.render(derive.derivation(name), "json"))


@pytest.mark.parametrize("name", NAMES)
def test_markdown_shows_the_cases_and_the_example_matrix(name):
    md = derive.render(derive.derivation(name, classes=3), "md")
    assert r"\begin{cases}" in md and "## Appendix" in md and "## Verification" in md
    assert "## The pitfall" not in md and "## Assumptions" not in md and "The error written out" not in md
    assert "0.16 & -0.12 & -0.04" in md if name == "softmax" else "0.8 & -0.6 & -0.2" in md


def test_large_h_is_elided():
    md = derive.render(derive.derivation("softmax", classes=20), "md")
    assert r"\ddots" in md and "o_{20}" in md and "o_{10}" not in md


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": 3, "target": ["1", "0", "0"]}, "takes no --target.*belongs to a loss"),
        ({"target": ["1", "0", "0"]}, "takes no --target"),
        ({"logits": ["1", "2"]}, "needs --classes"),
        ({"classes": 0}, "at least 1"),
        ({"classes": "abc"}, "whole number"),
        ({"classes": 10**7}, "at most"),
        ({"classes": 3, "logits": ["1", "2"]}, "needs 3 numbers"),
        ({"classes": 3, "logits": ["1", "x", "2"]}, "not a number"),
        ({"classes": 3, "logits": ["1", "inf", "2"]}, "finite"),
    ],
)
def test_bad_parameters_raise_usage_errors(name, kwargs, message):
    with pytest.raises(UsageError, match=message):
        derive.derivation(name, **kwargs)


def test_command_line_writes_the_jacobian(tmp_path):
    from typer.testing import CliRunner

    from derive.cli import app

    result = CliRunner().invoke(app, ["log-softmax", "--classes", "3", "--format", "json", "-o", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["example"]["jacobian"][0] == pytest.approx([0.8, -0.6, -0.2])
    listed = CliRunner().invoke(app, ["list"]).stdout
    assert "softmax " in listed and "log-softmax " in listed


# --- --let on the entries built by modules: their --logits and --target by name ------------------
def test_let_names_the_logits_and_the_target_of_a_module_entry(tmp_path):
    """softmax-ce --let z=2,1,0.1 --let y=0,1,0 is --logits 2,1,0.1 --target 0,1,0, byte for
    byte; in Python a mapping does the same."""
    from typer.testing import CliRunner

    from derive.cli import app

    by_let, by_option = tmp_path / "let.md", tmp_path / "option.md"
    run = CliRunner().invoke(app, ["softmax-ce", "--classes", "3", "--let", "z=2,1,0.1", "--let", "y=0,1,0", "-o", str(by_let)])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(app, ["softmax-ce", "--classes", "3", "--logits", "2,1,0.1", "--target", "0,1,0", "-o", str(by_option)])
    assert run.exit_code == 0, run.output
    assert by_let.read_bytes() == by_option.read_bytes()
    d = derive.derivation("sse-linear", classes=3, let={"z": [2, 1, "0.1"]})
    assert d.concrete.example.logits == derive.derivation("sse-linear", classes=3, logits=[2, 1, "0.1"]).concrete.example.logits


@pytest.mark.parametrize(
    "name, let, message",
    [
        ("softmax", ["y=1,0,0"], "--let y: softmax takes --let for z (the logits), as in --let z=2,1,0.1"),
        ("mse-softmax", ["W=1"], "--let W: mse-softmax takes --let for z (the logits) and y (the target)"),
        ("softmax-ce", ["z=1,2,3", "z=1,2,3"], "--let z is given twice"),
        ("sse-linear", ["z=1,2"], "--let z needs 3 numbers, one per class, but got 2"),
    ],
)
def test_a_bad_let_on_a_module_entry_is_a_usage_error(name, let, message):
    with pytest.raises(UsageError) as error:
        derive.derivation(name, classes=3, let=let)
    assert str(error.value).startswith(message)


def test_let_and_the_option_for_the_same_numbers_are_refused():
    with pytest.raises(UsageError, match="--let z and --logits give the same numbers: give one"):
        derive.derivation("softmax-ce", classes=3, let=["z=1,2,3"], logits=[1, 2, 3])
    with pytest.raises(UsageError, match="^--let z needs --classes"):
        derive.derivation("softmax-ce", let=["z=1,2,3"])
