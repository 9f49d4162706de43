"""Reading the documents' formulas back (derive.lang.parse_document): each construct the printer
and the templates write, read as the SymPy object it stands for; what a definition may not say
stays out of the definition language."""

from __future__ import annotations

import pytest
import sympy as sp

from derive.errors import UsageError
from derive.lang import parse_definition, parse_document, size_symbol
from derive.lang.document import ELIDED, Approximately, Cases, Operator, parse_label
from derive.latex import Notation
from derive.symbols import ExcludedSum, H, i, j, k

E, T, eps = sp.symbols("E T epsilon")
z, o, y, W, x = (sp.IndexedBase(c) for c in "zoyWx")
smoothed, scaled, hat_y = sp.IndexedBase("y'"), sp.IndexedBase(r"\tilde{z}"), sp.IndexedBase(r"\hat{y}")
D = size_symbol("D")


def one(tex: str):
    """The single side of a formula that is one expression."""
    (statement,) = parse_document(tex).statements
    (side,) = statement.sides
    return side


# (LaTeX as a document writes it, the SymPy object it stands for)
EXPRESSIONS = [
    (r"\frac{\partial E}{\partial z_k}", sp.Derivative(E, z[k])),
    (r"\frac{\partial \ln o_i}{\partial o_i}", sp.Derivative(sp.log(o[i]), o[i])),
    (r"\frac{\partial e^{z_i}}{\partial z_k}", sp.Derivative(sp.exp(z[i]), z[k])),
    (r"\frac{\partial}{\partial z_k}\left(-\sum_{i=1}^{H} y_i \ln o_i\right)", sp.Derivative(-sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)), z[k])),
    (r"\frac{\partial}{\partial o_i} \left(o_i - y_i\right)^{2}", sp.Derivative((o[i] - y[i]) ** 2, o[i])),
    (r"\frac{\partial}{\partial z_k} \ln\left(1 - o_i\right)", sp.Derivative(sp.log(1 - o[i]), z[k])),
    (r"\partial E / \partial o_k", sp.Derivative(E, o[k])),
    (r"\partial \tilde{z}_k / \partial z_k", sp.Derivative(scaled[k], z[k])),
    (r"o_i \left(\delta_{ik} - o_k\right)", o[i] * (sp.KroneckerDelta(i, k) - o[k])),
    (r"\sum_{\substack{i=1 \\ i \neq k}}^{H} y_i", ExcludedSum(y[i], i, 1, H, k)),
    (r"-\left(\sum_{\substack{i=1 \\ i \neq k}}^{H} \left(-o_k y_i\right) + y_k \left(1 - o_k\right)\right)", -(ExcludedSum(-o[k] * y[i], i, 1, H, k) + y[k] * (1 - o[k]))),
    (r"y'_i \ln o_i", smoothed[i] * sp.log(o[i])),
    (r"\frac{e^{\tilde{z}_i}}{\sum_{j=1}^{H} e^{\tilde{z}_j}}", sp.exp(scaled[i]) / sp.Sum(sp.exp(scaled[j]), (j, 1, H))),
    (r"o_k - \left(1 - \varepsilon\right) y_k - \frac{\varepsilon}{H}", o[k] - (1 - eps) * y[k] - eps / H),
    (r"\frac{o_k - y_k}{T}", (o[k] - y[k]) / T),
    (r"y_1 \ln o_1 + y_2 \ln o_2", y[1] * sp.log(o[1]) + y[2] * sp.log(o[2])),
    (r"W_{1,2} x_2 + W_{k,1}", W[1, 2] * x[2] + W[k, 1]),
    (r"o_H", o[H]),
    (r"5.076 \times 10^{-435}", sp.Rational(5076, 10**438)),
    (r"-0.8", sp.Rational(-4, 5)),
    (r"\Bigl(a + b\Bigr) \cdot 2", 2 * (sp.Symbol("a") + sp.Symbol("b"))),
    (r"\hat{y}_k", hat_y[k]),
    (r"y_1 + \cdots + y_H", y[1] + ELIDED + y[H]),
    (r"\begin{pmatrix} 1 - o_1 & -o_2 \\ \vdots & \ddots \end{pmatrix}", sp.ImmutableMatrix([[1 - o[1], -o[2]], [ELIDED, ELIDED]])),
    (r"\left(0.2, 0.6, 0.2\right)", sp.Tuple(sp.Rational(1, 5), sp.Rational(3, 5), sp.Rational(1, 5))),
    (r"[0, 1]", sp.Tuple(0, 1)),
]


@pytest.mark.parametrize(("tex", "expected"), EXPRESSIONS, ids=[t for t, _ in EXPRESSIONS])
def test_reads_each_construct(tex, expected):
    assert one(tex) == expected


