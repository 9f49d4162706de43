"""A claim checked exactly where it stands: evaluated modulo the prime P = 2^61 - 1 at random
points, without writing it out with SymPy: compiled once into Python closures (:class:`Program`:
sums as loops, defined entries from their definitions, derivatives by forward mode), then run
at every point.

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
import operator
import random
from typing import Callable, Mapping, Sequence

import sympy as sp

from derive import functions as fn
from derive import numeric
from derive.modular import P
from derive.numeric import Code, Scope
from derive.symbols import ExcludedSum

POINTS = 2
"""Random points; the sides must agree at every one."""

class Undecided(Exception):
    """The evaluation met something it has no exact rule for here."""


class NoRoot(Undecided):
    """A square root of a residue that has none: decided nothing at this point."""


def _draw(rng: random.Random) -> int:
    """``rng.randrange(1, P)``, the same draw written out (it is made for every leaf entry)."""
    bits = rng.getrandbits
    r = bits(61)
    while r >= P - 1:
        r = bits(61)
    return 1 + r


def _inverse(x: int) -> int:
    if x % P == 0:
        raise ZeroDivisionError("a denominator vanishes at the random point")
    return pow(x, -1, P)


def _power(p: "Point", v: int, n: int) -> int:
    if n == -1:
        return p.inverse(v)
    return pow(v, n, P) if n >= 0 else pow(p.inverse(v), -n, P)


def _power_dual(p: "Point", v: int, d: int, n: int) -> tuple[int, int]:
    """(v, d)^n: a value and its derivative along the direction of the derivative taken."""
    if n < 0:
        v = p.inverse(v)
        d = -d * v * v % P
        n = -n
    return pow(v, n, P), (n * pow(v, n - 1, P) * d % P if n and d else 0)


class Point(numeric.Point):
    """One random point (see :class:`derive.numeric.Point`), with the atoms drawn so far (one
    per key, drawn on first use) and the inverses and exponentials computed there."""

    __slots__ = ("rng", "atoms", "inverses", "exps")

    def __init__(self, values: Mapping[sp.Basic, object], sizes: tuple[int, ...], rng: random.Random):
        super().__init__(values, sizes)
        self.rng = rng
        self.atoms: dict[tuple, int] = {}
        self.inverses: dict[int, int] = {}
        self.exps: dict[int, int] = {}

    def atom(self, key: tuple) -> int:
        value = self.atoms.get(key)
        if value is None:
            value = self.atoms[key] = _draw(self.rng)
        return value

    def inverse(self, v: int) -> int:
        out = self.inverses.get(v)
        if out is None:
            out = self.inverses[v] = _inverse(v)
        return out

    def exp(self, v: int) -> int:
        """The atom of e^w at w = v; e^{-w} is the inverse of the atom of e^w."""
        out = self.exps.get(v)
        if out is None:
            out = self.exps[v] = self.atom(("exp", v)) if v <= P // 2 else self.inverse(self.atom(("exp", P - v)))
        return out


class Program(numeric.Compiler):
    """Claims over ``definitions`` compiled once into Python closures (see
    :class:`derive.numeric.Compiler`) and then evaluated modulo P at many points, by the rules
    of the module's docstring."""

    CAUGHT = (Undecided, ZeroDivisionError, TypeError, KeyError, ValueError)

    def _missing(self, head: sp.Basic) -> Exception:
        return Undecided(f"no value for {head}")

    def _int_other(self, e: sp.Basic, scope: Scope) -> Callable[[Point, tuple], int]:
        if isinstance(e, (sp.Add, sp.Mul)):  # an index such as k + 1
            parts = [(s, self._int(s, scope)) for s in e.free_symbols]
            return lambda p, env: int(e.xreplace({s: sp.Integer(f(p, env)) for s, f in parts}))

        def undecided(p, env):
            raise Undecided(f"the index {e} has no value")

        return undecided

    def _node(self, e: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        if e.is_Rational:
            value = int(e.p) % P * _inverse(int(e.q)) % P
            return (lambda p, env, at: value), False
        if e.is_Number:
            raise Undecided(f"the number {e} is not exact")
        if isinstance(e, sp.Symbol):
            if e in scope.slots:
                slot = scope.slots[e]
                return (lambda p, env, at: env[slot] % P), False
            if e in self.sizes:
                slot = self.sizes[e]
                return (lambda p, env, at: p.sizes[slot] % P), False
            return self._entry(e, lambda p, env: (), head)
        if isinstance(e, sp.Indexed):
            return self._entry(e.base, self._ints(e.indices, scope), head)
        if isinstance(e, sp.Add):
            return self._add([self._eval(a, scope, head) for a in e.args])
        if isinstance(e, sp.Mul):
            return self._mul([self._eval(a, scope, head) for a in e.args])
        if isinstance(e, sp.Pow):
            return self._pow(e, scope, head)
        if isinstance(e, sp.exp):
            return self._exp(e.args[0], scope, head)
        if e is sp.E:
            return (lambda p, env, at: p.atom(("exp", 1))), False
        if e is sp.pi:
            return (lambda p, env, at: p.atom(("pi",))), False
        if isinstance(e, sp.erf):
            return self._erf(e.args[0], scope, head)
        if isinstance(e, sp.log):
            return self._log(e.args[0], scope, head)
        if isinstance(e, fn.ELEMENTARY):
            return self._eval(e.doit(deep=False), scope, head)
        if isinstance(e, sp.KroneckerDelta):
            a, b = (self._int(x, scope) for x in e.args)
            return (lambda p, env, at: int(a(p, env) == b(p, env))), False
        if isinstance(e, sp.Sum):
            outside = numeric.hoisted(e)
            if outside is not None:
                return self._eval(outside, scope, head)
            return self._sum(e.function, list(e.limits), scope, head, None)
        if isinstance(e, ExcludedSum):
            f, idx, lo, hi, skip = e.args
            return self._sum(f, [(idx, lo, hi)], scope, head, self._int(skip, scope))
        if isinstance(e, sp.Derivative):
            if head is not None:
                raise Undecided(f"a derivative inside a derivative: {sp.sstr(e)}")
            (x, count), = e.variable_count
            if count != 1:
                raise Undecided(f"a derivative of order {count}")
            by = x.base if isinstance(x, sp.Indexed) else x
            where = self._ints(x.indices, scope) if isinstance(x, sp.Indexed) else (lambda p, env: ())
            inner, dual = self._eval(e.expr, scope, by)
            if not dual:
                return (lambda p, env, at: (where(p, env), inner(p, env, None), 0)[2]), False
            return (lambda p, env, at: inner(p, env, where(p, env))[1]), False
        raise Undecided(f"no exact rule for {type(e).__name__}")

    @staticmethod
    def _add(parts: list[tuple[Code, bool]]) -> tuple[Code, bool]:
        codes = [c for c, _ in parts]
        if not any(d for _, d in parts):
            if len(codes) == 2:
                a, b = codes
                return (lambda p, env, at: (a(p, env, at) + b(p, env, at)) % P), False
            return (lambda p, env, at: sum([c(p, env, at) for c in codes]) % P), False
        flagged = [(c, d) for c, d in parts]

        def add(p, env, at):
            v = d = 0
            for code, dual in flagged:
                x = code(p, env, at)
                if dual:
                    v += x[0]
                    d += x[1]
                else:
                    v += x
            return v % P, d % P

        return add, True

    @staticmethod
    def _mul(parts: list[tuple[Code, bool]]) -> tuple[Code, bool]:
        codes = [c for c, _ in parts]
        if not any(d for _, d in parts):
            if len(codes) == 2:
                a, b = codes
                return (lambda p, env, at: a(p, env, at) * b(p, env, at) % P), False

            def product(p, env, at):
                v = 1
                for code in codes:
                    v = v * code(p, env, at) % P
                return v

            return product, False
        flagged = [(c, d) for c, d in parts]

        def mul(p, env, at):
            v, d = 1, 0
            for code, dual in flagged:
                x = code(p, env, at)
                if dual:
                    v, d = v * x[0] % P, (d * x[0] + v * x[1]) % P
                else:
                    v, d = v * x % P, d * x % P
            return v, d

        return mul, True

    def _sum(self, f: sp.Basic, limits: list, scope: Scope, head: sp.Basic | None, skip: Callable | None) -> tuple[Code, bool]:
        (idx, lo, hi), rest = limits[0], limits[1:]
        values = self._values(f, idx, lo, hi, scope)
        inner = scope.bind(idx)
        body, dual = self._sum(f, rest, inner, head, None) if rest else self._eval(f, inner, head)
        if not dual:

            def total(p, env, at):
                s = skip(p, env) if skip is not None else None
                out = 0
                for v in values(p, env):
                    if v != s:
                        out += body(p, (*env, v), at)
                return out % P

            return total, False

        def total_dual(p, env, at):
            s = skip(p, env) if skip is not None else None
            v_ = d_ = 0
            for v in values(p, env):
                if v != s:
                    x = body(p, (*env, v), at)
                    v_ += x[0]
                    d_ += x[1]
            return v_ % P, d_ % P

        return total_dual, True

    def _pow(self, e: sp.Pow, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        base, dual = self._eval(e.base, scope, head)
        if e.exp.is_Integer:
            n = int(e.exp)
            if dual:
                return (lambda p, env, at: _power_dual(p, *base(p, env, at), n)), True
            return (lambda p, env, at: _power(p, base(p, env, at), n)), False
        whole, rest = sp.S.Zero, []
        for t in sp.Add.make_args(e.exp):
            if t.is_Rational:
                whole += t
            else:
                rest.append(t)
        # A root of a number fixed at every point (sqrt(D) of a size): see _root.
        fixed = not (e.base.free_symbols - set(self.sizes)) and not e.base.has(sp.Indexed)
        n, q = int(whole.p), int(whole.q)
        tail, tail_dual = self._exp_of(sp.Mul(sp.Add(*rest), sp.log(e.base), evaluate=False), scope, head) if rest else (None, False)

        def power(p, env, at):
            x = base(p, env, at)
            v, d = x if dual else (x, 0)
            v, d = _power_dual(p, v, d, n) if q == 1 else _power_dual(p, *_root(p, v, d, q, fixed), n)
            if tail is not None:
                t = tail(p, env, at)
                tv, td = t if tail_dual else (t, 0)
                v, d = v * tv % P, (d * tv + v * td) % P
            return (v, d) if dual or tail_dual else v

        return power, dual or tail_dual

    def _exp(self, u: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        """e^u as the product of e^t over the terms t of u, e^{n t} as (e^t)^n."""
        parts = []
        for t in sp.Add.make_args(u):
            c, rest = t.as_coeff_Mul()
            if c.is_Integer and rest != 1:
                code, dual = self._exp_of(rest, scope, head)
                n = int(c)
                parts.append(((lambda p, env, at, code=code, n=n: _power_dual(p, *code(p, env, at), n)) if dual else (lambda p, env, at, code=code, n=n: _power(p, code(p, env, at), n)), dual))
            else:
                parts.append(self._exp_of(t, scope, head))
        return parts[0] if len(parts) == 1 else self._mul(parts)

    def _exp_of(self, t: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        """e^t for one term of an exponent: e^{ln w} = w, else an atom; e^{-w} is the inverse of
        the atom of e^w, however the minus sign was written (e^{-(a/2)^2} and e^{-a^2/4})."""
        if isinstance(t, sp.log):
            return self._eval(t.args[0], scope, head)
        w, dual = self._eval(t, scope, head)
        if not dual:
            return (lambda p, env, at: p.exp(w(p, env, at))), False

        def exp_dual(p, env, at):
            v, d = w(p, env, at)
            value = p.exp(v)
            return value, value * d % P

        return exp_dual, True

    def _erf(self, u: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        """erf w: an atom, one per value of w, with derivative 2 / sqrt(pi) e^{-w^2} w' (the
        factor evaluated as the claims write it, so that its atoms are theirs)."""
        w, dual = self._eval(u, scope, head)
        if not dual:
            return (lambda p, env, at: p.atom(("erf", w(p, env, at)))), False
        slope = self._eval(2 / sp.sqrt(sp.pi) * sp.exp(-(u**2)), scope, None)[0]

        def erf(p, env, at):
            v, d = w(p, env, at)
            value = p.atom(("erf", v))
            return (value, slope(p, env, None) * d % P) if d else (value, 0)

        return erf, True

    def _log(self, u: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        if head is not None and not self._depends(u, head):
            head = None
        if isinstance(u, sp.Mul):
            parts = []
            for a in u.args:
                if a.is_Number and a.is_negative:
                    # ln of a product with a negative factor: not split
                    before = [c for c, _ in parts]
                    atom, dual = self._log_atom(u, scope, head)

                    def whole(p, env, at):
                        for code in before:
                            code(p, env, at)
                        return atom(p, env, at)

                    return whole, dual
                parts.append(self._log(a, scope, head))
            return self._add(parts)
        if isinstance(u, sp.Pow):
            return self._mul([self._eval(u.exp, scope, head), self._log(u.base, scope, head)])
        if isinstance(u, sp.exp):
            return self._eval(u.args[0], scope, head)
        if u is sp.E:
            return (lambda p, env, at: 1), False
        if isinstance(u, sp.Indexed) and u.base in self.defined and not (head is not None and head == u.base):
            # The log of a defined entry is the log of its definition (ln o_i = z_i - ln sum_j e^{z_j}).
            where = self._ints(u.indices, scope)
            through = head if head is not None and self._reaches(u.base, head) else None
            cell = self._log_definition(u.base, through)
            uid = self._id(("log", u.base, through))

            def log(p, env, at):
                w = where(p, env)
                key = (uid, w, at if through is not None else None)
                out = p.entries.get(key)
                if out is None:
                    out = p.entries[key] = cell[0][0](p, w, at)
                return out

            dual = cell[0][1] if cell[0] is not None else through is not None
            if head is not None and not dual:
                return (lambda p, env, at: (log(p, env, at), 0)), True
            return log, dual
        if isinstance(u, sp.Indexed) and u.base in self.defined:
            # ln o_i differentiated by o itself: its value is the one its definition gives
            # everywhere else (z_i - ln sum_j e^{z_j}), its derivative o_i' / o_i.
            w, dual = self._eval(u, scope, head)
            where = self._ints(u.indices, scope)
            cell = self._log_definition(u.base, None)
            uid = self._id(("log", u.base, None))

            def log_of_variable(p, env, at):
                x = w(p, env, at)
                v, d = x if dual else (x, 0)
                at_ = where(p, env)
                key = (uid, at_, None)
                value = p.entries.get(key)
                if value is None:
                    value = p.entries[key] = cell[0][0](p, at_, None)
                return value, d * p.inverse(v) % P

            return log_of_variable, True
        return self._log_atom(u, scope, head)

    def _log_definition(self, head: sp.Basic, seed: sp.Basic | None) -> list:
        """The log of ``head``'s definition compiled with its indices bound (see _definition)."""
        key = ("log", head, seed)
        if key not in self._definitions:
            cell = self._definitions[key] = [None]
            d = self.defined[head]
            cell[0] = self._log(d.value, Scope(d.symbol.indices if isinstance(d.symbol, sp.Indexed) else ()), seed)
        return self._definitions[key]

    def _log_atom(self, u: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        w, dual = self._eval(u, scope, head)
        if not dual:

            def log(p, env, at):
                v = w(p, env, at)
                if v == 0:
                    raise ZeroDivisionError("the log of 0")
                return p.atom(("log", v))

            return log, False

        def log_dual(p, env, at):
            v, d = w(p, env, at)
            if v == 0:
                raise ZeroDivisionError("the log of 0")
            return p.atom(("log", v)), d * p.inverse(v) % P

        return log_dual, True


def _root(p: Point, v: int, d: int, q: int, fixed: bool) -> tuple[int, int]:
    """A root r of r^q = v in the field, so that v^(1/2) and v^(-3/2) are powers of one r with
    r^2 = v; its derivative is r v' / (q v). A square root exists for half the residues (the
    point is then drawn again, see :func:`agree`), a q-th root for q prime to P - 1 always.

    A root of a number fixed at every point (sqrt(D) of a size) that has none in the field is
    an atom of its own instead: another point would not help. Sound as every atom is: a claim
    that holds for an unknown r holds for the true root; one that needs r^2 = D is left
    undecided (SymPy writes sqrt(D)^2 as D before it gets here)."""
    if v == 0:
        raise ZeroDivisionError("a root of 0")
    if q == 2:
        r = pow(v, (P + 1) // 4, P)  # P = 3 mod 4
        if r * r % P != v:
            if fixed:
                return p.atom(("root", q, v)), 0
            raise NoRoot(f"{v} has no square root modulo P")
    elif math.gcd(q, P - 1) == 1:
        r = pow(v, pow(q, -1, P - 1), P)
    else:
        raise Undecided(f"a root of order {q}")
    return r, r * d % P * _inverse(q * v % P) % P


def plan(setting, exprs: Sequence[sp.Expr], sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], assumptions: Sequence[str]) -> tuple:
    """What :func:`leaves` draws (as ``numeric.at_random`` draws numbers): each leaf quantity
    with its entries, the scalars, and the entries the assumptions' constraints fix."""
    from derive.shapes import entries

    table, scalars = layout(setting, exprs, tuple(sizes), tuple(index))
    quantities = []
    for head, limits in table:
        shape = tuple(int(sp.sympify(n).xreplace(sizes)) for n in limits)
        quantities.append((head, list(entries(shape)) if shape else None))
    fixed = []
    for key in assumptions:
        constraint = setting.constraints[key]
        values = constraint(int(sizes[setting.classes]), sizes) if getattr(constraint, "rows", None) else constraint(int(sizes[setting.classes]))
        fixed.extend((entry.base, tuple(int(i) for i in entry.indices), value) for entry, value in values.items())
    return quantities, scalars, fixed


def layout(setting, exprs: Sequence[sp.Expr], sizes: tuple[sp.Symbol, ...], index: tuple[sp.Symbol, ...]) -> tuple[list, list]:
    """The leaf quantities of claims over ``setting`` with the limits of their indices, sorted by
    name, and the scalars named only in the claims: the same at every size, so found once."""
    key = (id(setting), tuple(map(id, exprs)), sizes, index)  # the objects held beside it
    if key not in _LAYOUTS or _LAYOUTS[key][0] is not setting or any(a is not b for a, b in zip(_LAYOUTS[key][1], exprs)):
        from derive.shapes import shapes

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
        names = {str(b) for b in table}
        scalars = []
        for e in exprs:
            for s in sorted(e.free_symbols, key=str):
                if isinstance(s, sp.Symbol) and not s.is_integer and s not in table and s not in sizes and s not in index and s.name not in names and s not in scalars:
                    scalars.append(s)
        _LAYOUTS[key] = (setting, tuple(exprs), ([(head, table[head]) for head in sorted(table, key=str)], scalars))
    return _LAYOUTS[key][2]


_LAYOUTS: dict = {}


def leaves(planned: tuple, sizes: Mapping[sp.Symbol, int], rng: random.Random) -> dict:
    """A random residue for every leaf entry, then the assumptions imposed (see :func:`plan`)."""
    quantities, scalars, fixed = planned
    values: dict = {}
    for head, at in quantities:
        values[head] = {x: _draw(rng) for x in at} if at is not None else _draw(rng)
    for s in scalars:
        values[s] = _draw(rng)
    if fixed:
        point = Point(values, tuple(sizes.values()), rng)
        program = _program(None, tuple(sizes))
        for base, at, value in fixed:
            if at in values[base]:  # a constraint may name rows beyond these sizes
                values[base][at] = program.compiled(value, ())(point, (), None)
    return values


_PLANS: dict = {}


def agree(setting, lhs: sp.Expr, rhs: sp.Expr, sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], assumptions: Sequence[str], seed: str) -> bool:
    """Whether ``lhs = rhs`` at these sizes and indices is decided true here: both sides agree
    modulo P at POINTS random points. False means undecided, not wrong."""
    rng = random.Random(seed)
    sizes = {s: int(v) for s, v in sizes.items()}
    index = {s: int(v) for s, v in index.items()}
    # Kept per setting and claim, found by the objects (held beside it, so that their ids stand
    # for no others meanwhile): comparing two equal trees costs a walk of both.
    key = (id(setting), id(lhs), id(rhs), tuple(sizes.items()), tuple(index), tuple(assumptions))
    try:
        held = _PLANS.get(key)
        if held is None or held[0] is not setting or held[1] is not lhs or held[2] is not rhs:
            held = _PLANS[key] = (setting, lhs, rhs, plan(setting, (lhs, rhs), sizes, index, assumptions))
        planned = held[3]
        program = _program(setting, tuple(sizes))
        left, right = program.compiled(lhs, tuple(index)), program.compiled(rhs, tuple(index))
        at, extents = tuple(index.values()), tuple(sizes.values())
        decided = 0
        for _ in range(8 * POINTS):
            point = Point(leaves(planned, sizes, rng), extents, rng)
            try:
                if left(point, at, None) != right(point, at, None):
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


_PROGRAMS: dict = {}


def _program(setting, sizes: tuple[sp.Symbol, ...]) -> Program:
    """The program of a setting's definitions (none for None) with these limits, made once
    (the setting kept beside it, so that its id stands for no other meanwhile)."""
    held = _PROGRAMS.get(id(setting))
    if held is None or held[0] is not setting:
        held = _PROGRAMS[id(setting)] = (setting, {})
    if sizes not in held[1]:
        held[1][sizes] = Program(setting.definitions if setting is not None else (), sizes)
    return held[1][sizes]
