"""gelu: the exact form x Phi(x) with the error function, and the tanh approximation
(--approximate tanh), each from its spec file through the planner. The language's erf, the
rule of its derivative, every step verified, planted errors caught, the worked example against
the known derivative Phi(x) + x phi(x), bad input, and the documents."""

import json
import random
from dataclasses import replace

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import fieldcheck, planner
from derive.cli import app
from derive.errors import UsageError, VerificationError
from derive.lang import parse_definition

x, g, Phi = sp.IndexedBase("x"), sp.IndexedBase("g"), sp.IndexedBase("Phi")


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation("gelu")


# --- the language ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["y = erf(u/sqrt(2))", r"y = \operatorname{erf}\left(\frac{u}{\sqrt{2}}\right)", r"y = \mathrm{erf}(u / \sqrt{2})", r"y = \mathrm{erf} \frac{u}{\sqrt{2}}"])
def test_erf_in_both_spellings(text):
    u = sp.Symbol("u")
    _, value = parse_definition(text)
    assert sp.simplify(value - sp.erf(u / sp.sqrt(2))) == 0


@pytest.mark.parametrize("text", [r"y = \erf(u)", "y = erfc(u)", "y = erfu"])
def test_what_is_not_erf_is_refused(text):
    with pytest.raises(UsageError):
        parse_definition(text)


# --- the exact form -------------------------------------------------------------------------------
def test_the_steps_and_the_known_result(symbolic):
    rules = [s.rule for s in symbolic.steps]
    assert rules.index("product_rule") < rules.index("erf_derivative") and rules[-1] == "common_factor"
    k = symbolic.setting.wrt.indices[0]
    density = sp.exp(-x[k] ** 2 / 2) / sp.sqrt(2 * sp.pi)
    assert sp.simplify(symbolic.result.rhs - g[k] * (Phi[k] + x[k] * density)) == 0
    step = next(s for s in symbolic.steps if s.rule == "erf_derivative")
    u = step.identity.lhs.variables[0]
    assert sp.simplify(step.identity.rhs - 2 / sp.sqrt(sp.pi) * sp.exp(-(u**2))) == 0


def test_every_step_verifies(symbolic):
    report = symbolic.check()
    assert report.passed
    whats = [c.what for c in report.checks]
    for n, step in enumerate(symbolic.steps, 1):
        assert whats.count(f"step {n} ({step.rule})") == 3  # exact, numeric and at larger H
    assert any(c.what == "the result" and "finite differences" in c.method for c in report.checks)


def test_the_document_states_the_known_derivative(symbolic):
    md = derive.render(symbolic, "md")
    assert r"\Phi(x) + x \varphi(x)" in md and r"\mathrm{erf}\left(\frac{x_i}{\sqrt{2}}\right)" in md
    assert r"\frac{x_k}{\sqrt{2 \pi}} e^{-\frac{1}{2} x_k^{2}}" in md


# --- planted errors -------------------------------------------------------------------------------
def _with_rule(monkeypatch, name, rule):
    table = tuple((n, rule if n == name else r) for n, r in planner.DERIVATIVE_RULES)
    monkeypatch.setattr(planner, "DERIVATIVE_RULES", table)


def _erf_without_root_pi(p, node):
    """erf' = 2 e^{-u^2}: the 1/sqrt(pi) forgotten."""
    built = planner.erf_derivative(p, node)
    return built and replace(built, new=built.new * sp.sqrt(sp.pi))


def _erf_wrong_exponent(p, node):
    """erf' = 2/sqrt(pi) e^{-u^2/2}: the density of the normal distribution mixed up with it."""
    built = planner.erf_derivative(p, node)
    return built and replace(built, new=built.new.replace(lambda e: isinstance(e, sp.exp), lambda e: sp.exp(e.args[0] / 2)))


@pytest.mark.parametrize("wrong", [_erf_without_root_pi, _erf_wrong_exponent])
def test_a_wrong_erf_rule_fails_verification(monkeypatch, wrong):
    _with_rule(monkeypatch, "erf_derivative", wrong)
    d = derive.derivation("gelu")
    assert "erf_derivative" in {s.rule for s in d.steps}
    with pytest.raises(VerificationError, match="erf_derivative"):
        d.check()


def test_a_wrong_result_is_caught(symbolic):
    from derive import verify

    k = symbolic.setting.wrt.indices[0]
    wrong = replace(symbolic.steps[-1], rhs=g[k] * (Phi[k] + x[k] * sp.exp(-x[k] ** 2 / 2) / sp.sqrt(sp.pi)))
    broken = replace(symbolic, steps=symbolic.steps[:-1] + (wrong,))
    assert not verify._finite_differences(broken, verify.Instances(symbolic.setting)).passed
    with pytest.raises(VerificationError):
        broken.check()


