"""Text to SymPy: the grammar read once, and a Transformer that builds each node explicitly.

Nothing evaluates the text: a number token is validated and turned into an exact ``Rational``; every
other node is built by the method named after its grammar rule. Limits on length, nesting, digits
and powers of numbers are checked before SymPy does any work that could grow with them.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

import sympy as sp
from lark import Lark, Token, Transformer_NonRecursive, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from derive.errors import UsageError
from derive.functions import FUNCTIONS
from derive.lang.names import RANGES, Ranges, index_symbol, size_symbol

MAX_LENGTH = 10_000
"""Characters in one text."""
MAX_NESTING = 100
"""Open brackets and braces at any point of a text."""
MAX_DEPTH = 120
"""Levels of the parse tree: a bracket, a power, a function or a sum adds one. SymPy's printers and
``diff`` recurse through a tower of 200 powers past Python's recursion limit."""
MAX_DIGITS = 100
"""Digits of one number, and the size of its decimal exponent (1e-100)."""
MAX_EXPONENT = 100
"""The largest exponent, and denominator of an exponent, that a constant may be raised to."""
MAX_POWER_BITS = 10_000
"""Bits that all the powers of constants in one text may produce together."""
MAX_RESULT_DIGITS = 1_000
"""Digits of a numerator or denominator in the result (Python prints at most 4,300)."""

_CLOSERS = {"_RPAR": "')'", "_RBRACK": "']'", "_RBRACE": "'}'"}
_TERMINALS = {
    **_CLOSERS,
    "_LPAR": "'('",
    "_LBRACK": "'['",
    "_LBRACE": "'{'",
    "_SUB": "'_'",
    "_COMMA": "','",
    "EQUAL": "'='",
    "POW": "'^'",
    "MULOP": "'*'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "INDEX": "an index letter",
    "NAME": "a name",
    "GREEK": "a name",
    "NUMBER": "a number",
    "$END": "the end of the text",
}
_GREEK = {"varepsilon": "epsilon", "vartheta": "theta", "varphi": "phi"}
_FUNCTION_ALIASES = {"sigma": "sigmoid"}
_CONSTANTS = {"e": sp.E, "pi": sp.pi}
_KNOWN_FUNCTIONS = ", ".join([*FUNCTIONS, "softmax"])


@functools.cache
def _parser() -> Lark:
    """The LALR parser of ``grammar.lark``, made on first use and kept (see :mod:`derive.lang.tables`)."""
    from derive.lang.tables import parser

    return parser("grammar")


def parse_definition(text: str, ranges: Ranges | None = None) -> tuple[sp.Expr, sp.Expr]:
    """See :func:`derive.lang.parse_definition`."""
    _split_equation(text, "definition")
    builder = _Builder(text, ranges)
    lhs, rhs = builder.build("equation")
    if not (isinstance(lhs, sp.Indexed) or (isinstance(lhs, sp.Symbol) and not lhs.is_integer)):
        raise UsageError(
            f"the left side of {_quote(text)} is not a name: write one name with optional index letters, "
            "such as E, o_i or W_im"
        )
    indices = lhs.indices if isinstance(lhs, sp.Indexed) else ()
    for index in indices:
        if list(indices).count(index) > 1:
            raise UsageError(f"index '{index}' appears twice on the left of {_quote(text)}: use distinct letters")
    for total in rhs.find(sp.Sum):
        for index, *_ in total.limits:
            if index in indices:
                raise UsageError(
                    f"a sum over '{index}' in {_quote(text)} reuses the index of the left side: "
                    "use another letter for the sum"
                )
    free = sorted(builder.free_indices(rhs) - set(indices), key=str)
    if free:
        index = free[0]
        raise UsageError(
            f"index '{index}' is free on the right of {_quote(text)} but not on the left: "
            f"sum over it (sum_{index} ...) or add it to the left side"
        )
    return lhs, rhs


def parse_expression(text: str, ranges: Ranges | None = None) -> sp.Expr:
    """See :func:`derive.lang.parse_expression`."""
    return _Builder(text, ranges).build("expression")


def parse_equation(text: str, ranges: Ranges | None = None) -> tuple[sp.Expr, sp.Expr]:
    """See :func:`derive.lang.parse_equation`."""
    _split_equation(text, "equation")
    return _Builder(text, ranges).build("equation")


def parse_variable(text: str, ranges: Ranges | None = None) -> sp.Symbol | sp.Indexed:
    """See :func:`derive.lang.parse_variable`."""
    variable = _Builder(text, ranges).build("variable")
    if not isinstance(variable, (sp.Symbol, sp.Indexed)):
        raise UsageError(f"{_quote(text)} is a constant, not a variable")
    return variable


