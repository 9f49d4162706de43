"""Reading the documents' formulas back: what the printer and the templates write, as SymPy objects.

The definition language reads what a user writes; a document's formula has more in it: the
derivative ``\\frac{\\partial E}{\\partial z_k}`` and the operator ``\\frac{\\partial}{\\partial z_k}``,
``\\delta_{ik}``, sums that skip an index (``\\sum_{\\substack{i=1 \\\\ i \\neq k}}^{H}``), underbraces
with labels, ``\\boxed``, case splits, matrices, lists, elisions (``\\cdots``), numbers such as
``5.076 \\times 10^{-435}``, relations (``\\approx``, ``\\overset{?}{=}``), accents and primes on
names (``\\tilde{z}_i``, ``\\hat{y}_k``, ``y'_k``). ``document.lark`` adds these to ``grammar.lark``
for a parser of its own, so none of it can be written in a definition; the builder here extends
the language's, and like it never evaluates text: each node is built by the method named after
its grammar rule.

A notation (see :mod:`derive.notation`) is read back by renaming: a document that writes the
outputs as ``\\hat{y}`` reads back with them as ``o``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

import sympy as sp
from lark import Lark, Token
from lark.exceptions import UnexpectedInput, VisitError

from derive.errors import UsageError
from derive.lang.names import index_symbol, size_symbol
from derive.lang.parse import _GREEK, _Builder, _quote, _word
from derive.symbols import ExcludedSum

if TYPE_CHECKING:  # pragma: no cover
    from derive.latex import Notation

MAX_LENGTH = 200_000
"""Characters in one formula (an elided matrix of a layer's weights is long, not deep)."""
MAX_EXPONENT = 1_000_000
"""The largest power of ten a number of a document may have (examples go to 100,000 digits)."""

ELIDED = sp.Symbol("…")
"""What ``\\dots``, ``\\cdots``, ``\\vdots`` and ``\\ddots`` stand for: entries left out."""

RELATIONS = {"=": "=", r"\approx": "≈", r"\overset{?}{=}": "?=", r"\neq": "≠", r"\ne": "≠", "<": "<", ">": ">", r"\le": "≤", r"\leq": "≤", r"\ge": "≥", r"\geq": "≥", r"\in": "∈"}
"""Each relation as written, by the sign a :class:`Statement` keeps."""


@dataclass(frozen=True)
class Cases:
    """A case split: each row a value and the condition under which it holds."""

    rows: tuple[tuple[sp.Expr, sp.Basic], ...]


@dataclass(frozen=True)
class Operator:
    """A function named alone, as the notation line of ``\\ln`` names it."""

    name: str


@dataclass(frozen=True)
class Statement:
    """Sides joined by relations: ``sides[n] relations[n] sides[n + 1]``."""

    sides: tuple[Any, ...]
    relations: tuple[str, ...] = ()
    boxed: bool = False


@dataclass(frozen=True)
class Formula:
    """A formula of a document: its statements (separated by commas), and every underbrace's
    sub-term with its label as written (the label is not part of the value)."""

    statements: tuple[Statement, ...]
    labels: tuple[tuple[sp.Expr, str], ...] = field(default=())


class Approximately(sp.Expr):
    """An entry written ``\\ln 3 \\approx 1.0986``: its value and the decimal shown for it."""

    @property
    def value(self) -> sp.Expr:
        return self.args[0]

    @property
    def decimal(self) -> sp.Expr:
        return self.args[1]


class PartialOf(sp.Expr):
    """``\\partial u`` in prose: two of them divided are a derivative, ``\\partial E / \\partial z_k``."""

    is_commutative = True

    @property
    def expr(self) -> sp.Expr:
        return self.args[0]


@functools.cache
def _parser() -> Lark:
    """The LALR parser of grammar.lark and document.lark, made on first use and kept (see
    :mod:`derive.lang.tables`)."""
    from derive.lang.tables import parser

    return parser("document")


def parse_document(tex: str, notation: "Notation | None" = None) -> Formula:
    """See :func:`derive.lang.parse_document`."""
    formula = _DocumentBuilder(tex, _index_ranges(notation)).read("document")
    return _renamed(formula, notation) if notation is not None and notation.names else formula


def parse_label(tex: str, notation: "Notation | None" = None) -> Formula | None:
    """An underbrace's label as a formula: ``\\frac{\\partial o_i}{\\partial z_k},\\; i \\neq k``
    is the derivative and the condition it holds under (two statements); ``=\\,0`` says the
    sub-term is 0. None for a label in words (``\\text{no } i``)."""
    body = tex.strip()
    if body.startswith("_"):
        body = body[1:].strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    if re.search(r"\\text\b", body):
        return None
    if body.lstrip().startswith("="):
        return parse_document("0 " + body, notation)
    return parse_document(body, notation)


class _DocumentBuilder(_Builder):
    """The definition language's builder, with the rules of document.lark."""

    def __init__(self, text: str, ranges: Mapping | None = None) -> None:
        if isinstance(text, str) and len(text) > MAX_LENGTH:
            raise UsageError(f"the formula is too long: {len(text):,} characters (at most {MAX_LENGTH:,})")
        # The language's own limit on length is for what a user types; the other limits hold.
        super().__init__(text[:10_000] if isinstance(text, str) else text, ranges)
        self.text = text
        self.labels: list[tuple[sp.Expr, str]] = []

    def read(self, start: str) -> Any:
        try:
            tree = _parser().parse(self.text, start=start)
        except UnexpectedInput as error:
            raise self._syntax_error(error) from None
        self._survey(tree)
        try:
            return self.transform(tree)
        except VisitError as error:
            raise error.orig_exc from None

    # The rules of document.lark.

    def document(self, children: list) -> Formula:
        return Formula(tuple(children), tuple(self.labels))

    def statement(self, children: list) -> Statement:
        return Statement(tuple(children[0::2]), tuple(children[1::2]))

    def boxed(self, children: list) -> Statement:
        inner = children[-1]
        return Statement(inner.sides, inner.relations, True)

    def layout(self, children: list) -> Statement:
        return children[1]

    def relation(self, children: list) -> str:
        written = re.sub(r"\s+", "", str(children[0]))
        return RELATIONS.get(written, written)

    def bare_function(self, children: list) -> Operator:
        return Operator(_word(children[0]))

    def cases(self, children: list) -> Cases:
        return Cases(tuple(c for c in children if isinstance(c, tuple)))

    def case(self, children: list) -> tuple[sp.Expr, sp.Basic]:
        value, _, condition = children
        return value, condition

    def condition(self, children: list) -> sp.Basic:
        lhs, relation, rhs = children
        if relation == "=":
            return sp.Eq(lhs, rhs, evaluate=False)
        if relation == "≠":
            return sp.Ne(lhs, rhs, evaluate=False)
        raise UsageError(f"a case of {_quote(self.text)} holds under '{lhs} {relation} {rhs}': only = and \\neq are read")

    def matrix(self, children: list) -> sp.ImmutableMatrix:
        rows = [c for c in children if isinstance(c, tuple)]
        if len({len(r) for r in rows}) != 1:
            raise UsageError(f"a matrix of {_quote(self.text)} has rows of different lengths")
        return sp.ImmutableMatrix(rows)

    def approximately(self, children: list) -> sp.Expr:
        return Approximately(children[0], children[2])

    def row(self, children: list) -> tuple[sp.Expr, ...]:
        return tuple(children)

    def operator(self, children: list) -> sp.Expr:
        return children[-1]

    def apply(self, children: list) -> sp.Expr:
        variable, operand = children
        return sp.Derivative(operand, variable)

    def differential(self, children: list) -> sp.Expr:
        return PartialOf(children[1])

    def differential_power(self, children: list) -> sp.Expr:
        return PartialOf(self.power(children[1:]))

    def differential_call(self, children: list) -> sp.Expr:
        return PartialOf(self.call(children[1:]))

    def apply_power(self, children: list) -> sp.Expr:
        return sp.Derivative(self.power(children[1:]), children[0])

    def apply_call(self, children: list) -> sp.Expr:
        return sp.Derivative(self.call(children[1:]), children[0])

    def fraction(self, children: list) -> sp.Expr:
        # \frac{\partial E}{\partial z_k}: a fraction of differentials is a derivative.
        _, numerator, denominator = children
        if isinstance(numerator, PartialOf) and isinstance(denominator, PartialOf):
            return sp.Derivative(numerator.expr, denominator.expr)
        return super().fraction(children)

    def underbrace(self, children: list) -> sp.Expr:
        _, expr, label = children
        self.labels.append((expr, str(label)))
        return expr

    def vector(self, children: list) -> sp.Tuple:
        return sp.Tuple(*children)

    def elision(self, children: list) -> sp.Expr:
        return ELIDED

    def scientific(self, children: list) -> sp.Rational:
        token = children[0]
        mantissa, exponent = re.match(r"([\d.]+)\s*\\times\s*10\s*\^\s*\{\s*(-?\d+)\s*\}", str(token)).groups()
        if abs(int(exponent)) > MAX_EXPONENT or len(mantissa) > 100:
            raise UsageError(f"the number at column {token.start_pos + 1} of {_quote(self.text)} is too long")
        value = Fraction(mantissa) * Fraction(10) ** int(exponent)
        return sp.Rational(value.numerator, value.denominator)

    def sum_excluded(self, children: list) -> tuple[tuple, Token]:
        token, _, letter, _, lower, other, _, skip, _, upper = children
        if str(letter) != str(other) or (letter.type == "INDEX" and len(letter) != 1):
            raise UsageError(f"the sum at column {token.start_pos + 1} of {_quote(self.text)} skips a value of another index than it runs over")
        return ("excluded", self._index(letter), lower, upper, skip), token

    def sum_greek(self, children: list) -> tuple[list, Token]:
        """A sum over an index a notation writes as a Greek letter (\\alpha for i), or one renamed
        apart (n'): it runs over the classes unless its bounds are written."""
        token, letter, *bounds = children
        lower, upper = (bounds[1], bounds[3]) if bounds else (sp.Integer(1), size_symbol("H"))
        return [(self._index(letter), lower, upper)], token

    def _index(self, token: Token) -> sp.Symbol:
        return index_symbol(_GREEK.get(_word(token), _word(token)) if token.type == "GREEK" else str(token))

    def summation(self, children: list) -> sp.Expr:
        (limits, token), body = children
        if limits and limits[0] == "excluded":
            _, index, lower, upper, skip = limits
            return ExcludedSum(body, index, lower, upper, skip)
        return super().summation(children)

    def term(self, children: list) -> sp.Expr:
        # \partial E / \partial z_k: a quotient of differentials is a derivative.
        if len(children) == 3 and isinstance(children[1], Token) and children[1] == "/":
            num, den = children[0], children[2]
            if isinstance(num, PartialOf) and isinstance(den, PartialOf):
                return sp.Derivative(num.expr, den.expr)
        return super().term(children)

    def subscript(self, children: list) -> list[sp.Expr]:
        out = []
        for token in children:
            out += [index_symbol(_GREEK.get(_word(token), _word(token)))] if token.type == "GREEK" else self._items(token)
        return out

    def _items(self, token: Token) -> list[sp.Expr]:
        text = re.sub(r"\s", "", str(token))
        # W_{1,2} and W_{k,1} by commas; W_{kd}, \delta_{\alpha\kappa} letter by letter; y_{12} one number.
        items = text.split(",") if "," in text else [text] if text.isdigit() else re.findall(r"\\[A-Za-z]+|[A-Za-z]'*|\d+", text)
        out = []
        for item in items:
            if item.startswith("\\"):  # an index a notation writes as a Greek letter
                out.append(index_symbol(_GREEK.get(item[1:], item[1:])))
            elif item.isdigit():
                out.append(sp.Integer(item))
            elif item in self.sizes:
                out.append(self.sizes[item])
            elif len(item) == 1 and (item in self.ranges or item in self.bounded):
                out.append(index_symbol(item))
            elif re.fullmatch(r"[a-z]'*", item):
                # An index a derivation gave its own range (--range c=1..D), or one renamed
                # apart (m'): the document printed it, so it reads back as an index.
                out.append(index_symbol(item))
            else:
                raise self._no_range(item, token.start_pos)
        return out

    def variable(self, children: list) -> sp.Expr:
        token, *subscript = children
        if token.type == "DECORATED":
            accent, letter = re.match(r"\\(\w+)\s*\{\s*(\\?[A-Za-z]+)\s*\}", str(token)).groups()
            if letter.startswith("\\"):  # a Greek letter: \tilde{\varepsilon} is \tilde{\epsilon}
                letter = "\\" + _GREEK.get(letter[1:], letter[1:])
            name = rf"\{accent}{{{letter}}}"
        elif token.type == "PRIMED":
            letters = re.match(r"\\?([A-Za-z]+)", str(token)).group(1)
            name = _GREEK.get(letters, letters) + "'" * str(token).count("'")
        else:
            name = _GREEK.get(_word(token), _word(token))
            if name == "delta" and subscript and len(subscript[0]) == 2:
                return sp.KroneckerDelta(*subscript[0], evaluate=False)
            if token.type != "GREEK" or not subscript:
                return super().variable(children)
        if subscript:
            return sp.IndexedBase(name)[tuple(subscript[0])]
        return sp.Symbol(name)


# --- a notation read back ------------------------------------------------------------------------
def _index_ranges(notation: "Notation | None") -> dict:
    """The letters a notation writes the class indices with (q for k), each over the classes."""
    if notation is None:
        return {}
    letters = [w for internal, w in notation.names.items() if internal in ("i", "j", "k") and len(w) == 1 and w.isalpha()]
    return {w: (sp.Integer(1), size_symbol("H")) for w in letters}


def _renamed(formula: Formula, notation: "Notation") -> Formula:
    """The formula with the notation's names turned back into the internal ones."""
    table = _reverse(tuple(sorted(notation.names.items())))

    def back(x: Any) -> Any:
        if isinstance(x, Statement):
            return Statement(tuple(back(s) for s in x.sides), x.relations, x.boxed)
        if isinstance(x, Cases):
            return Cases(tuple((back(v), back(c)) for v, c in x.rows))
        if isinstance(x, sp.Basic):
            return _rename(x, table)
        return x

    return Formula(tuple(back(s) for s in formula.statements), tuple((back(e), text) for e, text in formula.labels))


@functools.cache
def _reverse(names: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Written name (as the parser names it) -> internal name, for each role the notation renames
    and the accented and primed names made from it (\\tilde{z}, y')."""
    out: dict[str, str] = {}
    for internal, written in names:
        read = _read_name(written)
        out[read] = internal
        out[f"{read}'"] = f"{internal}'"
        if len(read) == 1 or not read.startswith("\\"):
            out[rf"\tilde{{{read}}}"] = rf"\tilde{{{internal}}}"
    return out


def _read_name(written: str) -> str:
    """The name the parser gives a written name: \\alpha is alpha, \\hat{y} stays \\hat{y}."""
    value = parse_document(written).statements[0].sides[0]
    return value.name if isinstance(value, sp.Symbol) else str(value)


def _rename(e: sp.Basic, table: Mapping[str, str]) -> sp.Basic:
    swap: dict[sp.Basic, sp.Basic] = {}
    for b in e.atoms(sp.IndexedBase):
        if str(b.label) in table:
            swap[b] = sp.IndexedBase(table[str(b.label)])
    for s in e.atoms(sp.Symbol):
        if s.name in table:
            target = table[s.name]
            swap[s] = size_symbol(target) if target in ("H", "D", "N", "M") else index_symbol(target) if s.is_integer else sp.Symbol(target)
    return e.xreplace(swap) if swap else e
