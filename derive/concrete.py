"""A derivation for a concrete number of classes: the sums written out, the Jacobian, the gradient
and a worked example with numbers, all checked.

Numbers are SymPy numbers: exact where the example is ours (the seed's O = (1/5, 3/5, 1/5) comes
from logits (0, ln 3, 0)), 30-digit floats where the user supplied them. Softmax and the loss are
evaluated through log-sum-exp, so logits such as (1000, 0, -1000) stay finite.
"""

from __future__ import annotations

import math
from typing import Sequence

import mpmath
import sympy as sp

from derive.errors import UsageError
from derive.model import Concrete, Derivation, Example
from derive.symbols import o, y, z

MAX_CLASSES = 512
"""The exact checks of a concrete H grow as H^2 (the Jacobian has H^2 entries)."""
DIGITS = 30
NORMALISED_WITHIN = 1e-9
"""A target whose entries sum to 1 within this counts as normalised."""


# --- input ------------------------------------------------------------------------------------
def classes_of(classes: object) -> int:
    """Validate a class count."""
    if isinstance(classes, bool) or not isinstance(classes, int):
        try:
            value = float(str(classes))
        except ValueError:
            raise UsageError(f"the number of classes must be a whole number, not {classes!r}") from None
        if not value.is_integer():
            raise UsageError(f"the number of classes must be a whole number, not {classes!r}")
        classes = int(value)
    if classes < 1:
        raise UsageError(f"the number of classes must be at least 1, not {classes}")
    if classes > MAX_CLASSES:
        raise UsageError(f"at most {MAX_CLASSES} classes: the exact checks grow as H^2 (asked for {classes})")
    return classes


def numbers(values: Sequence[float | str], what: str, classes: int) -> tuple[sp.Rational, ...]:
    """Parse user numbers exactly (0.1 is 1/10, not the nearest double)."""
    values = list(values)
    if len(values) != classes:
        raise UsageError(f"{what} needs {classes} numbers, one per class, but got {len(values)}")
    out = []
    for v in values:
        text = str(v).strip()
        try:
            f = float(text)
        except ValueError:
            raise UsageError(f"{what}: {text!r} is not a number") from None
        if not math.isfinite(f):
            raise UsageError(f"{what}: {text!r} is not a finite number")
        out.append(sp.Rational(text) if not isinstance(v, float) else sp.Rational(repr(v)))
    return tuple(out)


# --- numbers ----------------------------------------------------------------------------------
def log_sum_exp(logits: Sequence[mpmath.mpf]) -> mpmath.mpf:
    top = max(logits)
    return top + mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in logits))


def loss_value(logits: Sequence[mpmath.mpf], target: Sequence[mpmath.mpf]) -> mpmath.mpf:
    """E = -sum_i y_i ln o_i = sum_i y_i (lse(z) - z_i): finite for any finite logits."""
    lse = log_sum_exp(logits)
    return mpmath.fsum(t * (lse - v) for v, t in zip(logits, target))


def example(classes: int, logits: Sequence | None = None, target: Sequence | None = None) -> Example:
    """The worked example: ours (exact) unless the user gave logits or a target."""
    if logits is None and target is None:
        return _default_example(classes)
    z_ = numbers(logits, "--logits", classes) if logits is not None else _default_logits(classes)
    t_ = numbers(target, "--target", classes) if target is not None else _one_hot(classes)
    if any(t < 0 for t in t_):
        raise UsageError("--target entries must not be negative (they are probabilities)")
    if sum(t_) == 0:
        raise UsageError("--target must not be all zeros: a target is a distribution over the classes")
    with mpmath.workdps(DIGITS + 20):
        zm = [_mp(v) for v in z_]
        tm = [_mp(v) for v in t_]
        lse = log_sum_exp(zm)
        probabilities = [mpmath.exp(v - lse) for v in zm]
        total = mpmath.fsum(tm)
        gradient = [p * total - t for p, t in zip(probabilities, tm)]
        loss = loss_value(zm, tm)
    return Example(
        logits=tuple(z_),
        target=tuple(t_),
        probabilities=tuple(_float(p) for p in probabilities),
        loss=_float(loss),
        gradient=tuple(_float(g) for g in gradient),
        given=True,
    )


def normalised(target: Sequence[sp.Expr]) -> bool:
    return abs(float(sum(target)) - 1) <= NORMALISED_WITHIN


def _default_logits(classes: int) -> tuple[sp.Expr, ...]:
    # Weights (1, 3, 1, 1, ...): for three classes the seed's O = (0.2, 0.6, 0.2).
    return tuple(sp.log(3) if m == 2 else sp.Integer(0) for m in range(1, classes + 1))


def _one_hot(classes: int) -> tuple[sp.Expr, ...]:
    return tuple(sp.Integer(1 if m == 1 else 0) for m in range(1, classes + 1))


