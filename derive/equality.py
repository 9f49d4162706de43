"""Equality up to SymPy's evaluation: the form in which a printed expression and the expression
read back from its text are compared (:mod:`derive.proofread`), and in which the checks of what a
document shows compare it with the derivation (:mod:`derive.shown`)."""

from __future__ import annotations

from typing import Any

import mpmath
import sympy as sp

from derive.symbols import ExcludedSum

def canonical(e: Any) -> Any:
    """``e`` rebuilt bottom-up with SymPy's evaluation, every name without assumptions: the form in
    which a printed expression and the expression read back from its text are compared."""
    if isinstance(e, (list, tuple)):
        return tuple(canonical(x) for x in e)
    if not isinstance(e, sp.Basic):
        return e
    return _canonical(e)


_MEMO: dict[sp.Basic, sp.Basic] = {}


def _canonical(e: sp.Basic) -> sp.Basic:
    out = _MEMO.get(e)
    if out is not None:
        return out
    if isinstance(e, sp.Symbol):
        out = sp.Symbol(e.name)
    elif isinstance(e, sp.IndexedBase):
        out = sp.IndexedBase(str(e.label))
    elif isinstance(e, sp.MatrixBase):
        out = sp.ImmutableMatrix(e.rows, e.cols, [_canonical(x) for x in e])
    elif not e.args or e.is_Number:
        out = e
    elif isinstance(e, (sp.Eq, sp.Ne)):
        out = type(e)(*[_canonical(a) for a in e.args], evaluate=False)
    elif isinstance(e, sp.Derivative):
        out = sp.Derivative(_canonical(e.expr), *[(_canonical(v), n) for v, n in e.variable_count])
    elif isinstance(e, sp.Add):
        out = sp.Add(*[_canonical(a) for a in _flat(e, sp.Add)])
    elif isinstance(e, sp.Mul):
        out = sp.Mul(*[_canonical(a) for a in _flat(e, sp.Mul)])
    else:
        out = e.func(*[_canonical(a) for a in e.args])
    if len(_MEMO) > 100_000:
        _MEMO.clear()
    _MEMO[e] = out
    return out


def _flat(e: sp.Basic, kind: type) -> list[sp.Basic]:
    """The terms of a sum (factors of a product), unevaluated sums inside it opened: the text
    does not show how an unevaluated product of products was nested."""
    out: list[sp.Basic] = []
    for a in e.args:
        out.extend(_flat(a, kind) if isinstance(a, kind) else [a])
    return out


def same(a: Any, b: Any) -> bool:
    """Equal up to SymPy's evaluation: the canonical forms agree, or their difference multiplies
    out to 0 (SymPy multiplies a number into a bracket in 2 (a - b) but not in 2 (a - b) c, so
    the same text can stand for either); numbers that are not both exact agree to 14 digits (a
    float printed by the printer keeps 15)."""
    ca, cb = canonical(a), canonical(b)
    if ca == cb:
        return True
    if isinstance(ca, sp.MatrixBase) or isinstance(cb, sp.MatrixBase):
        return isinstance(ca, sp.MatrixBase) and isinstance(cb, sp.MatrixBase) and ca.shape == cb.shape and all(same(x, y) for x, y in zip(ca, cb))
    if not (isinstance(ca, sp.Expr) and isinstance(cb, sp.Expr)):
        return False
    if ca.is_number and cb.is_number and (ca.has(sp.Float) or cb.has(sp.Float)):
        with mpmath.workdps(40):
            x, y = mpmath.mpf(sp.N(ca, 40)), mpmath.mpf(sp.N(cb, 40))
            return abs(x - y) <= mpmath.mpf(10) ** -14 * max(abs(x), abs(y), 1)
    if sp.expand(ca - cb) == 0:
        return True
    if ca.has(sp.Sum, ExcludedSum) or cb.has(sp.Sum, ExcludedSum):
        na, nb = _sums_apart(ca), _sums_apart(cb)
        return na == nb or sp.expand(na - nb) == 0
    return False


def _sums_apart(e: sp.Basic) -> sp.Basic:
    """Each sum over one index at a time, with the factors that do not depend on its index in
    front of it: sum_m sum_n a_n b_m and sum_m b_m sum_n a_n are one form. A sum runs to the end
    of its term in the text, so the printer may write either for the same sum."""
    if not e.args or e.is_Number or isinstance(e, (sp.Symbol, sp.Indexed, sp.IndexedBase)):
        return e
    if isinstance(e, sp.Sum):
        body = _sums_apart(e.function)
        for limit in e.limits:  # the innermost first
            index = limit[0]
            factors = sp.Mul.make_args(body)
            outside = [f for f in factors if not f.has(index)]
            inside = [f for f in factors if f.has(index)]
            body = sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), limit) if inside else sp.Mul(*outside) * (limit[2] - limit[1] + 1)
        return body
    if isinstance(e, ExcludedSum):
        f, index, lower, upper, skip = e.args
        body = _sums_apart(f)
        factors = sp.Mul.make_args(body)
        outside = [x for x in factors if not x.has(index)]
        inside = [x for x in factors if x.has(index)]
        return sp.Mul(*outside) * ExcludedSum(sp.Mul(*inside), index, lower, upper, skip)
    if isinstance(e, sp.Derivative):
        return sp.Derivative(_sums_apart(e.expr), *e.variable_count)
    if isinstance(e, (sp.Eq, sp.Ne)):
        return type(e)(*[_sums_apart(a) for a in e.args], evaluate=False)
    return e.func(*[_sums_apart(a) for a in e.args])


def plain(e: Any) -> str:
    from derive.latex import plain as text

    if isinstance(e, sp.Basic):
        return text(e)
    return str(e)
