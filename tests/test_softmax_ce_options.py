"""softmax-ce with a temperature, with label smoothing, and with both: the rule sequences and
results, every step verified, planted errors caught, the worked example against finite
differences of an independent loss, bad values refused on one line, the documents and their
file names."""

import json
import random
from dataclasses import replace

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import concrete, rules
from derive.cli import app
from derive.derivations import softmax_ce
from derive.derivations.naming import file_stem, option_text
from derive.derivations.softmax_ce import EPSILON, SMOOTHED, T
from derive.errors import UsageError, VerificationError
from derive.model import RuleMatrix
from derive.symbols import H, i, k, o, y

NAME = "softmax-ce"
COMMON = ["definition", "sum_rule", "constant_factor", "chain_rule", "log_derivative"]
MIDDLE = ["split_sum", "algebra", "factor_out", "complement_sum", "expand", "cancel"]
RULES = {
    "temperature": COMMON + ["scaled_logit", "softmax_jacobian"] + MIDDLE + ["normalisation", "common_factor"],
    "label_smoothing": COMMON + ["softmax_jacobian"] + MIDDLE + ["linear_sum", "normalisation", "definition", "distribute_sign"],
    "both": COMMON + ["scaled_logit", "softmax_jacobian"] + MIDDLE + ["linear_sum", "normalisation", "common_factor", "definition", "distribute_sign"],
}
OPTIONS = {"temperature": {"temperature": 2}, "label_smoothing": {"label_smoothing": 0.1}, "both": {"temperature": 2, "label_smoothing": 0.1}}
RESULTS = {
    "temperature": (o[k] - y[k]) / T,
    "label_smoothing": o[k] - (1 - EPSILON) * y[k] - EPSILON / H,
    "both": (o[k] - (1 - EPSILON) * y[k] - EPSILON / H) / T,
}


@pytest.fixture(scope="module")
def built():
    return {key: derive.derivation(NAME, **options) for key, options in OPTIONS.items()}


@pytest.fixture(scope="module")
def reports(built):
    return {key: d.check() for key, d in built.items()}


def steps_with(d, n: int, rhs: sp.Expr):
    """The steps of ``d`` with step n (1-based) ending in ``rhs``, the next one starting there."""
    out = list(d.steps)
    out[n - 1] = replace(out[n - 1], rhs=rhs)
    if n < len(out):
        out[n] = replace(out[n], lhs=rhs)
    return replace(d, steps=tuple(out))


def step_number(d, rule: str) -> int:
    """The 1-based number of the first step with ``rule``."""
    return [s.rule for s in d.steps].index(rule) + 1


# --- the steps ----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(OPTIONS))
def test_rule_sequence_and_result(built, key):
    d = built[key]
    assert [s.rule for s in d.steps] == RULES[key]
    assert set(RULES[key]) <= set(rules.RULES)
    assert sp.expand(d.result.rhs - RESULTS[key]) == 0
    assert d.name == NAME and d.pitfall is None
    assert [a.key for a in d.assumptions] == ["normalised"]
    # The general form is the step before the normalisation; it holds for any target.
    assert d.general.rhs == d.steps[step_number(d, "normalisation") - 2].rhs
    assert d.options == tuple((name, sp.Rational(str(value))) for name, value in OPTIONS[key].items())


def test_where_the_factor_one_over_t_comes_from(built):
    d = built["temperature"]
    step = d.steps[step_number(d, "scaled_logit") - 1]
    assert step.identity.rhs == 1 / T
    assert step.rhs.has(T) and not step.lhs.has(T)
    jacobian = d.steps[step_number(d, "softmax_jacobian") - 1]
    assert [label.key for label in jacobian.labels] == ["scaled_jacobian"]


