"""Worked examples show what is true, to the digits the documents promise: tiny logits, extreme
logits, tiny temperatures, one class. Each defect has a test, and each check it relies on is shown
to fail on a planted error."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import concrete, worked
from derive.cli import app
from derive.errors import UsageError
from derive.rendering import exact_and_decimal, number


def markdown(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "-o", "-"])
    assert result.exit_code == 0, result.output
    return result.stdout


def example(name: str, classes: int, **options) -> derive.Derivation:
    d = derive.derivation(name, classes=classes, **options)
    d.check()
    return d


# --- one reading of a user's number ------------------------------------------------------------------
def test_a_users_number_is_read_one_way_for_logits_and_for_let():
    """--logits of a module entry and --let of a planned one read a number alike: exactly, a
    fraction too; an exponent beyond a double's range is refused, not written out digit by digit."""
    assert concrete.exact("0.1") == Fraction(1, 10) and concrete.exact(" 1/3 ") == Fraction(1, 3)
    assert concrete.exact("0e99999999") == 0
    assert concrete.numbers(["1/3", 0.1, "2"], "--logits", 3) == (sp.Rational(1, 3), sp.Rational(1, 10), 2)
    assert worked.parse_numbers("1/3,0.1", "z") == (Fraction(1, 3), Fraction(1, 10))
    for text, reason in (("x", "is not a number"), ("1/0", "is not a number"), ("nan", "is not a finite number"), ("1e99999999", "is not a finite number"), ("1e-99999999", "is too close to 0")):
        with pytest.raises(ValueError, match=reason):
            concrete.exact(text)
        with pytest.raises(UsageError, match=f"--let z: '{text}' {reason}"):
            worked.parse_numbers(text, "z")


# --- a logit below 1e-4 ----------------------------------------------------------------------------
def test_a_tiny_logit_is_written_exactly_not_an_internal_error():
    assert exact_and_decimal(sp.Rational(1, 100000)) == r"1.0 \times 10^{-5}"
    assert exact_and_decimal(sp.Rational(123, 10**9)) == r"1.23 \times 10^{-7}"
    assert exact_and_decimal(sp.Rational(1, 300000)) == r"\frac{1}{300000} \approx 3.333 \times 10^{-6}"
    assert r"| 2 | $`1.0 \times 10^{-5}`$ |" in markdown("softmax-ce", "--classes", "3", "--logits", "0,0.00001,0")


# --- finite differences scaled to the inputs -------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("--logits", "1e-20,2e-20,0", "--temperature", "1e-20"), {"logits": ["1e-20", "2e-20", "0"], "temperature": "1e-20"}),
        (("--logits", "1e20,1e20,0"), {"logits": ["1e20", "1e20", "0"]}),
    ],
    ids=["tiny temperature", "huge logits"],
)
def test_extreme_inputs_pass_verification_and_a_wrong_entry_still_fails(args, options):
    """The finite-difference check used a step of 1e-25 and 60 digits whatever the inputs: wrong
    for logits that vary on a scale of 1e-20, and for logits of 1e20. Scaled to the inputs it
    passes the true gradient and still fails one that is off by a part in 10^15."""
    markdown("softmax-ce", "--classes", "3", *args)
    d = example("softmax-ce", 3, **options)
    ex = d.concrete.example
    wrong = replace(ex, gradient=(ex.gradient[0] * (1 + sp.Rational(1, 10**15)), *ex.gradient[1:]))
    planted = replace(d, concrete=replace(d.concrete, example=wrong))
    check = concrete.example_check(planted)
    assert not check.passed and "class 1" in check.detail


def test_the_tiny_temperature_example_has_its_true_numbers():
    ex = example("softmax-ce", 3, logits=["1e-20", "2e-20", "0"], temperature="1e-20").concrete.example
    with mpmath.workdps(40):
        w = [mpmath.e, mpmath.e**2, 1]
        total = sum(w)
        for m, (g, t) in enumerate(zip(ex.gradient, (1, 0, 0))):
            assert abs(mpmath.mpf(g._mpf_) - (w[m] / total - t) * 10**20) <= mpmath.mpf(10) ** -25 * 10**20


# --- one class -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax-ce", "sse-linear", "mse-softmax"])
def test_one_class_writes_the_loss_as_one_term_not_a_product(name):
    text = markdown(name, "--classes", "1")
    written = text.split("### The error written out")[1].split("```math\n")[1].split("\n")[0]
    assert written in (r"E = -y_1 \ln o_1", r"E = \frac{1}{2} \left(o_1 - y_1\right)^{2}")


@pytest.mark.parametrize(
    "args",
    [
        ("softmax-ce",),
        ("softmax-ce", "--temperature", "2"),
        ("softmax-ce", "--label-smoothing", "0.1"),
        ("softmax-ce", "--temperature", "2", "--label-smoothing", "0.1"),
        ("softmax",),
        ("log-softmax",),
        ("sigmoid-bce",),
        ("sse-linear",),
        ("mse-softmax",),
        ("softmax-ce", "--target", "1"),
        ("sigmoid-bce", "--target", "1"),
        ("dense-softmax-ce",),
    ],
)
def test_one_class_does_not_speak_of_class_2(args):
    example_text = markdown(*args, "--classes", "1").split("### A worked example")[1].split("## ")[0]
    for other in ("class 2", "label 2", "output 2", "classic", "three"):
        assert other not in example_text.lower(), (args, other)