def _default_example(classes: int) -> Example:
    logits, target = _default_logits(classes), _one_hot(classes)
    weights = [sp.exp(v) for v in logits]
    total = sum(weights)
    probabilities = tuple(w / total for w in weights)
    loss = -sum((t * sp.log(p) for t, p in zip(target, probabilities) if t != 0), sp.Integer(0))
    gradient = tuple(p * sum(target) - t for p, t in zip(probabilities, target))
    return Example(logits, target, probabilities, sp.expand_log(loss, force=True), gradient)


def _mp(v: sp.Expr) -> mpmath.mpf:
    return mpmath.mpf(v.p) / v.q if v.is_Rational else mpmath.mpf(sp.N(v, DIGITS + 20))


def _float(v: mpmath.mpf) -> sp.Float:
    return sp.Float(v, DIGITS)


# --- the instantiated derivation -------------------------------------------------------------
def concrete(classes: int, ex: Example) -> Concrete:
    """E written out, the Jacobian in terms of o_1..o_H, the gradient vector."""
    loss = sp.Mul(-1, sp.Add(*[sp.Mul(y[m], sp.log(o[m]), evaluate=False) for m in range(1, classes + 1)], evaluate=False), evaluate=False)
    gradient = tuple(o[m] - y[m] for m in range(1, classes + 1))
    return Concrete(classes=classes, loss=loss, jacobian=jacobian(classes), gradient=gradient, example=ex)


def jacobian(classes: int) -> sp.ImmutableMatrix:
    """Row i is d o_i, column k is d z_k: o_i (1 - o_i) on the diagonal, -o_i o_k elsewhere."""

    def entry(r: int, c: int) -> sp.Expr:
        i, k = r + 1, c + 1
        return o[i] * (1 - o[i]) if i == k else -o[i] * o[k]

    return sp.ImmutableMatrix(classes, classes, entry)


# --- checks -----------------------------------------------------------------------------------
def checks(d: Derivation) -> list:
    """Exact checks of every gradient and Jacobian entry, and the example against finite differences."""
    from derive.verify import Check

    c = d.concrete
    n = c.classes
    zs = [sp.Symbol(f"z{m}", real=True) for m in range(1, n + 1)]
    ys = [sp.Symbol(f"y{m}", real=True) for m in range(1, n + 1)]
    total = sum(sp.exp(v) for v in zs)
    os_ = [sp.exp(v) / total for v in zs]
    values = {o[m]: os_[m - 1] for m in range(1, n + 1)} | {y[m]: ys[m - 1] for m in range(1, n + 1)}
    # ln(e^{z_m} / S) = z_m - ln S exactly; written so, the loss differentiates in O(H) per entry.
    loss = -sum((ys[m] * (zs[m] - sp.log(total)) for m in range(n)), sp.Integer(0))
    normal = {ys[-1]: 1 - sum(ys[:-1], sp.Integer(0))}
    out = []

    bad = None
    for m in range(n):
        claimed = c.gradient[m].xreplace(values)
        if sp.expand((sp.diff(loss, zs[m]) - claimed).xreplace(normal)) != 0:
            bad = m + 1
            break
    out.append(Check(f"the gradient for H = {n}", f"exact, each of the {n} entries against the derivative of E written out", bad is None, f"entry {bad} differs" if bad else ""))

    bad = None
    for r in range(n):
        for col in range(n):
            claimed = c.jacobian[r, col].xreplace(values)
            if sp.cancel(sp.diff(os_[r], zs[col]) - claimed) != 0:
                bad = (r + 1, col + 1)
                break
        if bad:
            break
    out.append(Check(f"the Jacobian for H = {n}", f"exact, each of the {n * n} entries against the derivative of softmax", bad is None, f"entry {bad} differs" if bad else ""))
    out.append(example_check(c.example))
    return out


def example_check(ex: Example):
    """The example's loss from its probabilities, and its gradient against central differences."""
    from derive.verify import Check

    what = "the worked example"
    method = "gradient against central finite differences of the loss (mpmath), loss against -sum y ln o"
    with mpmath.workdps(60):
        zm = [_mp(sp.N(v, 60)) for v in ex.logits]
        tm = [_mp(v) for v in ex.target]
        h = mpmath.mpf(10) ** -25
        for m in range(len(zm)):
            up, down = list(zm), list(zm)
            up[m] += h
            down[m] -= h
            numeric = (loss_value(up, tm) - loss_value(down, tm)) / (2 * h)
            claimed = _mp(sp.N(ex.gradient[m], 60))
            if abs(numeric - claimed) > mpmath.mpf(10) ** -20:
                return Check(what, method, False, f"class {m + 1}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
        direct = mpmath.fsum(-t * mpmath.log(_mp(sp.N(p, 60))) for t, p in zip(tm, ex.probabilities) if t != 0)
        if abs(direct - _mp(sp.N(ex.loss, 60))) > mpmath.mpf(10) ** -20 * max(1, abs(direct)):
            return Check(what, method, False, f"loss {mpmath.nstr(_mp(sp.N(ex.loss, 60)), 15)}, but -sum y ln o = {mpmath.nstr(direct, 15)}")
    return Check(what, method, True)
