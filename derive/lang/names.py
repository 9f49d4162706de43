"""The names the language fixes: each index letter's range, and the symbols of indices and sizes.
Imported by the package and by its parsers; SymPy is imported on the first call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import sympy as sp

RANGES: dict[str, str] = {"i": "H", "j": "H", "k": "H", "l": "H", "n": "N", "m": "M", "d": "D"}
"""Each index letter's range 1..size, by the size's name."""

Ranges = Mapping[str, "tuple[sp.Expr, sp.Expr]"]
"""Index letter -> (lower, upper); takes precedence over :data:`RANGES`, e.g. ``{"n": (1, B)}``."""


def index_symbol(name: str) -> "sp.Symbol":
    """The symbol of the index letter ``name``: a positive integer."""
    import sympy as sp

    return sp.Symbol(name, integer=True, positive=True)


def size_symbol(name: str) -> "sp.Symbol":
    """The symbol of the size ``name`` (H, N, M, D): a positive integer."""
    import sympy as sp

    return sp.Symbol(name, integer=True, positive=True)
