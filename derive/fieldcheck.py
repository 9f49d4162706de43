"""A claim checked exactly where it stands: evaluated modulo the prime P = 2^61 - 1 at random
points by the walk of :class:`derive.numeric.Evaluator` (sums as loops, defined entries from
their definitions, derivatives by forward mode), without writing it out with SymPy.

Every leaf entry (z_m, y_m, a temperature) is a random element of the field. What is not
rational in them gets an independent random value, its *atom*, chosen once per value of its
argument at the point, so that equal arguments share it however they are written:

- e^u is split where its algebra is exact: e^{a + b} = e^a e^b, e^{n a} = (e^a)^n for a whole n,
  e^{ln w} = w; what is left, e^t, is an atom A with derivative A t';
- ln u likewise: ln(a b) = ln a + ln b, ln(a^n) = n ln a, ln e^w = w, and the log of a defined
  entry is the log of its definition (ln o_i = z_i - ln sum_j e^{z_j}); what is left, ln t, is an
  atom with derivative t' / t (ln 0 is undefined: the check cannot decide);
- b^s for an exponent that is not a whole number is e^{s ln b};
- pi is an atom, and erf u an atom per value of u with derivative 2 / sqrt(pi) e^{-u^2} u'.

A claim whose two sides agree at POINTS random points with these atoms free agrees for their
true values too (an identity of rational functions in the leaves and atoms stays one when the
atoms are given the values they stand for), up to the chance, degree / P per point, that a
random point is a root. Sides that do not agree decide nothing (e^{2 z} written as an atom of
its own differs from (e^z)^2): the caller then writes the claim out (``verify.instantiate``).
"""

from __future__ import annotations

import math
import random
from typing import Mapping, Sequence

import sympy as sp

from derive import functions as fn
from derive.modular import P
from derive.numeric import Evaluator
from derive.symbols import ExcludedSum

POINTS = 2
"""Random points; the sides must agree at every one."""


class Undecided(Exception):
    """The evaluation met something it has no exact rule for here."""


class NoRoot(Undecided):
    """A square root of a residue that has none: decided nothing at this point."""


def _inverse(x: int) -> int:
    if x % P == 0:
        raise ZeroDivisionError("a denominator vanishes at the random point")
    return pow(x, -1, P)


class FieldDual:
    """A value modulo P and its derivative along one direction."""

    __slots__ = ("v", "d")

    def __init__(self, v: int, d: int = 0):
        self.v, self.d = v, d

    def __add__(self, o: "FieldDual") -> "FieldDual":
        return FieldDual((self.v + o.v) % P, (self.d + o.d) % P)

    def __mul__(self, o: "FieldDual") -> "FieldDual":
        return FieldDual(self.v * o.v % P, (self.d * o.v + self.v * o.d) % P)

    def power(self, n: int) -> "FieldDual":
        base = self if n >= 0 else self.inverse()
        n = abs(n)
        v = pow(base.v, n, P)
        return FieldDual(v, n * pow(base.v, n - 1, P) * base.d % P if n and base.d else 0)

    def inverse(self) -> "FieldDual":
        inv = _inverse(self.v)
        return FieldDual(inv, -self.d * inv * inv % P)


ONE = FieldDual(1)


