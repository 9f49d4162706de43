"""A claim evaluated at numbers without writing it out: sums are loops, defined entries are
computed once from their definitions, and a derivative is taken by forward mode.

Writing a claim out with SymPy for H = 40 costs seconds (every term is a SymPy object); here it
costs what the arithmetic costs. Used by the checks at large sizes, where the exact checks of
:mod:`derive.verify` would be too slow.
"""

from __future__ import annotations

import operator
from typing import Callable, Mapping, Sequence

import mpmath
import sympy as sp

from derive import functions as fn
from derive.model import Definition
from derive.symbols import ExcludedSum


ZERO = mpmath.mpf(0)


class Evaluator:
    """Evaluate expressions over ``definitions`` at given sizes and leaf values.

    ``values`` maps a leaf (IndexedBase or Symbol) to a dict from index tuples to numbers (a
    scalar leaf to a number). A derivative ``d f / d x`` is the tangent of f when x is seeded
    with 1: for a leaf entry, its value; for a defined entry (o_i), that entry is cut from its
    definition and treated as a leaf while f is evaluated. Each expression is compiled once
    (:class:`Numbers`); what one evaluator computes (a defined entry, a sum) is kept for its
    further expressions.
    """

    def __init__(self, definitions: Sequence[Definition], sizes: Mapping[sp.Symbol, int], values: Mapping[sp.Basic, object]):
        self.definitions = definitions
        self.sizes = dict(sizes)
        self.values = dict(values)
        self._points: dict[int, Point] = {}

    def value(self, e: sp.Basic, bound: Mapping[sp.Symbol, int] | None = None) -> mpmath.mpf:
        bound = dict(bound or {})
        program = numbers(self.definitions, tuple(self.sizes))
        if id(program) not in self._points:  # a point per program: their memos do not mix
            self._points[id(program)] = Point(self.values, tuple(int(v) for v in self.sizes.values()))
        return program.compiled(e, tuple(bound))(self._points[id(program)], tuple(int(v) for v in bound.values()), None)


# --- compiled: a claim turned into Python closures once, then run at many points ---------------
class Point:
    """The state of one point: the leaf values, and what is computed once there (a sum or a
    term for each value of the free indices it uses, an entry of a defined quantity)."""

    __slots__ = ("values", "sizes", "terms", "entries", "tables")

    def __init__(self, values: Mapping[sp.Basic, object], sizes: tuple[int, ...]):
        self.values, self.sizes = values, sizes
        self.terms: dict[tuple, object] = {}
        self.entries: dict[tuple, object] = {}
        self.tables: dict[int, object] = {}
        """The table of each leaf by the number the program gave it."""


Code = Callable[[Point, tuple, "tuple | None"], object]
"""A compiled term: called with the point, the values of the indices in scope and the entry the
derivative is taken by (None for a value), it returns a value, or a pair (value, derivative)
where it depends on that entry."""


class Scope:
    """The indices bound where a term stands, each at its place in the tuple of their values;
    the first ``given`` of them are the claim's own (k), the others a sum's or a definition's."""

    __slots__ = ("slots", "depth", "given")

    def __init__(self, names: Sequence[sp.Symbol] = (), given: int = 0):
        self.slots = {s: n for n, s in enumerate(names)}
        self.depth = len(names)
        self.given = given

    def bind(self, name: sp.Symbol) -> "Scope":
        inner = Scope()
        inner.slots = {**self.slots, name: self.depth}
        inner.depth = self.depth + 1
        inner.given = self.given
        return inner


def failing(error: Exception, dual: bool) -> tuple[Code, bool]:
    """A term whose evaluation raises ``error`` when (and only when) it is reached (a fresh one
    each time: a raised exception keeps its traceback)."""
    kind, args = type(error), error.args

    def code(p, env, at):
        try:
            fresh = kind(*args)
        except Exception:  # an exception that wants other arguments: raised again as it is
            fresh = error
        raise fresh

    return code, dual


