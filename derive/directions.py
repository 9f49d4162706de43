"""A claimed gradient or Jacobian for a concrete H, checked along random directions in O(H).

Every entry of an H x H Jacobian checked one by one costs H^2. Instead, for a random direction v
(each entry a random element of the field of integers modulo P = 2^61 - 1) the claimed product
J v is compared with the true one, the Jacobian-vector product that forward mode gives when the
tangent of every logit is seeded with v. If any entry of J is wrong, J - J_true is a nonzero
matrix D; one of its rows d is nonzero, and d . v = 0 for at most a fraction 1/P of the
directions (Freivalds). A gradient g is checked the same way, as g . v against the derivative of
the loss along v. The random point the entries are evaluated at is drawn first, so a wrong entry
passes only if it vanishes there (Schwartz-Zippel: degree / P) or the direction misses it (1/P).

The claimed product costs O(H) because the claimed matrix is given by its rule (see
:class:`~derive.model.RuleMatrix`): the diagonal, and an off-diagonal rule that splits into
products of a factor of the row and a factor of the column, so that
sum_{c != r} off(r, c) v_c = sum_t R_t(r) (sum_c C_t(c) v_c - C_t(r) v_r).
A rule that does not split is summed row by row (O(H^2), for a rule no catalog entry has).

When a product differs, the row is the entry of D v that is not 0, and the column is found by
halving the direction's support (:func:`locate`), so a failure still names its entry.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

import sympy as sp

from derive import modular
from derive.model import RuleMatrix, RuleVector
from derive.symbols import ExcludedSum

P = modular.P
"""The prime of the field (that of :mod:`derive.modular`)."""
DIRECTIONS = 2
"""Random directions per random point."""
SHOW = 8
"""Vectors, sums and tables longer than this are elided in the middle (by the documents, see
``rendering.elide``; the checks check what they show)."""
HEAD, TAIL = 3, 2
"""How many entries an elided vector keeps at each end."""

Value = "int | list[int]"
"""A number of the field, or one for each value 1..H of the index a vector runs over."""


class Unsupported(ValueError):
    """The expression has a term the vector evaluation has no rule for."""


def inverse(x: int) -> int:
    if x % P == 0:
        raise ZeroDivisionError("a denominator vanished at the random point")
    return pow(x, -1, P)


def inverses(xs: Sequence[int]) -> list[int]:
    """Every inverse at the cost of one (Montgomery's trick): prefix products, one inverse, and
    back."""
    prefix, acc = [], 1
    for x in xs:
        if x % P == 0:
            raise ZeroDivisionError("a denominator vanished at the random point")
        prefix.append(acc)
        acc = acc * x % P
    inv = pow(acc, -1, P)
    out = [0] * len(xs)
    for m in range(len(xs) - 1, -1, -1):
        out[m] = prefix[m] * inv % P
        inv = inv * xs[m] % P
    return out


def _add(a, b):
    if isinstance(a, int):
        return (a + b) % P if isinstance(b, int) else [(a + x) % P for x in b]
    if isinstance(b, int):
        return [(x + b) % P for x in a]
    return [(x + w) % P for x, w in zip(a, b)]


def _mul(a, b):
    if isinstance(a, int):
        return a * b % P if isinstance(b, int) else [a * x % P for x in b]
    if isinstance(b, int):
        return [x * b % P for x in a]
    return [x * w % P for x, w in zip(a, b)]


def _pow(a, n: int):
    if n < 0:
        a = inverse(a) if isinstance(a, int) else inverses(a)
        n = -n
    return pow(a, n, P) if isinstance(a, int) else [pow(x, n, P) for x in a]


def vector(e: sp.Basic, index: sp.Symbol | None, leaves: Mapping[sp.Basic, list[int]], size: int) -> Value:
    """``e`` modulo P for every value 1..size of ``index`` at once: a list, or a number where
    ``e`` does not depend on ``index``. ``leaves`` gives each indexed quantity's entries (o and
    y by their IndexedBase), 0-based; a sum over another index runs over its entries."""
    if e.is_Integer:
        return int(e) % P
    if e.is_Rational:
        return int(e.p) * inverse(int(e.q)) % P
    if isinstance(e, sp.Indexed):
        (at,) = e.indices
        values = leaves[e.base]
        if at == index:
            return values
        if at.is_Integer:
            return values[int(at) - 1]
        raise Unsupported(f"{sp.sstr(e)}: an index that is neither fixed nor the vector's")
    if isinstance(e, sp.Add):
        out = 0
        for a in e.args:
            out = _add(out, vector(a, index, leaves, size))
        return out
    if isinstance(e, sp.Mul):
        out = 1
        for a in e.args:
            out = _mul(out, vector(a, index, leaves, size))
        return out
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        return _pow(vector(e.base, index, leaves, size), int(e.exp))
    if isinstance(e, (sp.Sum, ExcludedSum)):
        if isinstance(e, sp.Sum):
            ((bound, lo, hi),) = e.limits
            f, skip = e.function, None
        else:
            f, bound, lo, hi, skip = e.args
        if (lo, hi) != (1, size) or (index is not None and f.has(index)):
            raise Unsupported(f"{sp.sstr(e)}: only a full sum over a term of its own index")
        terms = vector(f, bound, leaves, size)
        terms = terms if isinstance(terms, list) else [terms] * size
        total = sum(terms) % P
        if skip is None:
            return total
        if skip == index:
            return [(total - t) % P for t in terms]
        if skip.is_Integer:
            return (total - terms[int(skip) - 1]) % P
        raise Unsupported(f"{sp.sstr(e)}: it skips an index that is neither fixed nor the vector's")
    raise Unsupported(f"cannot evaluate {sp.sstr(e)} modulo a prime")


def full(value: Value, size: int) -> list[int]:
    return value if isinstance(value, list) else [value] * size


def entries(claimed: "RuleVector | Sequence[sp.Expr]", leaves: Mapping[sp.Basic, list[int]], size: int, prepare: Callable[[sp.Expr], sp.Expr] = lambda e: e) -> list[int]:
    """Every entry of a claimed vector: a rule at once, a tuple entry by entry (a planted one)."""
    if isinstance(claimed, RuleVector):
        values = full(vector(prepare(claimed.formula), claimed.index, leaves, size), size)
        # The entries a document shows are checked as they are written, not only as the rule.
        for m in shown(size):
            values[m] = vector(prepare(claimed[m]), None, leaves, size)
        return values
    return [vector(prepare(g), None, leaves, size) for g in claimed]


def shown(size: int) -> list[int]:
    """The 0-based entries a document shows of a vector of ``size`` (see ``rendering.elide``)."""
    return list(range(size)) if size <= SHOW else [*range(HEAD), *range(size - TAIL, size)]


def product(matrix: RuleMatrix, v: Sequence[int], leaves: Mapping[sp.Basic, list[int]], prepare: Callable[[sp.Expr], sp.Expr] = lambda e: e) -> list[int]:
    """The claimed J v, from the matrix's rule in O(H) (see the module's docstring)."""
    n = matrix.size
    row, col = matrix.row, matrix.col
    diagonal = full(vector(prepare(matrix.diagonal).xreplace({col: row}), row, leaves, n), n)
    out = [d * x % P for d, x in zip(diagonal, v)]
    off = sp.expand(prepare(matrix.off))
    try:
        parts = [_split(t, row, col) for t in sp.Add.make_args(off)] if off != 0 else []
    except Unsupported:
        parts = None
    if parts is None:
        for r in range(n):
            entries_ = full(vector(off.xreplace({row: sp.Integer(r + 1)}), col, leaves, n), n)
            out[r] = (out[r] + sum(e * x for c, (e, x) in enumerate(zip(entries_, v)) if c != r)) % P
    else:
        for of_row, of_col in parts:
            rs = full(vector(of_row, row, leaves, n), n)
            cs = full(vector(of_col.xreplace({col: row}), row, leaves, n), n)
            total = sum(c * x for c, x in zip(cs, v)) % P
            out = [(o + a * (total - c * x)) % P for o, a, c, x in zip(out, rs, cs, v)]
    for (r, c), formula in matrix.exceptions:
        fix = {row: sp.Integer(r + 1), col: sp.Integer(c + 1)}
        usual = matrix.diagonal if r == c else matrix.off
        wrong = vector(prepare(formula).xreplace(fix), None, leaves, n) - vector(prepare(usual).xreplace(fix), None, leaves, n)
        out[r] = (out[r] + wrong * v[c]) % P
    return out


def _split(term: sp.Expr, row: sp.Symbol, col: sp.Symbol) -> tuple[sp.Expr, sp.Expr]:
    """A product as (its factors free of the column, its factors of the column only)."""
    of_row, of_col = [], []
    for f in sp.Mul.make_args(term):
        symbols = f.free_symbols
        if col in symbols and row in symbols:
            raise Unsupported(f"{sp.sstr(f)} depends on both the row and the column")
        (of_col if col in symbols else of_row).append(f)
    return sp.Mul(*of_row), sp.Mul(*of_col)


def direction(rng: random.Random, size: int) -> list[int]:
    """A random direction: each entry uniform modulo P (up to a bias of 2^-61)."""
    bits = rng.getrandbits
    return [bits(61) % P for _ in range(size)]


def dot(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x * w for x, w in zip(a, b)) % P


def locate(differs: Callable[[list[int]], bool], v: list[int]) -> int:
    """The 0-based position of an entry that makes a check fail: ``differs(u)`` runs the check
    along u, and v (along which it failed) is cut to the half of its support where it still
    fails, until one entry is left. Each step costs one check: O(H log H) in all."""
    support = [m for m, x in enumerate(v) if x]
    while len(support) > 1:
        half = support[: len(support) // 2]
        u = [0] * len(v)
        for m in half:
            u[m] = v[m]
        support = half if differs(u) else support[len(support) // 2:]
    return support[0]
