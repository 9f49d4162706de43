"""Nothing reaches a document unchecked: an error planted in each place a document shows beyond
the steps is caught before the document is written (derive.shown at check time, the wording's
formulas at render time). Each test plants one error where the issue found a document written
with it, exit 0."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sympy as sp

import derive
from derive import concrete, proofread, rules
from derive.derivations import softmax_ce
from derive.errors import DeriveError, VerificationError
from derive.model import Label, Pitfall
from derive.symbols import H, i, k, o, y


def caught(d, what: str) -> str:
    """The message of the check that refuses ``d``; it must be the check named ``what``."""
    with pytest.raises(VerificationError) as error:
        d.check()
    assert what in str(error.value), str(error.value)
    return str(error.value)


@pytest.fixture(scope="module")
def ce3():
    return derive.derivation("softmax-ce", classes=3)


def test_every_check_passes_as_built(ce3):
    what = [c.what for c in ce3.check().checks]
    for check in ("the labels under the sub-terms", "the pitfall's numbers", "the error written out", "the worked example's outputs", "the sum of the worked example's gradient"):
        assert check in what


# --- the pitfall's table ------------------------------------------------------------------------
def _pitfall(ex, shortcut, quotient, direct) -> Pitfall:
    p = softmax_ce.pitfall()
    return replace(p, example=ex, shortcut=tuple(map(shortcut, ex.probabilities, ex.target)), quotient=tuple(map(quotient, ex.probabilities, ex.target)), direct=tuple(map(direct, ex.probabilities, ex.target)))


RIGHT = (lambda p, t: t * (p - 1), lambda p, t: (p - t) / (p * (1 - p)), lambda p, t: -t / p)


@pytest.mark.parametrize(
    "plant",
    [
        ("a wrong quotient formula", RIGHT[0], lambda p, t: (p - t) / (p * (1 + p)), RIGHT[2]),
        ("the shortcut y (o + 1)", lambda p, t: t * (p + 1), RIGHT[1], RIGHT[2]),
        ("dE/do_k as -y_k o_k", RIGHT[0], RIGHT[1], lambda p, t: -t * p),
    ],
    ids=lambda plant: plant[0],
)
def test_a_wrong_pitfall_number_is_caught(ce3, plant):
    _, *columns = plant
    planted = replace(ce3, pitfall=_pitfall(concrete.example(3), *columns))
    caught(planted, "the pitfall's numbers")


def test_the_pitfall_example_switched_to_another_class_is_caught(ce3):
    """Consistent numbers of another example: the sentence speaks of the classic one."""
    planted = replace(ce3, pitfall=_pitfall(concrete.example(3, target=[0, 1, 0]), *RIGHT))
    assert "classic example" in caught(planted, "the pitfall's numbers")


def test_pitfall_outputs_of_another_example_are_caught(ce3):
    other = concrete.example(3, logits=[0, 1, 0])
    ex = replace(concrete.example(3), probabilities=other.probabilities)
    planted = replace(ce3, pitfall=replace(ce3.pitfall, example=ex))
    assert "probabilities of class 1" in caught(planted, "the pitfall's numbers")


# --- the outputs of a worked example --------------------------------------------------------------
def _outputs(d, change):
    ex = d.concrete.example
    return replace(d, concrete=replace(d.concrete, example=replace(ex, probabilities=change(ex.probabilities))))


def test_our_example_with_o3_shown_as_0_3_is_caught(ce3):
    caught(_outputs(ce3, lambda p: (*p[:2], sp.Rational(3, 10))), "the worked example's outputs")


def test_outputs_ten_percent_off_for_the_users_logits_are_caught():
    """Off where the target is 0, which the loss does not see."""
    d = derive.derivation("softmax-ce", classes=3, logits=[2, 1, 0.1])
    caught(_outputs(d, lambda p: (p[0], *(x * sp.Rational(11, 10) for x in p[1:]))), "the worked example's outputs")


def test_outputs_reversed_are_caught_where_the_loss_does_not_see_them():
    """Logits 2, 1, 2.5 with target 0, 1, 0: the loss uses o_2 alone, which reversing keeps."""
    d = derive.derivation("softmax-ce", classes=3, logits=[2, 1, 2.5], target=[0, 1, 0])
    caught(_outputs(d, lambda p: tuple(reversed(p))), "the worked example's outputs")


@pytest.mark.parametrize("name", ["softmax", "sigmoid-bce", "mse-softmax"])
def test_outputs_of_the_other_examples_are_checked(name):
    d = derive.derivation(name, classes=3)
    caught(_outputs(d, lambda p: (p[1], p[0], p[2])), "the worked example's outputs")


# --- the error written out --------------------------------------------------------------------------
def _written(d, loss):
    return replace(d, concrete=replace(d.concrete, loss=loss))


def test_the_error_written_with_ln_of_one_less_the_output_is_caught(ce3):
    terms = [sp.Mul(y[m], sp.log(1 - o[m]), evaluate=False) for m in (1, 2, 3)]
    caught(_written(ce3, sp.Mul(-1, sp.Add(*terms, evaluate=False), evaluate=False)), "the error written out")


def test_the_error_written_without_its_last_class_is_caught(ce3):
    terms = [sp.Mul(y[m], sp.log(o[m]), evaluate=False) for m in (1, 2)]
    caught(_written(ce3, sp.Mul(-1, sp.Add(*terms, evaluate=False), evaluate=False)), "the error written out")


# --- the sum of the gradient ------------------------------------------------------------------------
def test_a_sum_of_the_gradient_that_is_not_0_where_the_identity_makes_it_0_is_caught():
    d = derive.derivation("softmax-ce", classes=3, logits=[1000, 0, -1000])
    ex = d.concrete.example
    planted = replace(d, concrete=replace(d.concrete, example=replace(ex, gradient_sum=sp.Float("2.42e-50", 30))))
    assert "vanishes as the digits double" in caught(planted, "the sum of the worked example's gradient")


# --- the labels -------------------------------------------------------------------------------------
def _swapped(d, rule: str, a: str, b: str):
    swap = {a: b, b: a}
    steps = tuple(replace(s, labels=tuple(Label(x.path, swap.get(x.key, x.key)) for x in s.labels)) if s.rule == rule else s for s in d.steps)
    return replace(d, steps=steps)


@pytest.mark.parametrize(("a", "b"), [("terms_ne", "term_eq"), ("jacobian_ne", "jacobian_eq")])
def test_the_split_sums_labels_swapped_are_caught(ce3, a, b):
    caught(_swapped(ce3, "split_sum", a, b), "the labels under the sub-terms")


def test_a_label_over_a_factor_that_depends_on_the_index_is_caught():
    d = derive.derivation("softmax-ce")
    step = next(s for s in d.steps if s.rule == "factor_out")
    (label,) = step.labels
    other = Label(label.path[:-1] + (len(rules.at(step.rhs, label.path[:-1]).args) - 1,), "independent")
    planted = replace(d, steps=tuple(replace(s, labels=(other,)) if s is step else s for s in d.steps))
    caught(planted, "the labels under the sub-terms")


def test_a_jacobian_label_under_another_term_is_caught():
    d = derive.derivation("log-softmax")
    step = next(s for s in d.steps if s.labels)
    (label,) = step.labels
    planted = replace(d, steps=tuple(replace(s, labels=(Label(label.path[:-1] + (0,), "jacobian"),)) if s is step else s for s in d.steps))
    caught(planted, "the labels under the sub-terms")


# --- the appendix from the derivation -------------------------------------------------------------
def test_the_appendix_gradient_is_the_general_form_when_the_target_does_not_sum_to_one():
    d = derive.derivation("softmax-ce", classes=3, target=[0.5, 0.2, 0.1])
    assert d.concrete.gradient[0] == softmax_ce.appendix(d.concrete.example, d.steps, d.general.rhs, softmax_ce.LOSS).gradient[0]
    assert d.concrete.gradient[0].has(sp.Sum) and d.concrete.assumptions == ()
    d.check()
    # The fixed formula the appendix had, o_m - y_m, is false for this target, and the check says so.
    planted = replace(d, concrete=replace(d.concrete, gradient=tuple(o[m] - y[m] for m in (1, 2, 3))))
    caught(planted, "the gradient for H = 3")


def test_the_appendix_jacobian_is_the_cases_the_derivation_checked():
    for name, options in (("softmax-ce", {}), ("softmax-ce", {"temperature": 2}), ("softmax", {}), ("log-softmax", {})):
        d = derive.derivation(name, classes=3, **options)
        step = next((s for s in d.steps if s.rule == "split_sum"), d.steps[-1])
        same, other = (c.value.xreplace({softmax_ce.T: 2}).doit() for c in step.cases)
        assert d.concrete.jacobian[0, 0] == same.xreplace({i: 1, k: 1})
        assert d.concrete.jacobian[1, 2] == other.xreplace({i: 2, k: 3})


# --- the wording's facts, at render time ------------------------------------------------------------
def _wording(tmp_path, toml: str):
    (tmp_path / "derivations").mkdir(exist_ok=True)
    (tmp_path / "derivations" / "softmax-ce.toml").write_text(toml, encoding="utf-8")
    return tmp_path


def test_a_summary_with_a_wrong_result_is_refused(tmp_path, ce3):
    folder = _wording(tmp_path, "[derivation.softmax-ce]\nsummary = '''The gradient is \\(\\frac{\\partial E}{\\partial z_k} = o_k + y_k\\).'''\n")
    with pytest.raises(DeriveError, match=r"o_k \+ y_k"):
        derive.render(ce3, "md", templates=folder)


def test_a_general_form_sentence_that_is_not_the_general_form_is_refused(tmp_path):
    (tmp_path / "wording.toml").write_text("[section]\ngeneral = '''For any target: \\(\\frac{\\partial E}{\\partial z_k} = o_k \\sum_{i=1}^{H} y_i + y_k\\).'''\n", encoding="utf-8")
    with pytest.raises(DeriveError, match="the wording says"):
        derive.render(derive.derivation("softmax-ce"), "md", templates=tmp_path)


def test_the_summary_and_the_general_form_are_the_derivations(ce3):
    text = derive.render(ce3, "md")
    assert "output minus target, $`\\frac{\\partial E}{\\partial z_k} = o_k - y_k`$" in text
    assert "holds for any target: $`\\frac{\\partial E}{\\partial z_k} = o_k \\sum_{i=1}^{H} y_i - y_k`$" in text


def test_label_smoothing_that_no_longer_sums_to_one_is_refused(monkeypatch, tmp_path):
    """eps / (H + 1), planted in the spec file the steps are planned from and in the module's
    definition: the steps stay consistent and pass their checks; the summary's sum_i y'_i = 1
    does not hold, and the document is refused."""
    from derive import files

    eps = softmax_ce.EPSILON
    planted = replace(softmax_ce.SMOOTHED, value=rules.add(rules.mul(rules.add(sp.Integer(1), rules.neg(eps)), y[i]), rules.mul(eps, sp.Pow(H + 1, -1))))
    monkeypatch.setattr(softmax_ce, "SMOOTHED", planted)
    shipped = files.catalog_spec("softmax-ce-label-smoothing")
    spec = tmp_path / "softmax-ce-label-smoothing.toml"
    text = shipped.read_text(encoding="utf-8")
    assert "epsilon/H\"" in text
    spec.write_text(text.replace("epsilon/H\"", "epsilon/(H + 1)\""), encoding="utf-8")
    real = files.catalog_spec
    monkeypatch.setattr(files, "catalog_spec", lambda name: spec if name == "softmax-ce-label-smoothing" else real(name))
    d = derive.derivation("softmax-ce", label_smoothing=0.1)
    d.check()
    with pytest.raises(DeriveError, match="the wording says"):
        derive.render(d, "md")
    # The sentence "the smoothed target still sums to one" is one of the formulas refused.
    assert proofread.fact(d, r"\sum_{i=1}^{H} y'_i = 1") is not None
    monkeypatch.undo()
    assert proofread.fact(derive.derivation("softmax-ce", label_smoothing=0.1), r"\sum_{i=1}^{H} y'_i = 1") is None


# --- what a label names, in the derivation's own letters ---------------------------------------------
def test_a_label_names_the_derivative_in_the_derivations_own_letters():
    d = derive.grad("L = -sum_i t_i*ln(p_i)", "p_i = softmax(a)_i", wrt="a_k", assume=["sum_i t_i = 1"])
    text = derive.render(d, "md")
    assert r"}_{\frac{\partial p_i}{\partial a_k}}" in text and r"}_{\frac{\partial p_i}{\partial a_k},\; i \neq k}" in text
    assert r"\partial o_i" not in text


def test_a_label_of_a_courses_wording_that_names_another_derivative_is_refused(tmp_path, ce3):
    """The cases of the split sum, their labels swapped in the wording."""
    (tmp_path / "wording.toml").write_text("[label]\njacobian_eq = '''%(derivative)s,\\; i \\neq k'''\njacobian_ne = '''\\frac{\\partial o_k}{\\partial z_k}'''\n", encoding="utf-8")
    with pytest.raises(DeriveError, match="the label"):
        derive.render(ce3, "md", templates=tmp_path)
