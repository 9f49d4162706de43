"""A claim evaluated at numbers without writing it out: sums are loops, defined entries are
computed once from their definitions, and a derivative is taken by forward mode.

Writing a claim out with SymPy for H = 40 costs seconds (every term is a SymPy object); here it
costs what the arithmetic costs. Used by the checks at large sizes, where the exact checks of
:mod:`derive.verify` would be too slow.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import mpmath
import sympy as sp

from derive import functions as fn
from derive.model import Definition
from derive.symbols import ExcludedSum


class Dual:
    """A value and its derivative along one direction (forward mode). A plain class with slots,
    not a frozen dataclass, and no arithmetic on a derivative that is 0 on both sides: the
    checks at H = 40 build hundreds of thousands of these."""

    __slots__ = ("v", "d")

    def __init__(self, v: mpmath.mpf, d: mpmath.mpf):
        self.v, self.d = v, d

    def __add__(self, o: "Dual") -> "Dual":
        return Dual(self.v + o.v, self.d + o.d if self.d or o.d else ZERO)

    def __mul__(self, o: "Dual") -> "Dual":
        if not self.d and not o.d:
            return Dual(self.v * o.v, ZERO)
        return Dual(self.v * o.v, self.d * o.v + self.v * o.d)

    def __repr__(self) -> str:
        return f"Dual({self.v}, {self.d})"


ZERO = mpmath.mpf(0)


def const(x: mpmath.mpf) -> Dual:
    return Dual(x, ZERO)


class Evaluator:
    """Evaluate expressions over ``definitions`` at given sizes and leaf values.

    ``values`` maps a leaf (IndexedBase or Symbol) to a dict from index tuples to numbers (a
    scalar leaf to a number). A derivative ``d f / d x`` is the tangent of f when x is seeded
    with 1: for a leaf entry, its value; for a defined entry (o_i), that entry is cut from its
    definition and treated as a leaf while f is evaluated.
    """

    def __init__(self, definitions: Sequence[Definition], sizes: Mapping[sp.Symbol, int], values: Mapping[sp.Basic, object]):
        self.defined = {(d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol): d for d in definitions}
        self.sizes = dict(sizes)
        self.values = dict(values)
        self._memo: dict = {}

    def value(self, e: sp.Basic, bound: Mapping[sp.Symbol, int] | None = None) -> mpmath.mpf:
        return self._eval(e, dict(bound or {}), None).v

    # -- the walk ---------------------------------------------------------------------------
    def _eval(self, e: sp.Basic, bound: dict, seed: tuple | None) -> Dual:
        if seed is not None and not self._depends(e, seed[0]):
            seed = None  # no tangent to carry: shares the memo of the plain value
        if isinstance(e, (sp.Sum, ExcludedSum)):
            # A sum is evaluated once per value of its free indices (a softmax denominator).
            key = ("sum", e, tuple(bound.get(x) for x in self._free(e)), seed)
            if key not in self._memo:
                self._memo[key] = self._eval_node(e, bound, seed)
            return self._memo[key]
        return self._eval_node(e, bound, seed)

    def _free(self, e: sp.Basic) -> tuple:
        key = ("free", e)
        if key not in self._memo:
            # free_symbols of a derivative leaves out the indices of its variable: take every
            # index symbol and drop those a sum inside binds.
            bound = {lim[0] for x in e.atoms(sp.Sum) for lim in x.limits} | {x.index for x in e.atoms(ExcludedSum)}
            self._memo[key] = tuple(sorted((x for x in e.atoms(sp.Symbol) if x.is_integer and x not in self.sizes and x not in bound), key=str))
        return self._memo[key]

    def _depends(self, e: sp.Basic, head: sp.Basic) -> bool:
        key = ("depends", e, head)
        if key not in self._memo:
            names = {x.base for x in e.atoms(sp.Indexed)} | {x for x in e.free_symbols if isinstance(x, sp.Symbol) and not x.is_integer}
            self._memo[key] = head in names or any(self._reaches(n, head) for n in names if n in self.defined) or e.has(sp.Derivative)
        return self._memo[key]

    def _eval_node(self, e: sp.Basic, bound: dict, seed: tuple | None) -> Dual:
        if e.is_Number:
            return const(mpmath.mpf(e.p) / e.q if e.is_Rational else mpmath.mpf(str(e)))
        if isinstance(e, sp.Symbol):
            if e in bound:
                return const(mpmath.mpf(bound[e]))
            if e in self.sizes:
                return const(mpmath.mpf(self.sizes[e]))
            return self._entry(e, (), seed)
        if isinstance(e, sp.Indexed):
            at = tuple(self._int(i, bound) for i in e.indices)
            return self._entry(e.base, at, seed)
        if isinstance(e, sp.Add):
            out = const(ZERO)
            for a in e.args:
                out = out + self._eval(a, bound, seed)
            return out
        if isinstance(e, sp.Mul):
            out = const(mpmath.mpf(1))
            for a in e.args:
                out = out * self._eval(a, bound, seed)
            return out
        if isinstance(e, sp.Pow):
            b = self._eval(e.base, bound, seed)
            if e.exp.is_Integer:
                n = int(e.exp)
                v = mpmath.power(b.v, n)
                return Dual(v, n * mpmath.power(b.v, n - 1) * b.d if b.d else ZERO)
            x = self._eval(e.exp, bound, seed)
            v = mpmath.power(b.v, x.v)
            d = ZERO
            if b.d:
                d += x.v * mpmath.power(b.v, x.v - 1) * b.d
            if x.d:
                d += v * mpmath.log(b.v) * x.d
            return Dual(v, d)
        if isinstance(e, sp.exp):
            a = self._eval(e.args[0], bound, seed)
            v = mpmath.exp(a.v)
            return Dual(v, v * a.d)
        if isinstance(e, sp.log):
            a = self._eval(e.args[0], bound, seed)
            # ln 0 = -inf (a one-hot target's 0 ln 0 is then not finite, and the caller says so).
            return Dual(mpmath.log(a.v), a.d / a.v if a.v != 0 else mpmath.nan if a.d else mpmath.mpf(0))
        if isinstance(e, sp.erf):
            # erf' = 2 / sqrt(pi) e^{-u^2}
            a = self._eval(e.args[0], bound, seed)
            return Dual(mpmath.erf(a.v), 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-a.v * a.v) * a.d if a.d else ZERO)
        if isinstance(e, fn.ELEMENTARY):
            return self._eval(e.doit(deep=False), bound, seed)
        if e is sp.E:
            return const(mpmath.e)
        if e is sp.pi:
            return const(mpmath.pi)
        if isinstance(e, sp.KroneckerDelta):
            a, b = (self._int(x, bound) for x in e.args)
            return const(mpmath.mpf(a == b))
        if isinstance(e, sp.Sum):
            return self._sum(e.function, list(e.limits), bound, seed, None)
        if isinstance(e, ExcludedSum):
            f, idx, lo, hi, skip = e.args
            return self._sum(f, [(idx, lo, hi)], bound, seed, self._int(skip, bound))
        if isinstance(e, sp.Derivative):
            if seed is not None:
                raise TypeError(f"a derivative inside a derivative: {sp.sstr(e)}")
            (x, count), = e.variable_count
            if count != 1:
                raise TypeError(f"a derivative of order {count}: {sp.sstr(e)}")
            head = x.base if isinstance(x, sp.Indexed) else x
            at = tuple(self._int(i, bound) for i in x.indices) if isinstance(x, sp.Indexed) else ()
            return const(self._eval(e.expr, bound, (head, at)).d)
        raise TypeError(f"cannot evaluate {type(e).__name__}: {sp.sstr(e)}")

    def _sum(self, f: sp.Basic, limits: list, bound: dict, seed: tuple | None, skip: int | None) -> Dual:
        (idx, lo, hi), rest = limits[0], limits[1:]
        low, high = self._int(lo, bound), self._int(hi, bound)
        out = const(ZERO)
        for v in range(low, high + 1):
            if v == skip:
                continue
            inner = {**bound, idx: v}
            out = out + (self._sum(f, rest, inner, seed, None) if rest else self._eval(f, inner, seed))
        return out

    def _int(self, e: sp.Basic, bound: dict) -> int:
        if e.is_Integer:
            return int(e)
        if e in bound:
            return int(bound[e])
        if e in self.sizes:
            return int(self.sizes[e])
        return int(self._eval(e, bound, None).v)

    def _entry(self, head: sp.Basic, at: tuple[int, ...], seed: tuple | None) -> Dual:
        key = (head, at, seed)
        if key in self._memo:
            return self._memo[key]
        if seed is not None and seed[0] == head:
            # The variable itself, or another entry of it: a leaf for this derivative.
            base = self._entry(head, at, None)
            out = Dual(base.v, mpmath.mpf(1) if at == seed[1] else ZERO)
        elif head in self.defined:
            d = self.defined[head]
            inner = dict(zip(d.symbol.indices, at)) if isinstance(d.symbol, sp.Indexed) else {}
            # Only what depends on the variable carries a tangent; the rest is computed once.
            through = seed if seed is not None and self._reaches(head, seed[0]) else None
            out = self._eval(d.value, inner, through) if through is not None or seed is None else self._entry(head, at, None)
        else:
            table = self.values.get(head)
            if table is None:
                raise KeyError(f"no value for {head}")
            value = table if not at else table[at]
            out = Dual(mpmath.mpf(value) if not isinstance(value, mpmath.mpf) else value, ZERO)
        self._memo[key] = out
        return out

    def _reaches(self, head: sp.Basic, target: sp.Basic) -> bool:
        """Whether the definition of ``head`` depends on ``target``, directly or through others."""
        key = ("reach", head, target)
        if key not in self._memo:
            self._memo[key] = False
            d = self.defined.get(head)
            found = False
            if d is not None:
                names = {x.base for x in d.value.atoms(sp.Indexed)} | {s for s in d.value.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer}
                found = target in names or any(self._reaches(n, target) for n in names if n in self.defined)
            self._memo[key] = found
        return self._memo[key]


def at_random(setting, exprs: Sequence[sp.Expr], sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], assumptions: Sequence[str], rng) -> list[mpmath.mpf]:
    """``exprs`` evaluated at one random point: every leaf entry drawn from [-3, 3] (a symbol
    known to be positive from [1/2, 3]), then the assumptions imposed by their constraints."""
    ranges = {}
    for d in setting.definitions:
        for s in d.symbol.free_symbols | d.value.free_symbols:
            if isinstance(s, sp.Symbol) and s.is_integer:
                ranges[s] = setting.limit(s)
    for e in exprs:
        for s in e.free_symbols:
            if isinstance(s, sp.Symbol) and s.is_integer and s not in ranges:
                ranges[s] = setting.limit(s)
    from derive.shapes import entries, shapes

    table = shapes(setting.definitions, setting.wrt, ranges)
    values: dict = {}
    for head in sorted(table, key=str):
        shape = tuple(int(sp.sympify(n).xreplace(sizes)) for n in table[head])
        draw = (lambda: mpmath.mpf(rng.uniform(0.5, 3))) if getattr(head, "is_positive", False) else (lambda: mpmath.mpf(rng.uniform(-3, 3)))
        values[head] = {at: draw() for at in entries(shape)} if shape else draw()
    for e in exprs:
        for s in e.free_symbols:
            if isinstance(s, sp.Symbol) and not s.is_integer and s not in values and s not in sizes and s not in index and s.name not in {str(b) for b in values}:
                values[s] = mpmath.mpf(rng.uniform(0.5, 3)) if s.is_positive else mpmath.mpf(rng.uniform(-3, 3))
    for key in assumptions:
        constraint = setting.constraints[key]
        fixed = constraint(int(sizes[setting.classes]), sizes) if getattr(constraint, "rows", None) else constraint(int(sizes[setting.classes]))
        evaluator = Evaluator((), sizes, values)
        for entry, value in fixed.items():
            at = tuple(int(i) for i in entry.indices)
            if at in values[entry.base]:  # a constraint may name rows beyond these sizes
                values[entry.base][at] = evaluator.value(value)
    evaluator = Evaluator(setting.definitions, sizes, values)
    return [evaluator.value(e, index) for e in exprs]