class Compiler:
    """A claim over ``definitions`` compiled once into Python closures, evaluated then at many
    points without looking at SymPy objects again. Sums are
    loops; a sum, and a term inside a sum whose index it does not use, is computed once per point
    for each value of its free indices; a defined entry once per point; a derivative by forward
    mode, a pair (value, derivative) carried only through what depends on the variable.

    ``sizes`` are the names of the limits (H, D); their values are the point's. A subclass gives
    the arithmetic (:meth:`_node`), the exceptions that make a claim undecided (``CAUGHT``), the
    derivative's 1 and 0, and what a missing leaf raises."""

    CAUGHT: tuple[type[Exception], ...] = ()
    UNIT: object = 1
    NAUGHT: object = 0

    def __init__(self, definitions: Sequence[Definition], sizes: Sequence[sp.Symbol]):
        self.defined = {(d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol): d for d in definitions}
        self.sizes = {s: n for n, s in enumerate(sizes)}
        self._structure: dict = {}
        self._top: dict = {}
        self._held: dict = {}
        self._definitions: dict = {}
        self._ids: dict = {}

    def compiled(self, e: sp.Basic, indices: tuple[sp.Symbol, ...]) -> Code:
        """``e`` as a value, with ``indices`` bound (in this order) when it is called."""
        # Found by the object first: comparing two equal trees costs a walk of both.
        held = self._held.get((id(e), indices))
        if held is not None and held[0] is e:
            return held[1]
        key = (e, indices)
        if key not in self._top:
            self._top[key] = self._eval(e, Scope(indices, len(indices)), None)[0]
        self._held[id(e), indices] = (e, self._top[key])
        return self._top[key]

    def _id(self, key: object) -> int:
        return self._ids.setdefault(key, len(self._ids))

    def _missing(self, head: sp.Basic) -> Exception:
        return KeyError(f"no value for {head}")

    _leaf_value: Callable[[object], object] | None = None
    """How a leaf's value is taken (None: as it is)."""

    # -- what depends on the expressions only ----------------------------------------------
    def _free(self, e: sp.Basic) -> tuple:
        """The free indices of ``e``, sorted by name: index symbols that no sum inside binds
        (the indices of a derivative's variable among them), limits aside."""
        key = ("free", e)
        out = self._structure.get(key)
        if out is None:
            out = self._structure[key] = tuple(sorted(self._indices(e), key=str))
        return out

    def _indices(self, e: sp.Basic) -> frozenset:
        key = ("indices", e)
        out = self._structure.get(key)
        if out is None:
            if isinstance(e, sp.Symbol):
                out = frozenset((e,)) if e.is_integer and e not in self.sizes else frozenset()
            elif isinstance(e, sp.Sum):
                out = self._indices(e.function).union(*(self._indices(x) for lim in e.limits for x in lim[1:])) - {lim[0] for lim in e.limits}
            elif isinstance(e, ExcludedSum):
                f, idx, lo, hi, skip = e.args
                out = (self._indices(f) - {idx}) | self._indices(lo) | self._indices(hi) | self._indices(skip)
            else:
                out = frozenset().union(*(self._indices(a) for a in e.args))
            self._structure[key] = out
        return out

    def _names(self, e: sp.Basic) -> tuple[frozenset, bool]:
        """The quantities ``e`` names (the base of an entry, a scalar), and whether it holds a
        derivative."""
        key = ("names", e)
        out = self._structure.get(key)
        if out is None:
            if isinstance(e, sp.Indexed):
                out = (frozenset((e.base,)), False)
            elif isinstance(e, sp.Symbol):
                out = (frozenset() if e.is_integer else frozenset((e,)), False)
            else:
                parts = [self._names(a) for a in e.args]
                out = (frozenset().union(*(n for n, _ in parts)), isinstance(e, sp.Derivative) or any(d for _, d in parts))
            self._structure[key] = out
        return out

    def _depends(self, e: sp.Basic, head: sp.Basic) -> bool:
        key = ("depends", e, head)
        out = self._structure.get(key)
        if out is None:
            names, derivative = self._names(e)
            out = self._structure[key] = head in names or any(self._reaches(n, head) for n in names if n in self.defined) or derivative
        return out

    def _reaches(self, head: sp.Basic, target: sp.Basic) -> bool:
        """Whether the definition of ``head`` depends on ``target``, directly or through others."""
        key = ("reach", head, target)
        if key not in self._structure:
            self._structure[key] = False
            d = self.defined.get(head)
            found = False
            if d is not None:
                names = {x.base for x in d.value.atoms(sp.Indexed)} | {s for s in d.value.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer}
                found = target in names or any(self._reaches(n, target) for n in names if n in self.defined)
            self._structure[key] = found
        return self._structure[key]

    # -- compiling --------------------------------------------------------------------------
    def _eval(self, e: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        """``e`` compiled; with whether it returns pairs (it depends on the variable ``head``)."""
        if head is not None and not self._depends(e, head):
            head = None  # no derivative to carry: a plain value, shared with the value's memo
        try:
            code, dual = self._node(e, scope, head)
        except self.CAUGHT as error:
            return failing(error, head is not None)
        free = self._free(e)
        if isinstance(e, (sp.Sum, ExcludedSum)) or (e.args and not isinstance(e, (sp.Indexed, sp.KroneckerDelta)) and not self._cheap(e) and any(x not in free for x, n in scope.slots.items() if n >= scope.given)):
            # A sum is evaluated once per value of its free indices (a softmax denominator), and
            # so is a term inside a sum, or a definition, whose index it does not use.
            return self._memo(code, self._id(("term", e, head)), tuple(scope.slots.get(x) for x in free), head is not None), dual
        return code, dual

    def _node(self, e: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        raise NotImplementedError

    def _cheap(self, e: sp.Basic) -> bool:
        """A product or sum of a few entries and numbers (delta_ij - o_j, W_jm x_m; a defined
        entry is computed once per point anyway): computed again costs less than looking it up."""
        key = ("cheap", e)
        out = self._structure.get(key)
        if out is None:
            out = self._structure[key] = isinstance(e, (sp.Mul, sp.Add)) and len(e.args) <= 3 and all(
                a.is_Number or isinstance(a, (sp.KroneckerDelta, sp.Indexed)) or (isinstance(a, sp.Symbol) and a not in self.defined) for a in e.args
            )
        return out

    @staticmethod
    def _memo(code: Code, uid: int, slots: tuple, dual: bool) -> Code:
        """``code`` computed once per point for each value of the indices at ``slots`` (and of
        the entry the derivative is taken by, where it carries one)."""
        if None not in slots:
            values = operator.itemgetter(*slots) if slots else (lambda env: ())

            def memo(p, env, at):
                key = (uid, values(env), at if dual else None)
                out = p.terms.get(key)
                if out is None:
                    out = p.terms[key] = code(p, env, at)
                return out

            return memo

        def memo_many(p, env, at):
            key = (uid, tuple(None if s is None else env[s] for s in slots), at if dual else None)
            out = p.terms.get(key)
            if out is None:
                out = p.terms[key] = code(p, env, at)
            return out

        return memo_many

    def _values(self, f: sp.Basic, idx: sp.Symbol, lo: sp.Basic, hi: sp.Basic, scope: Scope) -> Callable[[Point, tuple], Sequence[int]]:
        """The values a sum's index runs over: lo..hi, or only a where the summand has a factor
        delta(idx, a) with a known outside the sum (every other term is 0: the sifting property,
        which spares the loops of a batch's sums over n', n'', ... their N - 1 zero terms)."""
        low, high = self._int(lo, scope), self._int(hi, scope)
        partner = delta_partner(f, idx, scope)
        if partner is None:
            return lambda p, env: range(low(p, env), high(p, env) + 1)
        where = self._int(partner, scope)

        def one(p, env):
            v = where(p, env)
            return (v,) if low(p, env) <= v <= high(p, env) else ()

        return one

    def _int(self, e: sp.Basic, scope: Scope) -> Callable[[Point, tuple], int]:
        """An index (k, k + 1, a size) as a whole number."""
        if e.is_Integer:
            n = int(e)
            return lambda p, env: n
        if e in scope.slots:
            slot = scope.slots[e]
            return lambda p, env: env[slot]
        if e in self.sizes:
            slot = self.sizes[e]
            return lambda p, env: p.sizes[slot]
        return self._int_other(e, scope)

    def _int_other(self, e: sp.Basic, scope: Scope) -> Callable[[Point, tuple], int]:
        raise NotImplementedError

    def _ints(self, indices: Sequence[sp.Basic], scope: Scope) -> Callable[[Point, tuple], tuple]:
        if all(i in scope.slots for i in indices):  # plain indices: taken from the scope at once
            slots = [scope.slots[i] for i in indices]
            if len(slots) == 1:
                (slot,) = slots
                return lambda p, env: (env[slot],)
            values = operator.itemgetter(*slots)
            return lambda p, env: values(env)
        parts = [self._int(i, scope) for i in indices]
        if len(parts) == 1:
            only = parts[0]
            return lambda p, env: (only(p, env),)
        if len(parts) == 2:
            a, b = parts
            return lambda p, env: (a(p, env), b(p, env))
        return lambda p, env: tuple(f(p, env) for f in parts)

    def _entry(self, head: sp.Basic, where: Callable, seed: sp.Basic | None) -> tuple[Code, bool]:
        """An entry of ``head`` at the indices ``where`` gives: a leaf's value, or a defined
        entry computed from its definition once per point (and once per entry the derivative is
        taken by)."""
        unit, naught = self.UNIT, self.NAUGHT
        if seed is not None and seed == head:
            # The variable itself, or another entry of it: a leaf for this derivative.
            plain = self._plain(head)
            return (lambda p, env, at: (plain(p, w := where(p, env)), unit if w == at else naught)), True
        if head in self.defined and seed is not None and self._reaches(head, seed):
            cell = self._definition(head, seed)
            uid = self._id(("entry", head, seed))
            ties = self._ties(head, seed)
            plain = self._plain(head)

            def entry(p, env, at):
                w = where(p, env)
                if ties and any(w[q] != at[r] for q, r in ties):
                    return plain(p, w), naught  # the entry does not depend on that one
                key = (uid, w, at)
                out = p.entries.get(key)
                if out is None:
                    code, dual = cell[0]
                    out = code(p, w, at)
                    p.entries[key] = out = out if dual else (out, naught)
                return out

            return entry, True
        plain = self._plain(head)
        if seed is not None:
            return (lambda p, env, at: (plain(p, where(p, env)), naught)), True
        return (lambda p, env, at: plain(p, where(p, env))), False

    def _plain(self, head: sp.Basic) -> Callable[[Point, tuple], object]:
        """The value of an entry of ``head`` at given indices."""
        if head in self.defined:
            cell = self._definition(head, None)
            uid = self._id(("entry", head, None))

            def defined(p, w):
                key = (uid, w)
                out = p.entries.get(key)
                if out is None:
                    out = p.entries[key] = cell[0][0](p, w, None)
                return out

            return defined
        uid = self._id(("leaf", head))
        convert = self._leaf_value

        def leaf(p, w):
            table = p.tables.get(uid)
            if table is None:
                table = p.values.get(head)
                if table is None:
                    raise self._missing(head)
                p.tables[uid] = table
            return table if not w else table[w]

        if convert is None:
            return leaf
        return lambda p, w: convert(leaf(p, w))

    def _ties(self, head: sp.Basic, seed: sp.Basic) -> frozenset:
        """The pairs (q, r) such that an entry of ``head`` depends on an entry of ``seed`` only
        where index q of the one is index r of the other: o_ni depends on z_n'j only at n' = n
        (a batch's examples apart), so its derivative is 0 elsewhere without computing it."""
        key = ("ties", head, seed)
        if key not in self._structure:
            self._structure[key] = frozenset()  # a cycle ties nothing
            d = self.defined[head]
            own = d.symbol.indices if isinstance(d.symbol, sp.Indexed) else ()
            found = None
            for x in d.value.atoms(sp.Indexed):
                if x.base == seed:
                    pairs = {(q, r) for q, a in enumerate(own) for r, b in enumerate(x.indices) if a == b}
                elif x.base in self.defined and self._reaches(x.base, seed):
                    pairs = {(q, r) for q, a in enumerate(own) for t, r in self._ties(x.base, seed) if x.indices[t] == a}
                else:
                    continue
                found = pairs if found is None else found & pairs
            if any(s == seed or (s in self.defined and self._reaches(s, seed)) for s in d.value.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer):
                found = set()  # through a scalar: every entry may depend on every one
            self._structure[key] = frozenset(found or ())
        return self._structure[key]

    def _definition(self, head: sp.Basic, seed: sp.Basic | None) -> list:
        """The definition of ``head`` compiled with its indices bound; a cell filled after it is
        made, so that a definition met again while it is compiled is not compiled again."""
        key = (head, seed)
        if key not in self._definitions:
            cell = self._definitions[key] = [None]
            d = self.defined[head]
            cell[0] = self._eval(d.value, Scope(d.symbol.indices if isinstance(d.symbol, sp.Indexed) else ()), seed)
        return self._definitions[key]


class Numbers(Compiler):
    """Claims at numbers (mpmath, at the precision the program was made for), compiled (see
    :class:`Compiler`)."""

    CAUGHT = (TypeError, KeyError, ValueError, ZeroDivisionError)
    UNIT = mpmath.mpf(1)
    NAUGHT = ZERO

    @staticmethod
    def _leaf_value(value: object) -> mpmath.mpf:
        return mpmath.mpf(value) if not isinstance(value, mpmath.mpf) else value

    def _int_other(self, e: sp.Basic, scope: Scope) -> Callable[[Point, tuple], int]:
        code = self._eval(e, scope, None)[0]
        return lambda p, env: int(code(p, env, None))

    def _node(self, e: sp.Basic, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        if e.is_Number:
            c = mpmath.mpf(e.p) / e.q if e.is_Rational else mpmath.mpf(str(e))
            return (lambda p, env, at: c), False
        if isinstance(e, sp.Symbol):
            if e in scope.slots:
                slot = scope.slots[e]
                return (lambda p, env, at: mpmath.mpf(env[slot])), False
            if e in self.sizes:
                slot = self.sizes[e]
                return (lambda p, env, at: mpmath.mpf(p.sizes[slot])), False
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
            a, dual = self._eval(e.args[0], scope, head)
            if not dual:
                return (lambda p, env, at: mpmath.exp(a(p, env, at))), False

            def exp(p, env, at):
                av, ad = a(p, env, at)
                v = mpmath.exp(av)
                return v, v * ad

            return exp, True
        if isinstance(e, sp.log):
            a, dual = self._eval(e.args[0], scope, head)
            if not dual:
                return (lambda p, env, at: mpmath.log(a(p, env, at))), False

            def log(p, env, at):
                av, ad = a(p, env, at)
                # ln 0 = -inf (a one-hot target's 0 ln 0 is then not finite, and the caller says so).
                return mpmath.log(av), ad / av if av != 0 else mpmath.nan if ad else mpmath.mpf(0)

            return log, True
        if isinstance(e, sp.erf):
            a, dual = self._eval(e.args[0], scope, head)
            if not dual:
                return (lambda p, env, at: mpmath.erf(a(p, env, at))), False

            def erf(p, env, at):
                # erf' = 2 / sqrt(pi) e^{-u^2}
                av, ad = a(p, env, at)
                return mpmath.erf(av), 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-av * av) * ad if ad else ZERO

            return erf, True
        if isinstance(e, fn.ELEMENTARY):
            return self._eval(e.doit(deep=False), scope, head)
        if e is sp.E:
            return (lambda p, env, at: mpmath.e), False
        if e is sp.pi:
            return (lambda p, env, at: mpmath.pi), False
        if isinstance(e, sp.KroneckerDelta):
            a, b = (self._int(x, scope) for x in e.args)
            return (lambda p, env, at: mpmath.mpf(a(p, env) == b(p, env))), False
        if isinstance(e, sp.Sum):
            outside = hoisted(e)
            if outside is not None:
                return self._eval(outside, scope, head)
            return self._sum(e.function, list(e.limits), scope, head, None)
        if isinstance(e, ExcludedSum):
            f, idx, lo, hi, skip = e.args
            return self._sum(f, [(idx, lo, hi)], scope, head, self._int(skip, scope))
        if isinstance(e, sp.Derivative):
            if head is not None:
                raise TypeError(f"a derivative inside a derivative: {sp.sstr(e)}")
            (x, count), = e.variable_count
            if count != 1:
                raise TypeError(f"a derivative of order {count}: {sp.sstr(e)}")
            by = x.base if isinstance(x, sp.Indexed) else x
            where = self._ints(x.indices, scope) if isinstance(x, sp.Indexed) else (lambda p, env: ())
            inner, dual = self._eval(e.expr, scope, by)
            if not dual:
                return (lambda p, env, at: (where(p, env), inner(p, env, None), ZERO)[2]), False
            return (lambda p, env, at: inner(p, env, where(p, env))[1]), False
        raise TypeError(f"cannot evaluate {type(e).__name__}: {sp.sstr(e)}")

    @staticmethod
    def _add(parts: list[tuple[Code, bool]]) -> tuple[Code, bool]:
        codes = [c for c, _ in parts]
        if not any(d for _, d in parts):

            def total(p, env, at):
                v = ZERO
                for code in codes:
                    v = v + code(p, env, at)
                return v

            return total, False

        def add(p, env, at):
            v = d = ZERO
            for code, dual in parts:
                x = code(p, env, at)
                if dual:
                    v = v + x[0]
                    d = d + x[1] if d or x[1] else ZERO
                else:
                    v = v + x
            return v, d

        return add, True

    @staticmethod
    def _mul(parts: list[tuple[Code, bool]]) -> tuple[Code, bool]:
        codes = [c for c, _ in parts]
        one = mpmath.mpf(1)
        if not any(d for _, d in parts):

            def product(p, env, at):
                v = one
                for code in codes:
                    v = v * code(p, env, at)
                return v

            return product, False

        def mul(p, env, at):
            v, d = one, ZERO
            for code, dual in parts:
                x = code(p, env, at)
                if dual:
                    xv, xd = x
                    v, d = v * xv, (d * xv + v * xd if d or xd else ZERO)
                else:
                    v, d = v * x, (d * x if d else ZERO)
            return v, d

        return mul, True

    def _pow(self, e: sp.Pow, scope: Scope, head: sp.Basic | None) -> tuple[Code, bool]:
        b, dual = self._eval(e.base, scope, head)
        if e.exp.is_Integer:
            n = int(e.exp)
            if not dual:
                return (lambda p, env, at: mpmath.power(b(p, env, at), n)), False

            def power(p, env, at):
                bv, bd = b(p, env, at)
                return mpmath.power(bv, n), (n * mpmath.power(bv, n - 1) * bd if bd else ZERO)

            return power, True
        x, xdual = self._eval(e.exp, scope, head)
        if not dual and not xdual:
            return (lambda p, env, at: mpmath.power(b(p, env, at), x(p, env, at))), False

        def general(p, env, at):
            bv, bd = b(p, env, at) if dual else (b(p, env, at), ZERO)
            xv, xd = x(p, env, at) if xdual else (x(p, env, at), ZERO)
            v = mpmath.power(bv, xv)
            d = ZERO
            if bd:
                d += xv * mpmath.power(bv, xv - 1) * bd
            if xd:
                d += v * mpmath.log(bv) * xd
            return v, d

        return general, True

    def _sum(self, f: sp.Basic, limits: list, scope: Scope, head: sp.Basic | None, skip: Callable | None) -> tuple[Code, bool]:
        (idx, lo, hi), rest = limits[0], limits[1:]
        values = self._values(f, idx, lo, hi, scope)
        inner = scope.bind(idx)
        body, dual = self._sum(f, rest, inner, head, None) if rest else self._eval(f, inner, head)
        if not dual:

            def total(p, env, at):
                s = skip(p, env) if skip is not None else None
                out = ZERO
                for v in values(p, env):
                    if v != s:
                        out = out + body(p, (*env, v), at)
                return out

            return total, False

        def total_dual(p, env, at):
            s = skip(p, env) if skip is not None else None
            v_ = d_ = ZERO
            for v in values(p, env):
                if v != s:
                    x = body(p, (*env, v), at)
                    v_ = v_ + x[0]
                    d_ = d_ + x[1] if d_ or x[1] else ZERO
            return v_, d_

        return total_dual, True


def hoisted(e: sp.Sum) -> sp.Expr | None:
    """sum_j c f_j as c sum_j f_j, where the factors c do not use the sum's indices: computed
    once, not once per term; and sum_j (delta_ij - a_j) f_j as sum_j delta_ij f_j - sum_j a_j f_j,
    whose first sum runs at j = i alone and whose second does not use i. None where neither
    applies."""
    if not isinstance(e.function, sp.Mul):
        return None
    bound = [lim[0] for lim in e.limits]
    outside = [f for f in e.function.args if not f.has(*bound)]
    inside = [f for f in e.function.args if f.has(*bound)]
    if outside:
        return sp.Mul(*outside, sp.Sum(sp.Mul(*inside, evaluate=False) if inside else sp.Integer(1), *e.limits), evaluate=False)
    for n, f in enumerate(inside):
        if isinstance(f, sp.Add) and any(isinstance(g, sp.KroneckerDelta) and g.has(*bound) for t in f.args for g in sp.Mul.make_args(t)):
            rest = inside[:n] + inside[n + 1 :]
            return sp.Add(*(sp.Sum(sp.Mul(*rest, t, evaluate=False), *e.limits) for t in f.args), evaluate=False)
    return None


def delta_partner(f: sp.Basic, idx: sp.Symbol, scope: Scope) -> sp.Basic | None:
    """a, where ``f`` is a product with a factor delta(idx, a) (in a product or in the summand
    of a sum within it too: sum_m x_m delta_jk is 0 but at j = k) and a is an index bound
    outside the sum over idx, or a number; else None."""
    stack = [(f, frozenset())]
    while stack:
        g, bound = stack.pop()
        if isinstance(g, sp.Mul):
            stack.extend((a, bound) for a in g.args)
        elif isinstance(g, sp.Sum):
            stack.append((g.function, bound | {lim[0] for lim in g.limits}))
        elif isinstance(g, sp.KroneckerDelta) and idx in g.args and idx not in bound:
            other = g.args[1] if g.args[0] == idx else g.args[0]
            if (other in scope.slots and other not in bound) or other.is_Integer:
                return other
    return None


_NUMBERS: dict = {}


def numbers(definitions: Sequence[Definition], sizes: tuple[sp.Symbol, ...]) -> Numbers:
    """The compiled claims over ``definitions`` with these limits at the current precision,
    made once (the definitions kept beside it, so that their id stands for no other meanwhile)."""
    held = _NUMBERS.get(id(definitions))
    if held is None or held[0] is not definitions:
        held = _NUMBERS[id(definitions)] = (definitions, {})
    key = (sizes, mpmath.mp.prec)
    if key not in held[1]:
        held[1][key] = Numbers(definitions, sizes)
    return held[1][key]


def at_random(setting, exprs: Sequence[sp.Expr], sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], assumptions: Sequence[str], rng) -> list[mpmath.mpf]:
    """``exprs`` evaluated at one random point: every leaf entry drawn from [-3, 3] (a symbol
    known to be positive from [1/2, 3]), then the assumptions imposed by their constraints."""
    values = draw(setting, exprs, sizes, index, rng)
    impose(setting, values, sizes, assumptions)
    return evaluate(setting, exprs, sizes, index, values)


def draw(setting, exprs: Sequence[sp.Expr], sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], rng) -> dict:
    """A random value for every leaf entry of ``exprs`` over ``setting`` (see :func:`at_random`)."""
    from derive.shapes import entries

    table, scalars = _layout(setting, exprs, tuple(sizes), tuple(index))
    values: dict = {}
    for head, limits in table:
        shape = tuple(int(sp.sympify(n).xreplace(sizes)) for n in limits)
        draw = (lambda: mpmath.mpf(rng.uniform(0.5, 3))) if getattr(head, "is_positive", False) else (lambda: mpmath.mpf(rng.uniform(-3, 3)))
        values[head] = {at: draw() for at in entries(shape)} if shape else draw()
    for s in scalars:
        values[s] = mpmath.mpf(rng.uniform(0.5, 3)) if s.is_positive else mpmath.mpf(rng.uniform(-3, 3))
    return values