def test_the_smoothed_target_sums_to_one_by_the_targets_normalisation(built):
    d = built["label_smoothing"]
    total = d.steps[step_number(d, "linear_sum") - 1]
    assert sp.expand(total.identity.rhs - ((1 - EPSILON) * sp.Sum(y[i], (i, 1, H)) + EPSILON)) == 0
    assert d.steps[step_number(d, "normalisation") - 1].rhs == o[k] - softmax_ce.smoothed[k]
    assert d.steps[-1].rhs == rules.add(o[k], rules.neg(rules.mul(rules.add(1, rules.neg(EPSILON)), y[k])), rules.neg(rules.mul(EPSILON, sp.Pow(H, -1))))


def test_the_plain_derivation_is_unchanged():
    d = derive.derivation(NAME)
    assert d.options == () and d.pitfall is not None
    assert [s.rule for s in d.steps] == COMMON + ["softmax_jacobian"] + MIDDLE + ["normalisation"]
    assert d.result.rhs == o[k] - y[k]


@pytest.mark.parametrize("key", list(OPTIONS))
def test_every_step_is_verified(reports, built, key):
    report = reports[key]
    assert report.passed
    whats = {c.what for c in report.checks}
    for n, step in enumerate(built[key].steps, 1):
        assert f"step {n} ({step.rule})" in whats
    assert "the result" in whats


# --- planted errors -----------------------------------------------------------------------------
def test_a_step_without_the_one_over_t_is_caught(built, reports):
    d = built["temperature"]
    n = step_number(d, "scaled_logit")
    dropped = d.steps[n - 1].rhs.xreplace({1 / T: sp.Integer(1)})
    assert not dropped.has(T)
    with pytest.raises(VerificationError, match=rf"step {n} \(scaled_logit\)"):
        steps_with(d, n, dropped).check()


def test_a_result_without_the_one_over_t_is_caught(built, reports):
    d = built["both"]
    last = len(d.steps)
    with pytest.raises(VerificationError, match=rf"step {last} \(distribute_sign\)"):
        steps_with(d, last, d.steps[-1].rhs.xreplace({1 / T: sp.Integer(1)})).check()


def test_a_wrong_smoothed_target_is_caught(built, reports):
    d = built["label_smoothing"]
    n = len(d.steps) - 1
    assert d.steps[n - 1].rule == "definition"
    # eps instead of eps / H in the written-out smoothed target
    wrong = d.steps[n - 1].rhs.xreplace({EPSILON / H: EPSILON})
    assert wrong != d.steps[n - 1].rhs
    with pytest.raises(VerificationError, match=rf"step {n} \(definition\)"):
        steps_with(d, n, wrong).check()
    # A smoothed target that does not sum to one: the sum of the smoothed target is then wrong.
    bad = replace(SMOOTHED, value=rules.add(rules.mul(rules.add(1, rules.neg(EPSILON)), SMOOTHED.value.args[0].args[1]), EPSILON))
    definitions = tuple(bad if x is SMOOTHED else x for x in d.setting.definitions)
    with pytest.raises(VerificationError, match=r"\(linear_sum\)"):
        replace(d, setting=replace(d.setting, definitions=definitions)).check()


def test_planted_errors_in_the_worked_example_are_caught():
    d = derive.derivation(NAME, classes=4, temperature="0.5", label_smoothing="0.2")
    c = d.concrete
    assert [x.passed for x in concrete.checks(d)] == [True, True, True]
    ex = c.example
    gradient = replace(c, gradient=(c.gradient[0] + sp.Rational(1, 10**9),) + c.gradient[1:])
    softmax = softmax_ce.concrete.jacobian(4)  # without the 1/T
    jacobian = replace(c, jacobian=RuleMatrix(4, softmax.row, softmax.col, softmax.diagonal, softmax.off))
    example = replace(c, example=replace(ex, gradient=(ex.gradient[0] * (1 + sp.Float("1e-15")),) + ex.gradient[1:]))
    smoothed = dict(ex.extra)["smoothed_target"]
    target = replace(c, example=replace(ex, extra=tuple((key, (smoothed[0] + sp.Float("1e-12"),) + smoothed[1:]) if key == "smoothed_target" else (key, v) for key, v in ex.extra)))
    assert [x.passed for x in concrete.checks(replace(d, concrete=gradient))] == [False, True, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=jacobian))] == [True, False, True]
    assert [x.passed for x in concrete.checks(replace(d, concrete=example))] == [True, True, False]
    assert [x.passed for x in concrete.checks(replace(d, concrete=target))] == [True, True, False]


