"""The wording says what the derivations do: the pitfall in the letters of the notation, the
normalisation of the target as what the result needs, the canonical link, the worked example's
numbers by what was given, the checks by the titles of their rules, and the sign of the gradient
against the descent direction."""

from __future__ import annotations

import re

import pytest

import derive


@pytest.fixture(scope="module")
def softmax_ce_md() -> str:
    return derive.render(derive.derivation("softmax-ce", classes=3), "md")


def section(md: str, heading: str) -> str:
    start = md.index(f"## {heading}")
    end = md.find("\n## ", start + 3)
    return md[start:end if end > 0 else None]


def test_the_pitfall_differentiates_by_k_as_the_notation_says(softmax_ce_md: str) -> None:
    """The notation: "k is the logit we differentiate by, i and j are summation indices"."""
    from derive.symbols import j, k

    d = derive.derivation("softmax-ce")
    for claim in d.pitfall.claims:
        assert claim.setting.wrt.indices == (k,), claim.key
        assert j not in claim.equation.free_symbols, claim.key
    pitfall = section(softmax_ce_md, "The pitfall")
    assert r"\frac{\partial E}{\partial z_k} \overset{?}{=} \frac{\partial E}{\partial o_k}" in pitfall
    assert r"\sum_{i=1}^{H} \frac{\partial E}{\partial o_i} \cdot \frac{\partial o_i}{\partial z_k}" in pitfall
    assert "shares the denominator $`\\sum_j e^{z_j}`$" in pitfall
    assert not re.search(r"z_j\b|o_j\b|y_j\b|\\partial z_j", pitfall.replace("e^{z_j}", "")), "a j where the notation says k"
    assert "k is the logit we differentiate by" in softmax_ce_md.replace("$`", "").replace("`$", "")


def test_normalisation_is_what_the_result_needs_not_an_optional_extra(softmax_ce_md: str) -> None:
    assert "sufficient, not necessary" not in softmax_ce_md
    assert "A one-hot target is one way to meet it; any target that sums to one, such as a smoothed one" in softmax_ce_md


def test_the_logit_is_the_canonical_link_and_the_sigmoid_its_inverse() -> None:
    md = derive.render(derive.derivation("sigmoid-bce"), "md")
    assert "the sigmoid is the canonical link" not in md
    assert "the logit is the canonical link of the Bernoulli likelihood and the sigmoid its inverse" in md
    from derive import overview

    assert "each activation is the inverse of the canonical link of its likelihood" in overview.render("md")


@pytest.mark.parametrize(
    "name, given, sentence",
    [
        ("softmax-ce", {"logits": ["1", "2", "3"], "target": ["0", "1", "0"]}, "The logits and the target as given."),
        ("softmax-ce", {"logits": ["1", "2", "3"]}, "The logits as given; the target is class 1."),
        ("softmax-ce", {"target": ["0", "1", "0"]}, "The target as given; the logits are ours: class 2 gets the logit $`\\ln 3`$"),
        ("softmax-ce", {}, "Class 2 gets the logit $`\\ln 3`$ and every other class $`0`$"),
        ("sigmoid-bce", {"target": ["1", "1", "0"]}, "The targets as given; the logits are ours: label 2 gets"),
        ("sigmoid-bce", {"logits": ["1", "2", "3"]}, "The logits as given; the target switches label 1 on"),
        ("sse-linear", {"target": ["0.5", "-2", "1"]}, "The targets as given; the logits are ours: output 2 gets"),
        ("dense-softmax-ce", {"target": ["0", "1", "0"]}, "The inputs are ours, $`x_d = d`$. The weights are ours"),
    ],
)
def test_the_worked_example_says_which_numbers_were_given(name: str, given: dict, sentence: str) -> None:
    md = derive.render(derive.derivation(name, classes=3, **given), "md")
    assert sentence in md
    if set(given) == {"target"}:
        assert "The logits and the target" not in md and "The logits and the targets" not in md


def test_the_checks_are_named_by_the_titles_of_their_rules(softmax_ce_md: str) -> None:
    table = section(softmax_ce_md, "Verification")
    assert "| step 2 (Sum rule) |" in table and "| step 6 (The softmax Jacobian): the cases |" in table
    assert not re.search(r"\((sum|constant|chain|log|softmax|split|factor|complement)\\?_\w+\)", table), "a rule id"
    # The pitfall's claims by their formulas, the regression ones with the setting they hold in.
    assert r"| pitfall: $`\frac{\partial E}{\partial z_k} = \frac{\partial E}{\partial o_k} \cdot \frac{\partial o_k}{\partial z_k}`$ is wrong |" in table
    assert "holds for linear outputs and half the sum of squared errors |" in table
    assert "output\\_gradient" not in table
    dense = section(derive.render(derive.derivation("dense-softmax-ce", classes=3), "md"), "Verification")
    assert "| bias: step 2 (Derivative of the dense layer) |" in dense
    tex = derive.render(derive.derivation("softmax-ce"), "tex")
    assert r"step 2 (Sum rule) & " in tex and r"pitfall: \(\frac{\partial E}{\partial z_k}" in tex
    html = derive.render(derive.derivation("softmax-ce"), "html")
    assert "<tr><td>step 2 (Sum rule)</td>" in html and "<tr><td>pitfall: <math" in html


@pytest.mark.parametrize(
    "name, options, gradient, descent",
    [
        ("softmax-ce", {}, "$`o_k - y_k`$ is the gradient", "$`y_k - o_k`$, the descent direction"),
        ("softmax-ce", {"temperature": 2}, "$`\\frac{o_k - y_k}{T}`$ is the gradient", "$`\\frac{y_k - o_k}{T}`$, the descent direction"),
        ("softmax-ce", {"label_smoothing": 0.1}, "$`o_k - y'_k`$ is the gradient", "$`y'_k - o_k`$, the descent direction"),
        ("sigmoid-bce", {}, "$`o_k - y_k`$ is the gradient", "$`y_k - o_k`$, the descent direction"),
        ("sse-linear", {}, "$`o_k - y_k`$ is the gradient", "$`y_k - o_k`$, the descent direction"),
        ("dense-softmax-ce", {}, "$`x_d (o_k - y_k)`$ is the gradient", "$`x_d (y_k - o_k)`$, the descent direction"),
    ],
)
def test_the_result_says_which_sign_is_the_gradient(name: str, options: dict, gradient: str, descent: str) -> None:
    """The sign slip of the seed's question, which calls t_j - o_j the gradient."""
    result = section(derive.render(derive.derivation(name, **options), "md"), "Result")
    assert gradient in result and descent in result and "sign slip" in result


def test_a_jacobian_has_no_descent_direction() -> None:
    assert "descent direction" not in derive.render(derive.derivation("softmax"), "md")