def impose(setting, values: dict, sizes: Mapping[sp.Symbol, int], assumptions: Sequence[str]) -> None:
    """The entries the assumptions' constraints fix, set in ``values`` from the others."""
    for key in assumptions:
        constraint = setting.constraints[key]
        fixed = constraint(int(sizes[setting.classes]), sizes) if getattr(constraint, "rows", None) else constraint(int(sizes[setting.classes]))
        evaluator = Evaluator((), sizes, values)
        for entry, value in fixed.items():
            at = tuple(int(i) for i in entry.indices)
            if at in values[entry.base]:  # a constraint may name rows beyond these sizes
                values[entry.base][at] = evaluator.value(value)


def evaluate(setting, exprs: Sequence[sp.Expr], sizes: Mapping[sp.Symbol, int], index: Mapping[sp.Symbol, int], values: Mapping) -> list[mpmath.mpf]:
    """``exprs`` at the leaf values ``values``, compiled (:class:`Numbers`)."""
    program = numbers(setting.definitions, tuple(sizes))
    point = Point(values, tuple(int(v) for v in sizes.values()))
    at = tuple(int(v) for v in index.values())
    return [program.compiled(e, tuple(index))(point, at, None) for e in exprs]


def _layout(setting, exprs: Sequence[sp.Expr], sizes: tuple, index: tuple) -> tuple[list, list]:
    """The leaf quantities with the limits of their indices, sorted by name, and the scalars
    named only in ``exprs``, in the order they are drawn: the same at every size, so found once."""
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
        scalars: list = []
        for e in exprs:
            for s in e.free_symbols:
                if isinstance(s, sp.Symbol) and not s.is_integer and s not in table and s not in scalars and s not in sizes and s not in index and s.name not in names:
                    scalars.append(s)
                    names.add(s.name)
        _LAYOUTS[key] = (setting, tuple(exprs), ([(head, table[head]) for head in sorted(table, key=str)], scalars))
    return _LAYOUTS[key][2]


_LAYOUTS: dict = {}