# --- the worked example against an independent loss ---------------------------------------------
def independent_gradient(logits, target, temperature, smoothing):
    """Central differences of E = -sum_i y'_i ln softmax(z / T)_i, written here from scratch."""
    n = len(logits)
    with mpmath.workdps(60):
        z = [mpmath.mpf(v) for v in logits]
        t = [mpmath.mpf(v) for v in target]
        eps = mpmath.mpf(smoothing)
        soft = [(1 - eps) * v + eps / n for v in t]

        def loss(values):
            scaled = [v / mpmath.mpf(temperature) for v in values]
            top = max(scaled)
            lse = top + mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in scaled))
            return -mpmath.fsum(s * (v - lse) for s, v in zip(soft, scaled))

        h = mpmath.mpf(10) ** -20
        out = []
        for m in range(n):
            up, down = list(z), list(z)
            up[m] += h
            down[m] -= h
            out.append((loss(up) - loss(down)) / (2 * h))
        return out, soft, loss(z)


@pytest.mark.parametrize("seed", range(6))
def test_worked_example_against_finite_differences(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 6)
    logits = [f"{rng.uniform(-4, 4):.6f}" for _ in range(n)]
    raw = [rng.random() for _ in range(n)]
    target = [f"{v / sum(raw):.12f}" for v in raw] if seed % 2 else [f"{v:.6f}" for v in raw]  # odd seeds: not normalised
    options = {}
    if seed % 3 != 1:
        options["temperature"] = f"{rng.uniform(0.2, 5):.4f}"
    if seed % 3 != 0:
        options["label_smoothing"] = f"{rng.uniform(0, 0.9):.4f}"
    d = derive.derivation(NAME, classes=n, logits=logits, target=target, **options)
    ex = d.concrete.example
    numeric, soft, value = independent_gradient(logits, target, options.get("temperature", 1), options.get("label_smoothing", 0))
    assert [float(g) for g in ex.gradient] == pytest.approx([float(g) for g in numeric], abs=1e-9, rel=1e-9)
    assert float(ex.loss) == pytest.approx(float(value), abs=1e-9, rel=1e-9)
    extra = dict(ex.extra)
    if "label_smoothing" in options:
        assert [float(v) for v in extra["smoothed_target"]] == pytest.approx([float(v) for v in soft], abs=1e-12)
    if "temperature" in options:
        assert float(extra["temperature"]) == float(options["temperature"])
    assert [x.passed for x in concrete.checks(d)] == [True, True, True]


# --- bad values ---------------------------------------------------------------------------------
def assert_one_line_error(text: str) -> None:
    assert "Traceback" not in text
    assert text.startswith("error: ") and text.endswith("\n") and text.count("\n") == 1, text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "0"], "--temperature must be greater than 0, not 0"),
        (["--temperature", "-1.5"], "--temperature must be greater than 0"),
        (["--temperature", "abc"], "--temperature must be a finite number, not 'abc'"),
        (["--temperature", "inf"], "--temperature must be a finite number"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--temperature", "1e-400"], "--temperature must be between"),
        (["--label-smoothing", "1"], "--label-smoothing must be at least 0 and less than 1, not 1"),
        (["--label-smoothing", "-0.1"], "--label-smoothing must be at least 0"),
        (["--label-smoothing", "x"], "--label-smoothing must be a finite number"),
        (["--classes", "3", "--temperature", "2", "--logits", "1,2"], "--logits needs 3 numbers"),
    ],
)
def test_bad_values_are_one_line_usage_errors(args, message):
    result = CliRunner().invoke(app, [NAME, *args, "-o", "-"])
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr)
    assert message in result.stderr