def test_the_classic_example_is_named_only_where_it_is_the_classic_one():
    """Three classes with our logits give the classic 0.2, 0.6, 0.2; other class counts, a
    temperature or given logits do not."""
    classic = "These are the probabilities of the classic example"
    assert classic in markdown("softmax-ce", "--classes", "3")
    assert classic in markdown("softmax", "--classes", "3")
    assert classic in markdown("softmax-ce", "--classes", "3", "--label-smoothing", "0.1")
    for args in (("--classes", "2"), ("--classes", "4"), ("--classes", "3", "--temperature", "2"), ("--classes", "3", "--logits", "0,1,0")):
        assert "classic example, " not in markdown("softmax-ce", *args).split("### A worked example")[1], args
    assert not concrete.classic((sp.Rational(1, 5), sp.Rational(3, 5), sp.Rational(1, 5) + sp.Rational(1, 10**20)))
    assert concrete.classic((sp.Float("0.2", 30), sp.Float("0.6", 30), sp.Float("0.2", 30)))


def test_one_class_with_label_smoothing_checks_its_example():
    """Its smoothed target (1 - eps) y + eps / 1 used to stop the check with a KeyError."""
    ex = example("softmax-ce", 1, label_smoothing=0.1).concrete.example
    assert ex.gradient == (0,) and ex.gradient_sum == 0


# --- extreme logits: true values, exact zeros only where exactly zero -------------------------------
@pytest.mark.parametrize("options", [{}, {"temperature": 1}], ids=["softmax-ce", "through the general path"])
def test_extreme_logits_show_the_true_tiny_values(options):
    ex = example("softmax-ce", 3, logits=["1000", "0", "-1000"], **options).concrete.example
    assert number(ex.gradient[0]) == r"-5.076 \times 10^{-435}"
    assert number(ex.loss) == r"5.076 \times 10^{-435}"
    assert number(ex.probabilities[2]) == r"2.577 \times 10^{-869}"
    assert ex.gradient_sum == 0 and isinstance(ex.gradient_sum, sp.Integer)


def test_logits_beyond_a_thousand_digits_keep_their_tiny_values():
    ex = example("softmax-ce", 3, logits=["5000", "0", "-1000"], temperature=1).concrete.example
    assert number(ex.gradient[0]) == r"-3.37 \times 10^{-2172}"
    assert number(ex.loss) == r"3.37 \times 10^{-2172}"


@pytest.mark.parametrize("logits", ["100,0,0", "110,0,0", "1000,0,-1000", "0.5,0.25,0.25"])
def test_the_sum_of_a_softmax_gradient_is_shown_as_the_identity_says(logits):
    text = markdown("softmax-ce", "--classes", "3", "--logits", logits)
    assert r"\qquad \sum_{i} \frac{\partial E}{\partial z_i} = 0" + "\n" in text


def test_a_sum_that_is_not_zero_is_shown():
    """sigmoid-bce: sigma(1000) - 1 + sigma(0) + sigma(-1000) = 1/2 exactly."""
    ex = example("sigmoid-bce", 3, logits=["1000", "0", "-1000"]).concrete.example
    assert number(ex.gradient_sum) == "0.5" and number(ex.gradient[0]) == r"-5.076 \times 10^{-435}"


def test_logits_too_large_for_the_general_path_are_a_usage_error():
    result = CliRunner().invoke(app, ["softmax-ce", "--classes", "3", "--logits", "1e20,0,0", "--temperature", "1", "-o", "-"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error: --logits:")


# --- the settling of numbers: each outcome, and what it guards against -----------------------------
def test_settled_keeps_true_values_zeroes_rounding_residue_and_refuses_what_never_settles():
    def compute():
        third = mpmath.mpf(1) / 3
        return {
            "residue": third + third + third - 1,  # exactly 0, rounded to about 10^-digits
            "tiny": mpmath.exp(-300) * 7,  # true, and tiny
            "cancelled": (1 + mpmath.exp(-100)) - 1,  # true 3.7e-44 once the precision holds it
            "label": "kept",
        }

    out = concrete.settled(compute, 40)
    assert out["residue"] == 0 and isinstance(out["residue"], sp.Integer)
    assert number(out["tiny"]) == number(sp.Float(mpmath.exp(-300) * 7, 30)) and out["tiny"] != 0
    assert number(out["cancelled"]) == r"3.72 \times 10^{-44}"
    assert out["label"] == "kept"
    with pytest.raises(UsageError, match="more than"):
        concrete.settled(lambda: {"never": mpmath.mpf(mpmath.mp.dps)}, 40)


@pytest.mark.parametrize("name", ["softmax", "log-softmax"])
def test_a_jacobian_at_extreme_logits_shows_its_true_tiny_entries_and_a_wrong_one_fails(name):
    """o_1 (1 - o_1) and 1 - o_1 at logits (1000, 0, -1000) are 5.076e-435, not 0; at logits of
    1e20 the check's precision covers them, and still fails an entry off by a part in 10^15."""
    ex = example(name, 3, logits=["1000", "0", "-1000"]).concrete.example
    assert number(ex.jacobian[0][0]) == r"5.076 \times 10^{-435}"
    d = example(name, 3, logits=["1e20", "1e20", "0"])
    ex = d.concrete.example
    rows = [list(r) for r in ex.jacobian]
    rows[0][1] = rows[0][1] * (1 + sp.Rational(1, 10**15))
    check = concrete.jacobian_example_check(replace(ex, jacobian=tuple(map(tuple, rows))), name)
    assert not check.passed and "entry (1, 2)" in check.detail