def test_the_field_check_knows_erf():
    """erf is an atom of the exact check, with its derivative by the chain rule: the right
    derivative agrees, a wrong one does not."""
    d = derive.derivation("gelu")
    setting, k = d.setting, d.setting.wrt.indices[0]
    u = x[k] / sp.sqrt(2)
    lhs = sp.Derivative(sp.erf(u), x[k])
    sizes, index = {setting.classes: 4}, {k: 2}
    assert fieldcheck.agree(setting, lhs, sp.sqrt(2) / sp.sqrt(sp.pi) * sp.exp(-x[k] ** 2 / 2), sizes, index, (), "erf")
    assert not fieldcheck.agree(setting, lhs, 2 / sp.sqrt(sp.pi) * sp.exp(-x[k] ** 2 / 2), sizes, index, (), "erf")
    assert not fieldcheck.agree(setting, sp.erf(x[k]), sp.erf(2 * x[k]), sizes, index, (), "erf")


# --- the worked example ---------------------------------------------------------------------------
def _known(values_g, values_x):
    """g (Phi(x) + x phi(x)), computed here with mpmath's erf and nothing of the derivation."""
    with mpmath.workdps(40):
        out = []
        for gi, xi in zip(values_g, values_x):
            gi, xi = mpmath.mpf(str(gi)), mpmath.mpf(str(xi))
            cdf = (1 + mpmath.erf(xi / mpmath.sqrt(2))) / 2
            pdf = mpmath.exp(-xi**2 / 2) / mpmath.sqrt(2 * mpmath.pi)
            out.append(gi * (cdf + xi * pdf))
        return out


def test_the_worked_example_is_the_known_derivative():
    d = derive.derivation("gelu", classes=3)
    ex = json.loads(derive.render(d, "json"))["example"]
    gs, xs = ex["values"]["g"], ex["values"]["x"]
    assert len(set(gs)) == 3 and len(set(xs)) == 3 and set(gs) != {1}  # an upstream gradient that is not all ones
    assert ex["gradient"] == pytest.approx([float(v) for v in _known(gs, xs)], rel=1e-12)


@pytest.mark.parametrize("seed", range(2))
def test_our_numbers(seed):
    rng = random.Random(seed)
    xs = [round(rng.uniform(-4, 4), 3) for _ in range(4)]
    gs = [round(rng.uniform(-2, 2), 3) for _ in range(4)]
    d = derive.derivation("gelu", classes=4, let=[f"x={','.join(map(str, xs))}", f"g={','.join(map(str, gs))}"])
    ex = json.loads(derive.render(d, "json"))["example"]
    assert ex["gradient"] == pytest.approx([float(v) for v in _known(gs, xs)], rel=1e-12)
    assert d.check().passed


# --- the tanh approximation -----------------------------------------------------------------------
def test_the_tanh_approximation():
    d = derive.derivation("gelu", classes=3, approximate="tanh")
    assert "tanh_derivative" in {s.rule for s in d.steps} and "erf_derivative" not in {s.rule for s in d.steps}
    assert d.check().passed
    ex = json.loads(derive.render(d, "json"))["example"]
    gs, xs = ex["values"]["g"], ex["values"]["x"]
    c = mpmath.sqrt(2 / mpmath.pi)
    with mpmath.workdps(40):
        for gi, xi, got in zip(gs, xs, ex["gradient"]):
            xi = mpmath.mpf(str(xi))
            t = mpmath.tanh(c * (xi + mpmath.mpf("0.044715") * xi**3))
            known = mpmath.mpf(str(gi)) * (0.5 * (1 + t) + 0.5 * xi * (1 - t**2) * c * (1 + 3 * mpmath.mpf("0.044715") * xi**2))
            assert got == pytest.approx(float(known), rel=1e-12)
        # the approximation is close to the exact form, not equal to it
        exact = _known(gs, xs)
        assert all(abs(a - b) < 1e-2 and a != b for a, b in zip(ex["gradient"], exact))
    assert derive.derivation("gelu", approximate="none").steps == derive.derivation("gelu").steps


def test_a_bad_approximation_is_refused():
    with pytest.raises(UsageError, match="takes none or tanh"):
        derive.derivation("gelu", approximate="sigmoid")
    result = CliRunner().invoke(app, ["gelu", "--approximate", "erf", "-o", "-"])
    assert result.exit_code == 2 and "takes none or tanh" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["md", "tex", "json", "html"])
def test_every_format(tmp_path, fmt):
    out = tmp_path / f"gelu.{fmt}"
    result = CliRunner().invoke(app, ["gelu", "--classes", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
