"""The definition language: both spellings give the SymPy objects the engine expects; bad input
gives one actionable line; nothing in the language evaluates text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from lark import Lark
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from derive.errors import UsageError
from derive.functions import sigmoid, softplus, tanh
from derive.lang import (
    RANGES,
    index_symbol,
    parse_definition,
    parse_equation,
    parse_expression,
    parse_variable,
    size_symbol,
)
from derive.symbols import H, i, j, k, o, y, z

n, m, d = (index_symbol(c) for c in "nmd")
N, M, D = (size_symbol(c) for c in "NMD")
E, T, B, x_, gamma, lam = sp.symbols("E T B x gamma lambda")
W, V, h, x, b, l, a = (sp.IndexedBase(c) for c in "WVhxbla")


def Sum(body: sp.Expr, index: sp.Symbol, upper: sp.Expr = H) -> sp.Sum:
    return sp.Sum(body, (index, 1, upper))


SOFTMAX = sp.exp(z[i]) / Sum(sp.exp(z[j]), j)

# Each row: spellings that must all parse to the same (lhs, rhs), and that (lhs, rhs) built by hand.
DEFINITIONS = [
    (
        ["E = -sum_i y_i*ln(o_i)", r"E = -\sum_{i=1}^{H} y_i \ln o_i", r"E = -\sum_i y_i \cdot \log(o_i)"],
        (E, -Sum(y[i] * sp.log(o[i]), i)),
    ),
    (
        [
            "o_i = exp(z_i)/sum_j exp(z_j)",
            r"o_i = \frac{e^{z_i}}{\sum_{j=1}^{H} e^{z_j}}",
            "o_i = softmax(z)_i",
            r"o_{i} = \mathrm{softmax}(z)_{i}",
        ],
        (o[i], SOFTMAX),
    ),
    (
        ["h_m = sigmoid(sum_d V_md*x_d)", r"h_m = \sigma\left(\sum_{d=1}^{D} V_{md} x_d\right)", "h_m = sigma(sum_d V_{m,d} x_d)"],
        (h[m], sigmoid(Sum(V[m, d] * x[d], d, D))),
    ),
    (
        ["z_i = sum_m W_im*h_m + b_i", r"z_i = \sum_{m} W_{i m} h_m + b_i"],
        (z[i], Sum(W[i, m] * h[m], m, M) + b[i]),
    ),
    (
        [
            "E = -sum_i y_i*(1 - o_i)^gamma*ln(o_i)",
            r"E = -\sum_i y_i \left(1 - o_i\right)^{\gamma} \log o_i",
            r"E = -\sum_i y_i (1 - o_i)^{\gamma} \ln(o_i)",
        ],
        (E, -Sum(y[i] * (1 - o[i]) ** gamma * sp.log(o[i]), i)),
    ),
    (
        ["E = 1/2*sum_i (o_i - y_i)^2", r"E = \frac{1}{2} \sum_{i=1}^{H} \left(o_i - y_i\right)^{2}", "E = 0.5 sum_i (o_i - y_i)**2"],
        (E, sp.Rational(1, 2) * Sum((o[i] - y[i]) ** 2, i)),
    ),
    (
        ["E = sum_i y_i*ln(y_i/o_i)", r"E = \sum_i y_i \ln\frac{y_i}{o_i}"],
        (E, Sum(y[i] * sp.log(y[i] / o[i]), i)),
    ),
    (["o_i = tanh(z_i)", r"o_i = \tanh z_i"], (o[i], tanh(z[i]))),
    (["a_i = softplus(z_i)", r"a_i = \operatorname{softplus}(z_i)", r"a_i = \mathrm{softplus}\left(z_i\right)"], (a[i], softplus(z[i]))),
    (["E = ln(sum_j exp(z_j))", r"E = \log\left(\sum_{j=1}^{H} \exp(z_j)\right)", r"E = \log \sum_j e^{z_j}"], (E, sp.log(Sum(sp.exp(z[j]), j)))),
    (["l_i = z_i - ln(sum_j exp(z_j))", r"l_i = z_i - \ln \sum_j e^{z_j}"], (l[i], z[i] - sp.log(Sum(sp.exp(z[j]), j)))),
    (
        ["E = -sum_i (y_i*ln(o_i) + (1 - y_i)*ln(1 - o_i))", r"E = -\sum_i \left[y_i \ln o_i + (1 - y_i) \ln(1 - o_i)\right]"],
        (E, -Sum(y[i] * sp.log(o[i]) + (1 - y[i]) * sp.log(1 - o[i]), i)),
    ),
    (
        ["o_i = exp(z_i/T)/sum_j exp(z_j/T)", r"o_i = \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)}"],
        (o[i], sp.exp(z[i] / T) / Sum(sp.exp(z[j] / T), j)),
    ),
    (
        ["E = -1/N*sum_n sum_i y_ni*ln(o_ni)", r"E = -\frac{1}{N} \sum_{n=1}^{N} \sum_{i=1}^{H} y_{ni} \ln o_{ni}"],
        (E, -Sum(Sum(y[n, i] * sp.log(o[n, i]), i), n, N) / N),
    ),
    (
        ["o_ni = softmax(z_n)_i", "o_ni = exp(z_ni)/sum_j exp(z_nj)", r"o_{ni} = \frac{e^{z_{ni}}}{\sum_j e^{z_{nj}}}"],
        (o[n, i], sp.exp(z[n, i]) / Sum(sp.exp(z[n, j]), j)),
    ),
    (
        [
            "E = -sum_i y_i*ln(o_i) + lambda/2*sum_k sum_d W_kd^2",
            r"E = -\sum_i y_i \ln o_i + \frac{\lambda}{2} \sum_k \sum_d W_{kd}^{2}",
        ],
        (E, -Sum(y[i] * sp.log(o[i]), i) + lam / 2 * Sum(Sum(W[k, d] ** 2, d, D), k)),
    ),
    (["E = sum_{n=1}^{N} x_n", r"E = \sum_{n=1}^N x_n", "E = sum_n x_n", r"E = \sum\limits_{n} x_n"], (E, Sum(x[n], n, N))),
    (["E = sqrt(sum_d x_d^2)", r"E = \sqrt{\sum_d x_d^2}", r"E = \sqrt{\sum_{d=1}^{D} x_{d}^{2}}"], (E, sp.sqrt(Sum(x[d] ** 2, d, D)))),
]


@pytest.mark.parametrize(
    "text, expected", [(text, expected) for spellings, expected in DEFINITIONS for text in spellings]
)
def test_definition(text, expected):
    assert parse_definition(text) == expected


def test_built_symbols_are_the_engines():
    from derive.symbols import H as engine_H
    from derive.symbols import i as engine_i

    assert (index_symbol("i"), size_symbol("H")) == (engine_i, engine_H)
    assert parse_definition("o_k = z_k")[0] == o[k]
    assert parse_expression("y_i") == y[i] and parse_expression("H") == H


def test_ranges_override_the_convention():
    lhs, rhs = parse_definition("E = 1/B*sum_n x_n", ranges={"n": (1, B)})
    assert rhs == Sum(x[n], n, B) / B
    assert parse_expression("N", ranges={"n": (1, B)}) == N
    Q = size_symbol("Q")
    assert parse_expression("x_q/Q", ranges={"q": (1, Q)}) == x[index_symbol("q")] / Q
    assert parse_variable("x_q", ranges={"q": (1, Q)}) == x[index_symbol("q")]
    assert parse_expression("sum_q x_q", ranges={"q": (0, N)}) == sp.Sum(x[index_symbol("q")], (index_symbol("q"), 0, N))


# Decisions the language makes, each with the object it builds.
EXPRESSIONS = [
    (r"\ln o_i y_i", sp.log(o[i]) * y[i]),  # an argument without brackets is one factor
    (r"\ln x^2", sp.log(x_**2)),  # ... power included
    ("ln(x)^2", sp.log(x_) ** 2),
    (r"\ln 2x", sp.log(2) * x_),
    ("sigma^2 + sigma(x) + \\sigma(x)", sp.Symbol("sigma") ** 2 + 2 * sigmoid(x_)),
    ("sigma_i", sp.IndexedBase("sigma")[i]),
    (r"\varepsilon + \epsilon + epsilon", 3 * sp.Symbol("epsilon")),
    ("pi + e + e^x + e_i", sp.pi + sp.E + sp.exp(x_) + sp.IndexedBase("e")[i]),
    ("x**2 + x^{2} + x^2", 3 * x_**2),
    ("2^3^2", sp.Integer(512)),  # right-associative
    ("-x^2", -(x_**2)),
    ("e^-x", sp.exp(-x_)),
    ("0.1 + 1e-3", sp.Rational(101, 1000)),
    ("2 x + 2x", 4 * x_),
    (r"x \cdot y \times gamma", x_ * sp.Symbol("y") * gamma),
    (r"\left[x + 1\right] [x] {x}", (x_ + 1) * x_**2),
    (r"\tfrac{1}{2} + \dfrac{1}{2}", sp.Integer(1)),
    ("1/2/x", 1 / (2 * x_)),
    ("a*-b", -sp.Symbol("a") * sp.Symbol("b")),
    ("-sum_i y_i + gamma", -Sum(y[i], i) + gamma),  # a sum ends with its term
    ("sum_i y_i*ln(o_i)/2", Sum(y[i] * sp.log(o[i]) / 2, i)),
    ("W_im + W_{im} + W_{i m} + W_{i,m}", 4 * W[i, m]),
    ("sum_ij W_ij", Sum(Sum(W[i, j], j), i)),
    ("N + M + D + H + i + T", N + M + D + H + i + T),
    ("  x\n + 1 ", x_ + 1),
]


@pytest.mark.parametrize("text, expected", EXPRESSIONS)
def test_expression(text, expected):
    assert parse_expression(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("z_k", z[k]), ("W_kd", W[k, d]), ("V_{md}", V[m, d]), ("gamma", gamma), (r"\gamma_d", sp.IndexedBase("gamma")[d])],
)
def test_variable(text, expected):
    assert parse_variable(text) == expected


def test_equation():
    assert parse_equation("sum_i y_i = 1") == (Sum(y[i], i), 1)
    assert parse_equation(r"\sum_{i=1}^{H} y_i = 1") == (Sum(y[i], i), 1)


# Each row: the call, the text, and words the one-line message must contain.
BAD = [
    (parse_definition, "E = -sum_i y_i*ln(o_i", ["syntax error at column 22", "expected ')'"]),
    (parse_definition, "E = (a + b]", ["column 11", "expected ')'", "found ']'"]),
    (parse_definition, "E = a)", ["column 6", "')' closes nothing"]),
    (parse_definition, "E = x +", ["column 8", "expected a number, a name or '('"]),
    (parse_definition, "E = x ~ y", ["column 7", "unexpected character '~'"]),
    (parse_definition, "E = foo(x)", ["unknown function 'foo'", "known: exp, ln, log, sqrt, sigmoid, tanh, softplus, erf, softmax"]),
    (parse_definition, r"E = \mathrm{relu}(x)", ["unknown function 'relu'"]),
    (parse_definition, "E = foo + 1", ["unknown name 'foo'", "column 5"]),
    (parse_definition, r"E = \foo", ["unknown LaTeX command '\\foo'"]),
    (parse_definition, "E = x_q", ["index 'q'", "has no range", "i, j, k, l (1..H), n (1..N), m (1..M), d (1..D)", "--range q=1..Q"]),
    (parse_definition, "E = sum_q x", ["index 'q'", "has no range"]),
    (parse_definition, "o_i = z_k", ["index 'k' is free on the right", "not on the left"]),
    (parse_definition, "E = y_i", ["index 'i' is free on the right"]),
    (parse_definition, "o_i = sum_i z_i", ["sum over 'i'", "index of the left side"]),
    (parse_expression, "sum_i sum_i y_i", ["sum at column 1", "over 'i'", "sum inside it"]),
    (parse_definition, "E =", ["is empty", "nothing follows '='"]),
    (parse_definition, "  ", ["empty"]),
    (parse_definition, "= x", ["nothing on the left of '='"]),
    (parse_definition, "E -sum_i y_i", ["has no '='"]),
    (parse_definition, "E = x = y", ["more than one '='"]),
    (parse_definition, "E + 1 = x", ["left side", "not a name"]),
    (parse_definition, "W_ii = 1", ["index 'i' appears twice on the left"]),
    (parse_equation, "sum_i y_i", ["has no '='"]),
    (parse_expression, "x = y", ["column 3", "found '='"]),
    (parse_expression, "softmax(z)_ij", ["softmax", "one index"]),
    (parse_expression, "softmax(i)_j", ["softmax", "needs a name"]),
    (parse_expression, "softmax(2)_i", ["column 9", "expected a name"]),
    (parse_expression, "softmax(z)", ["expected '_'"]),
    (parse_expression, "1/0", ["division by zero at column 2"]),
    (parse_expression, "x/(y - y)", ["division by zero"]),
    (parse_expression, "ln(0)", ["no finite value"]),
    (parse_variable, "e", ["constant"]),
    (parse_variable, "x + y", ["syntax error at column 3"]),
    # Limits: each refused in a moment, before SymPy does heavy work.
    (parse_expression, "(" * 4999 + "x" + ")" * 4999, ["nested too deeply", "at most 100"]),
    (parse_definition, "E = " + "{" * 5000 + "x", ["nested too deeply", "column 105"]),
    (parse_expression, "-(" * 101 + "x" + ")" * 101, ["nested too deeply"]),
    (parse_expression, "x^" * 200 + "x", ["nested too deeply"]),
    (parse_expression, r"\ln " * 200 + "x", ["nested too deeply"]),
    (parse_expression, "2^2^2^2^2^2", ["raises a constant to 65536"]),
    (parse_expression, "9^9^9", ["raises a constant to 387420489"]),
    (parse_expression, "e^100000", ["exponent of a constant"]),
    (parse_expression, "((10^100)^100)^100", ["too large"]),
    (parse_expression, "2^((10^100)^31)", ["too large"]),
    (parse_expression, "2^((10^100)^20)", ["raises a constant to a number of about 2,001 digits"]),
    (parse_expression, "*".join(["9" * 100] * 40), ["more than 1,000 digits"]),
    (parse_expression, "9" * 100_000, ["too long"]),
    (parse_expression, "9" * 101, ["number at column 1", "too long"]),
    (parse_expression, "1e999999999", ["number at column 1", "too long"]),
    (parse_expression, "x + " * 25_000 + "x", ["too long: 100,001 characters"]),
    # Text that would run code if it were evaluated is only a syntax error or an unknown name.
    (parse_expression, "__import__('os').system('x')", ["syntax error at column 1"]),
    (parse_expression, "lambda: 1", ["syntax error at column 7"]),
    (parse_expression, "exec('x')", ["syntax error at column 6", "unexpected character"]),
    (parse_expression, "exec(x)", ["unknown function 'exec'"]),
    (parse_expression, "eval(x)", ["unknown function 'eval'"]),
    (parse_definition, "E = __import__('os')", ["syntax error at column 5"]),
    (parse_expression, "x.__class__", ["syntax error"]),
]


@pytest.mark.parametrize("parse, text, words", BAD, ids=[f"{p.__name__}:{t[:30]}" for p, t, _ in BAD])
def test_bad_input(parse, text, words):
    with pytest.raises(UsageError) as error:
        parse(text)
    message = str(error.value)
    assert "\n" not in message and len(message) < 400
    for word in words:
        assert word in message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="xyzoiE_jkn^*/+-=(){}[]\\ 12.,sumlnexpfrac", max_size=40))
def test_any_text_parses_or_gives_a_usage_error(text):
    try:
        parse_expression(text)
    except UsageError as error:
        assert "\n" not in str(error)


def test_no_evaluation_of_text():
    sources = sorted(Path(__file__).parent.parent.joinpath("derive", "lang").glob("*.py"))
    assert sources
    for source in sources:
        found = re.findall(r"\beval\(|\bexec\(|sympify|\bparse_expr\b|parse_latex|\bS\(", source.read_text())
        assert not found, f"{source.name} uses {found}"


def test_import_is_cheap():
    code = "import sys, derive.lang; from derive.lang import parse_definition; print('lark' in sys.modules, 'sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_ranges_table():
    assert RANGES == {"i": "H", "j": "H", "k": "H", "l": "H", "n": "N", "m": "M", "d": "D"}


def test_the_shipped_parser_tables_are_those_of_the_grammars(tmp_path, monkeypatch):
    """The tables shipped beside the grammars are current (else: python -m derive.lang.tables),
    parse as the grammar does, and tables made from another grammar are not loaded."""
    from derive.lang import tables

    for name in tables.PARSERS:
        with (tables.FOLDER / f"{name}.tables").open("rb") as f:
            assert f.readline().rstrip(b"\n") == tables.key(name), f"{name}.tables is stale: run python -m derive.lang.tables"
    shipped = tables.parser("grammar")
    built = Lark(tables.grammar("grammar"), parser="lalr", **tables.PARSERS["grammar"][1])
    for text in ("E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)"):
        assert shipped.parse(text, start="equation") == built.parse(text, start="equation")
    # Tables under another grammar's key are not trusted: the parser is built from the grammar.
    monkeypatch.setattr(tables, "FOLDER", tmp_path)
    for f in ("grammar.lark", "document.lark"):
        (tmp_path / f).write_text((Path(tables.__file__).parent / f).read_text())
    (tmp_path / "grammar.tables").write_bytes(b"0" * 64 + b"\n" + b"not tables")
    monkeypatch.setenv("DERIVE_NO_CACHE", "1")
    assert tables.parser("grammar").parse("E = 2*z_k", start="equation") == built.parse("E = 2*z_k", start="equation")
