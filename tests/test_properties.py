"""Properties over random input: worked examples against finite differences, escaped text in LaTeX.

The worked example of ``derive.concrete.example`` is checked against central finite differences
of ``derive.concrete.loss_value`` at 60 digits, for random class counts, logits of any magnitude
and one-hot, soft and unnormalised targets. Random text through ``tex_escape`` must compile.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import mpmath
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derive.concrete import example, loss_value
from derive.pdf import build_pdf, tex_available
from derive.rendering import tex_escape

SCALE = 10**6
"""Soft targets are multiples of 1/SCALE written as exact decimals, so they can sum to exactly 1."""

# ---------------------------------------------------------------------------------------------
# Strategies

ordinary_logits = st.floats(min_value=-1000, max_value=1000, allow_nan=False, allow_infinity=False)
extreme_logits = st.sampled_from([1000.0, -1000.0, 709.79, -745.14, 1e4, -1e4, 1e6, -1e6, 0.0, 5e-324, -1e-300])
logit = st.one_of(ordinary_logits, extreme_logits)


def decimal(count: int) -> str:
    """``count / SCALE`` as an exact decimal string."""
    return f"{count // SCALE}.{count % SCALE:06d}"


@st.composite
def one_hot(draw: st.DrawFn, classes: int) -> list[str]:
    hot = draw(st.integers(0, classes - 1))
    return ["1" if m == hot else "0" for m in range(classes)]


@st.composite
def soft_normalised(draw: st.DrawFn, classes: int) -> list[str]:
    """Non-negative entries that sum to exactly 1 (cut [0, 1] at classes - 1 random points)."""
    cuts = sorted(draw(st.lists(st.integers(0, SCALE), min_size=classes - 1, max_size=classes - 1)))
    bounds = [0, *cuts, SCALE]
    return [decimal(b - a) for a, b in zip(bounds, bounds[1:])]


@st.composite
def unnormalised(draw: st.DrawFn, classes: int) -> list[str]:
    """Non-negative entries, not all zero, whose sum is not 1."""
    entries = draw(
        st.lists(
            st.one_of(st.floats(0, 5, allow_nan=False), st.sampled_from([0.0, 1.0, 1e-12, 100.0])),
            min_size=classes,
            max_size=classes,
        ).filter(lambda xs: sum(map(Fraction, xs)) not in (0, 1))
    )
    return [repr(x) for x in entries]


@st.composite
def examples(draw: st.DrawFn) -> tuple[int, list[str], list[str], str]:
    classes = draw(st.integers(1, 12))
    logits = [repr(v) for v in draw(st.lists(logit, min_size=classes, max_size=classes))]
    kind = draw(st.sampled_from(["one-hot", "soft", "unnormalised"]))
    if kind == "one-hot":
        target = draw(one_hot(classes))
    elif kind == "soft":
        target = draw(soft_normalised(classes))
    else:
        target = draw(unnormalised(classes))
    return classes, logits, target, kind


# ---------------------------------------------------------------------------------------------
# Worked examples


def mp(value: sp.Expr) -> mpmath.mpf:
    """An exact rational, or a SymPy float at its full precision, as an mpmath number."""
    if value.is_Rational:
        return mpmath.mpf(int(value.p)) / int(value.q)
    return mpmath.mpf(sp.Float(value)._mpf_)


def finite_differences(logits: Sequence[mpmath.mpf], target: Sequence[mpmath.mpf]) -> list[mpmath.mpf]:
    """Central differences of the loss with h = 1e-20 (call inside workdps(60))."""
    h = mpmath.mpf(10) ** -20
    out = []
    for m in range(len(logits)):
        up, down = list(logits), list(logits)
        up[m] += h
        down[m] -= h
        out.append((loss_value(up, target) - loss_value(down, target)) / (2 * h))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(examples())
def test_worked_example_agrees_with_finite_differences(case: tuple[int, list[str], list[str], str]) -> None:
    classes, logits, target, kind = case
    ex = example(classes, logits, target)
    assert len(ex.gradient) == len(ex.probabilities) == classes
    normalised = sum(map(Fraction, target)) == 1
    assert normalised == (kind != "unnormalised")
    with mpmath.workdps(60):
        z = [mp(v) for v in ex.logits]
        y = [mp(v) for v in ex.target]
        assert z == [mpmath.mpf(Fraction(s).numerator) / Fraction(s).denominator for s in logits]
        gradient = [mp(g) for g in ex.gradient]
        probabilities = [mp(p) for p in ex.probabilities]

        for m, (numeric, claimed) in enumerate(zip(finite_differences(z, y), gradient)):
            assert abs(numeric - claimed) <= 1e-9, (m, mpmath.nstr(numeric, 20), mpmath.nstr(claimed, 20))

        assert all(mpmath.isfinite(p) and 0 <= p <= 1 for p in probabilities)
        assert abs(mpmath.fsum(probabilities) - 1) <= mpmath.mpf(10) ** -25
        loss = mp(ex.loss)
        assert mpmath.isfinite(loss) and loss >= -mpmath.mpf(10) ** -25
        if normalised:
            assert abs(mpmath.fsum(gradient)) <= mpmath.mpf(10) ** -20
            assert all(-1 - mpmath.mpf(10) ** -25 <= g <= 1 + mpmath.mpf(10) ** -25 for g in gradient)


@pytest.mark.parametrize(
    ("logits", "target"),
    [
        (["1000", "0", "-1000"], ["1", "0", "0"]),
        (["1e6", "-1e6"], ["0", "1"]),
        (["-745.14", "709.79", "0", "5e-324"], ["0.25", "0.25", "0.25", "0.25"]),
        (["0"], ["1"]),
    ],
)
def test_extreme_logits_stay_finite(logits: list[str], target: list[str]) -> None:
    """The fixed extreme cases, whatever the random search happens to draw."""
    ex = example(len(logits), logits, target)
    with mpmath.workdps(60):
        numeric = finite_differences([mp(v) for v in ex.logits], [mp(v) for v in ex.target])
        assert all(abs(a - mp(b)) <= 1e-9 for a, b in zip(numeric, ex.gradient))
        assert all(mpmath.isfinite(mp(p)) for p in ex.probabilities)


# ---------------------------------------------------------------------------------------------
# User text in LaTeX

SECTION_DOCUMENT = r"""\documentclass{article}
\pdftrailerid{}
\begin{document}
\section*{%(title)s}
\end{document}
"""
# What document.tex.j2 also does with its title: hyperref's PDF title.
HYPERREF_DOCUMENT = r"""\documentclass{article}
\usepackage[hidelinks]{hyperref}
\pdftrailerid{}
\hypersetup{pdftitle={%(title)s}}
\begin{document}
\section*{%(title)s}
\end{document}
"""
LATEX_SPECIALS = "#$%&~_^\\{}"
# Letters outside ASCII that LaTeX's default OT1 set-up typesets (accented Latin and a few more).
OT1_LETTERS = "éèêëàâäçñóöôúüùíïøØåÅæÆœŒßłŁıİ"


def title_document(text: str, template: str = SECTION_DOCUMENT) -> str:
    return template % {"title": tex_escape(text)}


@pytest.fixture
def tex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TeX is needed (in CI it must be there); failed builds keep their logs in tmp_path."""
    if not tex_available():
        reason = "pdflatex is not installed: run ./test.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


