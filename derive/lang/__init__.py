"""The definition language: index notation in plain text or LaTeX, parsed into SymPy objects.

``o_i = exp(z_i)/sum_j exp(z_j)`` and ``o_i = \\frac{e^{z_i}}{\\sum_{j=1}^{H} e^{z_j}}`` give the
same objects. The grammar is ``grammar.lark``; ``parse.py`` builds SymPy objects from its trees
and never evaluates the text. Importing this package is cheap: lark and SymPy are imported on the
first call of a parse function.

Conventions the language fixes:

- A subscript of letters is a list of indices (``W_im`` is ``W[i, m]``); each index letter has a
  range, from :data:`RANGES` or from the caller's ``ranges``; a sum without bounds runs over it.
- A name is one letter or a spelled-out Greek letter (``gamma``, ``\\gamma``); ``e`` is Euler's
  number and ``pi`` is pi; H, N, M, D are the sizes of the ranges.
- A function written without brackets takes one factor, power included: ``\\ln o_i y_i`` is
  ``ln(o_i) y_i`` and ``\\ln x^2`` is ``ln(x^2)``. ``sigma`` before a bracket is the sigmoid,
  elsewhere the Greek letter.
- A sum runs to the end of its term: ``-sum_i y_i ln(o_i) + c`` is ``-(sum) + c``.
- ``softmax(z)_i`` is written out as ``e^{z_i} / sum_j e^{z_j}`` over the last index
  (``softmax(z_n)_i`` is ``e^{z_ni} / sum_j e^{z_nj}``), with a summation letter of the same
  range that the text does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from derive.lang.names import RANGES, Ranges, index_symbol, size_symbol

if TYPE_CHECKING:  # pragma: no cover
    import sympy as sp

    from derive.lang.document import Formula
    from derive.latex import Notation

__all__ = [
    "RANGES",
    "Ranges",
    "index_symbol",
    "parse_definition",
    "parse_document",
    "parse_equation",
    "parse_expression",
    "parse_variable",
    "size_symbol",
]

def parse_definition(text: str, ranges: Ranges | None = None) -> "tuple[sp.Expr, sp.Expr]":
    """Parse ``NAME = EXPRESSION`` into ``(lhs, rhs)``.

    Args:
        text: e.g. ``"o_i = exp(z_i)/sum_j exp(z_j)"``.
        ranges: index ranges that take precedence over :data:`RANGES`.

    Returns:
        The left side (a ``Symbol`` such as ``E`` or an ``Indexed`` such as ``o[i]``) and the
        right side, whose free indices all appear on the left.

    Raises:
        UsageError: the text is not a definition; the message names the problem.
    """
    from derive.lang.parse import parse_definition as parse

    return parse(text, ranges)


def parse_expression(text: str, ranges: Ranges | None = None) -> "sp.Expr":
    """Parse an expression such as ``"sum_i y_i*ln(o_i)"``; free indices are allowed.

    Raises:
        UsageError: the text is not an expression; the message names the problem.
    """
    from derive.lang.parse import parse_expression as parse

    return parse(text, ranges)


def parse_equation(text: str, ranges: Ranges | None = None) -> "tuple[sp.Expr, sp.Expr]":
    """Parse an equation such as ``"sum_i y_i = 1"`` into its two sides.

    Raises:
        UsageError: the text is not an equation; the message names the problem.
    """
    from derive.lang.parse import parse_equation as parse

    return parse(text, ranges)


def parse_variable(text: str, ranges: Ranges | None = None) -> "sp.Symbol | sp.Indexed":
    """Parse a variable such as ``"z_k"``, ``"W_kd"``, ``"V_{md}"`` or ``"gamma"``.

    Raises:
        UsageError: the text is not one name with optional index letters.
    """
    from derive.lang.parse import parse_variable as parse

    return parse(text, ranges)


def parse_document(text: str, notation: "Notation | None" = None) -> "Formula":
    """Read a formula of a document back: the LaTeX the printer and the templates write, with
    derivatives, Kronecker deltas, sums that skip an index, underbraces, case splits, matrices,
    elisions and relations (see :mod:`derive.lang.document`). Not a way to write definitions.

    Args:
        text: one formula, as a document shows it (without the dollars or fences around it).
        notation: the notation the document was written in; its names are read back as the
            internal ones (``\\hat{y}_k`` as ``o_k``).

    Returns:
        The formula's statements (sides joined by relations) and its underbraces' sub-terms with
        their labels as written.

    Raises:
        UsageError: the text is not a formula of a document; the message names the problem.
    """
    from derive.lang.document import parse_document as parse

    return parse(text, notation)