class FieldEvaluator(Evaluator):
    """:class:`derive.numeric.Evaluator` over the integers modulo P, with atoms for what is not
    rational (see the module's docstring). ``values`` hold residues."""

    def __init__(self, definitions, sizes: Mapping[sp.Symbol, int], values: Mapping[sp.Basic, object], rng: random.Random, shared: dict | None = None):
        super().__init__(definitions, sizes, values)
        self.rng = rng
        self.atoms: dict[tuple, int] = {}
        self.shared = {} if shared is None else shared
        """What depends on the expressions only (their free indices, what reaches what), kept
        across the points and instances of one claim."""

    def _free(self, e: sp.Basic) -> tuple:
        key = ("free", e)
        if key not in self.shared:
            self.shared[key] = super()._free(e)
        return self.shared[key]

    def _depends(self, e: sp.Basic, head: sp.Basic) -> bool:
        key = ("depends", e, head)
        if key not in self.shared:
            self.shared[key] = super()._depends(e, head)
        return self.shared[key]

    def _reaches(self, head: sp.Basic, target: sp.Basic) -> bool:
        key = ("reach", head, target)
        if key not in self.shared:
            self.shared[key] = super()._reaches(head, target)
        return self.shared[key]

    def atom(self, key: tuple) -> int:
        if key not in self.atoms:
            self.atoms[key] = self.rng.randrange(1, P)
        return self.atoms[key]

    def residue(self, e: sp.Basic, bound: Mapping[sp.Symbol, int] | None = None) -> int:
        return self._eval(e, dict(bound or {}), None).v

    # -- the walk ---------------------------------------------------------------------------
    def _eval_node(self, e: sp.Basic, bound: dict, seed: tuple | None) -> FieldDual:
        if e.is_Rational:
            return FieldDual(int(e.p) % P * _inverse(int(e.q)) % P)
        if e.is_Number:
            raise Undecided(f"the number {e} is not exact")
        if isinstance(e, sp.Symbol):
            if e in bound:
                return FieldDual(int(bound[e]) % P)
            if e in self.sizes:
                return FieldDual(int(self.sizes[e]) % P)
            return self._entry(e, (), seed)
        if isinstance(e, sp.Indexed):
            return self._entry(e.base, tuple(self._int(i, bound) for i in e.indices), seed)
        if isinstance(e, sp.Add):
            out = FieldDual(0)
            for a in e.args:
                out = out + self._eval(a, bound, seed)
            return out
        if isinstance(e, sp.Mul):
            out = ONE
            for a in e.args:
                out = out * self._eval(a, bound, seed)
            return out
        if isinstance(e, sp.Pow):
            if e.exp.is_Integer:
                return self._eval(e.base, bound, seed).power(int(e.exp))
            whole, rest = sp.S.Zero, []
            for t in sp.Add.make_args(e.exp):
                if t.is_Rational:
                    whole += t
                else:
                    rest.append(t)
            base = self._eval(e.base, bound, seed)
            fixed = not (e.base.free_symbols - set(self.sizes)) and not e.base.has(sp.Indexed)
            out = base.power(int(whole.p)) if whole.q == 1 else self._root(base, int(whole.q), fixed).power(int(whole.p))
            return out * self._exp_of(sp.Mul(sp.Add(*rest), sp.log(e.base), evaluate=False), bound, seed) if rest else out
        if isinstance(e, sp.exp):
            return self._exp(e.args[0], bound, seed)
        if e is sp.E:
            return FieldDual(self.atom(("exp", 1)))
        if e is sp.pi:
            return FieldDual(self.atom(("pi",)))
        if isinstance(e, sp.erf):
            return self._erf(e.args[0], bound, seed)
        if isinstance(e, sp.log):
            return self._log(e.args[0], bound, seed)
        if isinstance(e, fn.ELEMENTARY):
            return self._eval(e.doit(deep=False), bound, seed)
        if isinstance(e, sp.KroneckerDelta):
            a, b = (self._int(x, bound) for x in e.args)
            return FieldDual(int(a == b))
        if isinstance(e, sp.Sum):
            return self._sum(e.function, list(e.limits), bound, seed, None)
        if isinstance(e, ExcludedSum):
            f, idx, lo, hi, skip = e.args
            return self._sum(f, [(idx, lo, hi)], bound, seed, self._int(skip, bound))
        if isinstance(e, sp.Derivative):
            if seed is not None:
                raise Undecided(f"a derivative inside a derivative: {sp.sstr(e)}")
            (x, count), = e.variable_count
            if count != 1:
                raise Undecided(f"a derivative of order {count}")
            head = x.base if isinstance(x, sp.Indexed) else x
            at = tuple(self._int(i, bound) for i in x.indices) if isinstance(x, sp.Indexed) else ()
            return FieldDual(self._eval(e.expr, bound, (head, at)).d)
        raise Undecided(f"no exact rule for {type(e).__name__}")

    def _root(self, w: FieldDual, q: int, fixed: bool = False) -> FieldDual:
        """A root r of r^q = w in the field, so that w^(1/2) and w^(-3/2) are powers of one r with
        r^2 = w; its derivative is r w' / (q w). A square root exists for half the residues (the
        point is then drawn again, see :func:`agree`), a q-th root for q prime to P - 1 always.

        A root of a number fixed at every point (sqrt(D) of a size) that has none in the field is
        an atom of its own instead: another point would not help. Sound as every atom is: a claim
        that holds for an unknown r holds for the true root; one that needs r^2 = D is left
        undecided (SymPy writes sqrt(D)^2 as D before it gets here)."""
        if w.v == 0:
            raise ZeroDivisionError("a root of 0")
        if q == 2:
            r = pow(w.v, (P + 1) // 4, P)  # P = 3 mod 4
            if r * r % P != w.v:
                if fixed:
                    return FieldDual(self.atom(("root", q, w.v)))
                raise NoRoot(f"{w.v} has no square root modulo P")
        elif math.gcd(q, P - 1) == 1:
            r = pow(w.v, pow(q, -1, P - 1), P)
        else:
            raise Undecided(f"a root of order {q}")
        return FieldDual(r, r * w.d % P * _inverse(q * w.v % P) % P)

    def _exp(self, u: sp.Basic, bound: dict, seed: tuple | None) -> FieldDual:
        out = ONE
        for t in sp.Add.make_args(u):
            c, rest = t.as_coeff_Mul()
            if c.is_Integer and rest != 1:
                out = out * self._exp_of(rest, bound, seed).power(int(c))
            else:
                out = out * self._exp_of(t, bound, seed)
        return out

    def _exp_of(self, t: sp.Basic, bound: dict, seed: tuple | None) -> FieldDual:
        """e^t for one term of an exponent: e^{ln w} = w, else an atom; e^{-w} is the inverse of
        the atom of e^w, however the minus sign was written (e^{-(a/2)^2} and e^{-a^2/4})."""
        if isinstance(t, sp.log):
            return self._eval(t.args[0], bound, seed)
        w = self._eval(t, bound, seed)
        value = self.atom(("exp", w.v)) if w.v <= P // 2 else _inverse(self.atom(("exp", P - w.v)))
        return FieldDual(value, value * w.d % P)

    def _erf(self, u: sp.Basic, bound: dict, seed: tuple | None) -> FieldDual:
        """erf w: an atom, one per value of w, with derivative 2 / sqrt(pi) e^{-w^2} w' (the
        factor evaluated as the claims write it, so that its atoms are theirs)."""
        w = self._eval(u, bound, seed)
        value = self.atom(("erf", w.v))
        if not w.d:
            return FieldDual(value)
        slope = self._eval(2 / sp.sqrt(sp.pi) * sp.exp(-(u**2)), bound, None).v
        return FieldDual(value, slope * w.d % P)

    def _log(self, u: sp.Basic, bound: dict, seed: tuple | None) -> FieldDual:
        if isinstance(u, sp.Mul):
            out = FieldDual(0)
            for a in u.args:
                if a.is_Number and a.is_negative:
                    return self._log_atom(u, bound, seed)  # ln of a product with a negative factor: not split
                out = out + self._log(a, bound, seed)
            return out
        if isinstance(u, sp.Pow):
            return self._eval(u.exp, bound, seed) * self._log(u.base, bound, seed)
        if isinstance(u, sp.exp):
            return self._eval(u.args[0], bound, seed)
        if u is sp.E:
            return ONE
        if isinstance(u, sp.Indexed) and u.base in self.defined and not (seed is not None and seed[0] == u.base):
            d = self.defined[u.base]
            at = tuple(self._int(i, bound) for i in u.indices)
            inner = dict(zip(d.symbol.indices, at))
            through = seed if seed is not None and self._reaches(u.base, seed[0]) else None
            return self._log(d.value, inner, through) if through is not None or seed is None else FieldDual(self._log(d.value, inner, None).v)
        if isinstance(u, sp.Indexed) and u.base in self.defined:
            # ln o_i differentiated by o itself: its value is the one its definition gives
            # everywhere else (z_i - ln sum_j e^{z_j}), its derivative o_i' / o_i.
            d = self.defined[u.base]
            w = self._eval(u, bound, seed)
            value = self._log(d.value, dict(zip(d.symbol.indices, (self._int(i, bound) for i in u.indices))), None).v
            return FieldDual(value, w.d * _inverse(w.v) % P)
        return self._log_atom(u, bound, seed)

    def _log_atom(self, u: sp.Basic, bound: dict, seed: tuple | None) -> FieldDual:
        w = self._eval(u, bound, seed)
        if w.v == 0:
            raise ZeroDivisionError("the log of 0")
        return FieldDual(self.atom(("log", w.v)), w.d * _inverse(w.v) % P)

    def _sum(self, f: sp.Basic, limits: list, bound: dict, seed: tuple | None, skip: int | None) -> FieldDual:
        (idx, lo, hi), rest = limits[0], limits[1:]
        out = FieldDual(0)
        for v in range(self._int(lo, bound), self._int(hi, bound) + 1):
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
        if isinstance(e, (sp.Add, sp.Mul)):  # an index such as k + 1
            return int(e.xreplace({s: sp.Integer(self._int(s, bound)) for s in e.free_symbols}))
        raise Undecided(f"the index {e} has no value")

    def _entry(self, head: sp.Basic, at: tuple[int, ...], seed: tuple | None) -> FieldDual:
        key = (head, at, seed)
        if key in self._memo:
            return self._memo[key]
        if seed is not None and seed[0] == head:
            out = FieldDual(self._entry(head, at, None).v, 1 if at == seed[1] else 0)
        elif head in self.defined:
            d = self.defined[head]
            inner = dict(zip(d.symbol.indices, at)) if isinstance(d.symbol, sp.Indexed) else {}
            through = seed if seed is not None and self._reaches(head, seed[0]) else None
            out = self._eval(d.value, inner, through) if through is not None or seed is None else self._entry(head, at, None)
        else:
            table = self.values.get(head)
            if table is None:
                raise Undecided(f"no value for {head}")
            out = FieldDual(table if not at else table[at])
        self._memo[key] = out
        return out


def plan(setting, exprs: Sequence[sp.Expr], sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], assumptions: Sequence[str]) -> tuple:
    """What :func:`leaves` draws (as ``numeric.at_random`` draws numbers): each leaf quantity
    with its entries, the scalars, and the entries the assumptions' constraints fix."""
    from derive.shapes import entries, shapes

    ranges = {}
    for d in setting.definitions:
        for s in d.symbol.free_symbols | d.value.free_symbols:
            if isinstance(s, sp.Symbol) and s.is_integer:
                ranges[s] = setting.limit(s)
    for e in exprs:
        for s in e.free_symbols:
            if isinstance(s, sp.Symbol) and s.is_integer and s not in ranges:
                ranges[s] = setting.limit(s)
    table = shapes(setting.definitions, setting.wrt, ranges)
    quantities = []
    for head in sorted(table, key=str):
        shape = tuple(int(sp.sympify(n).xreplace(sizes)) for n in table[head])
        quantities.append((head, list(entries(shape)) if shape else None))
    names = {str(b) for b in table}
    scalars = []
    for e in exprs:
        for s in sorted(e.free_symbols, key=str):
            if isinstance(s, sp.Symbol) and not s.is_integer and s not in table and s not in sizes and s not in index and s.name not in names and s not in scalars:
                scalars.append(s)
    fixed = []
    for key in assumptions:
        constraint = setting.constraints[key]
        values = constraint(int(sizes[setting.classes]), sizes) if getattr(constraint, "rows", None) else constraint(int(sizes[setting.classes]))
        fixed.extend((entry.base, tuple(int(i) for i in entry.indices), value) for entry, value in values.items())
    return quantities, scalars, fixed


