"""Your own derivation: definitions in index notation, planned into named steps, verified.

The examples are those of the README's "Your own derivation"; each expected result is written in
the same language and compared with the planned result at random points (H = 5, M = 3, D = 2),
and every plan is verified as the catalog's derivations are.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from dataclasses import replace

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import planner
from derive.cli import app
from derive.derivations.naming import file_stem
from derive.errors import UsageError, VerificationError
from derive.lang import parse_expression, size_symbol
from derive.numeric import at_random

SOFTMAX = "o_i = exp(z_i)/sum_j exp(z_j)"
NORMALISED = "sum_i y_i = 1"
CE = "E = -sum_i y_i*ln(o_i)"
HIDDEN = (CE, SOFTMAX, "z_i = sum_m W_im*h_m + b_i", "h_m = sigmoid(sum_d V_md*x_d)")

# name: (definitions, wrt, assumptions, expected result in the language)
EXAMPLES = {
    "softmax-ce": ((CE, SOFTMAX), "z_k", (NORMALISED,), "o_k - y_k"),
    "softmax-ce-latex": (
        (r"E = -\sum_{i=1}^{H} y_i \ln o_i", r"o_i = \frac{e^{z_i}}{\sum_{j=1}^{H} e^{z_j}}"),
        "z_k",
        (r"\sum_{i=1}^{H} y_i = 1",),
        "o_k - y_k",
    ),
    "focal": (
        ("E = -sum_i y_i*(1 - o_i)^gamma*ln(o_i)", SOFTMAX),
        "z_k",
        (NORMALISED,),
        "o_k*sum_i y_i*o_i*((1 - o_i)^gamma/o_i - gamma*(1 - o_i)^(gamma - 1)*ln(o_i))"
        " - o_k*y_k*((1 - o_k)^gamma/o_k - gamma*(1 - o_k)^(gamma - 1)*ln(o_k))",
    ),
    "kl": (("E = sum_i y_i*ln(y_i/o_i)", SOFTMAX), "z_k", (NORMALISED,), "o_k - y_k"),
    "tanh-sse": (("E = 1/2*sum_i (o_i - y_i)^2", "o_i = tanh(z_i)"), "z_k", (), "(o_k - y_k)*(1 - o_k^2)"),
    "log-sum-exp": (("E = ln(sum_j exp(z_j))",), "z_k", (), "exp(z_k)/sum_j exp(z_j)"),
    "log-softmax": (("l_i = z_i - ln(sum_j exp(z_j))",), "z_k", (), "delta(i, k) - exp(z_k)/sum_j exp(z_j)"),
    "bce": (("E = -sum_i (y_i*ln(o_i) + (1 - y_i)*ln(1 - o_i))", "o_i = sigmoid(z_i)"), "z_k", (), "o_k - y_k"),
    "temperature": ((CE, "o_i = exp(z_i/T)/sum_j exp(z_j/T)"), "z_k", (NORMALISED,), "(o_k - y_k)/T"),
    "batch-mean": (
        ("E = -1/N*sum_n sum_i y_ni*ln(o_ni)", "o_ni = exp(z_ni)/sum_j exp(z_nj)"),
        "z_nk",
        ("sum_i y_ni = 1",),
        "(o_nk - y_nk)/N",
    ),
    "hidden-V": (HIDDEN, "V_md", (NORMALISED,), "h_m*(1 - h_m)*x_d*sum_i (o_i - y_i)*W_im"),
    "hidden-W": (HIDDEN, "W_km", (NORMALISED,), "(o_k - y_k)*h_m"),
    "weight-decay": (
        ("E = -sum_i y_i*ln(o_i) + lambda/2*sum_k sum_d W_kd^2", SOFTMAX, "z_i = sum_d W_id*x_d + b_i"),
        "W_kd",
        (NORMALISED,),
        "x_d*(o_k - y_k) + lambda*W_kd",
    ),
}
"""The log-softmax expectation uses delta(i, k), which the language does not have: it is built
by hand below."""

SIZES = {size_symbol("H"): 5, size_symbol("M"): 3, size_symbol("D"): 2, size_symbol("N"): 3}


def expected(text: str) -> sp.Expr:
    if "delta(i, k)" in text:
        i, k = (sp.Symbol(n, integer=True, positive=True) for n in "ik")
        return sp.KroneckerDelta(i, k) + parse_expression(text.replace("delta(i, k)", "0"))
    return parse_expression(text)


@pytest.fixture(scope="module")
def built() -> dict[str, derive.Derivation]:
    return {name: derive.grad(*defs, wrt=wrt, assume=list(assume)) for name, (defs, wrt, assume, _) in EXAMPLES.items()}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_example_is_planned_verified_and_reaches_its_result(built, name):
    d = built[name]
    report = d.check()
    assert report.passed and len(report.checks) > len(d.steps)
    want = expected(EXAMPLES[name][3])
    rng = random.Random(name)
    with mpmath.workdps(40):
        for _ in range(3):
            index = {s: rng.randint(1, 2) for s in d.setting.indices}
            got, wanted = at_random(d.setting, [d.result.rhs, want], SIZES, index, [a.key for a in d.assumptions], rng)
            assert abs(got - wanted) < mpmath.mpf(10) ** -25 * max(1, abs(wanted)), (name, got, wanted)


def test_softmax_ce_by_hand_takes_the_seeds_steps(built):
    """Typed by hand, in either spelling, softmax-CE gets the catalog's steps in the seed's order:
    sum rule, constant factor, chain rule, log, the Jacobian with its cases, split sum, ... ."""
    catalog = derive.derivation("softmax-ce")
    for name in ("softmax-ce", "softmax-ce-latex"):
        d = built[name]
        assert [s.rule for s in d.steps] == [s.rule for s in catalog.steps]
        assert [s.rhs for s in d.steps] == [s.rhs for s in catalog.steps]
        assert [s.labels for s in d.steps] == [s.labels for s in catalog.steps]
        assert d.general.rhs == catalog.general.rhs


def test_the_chain_rule_sums_over_every_intermediate(built):
    """The lesson of the seed question: through a hidden layer, d o_i / d V_md is a sum over
    every logit z_j, never the diagonal term alone."""
    rules = [s.rule for s in built["hidden-V"].steps]
    assert rules.count("chain_rule_sum") == 2
    step = next(s for s in built["hidden-V"].steps if s.rule == "chain_rule_sum")
    assert step.rhs.atoms(sp.Sum) - step.lhs.atoms(sp.Sum)


def test_assumptions_come_last_after_the_general_form(built):
    for name in ("softmax-ce", "kl", "temperature", "batch-mean", "hidden-V", "weight-decay"):
        d = built[name]
        used = [n for n, s in enumerate(d.steps) if s.assumptions]
        assert used, name
        assert all(not s.rhs.has(sp.Derivative) for s in d.steps[used[0] :]), name
        assert d.general is not None and d.general.rhs != d.result.rhs


def test_a_clashing_summation_index_is_renamed():
    d = derive.grad("E = -sum_i y_i*ln(o_i) + lambda/2*sum_k sum_d W_kd^2", SOFTMAX, "z_i = sum_d W_id*x_d + b_i", wrt="W_kd", assume=[NORMALISED])
    first = d.definitions[0].value
    bound = {lim[0].name for s in first.atoms(sp.Sum) for lim in s.limits}
    assert bound.isdisjoint({"k", "d"}) and "d'" in bound


# --- every format, and the worked example ------------------------------------------------------
@pytest.fixture(scope="module")
def concrete() -> derive.Derivation:
    return derive.grad(*HIDDEN, wrt="V_md", assume=[NORMALISED], classes=3)


def test_the_worked_example_has_every_value_and_a_gradient_shaped_like_the_variable(concrete):
    data = json.loads(derive.render(concrete, "json"))
    example = data["example"]
    assert set(example["values"]) == {"x", "y", "z"} - {"z"} | {"V", "W", "b"} | {"x", "y"}
    assert example["sizes"] == {"H": 3, "M": 2, "D": 2}
    assert len(example["gradient"]) == 2 and all(len(row) == 2 for row in example["gradient"])
    assert example["values"]["y"] == [1.0, 0.0, 0.0]
    flat = [v for row in example["values"]["V"] for v in row]
    assert len(set(flat)) == len(flat), "default weights are distinct"
    assert concrete.check().checks[-1].what == "the worked example"


def test_let_gives_a_leaf_its_numbers_and_a_wrong_count_is_refused():
    d = derive.grad(CE, SOFTMAX, wrt="z_k", assume=[NORMALISED], classes=3, let={"z": [2, 1, 0.1], "y": [0, 1, 0]})
    data = json.loads(derive.render(d, "json"))["example"]
    assert data["values"]["z"] == [2.0, 1.0, 0.1]
    o = data["defined"]["o"]
    assert data["gradient"] == pytest.approx([o[0], o[1] - 1, o[2]], abs=1e-12)
    with pytest.raises(UsageError, match="needs 3 numbers"):
        derive.grad(CE, SOFTMAX, wrt="z_k", classes=3, let={"z": [1, 2]})
    with pytest.raises(UsageError, match="no such given quantity"):
        derive.grad(CE, SOFTMAX, wrt="z_k", classes=3, let={"q": [1, 2, 3]})


def test_a_target_that_does_not_sum_to_one_gets_the_general_form():
    d = derive.grad(CE, SOFTMAX, wrt="z_k", assume=[NORMALISED], classes=3, let={"y": [0.5, 0.25, 0.5]})
    assert d.worked.general and d.worked.failed == ("normalised",)
    d.check()


@pytest.mark.parametrize("fmt", ["md", "tex", "json", "html"])
def test_every_format(concrete, fmt):
    text = derive.render(concrete, fmt)
    assert "V_{md}" in text or "V_md" in text or "V" in text
    assert "worked example" in text.lower() or fmt == "json"


def test_pdf(concrete, pdflatex):
    pdf = derive.render(concrete, "pdf")
    assert pdf.startswith(b"%PDF")


def test_justifications_speak_of_their_own_terms(built):
    md = derive.render(built["focal"], "md")
    assert "The target" not in md.split("## The derivation")[1].split("## Result")[0]
    assert r"\gamma" in md
    d = built["hidden-V"]
    text = derive.render(d, "md")
    assert "through every entry" in text and r"$`h_{m'}`$" in text or "h_{m'}" in text


# --- a wrong rule is caught ---------------------------------------------------------------------
def _with_rule(monkeypatch, name: str, rule) -> None:
    table = tuple((n, rule if n == name else r) for n, r in planner.DERIVATIVE_RULES)
    monkeypatch.setattr(planner, "DERIVATIVE_RULES", table)


def _wrong_log(p, node):
    built = planner.log_derivative(p, node)
    return built and replace(built, new=built.new * 2)


def _wrong_jacobian(p, node):
    built = planner.softmax_jacobian(p, node)
    return built and replace(built, new=built.new.xreplace({sp.Integer(-1): sp.Integer(1)}))


def _diagonal_only(p, node):
    """The seed question's mistake: the chain rule through the diagonal term alone."""
    built = planner.chain_rule_sum(p, node)
    if built is None:
        return None
    s = built.new
    idx = s.limits[0][0]
    f = node.expr
    return replace(built, new=s.function.xreplace({idx: f.indices[0]}))