def test_statements_relations_and_boxes():
    formula = parse_document(r"\boxed{\frac{\partial E}{\partial z_k} = o_k - y_k}")
    (statement,) = formula.statements
    assert statement.boxed and statement.relations == ("=",)
    assert statement.sides == (sp.Derivative(E, z[k]), o[k] - y[k])
    chain = parse_document(r"\frac{\partial E}{\partial z_k} \overset{?}{=} a = b \approx 1.5, \qquad H = 3, \qquad T > 0")
    assert [s.relations for s in chain.statements] == [("?=", "=", "≈"), ("=",), (">",)]
    assert chain.statements[1].sides == (H, 3)


def test_case_split():
    (statement,) = parse_document(
        r"\frac{\partial o_i}{\partial z_k} = o_i \left(\delta_{ik} - o_k\right) = \begin{cases} o_k \left(1 - o_k\right) & \text{if } i = k \\ -o_i o_k & \text{if } i \neq k \end{cases}"
    ).statements
    cases = statement.sides[2]
    assert isinstance(cases, Cases)
    assert cases.rows == ((o[k] * (1 - o[k]), sp.Eq(i, k, evaluate=False)), (-o[i] * o[k], sp.Ne(i, k, evaluate=False)))


def test_underbraces_are_read_with_their_labels_and_left_out_of_the_value():
    formula = parse_document(r"-\underbrace{o_k}_{\text{no } i} \sum_{i=1}^{H} y_i + \underbrace{a - a}_{=\,0}")
    assert formula.statements[0].sides == (-o[k] * sp.Sum(y[i], (i, 1, H)),)
    assert formula.labels == ((o[k], r"_{\text{no } i}"), (0, r"_{=\,0}"))


def test_labels_in_math_read_as_derivatives_with_their_condition():
    label = parse_label(r"_{\frac{\partial o_i}{\partial z_k},\; i \neq k}")
    assert [s.sides for s in label.statements] == [(sp.Derivative(o[i], z[k]),), (i, k)]
    assert label.statements[1].relations == ("≠",)
    assert parse_label(r"_{=\,0}").statements[0].sides == (0, 0)
    assert parse_label(r"_{\text{the term } i = k}") is None


def test_a_written_out_sum_on_several_rows_is_one_formula():
    tex = r"\begin{array}{l} E = -\Bigl(y_1 \ln o_1 + y_2 \ln o_2 \\ \qquad {} + y_3 \ln o_3\Bigr) \end{array}"
    (statement,) = parse_document(tex).statements
    assert statement.sides == (E, -sum(y[m] * sp.log(o[m]) for m in (1, 2, 3)))


def test_an_entry_with_its_decimal_and_a_function_named_alone():
    matrix = one(r"\begin{pmatrix} 0 \\ \ln 3 \approx 1.0986 \end{pmatrix}")
    assert matrix[1, 0] == Approximately(sp.log(3), sp.Rational(10986, 10000))
    assert one(r"\ln") == Operator("ln")


@pytest.mark.parametrize("preset", [{"o": r"\hat{y}", "H": "K", "E": "L"}, {"z": "a", "o": "y", "y": "t", "H": "K"}])
def test_a_notation_reads_back_as_the_internal_names(preset):
    written = {"o": preset.get("o", "o"), "y": preset.get("y", "y"), "z": preset.get("z", "z"), "H": preset.get("H", "H"), "E": preset.get("E", "E")}
    tex = rf"\frac{{\partial {written['E']}}}{{\partial {written['z']}_k}} = \sum_{{i=1}}^{{{written['H']}}} {written['o']}_i - {written['y']}_k"
    (statement,) = parse_document(tex, Notation(preset)).statements
    assert statement.sides == (sp.Derivative(E, z[k]), sp.Sum(o[i], (i, 1, H)) - y[k])


@pytest.mark.parametrize(
    "tex",
    [r"\frac{\partial E}{\partial z_k", r"\underbrace{a}", r"\begin{cases} a & \text{if } i < k \end{cases}", r"\foo", r"\sum_{\substack{i=1 \\ j \neq k}}^{H} y_i"],
)
def test_what_is_not_a_document_formula_is_a_usage_error(tex):
    with pytest.raises(UsageError):
        parse_document(tex)


@pytest.mark.parametrize("text", [r"E = \frac{\partial y}{\partial x}", r"E = \underbrace{y}_{x}", r"E = \boxed{y}", r"E = y'", r"E = y \approx 1"])
def test_the_definition_language_does_not_read_document_constructs(text):
    with pytest.raises(UsageError):
        parse_definition(text)
