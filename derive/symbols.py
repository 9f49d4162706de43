"""The symbols derivations share, and the one expression type SymPy lacks: a sum that skips an index.

Internal names are fixed (z, o, y, H, i, j, k); how they are written in a document is the printer's
business.
"""

from __future__ import annotations

import sympy as sp

H = sp.Symbol("H", integer=True, positive=True)
i, j, k = (sp.Symbol(n, integer=True, positive=True) for n in "ijk")
z = sp.IndexedBase("z")
o = sp.IndexedBase("o")
y = sp.IndexedBase("y")
E = sp.Symbol("E", real=True)


class ExcludedSum(sp.Expr):
    """``sum_{i=lo, i != skip}^{hi} f(i)``: the sum over every index but one.

    Symbolically it equals ``Sum(f, (i, lo, hi)) - f(skip)`` for ``lo <= skip <= hi``; ``doit``
    returns exactly that, so a concrete H turns it into explicit terms.
    """

    is_commutative = True

    def __new__(cls, function: sp.Expr, index: sp.Symbol, lower: sp.Expr, upper: sp.Expr, skip: sp.Expr):
        return sp.Expr.__new__(cls, sp.sympify(function), index, sp.sympify(lower), sp.sympify(upper), sp.sympify(skip))

    @property
    def function(self) -> sp.Expr:
        return self.args[0]

    @property
    def index(self) -> sp.Symbol:
        return self.args[1]

    @property
    def free_symbols(self) -> set[sp.Basic]:
        inner = self.function.free_symbols - {self.index}
        return inner | self.args[2].free_symbols | self.args[3].free_symbols | self.args[4].free_symbols

    def full(self) -> sp.Expr:
        """The same value written with an ordinary Sum: the full sum minus the skipped term."""
        f, idx, lo, hi, skip = self.args
        return sp.Sum(f, (idx, lo, hi)) - f.subs(idx, skip)

    def doit(self, **hints) -> sp.Expr:
        return self.full().doit(**hints)