def _dropped_factor(p, node):
    built = planner.constant_factor(p, node)
    return built and replace(built, new=built.new.args[-1])


def _wrong_sigmoid(p, node):
    built = planner.sigmoid_derivative(p, node)
    return built and replace(built, new=built.new.xreplace({sp.Integer(-1): sp.Integer(1)}))


def _wrong_elementwise(p, node):
    """The diagonal put everywhere: the Kronecker delta of the elementwise Jacobian dropped."""
    built = planner.elementwise_jacobian(p, node)
    return built and replace(built, new=built.new.xreplace({d: sp.Integer(1) for d in built.new.atoms(sp.KroneckerDelta)}))


def _wrong_power(p, node):
    built = planner.power_rule(p, node)
    return built and replace(built, new=built.new * node.expr.exp)


@pytest.mark.parametrize(
    "rule, wrong, example",
    [
        ("log_derivative", _wrong_log, "softmax-ce"),
        ("softmax_jacobian", _wrong_jacobian, "softmax-ce"),
        ("chain_rule_sum", _diagonal_only, "hidden-W"),
        ("constant_factor", _dropped_factor, "bce"),
        ("sigmoid_derivative", _wrong_sigmoid, "hidden-V"),
        ("elementwise_jacobian", _wrong_elementwise, "bce"),
        ("elementwise_jacobian", _wrong_elementwise, "tanh-sse"),
        ("power_rule", _wrong_power, "tanh-sse"),
    ],
)
def test_a_planted_wrong_rule_is_caught(monkeypatch, rule, wrong, example):
    defs, wrt, assume, _ = EXAMPLES[example]
    _with_rule(monkeypatch, rule, wrong)
    d = derive.grad(*defs, wrt=wrt, assume=list(assume))
    assert rule in {s.rule for s in d.steps}
    with pytest.raises(VerificationError):
        d.check()


