"""What a derivation's symbols mean, so that verification can write any step out for a concrete H.

A :class:`Setting` knows the class count H, the free indices (k, and i for a Jacobian d o_i / d z_k),
the variable we differentiate by, which indexed quantities are free variables (z, y) and which are
defined in terms of them (o), and how each named assumption constrains the variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy as sp

from derive.model import Definition
from derive.symbols import H, ExcludedSum, i, j, k, o, y, z

Constraint = Callable[[int], dict[sp.Basic, sp.Expr]]


def normalised(n: int) -> dict[sp.Basic, sp.Expr]:
    """sum_i y_i = 1, imposed by solving for the last target entry."""
    return {y[n]: 1 - sp.Add(*(y[m] for m in range(1, n)))}


@dataclass(frozen=True)
class Setting:
    """The meaning of a derivation's symbols."""

    wrt: sp.Indexed
    """The variable the subject is differentiated by, e.g. z_k (or a scalar: gamma)."""
    definitions: tuple[Definition, ...]
    intermediates: tuple[sp.IndexedBase, ...] = (o,)
    """Indexed quantities defined in terms of the variables (they depend on ``wrt``)."""
    constraints: Mapping[str, Constraint] = field(default_factory=lambda: {"normalised": normalised})
    classes: sp.Symbol = H
    index: sp.Symbol | None = k
    """The index of the variable we differentiate by (None for a scalar variable)."""
    outer: tuple[sp.Symbol, ...] = ()
    """Further free indices of the subject, e.g. the output index i of a Jacobian d o_i / d z_k."""
    ranges: Mapping[sp.Symbol, sp.Symbol] = field(default_factory=dict)
    """Indices that do not run over the classes, each with its upper limit: the input index of a
    dense layer runs over 1..D (``{d: D}``). Verification fixes each such limit to small values
    beside H (see ``derive.verify.extents``)."""

    @property
    def indices(self) -> tuple[sp.Symbol, ...]:
        """Every free index; verification fixes each of them to every value in its range."""
        return (*self.outer, self.index) if self.index is not None else tuple(self.outer)

    def limit(self, index: sp.Symbol) -> sp.Symbol:
        """The upper limit of an index: H, unless ``ranges`` says otherwise. An index the planner
        renamed (n' beside n, a sum's index that would shadow another) runs where its letter does."""
        if index not in self.ranges and index.name.endswith("'"):
            letter = index.name.rstrip("'")
            return next((hi for ix, hi in self.ranges.items() if ix.name == letter), self.classes)
        return self.ranges.get(index, self.classes)

    def depends(self, expr: sp.Basic) -> bool:
        """Whether ``expr`` can vary with ``wrt`` (directly or through an intermediate)."""
        if expr.has(getattr(self.wrt, "base", self.wrt)):
            return True
        return any(expr.has(b) for b in self.intermediates)


def expand_sums(expr: sp.Basic) -> sp.Basic:
    """Write every Sum and ExcludedSum with concrete limits as explicit terms, bottom-up.

    Unlike ``doit`` this evaluates no derivative, so derivatives by intermediates survive.
    """

    def is_sum(e: sp.Basic) -> bool:
        return isinstance(e, (sp.Sum, ExcludedSum))

    def explicit(e: sp.Basic) -> sp.Basic:
        if isinstance(e, ExcludedSum):
            e = e.full()
            return explicit(e.args[0]) + explicit(e.args[1]) if isinstance(e, sp.Add) else explicit(e)
        if isinstance(e, sp.Sum):
            # SymPy merges nested sums into one with several limits, the first the innermost.
            terms = [e.function]
            for idx, lo, hi in e.limits:
                if not (lo.is_Integer and hi.is_Integer):
                    raise ValueError(f"cannot write out a sum with symbolic limits: {e}")
                terms = [t.xreplace({idx: sp.Integer(v)}) for t in terms for v in range(int(lo), int(hi) + 1)]
            return sp.Add(*terms)
        return e

    return expr.replace(is_sum, explicit)


__all__ = ["Setting", "normalised", "expand_sums", "H", "i", "j", "k", "o", "y", "z"]