def test_bad_values_through_the_library():
    with pytest.raises(UsageError, match="greater than 0"):
        derive.derivation(NAME, temperature=0)
    with pytest.raises(UsageError, match="less than 1"):
        derive.derivation(NAME, label_smoothing=1.0)
    with pytest.raises(UsageError, match="finite number"):
        derive.derivation(NAME, temperature=True)
    with pytest.raises(UsageError, match="softmax takes no --temperature"):
        derive.derivation("softmax", temperature=2)
    with pytest.raises(UsageError, match="^--logits needs --classes"):
        derive.derivation(NAME, temperature=2, logits=[1, 2, 3])


# --- documents ----------------------------------------------------------------------------------
def test_json_example_keys():
    d = derive.derivation(NAME, classes=3, target=["0", "1", "0"], temperature=2, label_smoothing="0.1")
    doc = json.loads(derive.render(d, "json"))
    assert doc["options"] == {"temperature": 2.0, "label_smoothing": 0.1}
    ex = doc["example"]
    assert {"logits", "target", "loss", "gradient", "probabilities", "temperature", "label_smoothing", "smoothed_target"} <= set(ex)
    assert ex["target"] == [0.0, 1.0, 0.0]  # as given, not smoothed
    assert ex["smoothed_target"] == pytest.approx([0.1 / 3, 0.9 + 0.1 / 3, 0.1 / 3])
    assert ex["temperature"] == 2.0 and ex["label_smoothing"] == 0.1
    assert sum(ex["gradient"]) == pytest.approx(0, abs=1e-12)
    plain = json.loads(derive.render(derive.derivation(NAME, classes=3), "json"))
    assert "options" not in plain and "temperature" not in plain["example"]


def test_documents_state_the_values_and_the_smoothed_target():
    d = derive.derivation(NAME, classes=3, temperature=2, label_smoothing="0.1")
    md = derive.render(d, "md")
    assert md.startswith("# The gradient of the cross-entropy error through a softmax layer with temperature T and label smoothing, for H = 3\n")
    assert r"## Appendix: the case of $`H = 3, T = 2, \varepsilon = 0.1`$" in md
    assert r"smoothed target $`y'_i`$" in md and "| $`0.9333`$ |" in md
    assert r"here $`T = 2`$" in md and r"here $`\varepsilon = 0.1`$" in md
    assert ". Chain rule through the scaled logit.**" in md and ". Sum of the smoothed target.**" in md
    assert r"\frac{\partial E}{\partial z_k} = \frac{o_k - \left(1 - \varepsilon\right) y_k - \frac{\varepsilon}{H}}{T}" in md
    tex = derive.render(d, "tex")
    assert r"\begin{tabular}{@{}ccccc" + "c@{}}" in tex and r"H = 3, T = 2, \varepsilon = 0.1" in tex
    symbolic = derive.render(derive.derivation(NAME, temperature="0.5"), "md")
    assert "with temperature T\n" in symbolic and r"here $`T = 0.5`$" in symbolic and "## Appendix" not in symbolic


def test_pdf_builds(pdflatex):
    pdf = derive.render(derive.derivation(NAME, classes=3, temperature=2, label_smoothing="0.1"), "pdf")
    assert pdf.startswith(b"%PDF")


def test_default_file_names_carry_the_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [NAME, "--classes", "3", "--temperature", "2.0", "--label-smoothing", "0.10"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "output" / "softmax-ce-3-temperature2-label-smoothing0.1.md").is_file()
    assert file_stem(NAME, 3, {"label_smoothing": 0.1}) == "softmax-ce-3-label-smoothing0.1"
    assert file_stem(NAME, None, {"temperature": "2e0", "label_smoothing": None}) == "softmax-ce-temperature2"
    assert file_stem(NAME, 3) == "softmax-ce-3"
    assert [option_text(v) for v in ("2", 2.0, "0.10", sp.Rational(1, 10), "1e-7", "1.5e300")] == ["2", "2", "0.1", "0.1", "0.0000001", "1.5e300"]