user_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(LATEX_SPECIALS),
        st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " "),
        st.sampled_from(OT1_LETTERS),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=user_text)
def test_escaped_text_compiles_as_a_title(tex: None, text: str) -> None:
    pdf = build_pdf(title_document(text))
    assert pdf.startswith(b"%PDF")


def test_every_latex_special_compiles_as_a_title(tex: None) -> None:
    """All the specials at once, doubled, at the ends (where a trailing backslash would bite), also as the PDF title."""
    text = "\\" + LATEX_SPECIALS * 2 + " " + OT1_LETTERS + "\\"
    assert build_pdf(title_document(text, HYPERREF_DOCUMENT)).startswith(b"%PDF")


@pytest.mark.parametrize("text", ["Ableitung α β", "Производная", "梯度", "Íslenska ð þ"], ids=["greek", "cyrillic", "cjk", "eth-thorn"])
def test_letters_of_other_scripts_compile_as_a_title(tex: None, text: str) -> None:
    assert build_pdf(title_document(text)).startswith(b"%PDF")


def test_angle_brackets_and_bar_print_as_themselves(tex: None, tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils, installed by test.sh) is needed to read the PDF back")
    (tmp_path / "title.pdf").write_bytes(build_pdf(title_document("a<b>c|d")))
    text = subprocess.run(["pdftotext", str(tmp_path / "title.pdf"), "-"], capture_output=True, text=True, check=True).stdout
    assert "a<b>c|d" in text, text