def test_a_wrong_sifting_is_caught(monkeypatch):
    def wrong(p, node):
        built = planner.sifting(p, node)
        if built is None:
            return None
        return replace(built, new=built.new + sp.Integer(1))

    table = tuple((n, wrong if n == "sifting" else r) for n, r in planner.ALGEBRA_RULES)
    monkeypatch.setattr(planner, "ALGEBRA_RULES", table)
    defs, wrt, assume, _ = EXAMPLES["tanh-sse"]
    d = derive.grad(*defs, wrt=wrt, assume=list(assume))
    with pytest.raises(VerificationError):
        d.check()


def test_no_rule_names_the_sub_expression():
    with pytest.raises(derive.DeriveError, match=r"no rule applies to the derivative of z_i\^z_i by z_k") as error:
        derive.grad("E = sum_i z_i^z_i", wrt="z_k")
    assert error.value.exit_code == 1


# --- the command line ------------------------------------------------------------------------------
def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derive", "grad", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_command_writes_a_verified_document(tmp_path):
    out = tmp_path / "ce.md"
    done = run(CE, SOFTMAX, "--wrt", "z_k", "--assume", NORMALISED, "--classes", "3", "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert r"\boxed{\frac{\partial E}{\partial z_k} = o_k - y_k}" in text
    again = tmp_path / "again.md"
    run(CE, SOFTMAX, "--wrt", "z_k", "--assume", NORMALISED, "--classes", "3", "-o", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_a_spec_file(tmp_path):
    spec = tmp_path / "focal.toml"
    spec.write_text(
        'name = "my-focal"\n'
        'definitions = ["E = -sum_i y_i*(1 - o_i)^gamma*ln(o_i)", "o_i = softmax(z)_i"]\n'
        'wrt = "z_k"\nassume = ["sum_i y_i = 1"]\n[let]\ngamma = 0\n'
    )
    done = run("--spec", str(spec), "--classes", "3", "-f", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "output" / "my-focal-3.json").read_text())
    o, y = data["example"]["defined"]["o"], data["example"]["values"]["y"]
    # gamma = 0 is cross-entropy: the gradient is o - y.
    assert data["example"]["gradient"] == pytest.approx([a - b for a, b in zip(o, y)], abs=1e-12)
    spec.write_text('definitions = ["E = z_k"]\nwrt = "z_k"\ncolour = "red"\n')
    bad = run("--spec", str(spec), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown key 'colour'" in bad.stderr


FOCAL = 'definitions = ["E = -sum_i y_i*(1 - o_i)^gamma*ln(o_i)", "o_i = softmax(z)_i"]\nwrt = "z_k"\nassume = ["sum_i y_i = 1"]\n'


def test_a_spec_file_names_a_letter(tmp_path):
    """[names] gives a letter a public name: --let takes it (the letter too), the JSON's example
    and the notation list use it."""
    spec = tmp_path / "focal.toml"
    spec.write_text(FOCAL + '[let]\nfocusing = 0\n[names]\nfocusing = "gamma"\ntarget = "y"\n')
    d = derive.grad(spec=spec, classes=3, let={"target": [0, 1, 0]})
    ex = json.loads(derive.render(d, "json"))["example"]
    assert sorted(ex["values"]) == ["focusing", "target", "z"] and ex["values"]["focusing"] == 0 and ex["values"]["target"] == [0, 1, 0]
    assert "The command line and the JSON call it focusing." in derive.render(d, "md")
    assert derive.render(derive.grad(spec=spec, classes=3, let={"y": [0, 1, 0]}), "json") == derive.render(d, "json")
    with pytest.raises(UsageError, match="--let target needs 3 numbers"):
        derive.grad(spec=spec, classes=3, let={"target": [0, 1]})


@pytest.mark.parametrize("table, message", [
    ('Mask = "y"', "names.Mask: a public name is a word of lower-case letters"),
    ('t = "y"', "names.t: a public name is a word"),
    ('gamma = "y"', "names.gamma: gamma is already a name of the definitions"),
    ('output = "o"', "names.output = 'o': not a given quantity of the definitions (given: gamma, y, z)"),
    ('weights = "w"', "names.weights = 'w': not a given quantity"),
    ('target = "y"\nlabel = "y"', "names.label and names.target both stand for y"),
    ('target = 1', "names must be a table of str values"),
])
def test_a_bad_names_table_is_refused_when_read(tmp_path, table, message):
    spec = tmp_path / "focal.toml"
    spec.write_text(FOCAL + "[names]\n" + table + "\n")
    with pytest.raises(UsageError, match=re.escape(message)):
        derive.spec.read(spec)


BAD = {
    "syntax error": ([CE[:-1], SOFTMAX, "--wrt", "z_k"], "column"),
    "unknown function": (["E = foo(z_k)", "--wrt", "z_k"], "unknown function 'foo'"),
    "index with no range": (["E = sum_q x_q", "--wrt", "x_k"], "has no range"),
    "wrt names nothing": ([CE, SOFTMAX, "--wrt", "q_k"], "does not depend on q"),
    "cycle": (["E = sum_i o_i", "o_i = E*z_i", "--wrt", "z_k"], "cycle"),
    "defined twice": ([CE, CE, "--wrt", "z_k"], "defined twice"),
    "empty definition": (["", "--wrt", "z_k"], "empty"),
    "nesting": (["E = " + "(" * 4990 + "z_k" + ")" * 4990, "--wrt", "z_k"], "deep"),
    "exponent tower": (["E = 2^2^2^2^2^2^2*z_k", "--wrt", "z_k"], "exponent"),
    "huge number": (["E = " + "9" * 100_000 + "*z_k", "--wrt", "z_k"], "characters"),
    "100 kB of text": (["E = " + "z_k + " * 17_000 + "z_k", "--wrt", "z_k"], "characters"),
    "code": (["E = __import__('os').system('touch pwned')", "--wrt", "z_k"], "syntax error"),
    "let count": ([CE, SOFTMAX, "--wrt", "z_k", "--classes", "3", "--let", "z=1,2"], "needs 3 numbers"),
    # An exponent a fraction would write out digit by digit is refused as --logits' is, not computed.
    "let exponent": ([CE, SOFTMAX, "--wrt", "z_k", "--classes", "3", "--let", "z=1e99999999,0,1"], "--let z: '1e99999999' is not a finite number"),
    "let tiny exponent": ([CE, SOFTMAX, "--wrt", "z_k", "--classes", "3", "--let", "z=1e-99999999,0,1"], "'1e-99999999' is too close to 0"),
    "size below 1": ([CE, SOFTMAX, "--wrt", "z_k", "--classes", "3", "--size", "N=0"], "at least 1"),
    "classes below 1": ([CE, SOFTMAX, "--wrt", "z_k", "--classes", "0"], "at least 1"),
    "assumption": ([CE, SOFTMAX, "--wrt", "z_k", "--assume", "sum_i y_i ="], "sum_i y_i ="),
    "no wrt": ([CE], "--wrt"),
    "variable of another range": ([CE, SOFTMAX, "z_i = sum_m W_im*x_m + b_i", "--wrt", "W_kd"], "index 2 of W runs over 1..M in the definitions (m), but d runs over 1..D"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, name):
    args, message = BAD[name]
    out = tmp_path / "doc.md"
    done = run(*args, "-o", str(out), cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() and not (tmp_path / "pwned").exists()


def test_a_megabyte_spec_file_is_refused(tmp_path):
    spec = tmp_path / "big.toml"
    spec.write_text('definitions = ["E = ' + "z_k + " * 200_000 + 'z_k"]\nwrt = "z_k"\n')
    done = run("--spec", str(spec), cwd=tmp_path)
    assert done.returncode == 2 and "limit" in done.stderr


def test_a_batch_example_checks_its_assumption_row_by_row():
    defs, wrt, assume, _ = EXAMPLES["batch-mean"]
    d = derive.grad(*defs, wrt=wrt, assume=list(assume), classes=3, size={"N": 2})
    assert not d.worked.general
    d.check()
    data = json.loads(derive.render(d, "json"))["example"]
    assert len(data["gradient"]) == 2 and len(data["gradient"][0]) == 3
    skewed = derive.grad(*defs, wrt=wrt, assume=list(assume), classes=3, size={"N": 2}, let={"y": [[1, 0, 0], [0.5, 0, 0]]})
    assert skewed.worked.general and skewed.worked.failed == ("assumption1",) or skewed.worked.failed


def test_a_range_overrides_the_convention_and_an_assumption_holds_in_every_row():
    d = derive.grad(
        "E = -sum_n sum_i y_ni*ln(o_ni)/B", "o_ni = exp(z_ni)/sum_j exp(z_nj)",
        wrt="z_mk", assume=["sum_i y_ni = 1"], range={"n": "1..B", "m": "1..B"},
    )
    d.check()
    B = size_symbol("B")
    assert d.result.rhs == parse_expression("(o_mk - y_mk)/B", {"n": (1, B), "m": (1, B)})


# --- a layer inside a network: scalar intermediates, scalar variables, several variables ------------
BATCH_NORM = (
    "L = sum_n g_n*y_n",
    "y_n = gamma*u_n + beta",
    "u_n = (x_n - mu)/sqrt(v + epsilon)",
    "mu = 1/N*sum_m x_m",
    "v = 1/N*sum_m (x_m - mu)^2",
)


@pytest.fixture(scope="module")
def batch_norm() -> derive.Derivation:
    return derive.grad(*BATCH_NORM, wrt=["x_n", "gamma", "beta"], range={"m": "1..N"}, size={"N": 3})


def test_batch_norm_through_its_mean_and_variance_by_every_variable(batch_norm):
    d = batch_norm
    report = d.check()
    assert report.passed
    assert [p.name for p in d.parts] == ["by gamma", "by beta"]
    # Each part is verified step by step and its worked gradient against finite differences.
    assert any(c.what.startswith("by gamma: step") for c in report.checks)
    assert any(c.what == "by beta: the worked example" for c in report.checks)
    n, m = (sp.Symbol(s, integer=True, positive=True) for s in "nm")
    g, u = sp.IndexedBase("g"), sp.IndexedBase("u")
    N = size_symbol("N")
    assert d.parts[0].result.rhs == sp.Sum(g[n] * u[n], (n, 1, N))
    assert d.parts[1].result.rhs == sp.Sum(g[n], (n, 1, N))
    # The compact form of the gradient by x_n, against the planned one at random points.
    x, gamma, mu, v, eps = sp.IndexedBase("x"), *(sp.Symbol(s) for s in ("gamma", "mu", "v", "epsilon"))
    compact = gamma / (N * sp.sqrt(v + eps)) * (N * g[n] - sp.Sum(g[m], (m, 1, N)) - u[n] * sp.Sum(g[m] * u[m], (m, 1, N)))
    rng = random.Random("batch-norm")
    with mpmath.workdps(40):
        for _ in range(3):
            got, wanted = at_random(d.setting, [d.result.rhs, compact], {N: 4, size_symbol("H"): 2}, {n: rng.randint(1, 4)}, [], rng)
            assert abs(got - wanted) < mpmath.mpf(10) ** -25 * max(1, abs(wanted)), (got, wanted)


def test_several_variables_in_the_json_example(batch_norm):
    out = json.loads(derive.render(batch_norm, "json"))
    example = out["example"]
    assert set(example["gradients"]) == {"x", "gamma", "beta"} and "gradient" not in example
    assert len(example["gradients"]["x"]) == 3 and isinstance(example["gradients"]["gamma"], float)
    # dL/dbeta = sum_n g_n, at the example's own upstream gradient.
    assert example["gradients"]["beta"] == pytest.approx(sum(example["values"]["g"]))
    assert [p["name"] for p in out["parts"]] == ["by gamma", "by beta"]
    assert "H" not in example["sizes"], "a derivation without classes has no H in its example"


def test_a_wrong_part_is_caught(monkeypatch):
    def wrong(p, node):
        built = planner.linear_derivative(p, node)
        by_gamma = node.variables[0] == sp.Symbol("gamma")
        return built and (replace(built, new=built.new + sp.Integer(1)) if by_gamma else built)

    _with_rule(monkeypatch, "linear_derivative", wrong)
    d = derive.grad("L = sum_n g_n*y_n", "y_n = gamma*x_n + beta", wrt=["x_n", "gamma"], size={"N": 2})
    with pytest.raises(VerificationError, match="by gamma"):
        d.check()


def test_the_deviations_from_a_mean_sum_to_zero_and_a_wrong_zero_is_caught(monkeypatch, batch_norm):
    assert "mean_deviation" in {s.rule for s in batch_norm.steps}

    def wrong(p, node):
        built = planner.mean_deviation(p, node)
        return built and replace(built, new=sp.Integer(1))

    table = tuple((n, wrong if n == "mean_deviation" else r) for n, r in planner.ALGEBRA_RULES)
    monkeypatch.setattr(planner, "ALGEBRA_RULES", table)
    d = derive.grad(*BATCH_NORM, wrt="x_n", range={"m": "1..N"})
    assert "mean_deviation" in {s.rule for s in d.steps}
    with pytest.raises(VerificationError):
        d.check()


@pytest.mark.parametrize("name", ["focal", "batch-norm", "layer-norm"])
def test_a_catalog_spec_file_works_through_derive_grad_spec(name):
    from derive.files import catalog_spec

    sizes = {"focal": None, "batch-norm": {"N": 3}, "layer-norm": {"D": 3}}
    d = derive.grad(spec=catalog_spec(name), size=sizes[name], classes=3 if name == "focal" else None)
    assert d.check().passed and d.worked is not None
    assert [p.name for p in d.parts] == (["at gamma = 0"] if name == "focal" else [p.name for p in derive.derivation(name).parts])
    assert len(d.parts) == (1 if name == "focal" else 2)


def test_batch_norm_ends_in_the_compact_form_implementations_use():
    d = derive.derivation("batch-norm")
    assert {"mean_deviation", "defined_names", "common_factor"} <= {s.rule for s in d.steps}
    n, m = (sp.Symbol(s, integer=True, positive=True) for s in "nm")
    g, u = sp.IndexedBase("g"), sp.IndexedBase("u")
    N, gamma, v, eps = size_symbol("N"), *(sp.Symbol(s) for s in ("gamma", "v", "epsilon"))
    compact = gamma / (N * sp.sqrt(eps + v)) * (N * g[n] - sp.Sum(g[m], (m, 1, N)) - u[n] * sp.Sum(g[m] * u[m], (m, 1, N)))
    assert sp.simplify(d.result.rhs - compact) == 0 and sp.count_ops(d.result.rhs) <= sp.count_ops(compact) + 2


def test_a_wrong_defined_name_is_caught(monkeypatch):
    def wrong(p, node):
        built = planner.defined_names(p, node)
        return built and replace(built, new=built.new * 2)

    table = tuple((n, wrong if n == "defined_names" else r) for n, r in planner.ALGEBRA_RULES)
    monkeypatch.setattr(planner, "ALGEBRA_RULES", table)
    d = derive.grad(*BATCH_NORM, wrt="x_n", range={"m": "1..N"})
    assert "defined_names" in {s.rule for s in d.steps}
    with pytest.raises(VerificationError):
        d.check()


def test_upstream_differentiates_the_loss_downstream_of_a_layer(batch_norm):
    d = derive.grad(*BATCH_NORM[1:], wrt=["x_n", "gamma"], range={"m": "1..N"}, upstream="y=g")
    assert d.definitions[0].value == batch_norm.definitions[0].value  # L = sum_n g_n y_n
    assert d.result.rhs == derive.derivation("batch-norm").result.rhs
    assert d.parts[0].result.rhs == batch_norm.parts[0].result.rhs
    md = derive.render(d, "md")
    assert "the upstream gradient" in md and d.check().passed
    scalar = derive.grad("y = tanh(x)", wrt="x", upstream="y=g")
    assert scalar.check().passed and scalar.definitions[0].value == sp.Symbol("g") * sp.Symbol("y")


@pytest.mark.parametrize(
    "upstream, message",
    [("y", "must look like y=g"), ("y=L", "L is the loss"), ("y=y", "must look like"), ("z=g", "must define the layer's output z"), ("y=x", "x is already a name")],
)
def test_a_bad_upstream_is_one_line_exit_2(tmp_path, upstream, message):
    out = tmp_path / "up.md"
    run = subprocess.run([sys.executable, "-m", "derive", "grad", "y_n = tanh(x_n)", "--upstream", upstream, "--wrt", "x_n", "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("reduction, scale", [("mean", "1/N"), ("sum", "1")])
def test_a_reduction_over_a_batch(reduction, scale):
    d = derive.grad(CE, SOFTMAX, wrt="z_k", assume=[NORMALISED], reduction=reduction)
    assert d.check().passed
    assert str(d.subject.variables[0]) == "z[n, k]"
    assert sp.sstr(d.assumptions[0].statement) == "Eq(Sum(y[n, i], (i, 1, H)), 1)"  # the target sums to one in every row
    n, k = (sp.Symbol(s, integer=True, positive=True) for s in "nk")
    o, y = sp.IndexedBase("o"), sp.IndexedBase("y")
    assert sp.simplify(d.result.rhs - parse_expression(scale) * (o[n, k] - y[n, k])) == 0


def test_a_reduction_on_a_catalog_loss_gains_one_over_n():
    d = derive.derivation("tanh-sse", reduction="mean", classes=3, size=["N=2"])
    assert d.check().passed and d.result.rhs.has(size_symbol("N"))
    example = json.loads(derive.render(d, "json"))["example"]
    assert len(example["gradient"]) == 2 and len(example["gradient"][0]) == 3  # rows n, columns k


@pytest.mark.parametrize("name, per_example", [("softmax-ce", "o[n, k] - y[n, k]"), ("sigmoid-bce", "o[n, k] - y[n, k]"), ("sse-linear", "o[n, k] - y[n, k]"), ("mse-softmax", "((o[n, k] - y[n, k]) - Sum((o[n, i] - y[n, i])*o[n, i], (i, 1, H)))*o[n, k]")])
def test_a_reduction_on_a_module_entry_is_its_spec_over_a_batch(name, per_example):
    """The loss entries built by modules take --reduction too: the mean over a batch divides
    each example's gradient by N, the sum does not; the worked example has a row per example."""
    mean = derive.derivation(name, reduction="mean", classes=3)
    total = derive.derivation(name, reduction="sum")
    assert mean.check().passed and total.check().passed
    N = size_symbol("N")
    assert sp.simplify(mean.result.rhs * N - total.result.rhs) == 0 and not total.result.rhs.has(N)
    assert sp.sstr(total.result.rhs) == per_example
    assert "averaged over a batch of N examples" in derive.render(mean, "md").splitlines()[0]
    example = json.loads(derive.render(mean, "json"))["example"]
    assert [len(row) for row in example["gradient"]] == [3, 3]


def test_a_reduction_on_a_module_entry_from_the_command_line(tmp_path):
    run = CliRunner().invoke(app, ["sse-linear", "--reduction", "mean", "--classes", "3", "-o", str(tmp_path / "s.json"), "--format", "json"])
    assert run.exit_code == 0, run.output
    assert len(json.loads((tmp_path / "s.json").read_text())["example"]["gradient"]) == 2
    bad = CliRunner().invoke(app, ["softmax-ce", "--reduction", "median", "-o", str(tmp_path / "b.md")])
    assert bad.exit_code == 2 and "takes sum or mean" in bad.output and not (tmp_path / "b.md").exists()
    assert file_stem("softmax-ce", 3, {"reduction": "mean"}) == "softmax-ce-3-reductionmean"


def test_a_batch_shares_the_layer_it_names():
    """dense-softmax-ce --reduction mean: the examples share W and b (the spec's ``shared``), so
    the gradient by W_kd sums over the batch, (1/N) sum_n (o_nk - y_nk) x_nd, the double sum
    taken apart so that each example's target sums to one."""
    d = derive.derivation("dense-softmax-ce", reduction="mean", classes=3)
    assert str(d.subject.variables[0]) == "W[k, d]"
    assert sp.sstr(d.result.rhs) == "Sum((o[n, k] - y[n, k])*x[n, d], (n, 1, N))/N"
    assert sp.sstr(d.parts[0].result.rhs) == "Sum(o[n, k] - y[n, k], (n, 1, N))/N"
    # The batch's error is the mean of one example's: its result is cited at every example.
    for chain in (d, d.parts[0]):
        assert [s.rule for s in chain.steps] == ["definition", "constant_factor", "sum_rule", "derived_result", "normalisation"]
    # Without that result, the planner takes the double sum apart itself.
    from derive import spec as specs
    from derive.derivations import from_spec
    from derive.planner import plan

    whole = replace(specs.problem(replace(from_spec.spec("dense-softmax-ce"), reduction="mean")), citable=specs.citable)
    steps = plan(whole).steps
    assert sp.sstr(steps[-1].rhs) == "Sum((o[n, k] - y[n, k])*x[n, d], (n, 1, N))/N"
    assert any(s.rule == "factor_out" and dict(s.notes).get("index") == sp.Symbol("i", integer=True, positive=True) and s.rhs.has(sp.Sum) for s in steps)
    with pytest.raises(UsageError, match="shared o: o is defined"):
        _spec_with_shared("o")


def test_a_batch_through_a_hidden_layer_uses_each_examples_target():
    """The normalisation of each example's target is found inside a batch's double sum: the
    bracket split is the one over the target's own index i, not a factor (1 - h_nm) of the sum
    over n (which left the gradient with sum_i y_ni unused)."""
    from derive import spec as specs
    from derive.planner import plan

    given = specs.from_arguments([CE, SOFTMAX, "z_i = sum_m W_im*h_m + b_i", "h_m = sigmoid(sum_d V_md*x_d + c_m)"], "V_md", [NORMALISED], [], [], [], None, None, "mean")
    # Planned through the hidden layer, not citing the result for one example.
    steps = plan(replace(specs.problem(replace(given, shared=("V", "c", "W", "b"))), citable=specs.citable)).steps
    assert any(s.rule == "normalisation" for s in steps)
    assert not any(isinstance(x, sp.Sum) and x.function.has(sp.IndexedBase("y")) and not x.function.has(sp.IndexedBase("o")) and len(x.limits) == 1 for x in sp.preorder_traversal(steps[-1].rhs))


def test_shared_on_the_command_line():
    """derive grad ... --reduction mean --shared W,b: the weights are the batch's."""
    d = derive.grad(CE, SOFTMAX, "z_i = sum_d W_id*x_d + b_i", wrt="W_kd", assume=[NORMALISED], reduction="mean", shared=["W,b"])
    assert sp.sstr(d.result.rhs) == "Sum((o[n, k] - y[n, k])*x[n, d], (n, 1, N))/N"


@pytest.mark.parametrize("args, message", [(["--shared", "W"], "give --reduction"), (["--reduction", "mean", "--shared", "W_k"], "without indices"), (["--reduction", "mean", "--shared", "o"], "o is defined"), (["--reduction", "mean", "--shared", "1+"], "without indices")])
def test_a_bad_shared_is_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "s.md"
    run = subprocess.run([sys.executable, "-m", "derive", "grad", CE, SOFTMAX, "--wrt", "z_k", *args, "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _spec_with_shared(name):
    from derive import spec as specs

    given = specs.from_arguments([CE, SOFTMAX], "z_k", [NORMALISED], [], [], [], None, None, "mean")
    from dataclasses import replace as swap

    return specs.problem(swap(given, shared=(name,)))


def test_a_reduction_on_softmax_ce_keeps_its_temperature():
    """--temperature 2 --reduction mean: softmax-ce's temperature spec over a batch, with T = 2
    in the worked example (the steps keep T a symbol)."""
    d = derive.derivation("softmax-ce", temperature=2, reduction="mean", classes=3)
    assert sp.sstr(d.result.rhs) == "(o[n, k] - y[n, k])/(N*T)"
    assert [v for b, v in d.worked.given if str(b) == "T"] == [2]


@pytest.mark.parametrize("args, message", [(["--reduction", "median"], "takes sum or mean"), (["--reduction", "mean", "--assume", "sum_n y_n = 1"], "must not use n or N")])
def test_a_bad_reduction_is_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "r.md"
    run = subprocess.run([sys.executable, "-m", "derive", "grad", CE, SOFTMAX, "--wrt", "z_k", *args, "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_focal_at_gamma_zero_gives_back_output_minus_target(tmp_path):
    d = derive.derivation("focal")
    (special,) = [p for p in d.parts if p.name == "at gamma = 0"]
    k = sp.Symbol("k", integer=True, positive=True)
    assert sp.sstr(special.result.rhs) == "o[k] - y[k]" and special.steps[-1].rule == "normalisation"
    assert any(c.what.startswith("at gamma = 0: step") for c in d.check().checks)
    assert "## At gamma = 0" in derive.render(d, "md")
    spec = tmp_path / "s.toml"
    spec.write_text('definitions = ["E = 1/2*sum_i (o_i - y_i)^2", "o_i = tanh(z_i)"]\nwrt = "z_k"\nspecial = { gamma = 0 }\n')
    with pytest.raises(UsageError, match="no definition uses gamma"):
        derive.grad(spec=spec)


def test_a_worked_example_option_without_classes_names_itself(tmp_path):
    """focal --gamma 1 without --classes: the error speaks of --gamma (the steps keep gamma a
    symbol, the number is the worked example's), exit 2, one line, nothing written."""
    out = tmp_path / "f.md"
    run = subprocess.run([sys.executable, "-m", "derive", "focal", "--gamma", "1", "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == ["error: --gamma sets a number of the worked example (the steps keep it a symbol): give --classes N as well"]
    assert not out.exists()


def test_a_spec_files_shared_names_are_names(tmp_path):
    """shared = ["W_k"] in a spec file is refused like --shared W_k: one line, exit 2."""
    spec = tmp_path / "s.toml"
    spec.write_text('definitions = ["E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)", "z_i = sum_d W_id*x_d + b_i"]\nwrt = "W_kd"\nshared = ["W_k"]\n')
    done = run("--spec", str(spec), "-o", str(tmp_path / "s.md"), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "shared 'W_k': give the name of a given quantity without indices" in done.stderr
    assert not (tmp_path / "s.md").exists()


def test_a_batch_cites_the_part_of_one_example_beside_a_penalty(tmp_path):
    """E = C + lambda/2 sum W^2 over a batch: the penalty is no example's, so the result cited at
    every example is that of the cross-entropy C of one example (dC_n/dW_kd), not E's."""
    from derive.files import catalog_spec

    text = catalog_spec("dense-softmax-ce-weight-decay").read_text(encoding="utf-8")
    spec = tmp_path / "decay.toml"
    spec.write_text(text.replace('shared = ["W", "b"]', 'shared = ["W", "b"]\nreduction = "mean"'))
    d = derive.grad(spec=spec)
    (cited,) = [s for s in d.steps if s.rule == "derived_result"]
    assert sp.sstr(cited.identity.lhs) == "Derivative(C[n], W[k, d])"
    assert "x[n, d]" in sp.sstr(cited.identity.rhs) and "lambda" not in sp.sstr(cited.identity.rhs)