class _Builder(Transformer_NonRecursive):
    """Builds the SymPy objects of one text; its methods are named after the grammar's rules.

    The state of one parse lives on the instance: the ranges in force, the letters the text uses
    (a softmax sums over one it does not), the letters bound by sums with explicit bounds, and what
    is left of the budget for powers of constants.

    Args:
        text: the text to parse.
        ranges: index ranges that take precedence over :data:`derive.lang.RANGES`.
    """

    def __init__(self, text: str, ranges: Ranges | None = None) -> None:
        super().__init__()
        _check_text(text)
        self.text = text
        self.ranges: dict[str, tuple[sp.Expr, sp.Expr]] = {
            letter: (sp.Integer(1), size_symbol(size)) for letter, size in RANGES.items()
        }
        for letter, bounds in (ranges or {}).items():
            self.ranges[letter] = tuple(sp.Integer(b) if isinstance(b, int) else b for b in bounds)
        self.sizes = {size: size_symbol(size) for size in RANGES.values()} | {
            bound.name: bound for bounds in self.ranges.values() for bound in bounds if isinstance(bound, sp.Symbol)
        }
        self.used: set[str] = set()
        self.bounded: set[str] = set()
        self.power_bits = MAX_POWER_BITS

    def build(self, start: str) -> sp.Expr | tuple[sp.Expr, sp.Expr]:
        """Parse the text from the grammar rule ``start`` and build its value."""
        try:
            tree = _parser().parse(self.text, start=start)
        except UnexpectedInput as error:
            raise self._syntax_error(error) from None
        self._survey(tree)
        try:
            value = self.transform(tree)
        except VisitError as error:
            raise error.orig_exc from None
        for side in value if isinstance(value, tuple) else (value,):
            if side.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
                raise UsageError(f"{_quote(self.text)} has no finite value: it divides by zero or takes ln(0)")
            bits = max((max(r.p.bit_length(), r.q.bit_length()) for r in side.atoms(sp.Rational)), default=0)
            if bits > MAX_RESULT_DIGITS * 3.33:
                raise UsageError(f"{_quote(self.text)} makes a number of more than {MAX_RESULT_DIGITS:,} digits")
        return value

    def free_indices(self, expr: sp.Expr) -> set[sp.Symbol]:
        """The index letters of ``expr`` that no sum binds."""
        letters = self.ranges.keys() | self.bounded
        return {s for s in expr.free_symbols if isinstance(s, sp.Symbol) and s.is_integer and s.name in letters}

    # The rules, bottom-up.

    def equation(self, children: list) -> tuple[sp.Expr, sp.Expr]:
        lhs, _, rhs = children
        return lhs, rhs

    def expression(self, children: list) -> sp.Expr:
        return children[0]

    def expr(self, children: list) -> sp.Expr:
        total = children[0]
        for sign, term in zip(children[1::2], children[2::2]):
            total = total + term if sign == "+" else total - term
        return total

    def term(self, children: list) -> sp.Expr:
        product, division = children[0], None
        for child in children[1:]:
            if isinstance(child, Token):
                division = child if child == "/" else None
            else:
                product = self._divide(product, child, division) if division else product * child
                division = None
        return product

    def negate(self, children: list) -> sp.Expr:
        return -children[1]

    def positive(self, children: list) -> sp.Expr:
        return children[1]

    def summation(self, children: list) -> sp.Expr:
        (limits, token), body = children
        for index, lower, upper in reversed(limits):
            for inner in body.find(sp.Sum):
                if any(limit[0] == index for limit in inner.limits):
                    raise UsageError(
                        f"the sum at column {token.start_pos + 1} of {_quote(self.text)} is over '{index}', "
                        f"and so is a sum inside it: use another letter for one of them"
                    )
            body = sp.Sum(body, (index, lower, upper))
        return body

    def sum_implicit(self, children: list) -> tuple[list[tuple[sp.Symbol, sp.Expr, sp.Expr]], Token]:
        token, letters = children
        limits = []
        for offset, letter in enumerate(letters):
            if letter not in self.ranges:
                raise self._no_range(letter, letters.start_pos + offset)
            limits.append((index_symbol(letter), *self.ranges[letter]))
        return limits, token

    def sum_explicit(self, children: list) -> tuple[list[tuple[sp.Symbol, sp.Expr, sp.Expr]], Token]:
        token, letter, _, lower, _, upper = children
        if len(letter) > 1:
            raise UsageError(
                f"the sum at column {token.start_pos + 1} of {_quote(self.text)} has bounds for '{letter}': "
                "a sum with bounds runs over one letter"
            )
        return [(index_symbol(letter), lower, upper)], token

    def power(self, children: list) -> sp.Expr:
        base, token, exponent = children
        if base.is_number and exponent.is_Number:  # SymPy would compute the value now: bound its size
            if not (exponent.is_Rational and abs(exponent) <= MAX_EXPONENT and exponent.q <= MAX_EXPONENT):
                raise UsageError(
                    f"the power at column {token.start_pos + 1} of {_quote(self.text)} raises a constant to "
                    f"{_short(exponent)}: the exponent of a constant must be a fraction of size at most "
                    f"{MAX_EXPONENT}"
                )
            bits = max((max(r.p.bit_length(), r.q.bit_length()) for r in base.atoms(sp.Rational)), default=1)
            self.power_bits -= bits * abs(exponent.p)
            if self.power_bits < 0:
                raise UsageError(
                    f"the power at column {token.start_pos + 1} of {_quote(self.text)} makes a number too large "
                    f"to work with (over {MAX_POWER_BITS * 3 // 10:,} digits)"
                )
        return sp.Pow(base, exponent)

    def call(self, children: list) -> sp.Expr:
        token, argument = children
        name = _word(token)
        return FUNCTIONS[_FUNCTION_ALIASES.get(name, name)](argument)

    def fraction(self, children: list) -> sp.Expr:
        token, numerator, denominator = children
        return self._divide(numerator, denominator, token)

    def softmax(self, children: list) -> sp.Expr:
        token, argument, indices = children
        where = f"softmax at column {token.start_pos + 1} of {_quote(self.text)}"
        if isinstance(argument, sp.Indexed):
            base, leading = argument.base, argument.indices
        elif isinstance(argument, sp.Symbol) and not argument.is_integer:
            base, leading = sp.IndexedBase(argument.name), ()
        else:
            raise UsageError(f"the {where} needs a name, as in softmax(z)_i")
        if len(indices) != 1:
            raise UsageError(f"the {where} takes one index after it, as in softmax(z)_i")
        index = indices[0]
        if index.name not in self.ranges:
            raise self._no_range(index.name, token.start_pos)
        lower, upper = self.ranges[index.name]
        free = [
            letter
            for letter, bounds in self.ranges.items()
            if bounds == (lower, upper) and letter not in self.used
        ]
        if not free:
            raise UsageError(f"the {where} needs a letter of the range of '{index}' that the text does not use")
        bound = index_symbol(free[0])
        self.used.add(free[0])
        return sp.exp(base[(*leading, index)]) / sp.Sum(sp.exp(base[(*leading, bound)]), (bound, lower, upper))

    def variable(self, children: list) -> sp.Expr:
        token, *subscript = children
        name = _word(token)
        name = _GREEK.get(name, name)
        if subscript:
            return sp.IndexedBase(name)[tuple(subscript[0])]
        if name in self.sizes:
            return self.sizes[name]
        if name in self.ranges or name in self.bounded:
            return index_symbol(name)
        return _CONSTANTS[name] if name in _CONSTANTS else sp.Symbol(name)

    def subscript(self, children: list) -> list[sp.Symbol]:
        indices = []
        for letters in children:
            for offset, letter in enumerate(letters):
                if letter not in self.ranges and letter not in self.bounded:
                    raise self._no_range(letter, letters.start_pos + offset)
                indices.append(index_symbol(letter))
        return indices

    def unknown_name(self, children: list) -> sp.Expr:
        token = children[0]
        name = re.sub(r"^\\(mathrm|operatorname)\{\s*|\s*\}$", "", token)
        where = f"at column {token.start_pos + 1} of {_quote(self.text)}"
        if re.match(r"\s*(\(|\\left(?![A-Za-z]))", self.text[token.end_pos :]):
            raise UsageError(f"unknown function '{name}' {where} (known: {_KNOWN_FUNCTIONS})")
        if name.startswith("\\"):
            raise UsageError(f"unknown LaTeX command '{name}' {where}")
        raise UsageError(
            f"unknown name '{name}' {where}: a name is one letter or a Greek letter such as gamma; "
            "write a product as x*y or x y"
        )

    def NUMBER(self, token: Token) -> sp.Rational:
        mantissa, _, exponent = token.lower().partition("e")
        if sum(c.isdigit() for c in mantissa) > MAX_DIGITS or abs(int(exponent or 0)) > MAX_DIGITS:
            raise UsageError(
                f"the number at column {token.start_pos + 1} of {_quote(self.text)} is too long: "
                f"at most {MAX_DIGITS} digits and an exponent of at most {MAX_DIGITS}"
            )
        value = Fraction(str(token))
        return sp.Rational(value.numerator, value.denominator)

    # Helpers.

    def _divide(self, numerator: sp.Expr, denominator: sp.Expr, token: Token) -> sp.Expr:
        if denominator == 0:
            raise UsageError(f"division by zero at column {token.start_pos + 1} of {_quote(self.text)}")
        return numerator / denominator

    def _no_range(self, letter: str, position: int) -> UsageError:
        groups: dict[tuple[sp.Expr, sp.Expr], list[str]] = {}
        for known, bounds in self.ranges.items():
            groups.setdefault(bounds, []).append(known)
        use = ", ".join(f"{', '.join(letters)} ({lower}..{upper})" for (lower, upper), letters in groups.items())
        return UsageError(
            f"index '{letter}' at column {position + 1} of {_quote(self.text)} has no range: "
            f"use {use}, or --range {letter}=1..{letter.upper()}"
        )

    def _survey(self, tree: Tree) -> None:
        """Check the depth of the tree and note the letters the text uses, without recursion."""
        stack = [(tree, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise UsageError(f"{_quote(self.text)} is nested too deeply (more than {MAX_DEPTH} levels)")
            if node.data == "sum_explicit":
                self.bounded.update(node.children[1])
            for child in node.children:
                if isinstance(child, Tree):
                    stack.append((child, depth + 1))
                elif child.type in ("INDEX", "NAME"):
                    self.used.update(child)

    def _syntax_error(self, error: UnexpectedInput) -> UsageError:
        if isinstance(error, UnexpectedToken) and error.token.type != "$END":
            position, expected = error.token.start_pos, error.expected
            found = f", found '{error.token}'"
        elif isinstance(error, UnexpectedCharacters):  # the lexer's `allowed` mixes contexts: say less
            position = error.pos_in_stream
            return UsageError(
                f"syntax error at column {position + 1} of {_quote(self.text)}: "
                f"unexpected character '{self.text[position]}'"
            )
        else:
            position = len(self.text)
            expected = error.expected if isinstance(error, (UnexpectedToken, UnexpectedEOF)) else set()
            found = ""
        column = f"column {position + 1}" + (" (the end)" if position >= len(self.text) else "")
        return UsageError(f"syntax error at {column} of {_quote(self.text)}: expected {_expected(expected)}{found}")


def _expected(names: set[str]) -> str:
    """What the parser would have accepted, in words, most useful first."""
    if "$END" in names:
        return "an operator or the end of the text"
    closers = [word for name, word in _CLOSERS.items() if name in names]
    if closers:
        return " or ".join(closers)
    if "EQUAL" in names:
        return "'=' or an operator"
    if "NUMBER" in names:
        return "a number, a name or '('"
    return " or ".join(sorted({_TERMINALS.get(name, name.lower()) for name in names})) or "something else"


def _check_text(text: str) -> None:
    """Refuse text that is not a string, too long, or nested too deeply, before parsing it."""
    if not isinstance(text, str):
        raise UsageError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise UsageError(f"the text is too long: {len(text):,} characters (at most {MAX_LENGTH:,})")
    if not text.strip():
        raise UsageError("the text is empty")
    depth = 0
    for position, char in enumerate(text):
        if char in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise UsageError(
                    f"brackets nested too deeply at column {position + 1} of {_quote(text)} (at most {MAX_NESTING})"
                )
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise UsageError(f"syntax error at column {position + 1} of {_quote(text)}: '{char}' closes nothing")


def _split_equation(text: str, kind: str) -> None:
    """Refuse a definition or equation without exactly one '=' outside brackets, or with an empty side."""
    _check_text(text)
    depth, equals = 0, []
    for position, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == "=" and depth == 0:
            equals.append(position)
    example = "o_i = exp(z_i)/sum_j exp(z_j)" if kind == "definition" else "sum_i y_i = 1"
    if not equals:
        raise UsageError(f"the {kind} {_quote(text)} has no '=': write it as {example}")
    if len(equals) > 1:
        raise UsageError(f"the {kind} {_quote(text)} has more than one '=' (column {equals[1] + 1})")
    if not text[: equals[0]].strip():
        raise UsageError(f"the {kind} {_quote(text)} has nothing on the left of '=': write it as {example}")
    if not text[equals[0] + 1 :].strip():
        raise UsageError(f"the {kind} {_quote(text)} is empty: nothing follows '='")


def _word(token: str) -> str:
    """The letters that name a keyword token: ``\\mathrm{softplus}`` -> ``softplus``, ``\\ln`` -> ``ln``."""
    return re.findall(r"[A-Za-z]+", token)[-1]


def _quote(text: str, width: int = 80) -> str:
    """The text on one line, in quotes, shortened to ``width`` characters."""
    line = re.sub(r"\s", " ", text)
    return f"'{line}'" if len(line) <= width else f"'{line[: width - 3]}...'"


def _short(value: sp.Rational) -> str:
    """A number as text, or its size when it is too long to read (or for Python to print)."""
    bits = max(value.p.bit_length(), value.q.bit_length())
    return str(value) if bits <= 64 else f"a number of about {int(bits * 0.30103) + 1:,} digits"
