"""The shape of each given quantity of a problem, and the index tuples of a shape: what the worked
example (:mod:`derive.worked`) gives numbers to and the numeric checks (:mod:`derive.numeric`,
:mod:`derive.fieldcheck`) draw at random."""

from __future__ import annotations

import itertools
from typing import Iterator, Mapping, Sequence

import sympy as sp

from derive.errors import UsageError
from derive.model import Definition


def shapes(definitions: Sequence[Definition], wrt: sp.Indexed, ranges: Mapping[sp.Symbol, sp.Expr]) -> dict[sp.Basic, tuple[sp.Expr, ...]]:
    """Each given quantity's shape as the limits of its indices (y_i -> (H,), W_im -> (H, M));
    a scalar has shape ()."""
    defined = {(d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol) for d in definitions}
    out: dict[sp.Basic, tuple[sp.Expr, ...]] = {}

    def limit(ix: sp.Symbol, limits: Mapping[sp.Symbol, sp.Expr]) -> sp.Expr:
        if ix in limits:
            return limits[ix]
        if ix in ranges:
            return ranges[ix]
        raise UsageError(f"index {ix} has no range for the worked example")

    def walk(e: sp.Basic, limits: dict) -> None:
        if isinstance(e, sp.Sum):
            inner = dict(limits)
            for idx, lo, hi in e.limits:
                inner[idx] = hi
            walk(e.function, inner)
            return
        if isinstance(e, sp.Indexed):
            if e.base not in defined:
                shape = tuple(limit(i, limits) for i in e.indices)
                if out.setdefault(e.base, shape) != shape:
                    raise UsageError(f"{e.base} is used with two shapes: {out[e.base]} and {shape}")
            return
        if isinstance(e, sp.Symbol):
            if not e.is_integer and e not in defined:
                out.setdefault(e, ())
            return
        for a in e.args:
            walk(a, limits)

    for d in definitions:
        limits = {i: limit(i, {}) for i in d.symbol.indices} if isinstance(d.symbol, sp.Indexed) else {}
        walk(d.value, limits)
    head = getattr(wrt, "base", wrt)
    if head not in out:
        out[head] = tuple(limit(i, {}) for i in getattr(wrt, "indices", ()))
    labels = {b.label for b in out if isinstance(b, sp.IndexedBase)}
    return {k: v for k, v in out.items() if k not in labels}


def entries(shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(1, n + 1) for n in shape))