def leaves(planned: tuple, sizes: Mapping[sp.Symbol, int], rng: random.Random) -> dict:
    """A random residue for every leaf entry, then the assumptions imposed (see :func:`plan`)."""
    quantities, scalars, fixed = planned
    values: dict = {}
    for head, at in quantities:
        values[head] = {x: rng.randrange(1, P) for x in at} if at is not None else rng.randrange(1, P)
    for s in scalars:
        values[s] = rng.randrange(1, P)
    evaluator = FieldEvaluator((), sizes, values, rng)
    for base, at, value in fixed:
        if at in values[base]:  # a constraint may name rows beyond these sizes
            values[base][at] = evaluator.residue(value)
    return values


_PLANS: dict = {}


def agree(setting, lhs: sp.Expr, rhs: sp.Expr, sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], assumptions: Sequence[str], seed: str) -> bool:
    """Whether ``lhs = rhs`` at these sizes and indices is decided true here: both sides agree
    modulo P at POINTS random points. False means undecided, not wrong."""
    rng = random.Random(seed)
    sizes = {s: int(v) for s, v in sizes.items()}
    index = {s: int(v) for s, v in index.items()}
    # Kept per setting (the setting beside it, so that its id stands for no other meanwhile).
    key = (id(setting), lhs, rhs, tuple(sizes.items()), tuple(index), tuple(assumptions))
    try:
        if key not in _PLANS or _PLANS[key][0] is not setting:
            _PLANS[key] = (setting, plan(setting, (lhs, rhs), sizes, index, assumptions))
        planned = _PLANS[key][1]
        shared = _SHARED.setdefault(id(setting), (setting, {}))
        if shared[0] is not setting:
            shared = _SHARED[id(setting)] = (setting, {})
        decided = 0
        for _ in range(8 * POINTS):
            values = leaves(planned, sizes, rng)
            evaluator = FieldEvaluator(setting.definitions, sizes, values, rng, shared[1])
            try:
                if evaluator.residue(lhs, index) != evaluator.residue(rhs, index):
                    return False
            except NoRoot:
                continue  # a square root that does not exist at this point: draw another
            decided += 1
            if decided == POINTS:
                return True
        return False
    except (Undecided, ZeroDivisionError, TypeError, KeyError, ValueError, RecursionError):
        return False
    return True


_SHARED: dict = {}
