"""A derivation for a concrete number of classes: the sums written out, the Jacobian, the gradient
and a worked example with numbers, all checked.

Numbers are SymPy numbers: exact where the example is ours (the seed's O = (1/5, 3/5, 1/5) comes
from logits (0, ln 3, 0)), 30-digit floats where the user supplied them. Softmax and the loss are
evaluated through log-sum-exp, so logits such as (1000, 0, -1000) stay finite.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import mpmath
import sympy as sp

from derive import progress
from derive.errors import UsageError
from derive.model import Concrete, Derivation, Example, JacobianExample, LayerExample, RuleMatrix
from derive.setting import expand_sums
from derive.symbols import i, k, o, y

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
MOST_DIGITS = 100_000
"""The most digits a worked example is computed with (see :func:`settled`)."""


def log_sum_exp(logits: Sequence[mpmath.mpf]) -> mpmath.mpf:
    top = max(logits)
    return top + mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in logits))


def softmax_weights(logits: Sequence[mpmath.mpf]) -> tuple[mpmath.mpf, list[mpmath.mpf], int, mpmath.mpf]:
    """Softmax without overflow and without losing the small outputs: the largest logit ``top``,
    the weights e^{z_m - top} (the first largest, at ``first``, is exactly 1) and ``rest``, the
    sum of the others; the outputs are weight / (1 + rest)."""
    top = max(logits)
    w = [mpmath.exp(v - top) for v in logits]
    first = list(logits).index(top)
    return top, w, first, mpmath.fsum(x for m, x in enumerate(w) if m != first)


def loss_value(logits: Sequence[mpmath.mpf], target: Sequence[mpmath.mpf]) -> mpmath.mpf:
    """E = -sum_i y_i ln o_i = sum_i y_i (lse(z) - z_i), with lse(z) - z_i = (top - z_i) +
    ln(1 + rest): finite for any finite logits, and 5e-435, not 0, for logits (1000, 0, -1000)."""
    top, _, _, rest = softmax_weights(logits)
    tail = mpmath.log1p(rest)
    return mpmath.fsum(t * ((top - v) + tail) for v, t in zip(logits, target))


def settled(compute: Callable[[], dict[str, Any]], digits: int, what: str = "the worked example") -> dict[str, Any]:
    """The numbers that ``compute`` returns by name (mpmath numbers, or lists of them; anything
    else passes through), true to DIGITS significant digits, as SymPy numbers.

    ``compute`` runs at ``digits`` and again at twice as many, and so on, until every number
    agrees with its value at the previous precision to DIGITS + 5 digits. A number that shrinks
    by more than half the previous precision's digits when the precision doubles is the rounding
    of an exact zero (a sum of outputs rounded one by one, less 1) and is an exact 0; so is one
    that is 0 at both. ``digits`` must already cover the magnitudes involved (an output of
    e^{-1000} needs 434 more), which is what makes a true tiny value settle rather than vanish.
    """
    previous: dict[str, Any] | None = None
    while True:
        with mpmath.workdps(digits):
            current = compute()
        if previous is not None:
            out: dict[str, Any] = {}
            for key, value in current.items():
                pairs = list(zip(previous[key], value)) if isinstance(value, (list, tuple)) else [(previous[key], value)]
                numbers_ = [_settle(a, b, digits // 2) for a, b in pairs]
                if any(x is None for x in numbers_):
                    break
                out[key] = numbers_ if isinstance(value, (list, tuple)) else numbers_[0]
            else:
                return out
        if 2 * digits > MOST_DIGITS:
            raise UsageError(f"{what} needs more than {MOST_DIGITS} digits to be shown to {DIGITS}: its numbers are too far apart")
        previous, digits = current, 2 * digits


def _settle(a: Any, b: Any, digits: int) -> Any:
    """b (at twice the precision of a) as a SymPy number, or None when it has not settled."""
    if not isinstance(b, mpmath.mpf):
        return b
    if b == 0 and a == 0:
        return sp.Integer(0)
    if a != 0 and abs(b) <= mpmath.mpf(10) ** -(digits // 2) * abs(a):
        return sp.Integer(0)
    if abs(a - b) <= mpmath.mpf(10) ** -(DIGITS + 5) * abs(b):
        return _float(b)
    return None


def example(classes: int, logits: Sequence | None = None, target: Sequence | None = None) -> Example:
    """The worked example: ours (exact) unless the user gave logits or a target."""
    if logits is None and target is None:
        return _default_example(classes)
    z_, t_ = example_numbers(classes, logits, target)

    def compute() -> dict[str, Any]:
        zm = [_mp(v) for v in z_]
        tm = [_mp(v) for v in t_]
        top, w, first, rest = softmax_weights(zm)
        total = 1 + rest
        s = mpmath.fsum(tm)
        # o_k S - y_k = (w_k (S - y_k) - y_k (total - w_k)) / total: for a dominant class the
        # weights of the others give 1 - o_k directly, not as 1 less a number near 1.
        others = [rest if m == first else (1 - x) + rest for m, x in enumerate(w)]
        return {
            "probabilities": [x / total for x in w],
            "gradient": [(x * (s - t) - t * b) / total for x, t, b in zip(w, tm, others)],
            "loss": loss_value(zm, tm),
            # S sum_k o_k - sum_k y_k with sum_k o_k = (1 + rest) / total: exactly 0, as it is.
            "gradient_sum": s * ((1 + rest) / total) - s,
        }

    numbers_ = settled(compute, DIGITS + 20)
    return Example(
        logits=tuple(z_),
        target=tuple(t_),
        probabilities=tuple(numbers_["probabilities"]),
        loss=numbers_["loss"],
        gradient=tuple(numbers_["gradient"]),
        gradient_sum=numbers_["gradient_sum"],
        given=tuple(name for name, v in (("logits", logits), ("target", target)) if v is not None),
    )


def example_numbers(classes: int, logits: Sequence | None, target: Sequence | None) -> tuple[tuple[sp.Expr, ...], tuple[sp.Expr, ...]]:
    """A worked example's logits and target, parsed and checked; ours where not given."""
    z_ = numbers(logits, "--logits", classes) if logits is not None else _default_logits(classes)
    t_ = numbers(target, "--target", classes) if target is not None else _one_hot(classes)
    if any(t < 0 for t in t_):
        raise UsageError("--target entries must not be negative (they are probabilities)")
    if sum(t_) == 0:
        raise UsageError("--target must not be all zeros: a target is a distribution over the classes")
    return z_, t_


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
    return Example(logits, target, probabilities, sp.expand_log(loss, force=True), gradient, gradient_sum=sp.nsimplify(sum(gradient)))


CLASSIC = (sp.Rational(1, 5), sp.Rational(3, 5), sp.Rational(1, 5))
"""The probabilities of the classic example, o = (0.2, 0.6, 0.2): ours for three classes."""


def classic(probabilities: Sequence[sp.Expr]) -> bool:
    """Whether an example's probabilities are the classic ones, to the digits they were computed with."""
    if len(probabilities) != len(CLASSIC):
        return False
    with mpmath.workdps(DIGITS + 10):
        return all(abs(_entry(p) - _entry(c)) <= mpmath.mpf(10) ** -(DIGITS - 2) for p, c in zip(probabilities, CLASSIC))


def _mp(v: sp.Expr) -> mpmath.mpf:
    """At the current precision: an exact number is rounded once, not through DIGITS + 20."""
    if v.is_Rational:
        return mpmath.mpf(v.p) / v.q
    if isinstance(v, sp.Float):
        return mpmath.mpf(v._mpf_)
    return mpmath.mpf(sp.N(v, max(mpmath.mp.dps, DIGITS + 20)))


def magnitude(values: Sequence[sp.Expr]) -> int:
    """The number of decimal digits before the point of the largest of ``values`` (0 below 1)."""
    with mpmath.workdps(20):
        top = max((abs(_entry(v)) for v in values), default=mpmath.mpf(0))
        return int(mpmath.ceil(mpmath.log10(top))) if top > 1 else 0


def _float(v: mpmath.mpf) -> sp.Float:
    return sp.Float(v, DIGITS)


# --- the instantiated derivation -------------------------------------------------------------
def concrete(classes: int, ex: Example) -> Concrete:
    """E written out, the Jacobian in terms of o_1..o_H, the gradient vector."""
    loss = sp.Mul(-1, sp.Add(*[sp.Mul(y[m], sp.log(o[m]), evaluate=False) for m in range(1, classes + 1)], evaluate=False), evaluate=False)
    gradient = tuple(o[m] - y[m] for m in range(1, classes + 1))
    return Concrete(classes=classes, loss=loss, jacobian=jacobian(classes), gradient=gradient, example=ex)


def jacobian(classes: int) -> RuleMatrix:
    """Row i is d o_i, column k is d z_k: o_i (1 - o_i) on the diagonal, -o_i o_k elsewhere."""
    return RuleMatrix(classes, i, k, o[i] * (1 - o[i]), -o[i] * o[k])


def log_jacobian(classes: int) -> RuleMatrix:
    """Row i is d ln o_i, column k is d z_k: 1 - o_i on the diagonal, -o_k elsewhere."""
    return RuleMatrix(classes, i, k, 1 - o[i], -o[k])


def jacobian_instance(name: str, classes: int | None, logits: Sequence | None, target: Sequence | None, matrix: Callable[[int], RuleMatrix] | None = None) -> Concrete | None:
    """The concrete part of a Jacobian derivation: the N x N Jacobian (``matrix``, from the
    derivation's result; else the function's own) and its worked example."""
    if target is not None:
        raise UsageError(f"{name} takes no --target: it is the Jacobian of {name} itself, and a target belongs to a loss")
    if classes is None:
        if logits is not None:
            raise UsageError("--logits needs --classes: the worked example is for a concrete number of classes")
        return None
    n = classes_of(classes)
    function = JACOBIANS[name]
    return Concrete(classes=n, loss=None, jacobian=(matrix or function.matrix)(n), gradient=None, example=jacobian_example(name, n, logits), of=name)


def jacobian_example(name: str, classes: int, logits: Sequence | None = None) -> JacobianExample:
    """The Jacobian at our logits (exact) or the user's (30 digits, through log-sum-exp)."""
    function = JACOBIANS[name]
    if logits is None:
        z_ = _default_logits(classes)
        weights = [sp.exp(v) for v in z_]
        total = sum(weights)
        probabilities = tuple(w / total for w in weights)
        complements = tuple(1 - p for p in probabilities)
        entries = [[function.entry(probabilities, complements, r, c) for c in range(classes)] for r in range(classes)]
        return JacobianExample(z_, probabilities, tuple(map(tuple, entries)))
    z_ = numbers(logits, "--logits", classes)

    def compute() -> dict[str, Any]:
        zm = [_mp(v) for v in z_]
        _, w, first, rest = softmax_weights(zm)
        total = 1 + rest
        p = [x / total for x in w]
        # 1 - o_k from the weights of the other classes, not as 1 less a number near 1.
        q = [(rest if m == first else (1 - x) + rest) / total for m, x in enumerate(w)]
        return {"p": p, "entries": [function.entry(p, q, r, c) for r in range(classes) for c in range(classes)]}

    numbers_ = settled(compute, DIGITS + 20)
    p, flat = numbers_["p"], numbers_["entries"]
    entries = [flat[r * classes:(r + 1) * classes] for r in range(classes)]
    return JacobianExample(z_, tuple(p), tuple(map(tuple, entries)), given=("logits",))


# --- checks -----------------------------------------------------------------------------------
POINTS = 2
"""Random points for the exact concrete-H checks."""
PRIME = 2**61 - 1
"""Exact checks run in the integers modulo this prime: a wrong entry is a non-zero rational
function of degree at most 2H, which vanishes at a random point with probability at most
2H / PRIME (Schwartz-Zippel), below 1e-15 per point for H <= 512."""


def _inverse(x: int) -> int:
    if x % PRIME == 0:
        raise ZeroDivisionError("a denominator vanished at the random point")
    return pow(x, -1, PRIME)


class Dual:
    """Forward-mode differentiation in exact modular arithmetic: a value and its derivative.

    The value of a logarithm is not in the field and never needed for a derivative: it is kept
    as ``None``, and using it as a value raises.
    """

    __slots__ = ("v", "d")

    def __init__(self, v: int | None, d: int):
        self.v, self.d = v, d

    def __add__(self, o: "Dual") -> "Dual":
        return Dual(None if self.v is None or o.v is None else (self.v + o.v) % PRIME, (self.d + o.d) % PRIME)

    def __mul__(self, o: "Dual") -> "Dual":
        if (self.d and o.v is None) or (o.d and self.v is None):
            raise ValueError("the value of a logarithm is not in the field")
        v = None if self.v is None or o.v is None else self.v * o.v % PRIME
        return Dual(v, (self.d * (o.v or 0) + (self.v or 0) * o.d) % PRIME)

    def __truediv__(self, o: "Dual") -> "Dual":
        inv = _inverse(o.v)
        return Dual(self.v * inv % PRIME, (self.d * o.v - self.v * o.d) * inv * inv % PRIME)

    def log(self) -> "Dual":
        return Dual(None, self.d * _inverse(self.v) % PRIME)

    def inverse(self) -> "Dual":
        inv = _inverse(self.v)
        return Dual(inv, -self.d * inv * inv % PRIME)

    add, mul = __add__, __mul__


def random_point(classes: int, rng: random.Random, normalised: bool = True) -> tuple[list[int], list[int]]:
    """e^{z_m} as random field elements A_m, and a random target that sums to 1 exactly (any
    target when not ``normalised``: the gradient shown is then the general form)."""
    a = [rng.randrange(1, PRIME) for _ in range(classes)]
    t = [rng.randrange(PRIME) for _ in range(classes - 1)]
    return a, t + [(1 - sum(t)) % PRIME if normalised else rng.randrange(PRIME)]


def softmax_duals(a: list[int], k: int) -> list[Dual]:
    """o_m = A_m / S with A_m = e^{z_m}, differentiated by z_k: dA_m/dz_k = A_m if m = k."""
    exps = [Dual(v, v if m == k else 0) for m, v in enumerate(a)]
    total = exps[0]
    for x in exps[1:]:
        total = total + x
    return [x / total for x in exps]


def loss_derivative(a: list[int], y: list[int], k: int) -> int:
    """dE/dz_k of E = -sum_m y_m ln o_m, by differentiating the loss itself (not from any step)."""
    out = Dual(0, 0)
    for y_m, o_m in zip(y, softmax_duals(a, k)):
        out = out + Dual(-y_m % PRIME, 0) * o_m.log()
    return out.d


def exact_value(e: sp.Expr, values: dict[tuple[str, int], int], env: dict[sp.Symbol, int] | None = None) -> int:
    """An expression in o_m, y_m and numbers, modulo PRIME; index symbols bound by ``env``."""
    if isinstance(e, sp.Indexed):
        m = e.indices[0]
        return values[(e.base.name, env[m] if env and m in env else int(m))]
    if e.is_Integer:
        return int(e) % PRIME
    if e.is_Rational:
        return int(e.p) * _inverse(int(e.q)) % PRIME
    if isinstance(e, sp.Add):
        return sum(exact_value(x, values, env) for x in e.args) % PRIME
    if isinstance(e, sp.Mul):
        out = 1
        for x in e.args:
            out = out * exact_value(x, values, env) % PRIME
        return out
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        base, n = exact_value(e.base, values, env), int(e.exp)
        return pow(base, n, PRIME) if n >= 0 else pow(_inverse(base), -n, PRIME)
    raise ValueError(f"cannot evaluate {e} exactly")


@dataclass(frozen=True)
class Jacobian:
    """A function of the logits whose Jacobian a derivation states, in three independent forms."""

    matrix: Callable[[int], RuleMatrix]
    """The rule matrix the derivation claims."""
    entry: Callable[[Sequence, Sequence, int, int], object]
    """Entry (r, c), 0-based, from the probabilities and their complements 1 - o (computed
    without a difference of nearly equal numbers): the worked example's numbers."""
    forward: Callable[[list[Dual], int], int]
    """Entry (r, c) from the forward-mode column of softmax by z_c, modulo PRIME."""
    outputs: Callable[[list, mpmath.mpf, list], list]
    """Every output of the function, for finite differences, from the weights e^{z_m - c}, their
    total and the shifted logits z_m - c (c is any constant: softmax does not see it)."""


def _delta(r: int, c: int) -> int:
    return 1 if r == c else 0


JACOBIANS: dict[str, Jacobian] = {
    "softmax": Jacobian(
        jacobian,
        lambda p, q, r, c: p[r] * (q[c] if r == c else -p[c]),
        lambda column, r: column[r].d,
        lambda weights, total, shifted: [w / total for w in weights],
    ),
    "log-softmax": Jacobian(
        log_jacobian,
        lambda p, q, r, c: q[c] if r == c else -p[c],
        lambda column, r: column[r].d * _inverse(column[r].v) % PRIME,
        lambda weights, total, shifted: (lambda lse: [v - lse for v in shifted])(mpmath.log(total)),
    ),
}


def checks(d: Derivation) -> list:
    """Every gradient and Jacobian entry against derivatives of the loss and of the function
    themselves, and the worked example against finite differences."""
    from derive.verify import Check

    c = d.concrete
    if c.of is None:
        from derive import instance

        return instance.parameter_checks(d) if c.by else instance.checks(d)
    n = c.classes
    function = JACOBIANS[c.of]
    rng = random.Random(f"derive:{d.name}:{n}")
    how = f"exact arithmetic modulo the 61-bit Mersenne prime at {POINTS} random points, against forward-mode derivatives of the {{}}"
    bad_gradient = bad_jacobian = None
    # The gradient is written from the derivation's result (its sums written out here), which
    # assumes a normalised target only where the example's target is one.
    gradient = [expand_sums(g) for g in c.gradient] if c.gradient is not None else None
    for _ in range(POINTS):
        a, t = random_point(n, rng, "normalised" in c.assumptions)
        total = sum(a) % PRIME
        inv = _inverse(total)
        values = {("o", m + 1): a[m] * inv % PRIME for m in range(n)} | {("y", m + 1): t[m] for m in range(n)}
        jac = c.jacobian
        for col in range(n):
            progress.update(f"checking every entry for H = {n}", col + 1, n)
            if gradient is not None and bad_gradient is None and exact_value(gradient[col], values) != loss_derivative(a, t, col):
                bad_gradient = col + 1
            column = softmax_duals(a, col)
            for r in range(n):
                entry = exact_value(jac.rule(r, col), values, {jac.row: r + 1, jac.col: col + 1})
                if bad_jacobian is None and entry != function.forward(column, r):
                    bad_jacobian = (r + 1, col + 1)
    out = []
    if c.gradient is not None:
        out.append(Check(f"the gradient for H = {n}", f"each of the {n} entries, " + how.format("loss"), bad_gradient is None, f"entry {bad_gradient} differs" if bad_gradient else ""))
    out.append(Check(f"the Jacobian for H = {n}", f"each of the {n * n} entries, " + how.format(c.of), bad_jacobian is None, f"entry {bad_jacobian} differs" if bad_jacobian else ""))
    progress.update("checking the worked example")
    out.append(EXAMPLE_CHECKS[type(c.example)](c.example, c.of))
    return out


def jacobian_example_check(ex: JacobianExample, of: str):
    """Every entry of the example's Jacobian against central differences of the function itself."""
    from derive.verify import Check

    function = JACOBIANS[of]
    what = "the worked example"
    method = f"every entry against central finite differences of the {of} (mpmath)"
    with mpmath.workdps(60 + magnitude(ex.logits)):
        zm = [_mp(v) for v in ex.logits]
        top = max(zm)
        shifted = [v - top for v in zm]
        weights = [mpmath.exp(v) for v in shifted]
        total = mpmath.fsum(weights)
        h = mpmath.mpf(10) ** -25
        # Moving z_c by +-h multiplies e^{z_c} by e^{+-h}: one weight and the total change, so each
        # side costs O(H) and the whole check O(H^2) without an exponential per entry.
        moves = ((h, mpmath.exp(h)), (-h, mpmath.exp(-h)))
        for col in range(len(zm)):
            sides = []
            for dz, factor in moves:
                w, z_ = list(weights), list(shifted)
                w[col] *= factor
                z_[col] += dz
                sides.append(function.outputs(w, total - weights[col] + w[col], z_))
            up, down = sides
            for r in range(len(zm)):
                numeric = (up[r] - down[r]) / (2 * h)
                claimed = _entry(ex.jacobian[r][col])
                if abs(numeric - claimed) > mpmath.mpf(10) ** -20:
                    return Check(what, method, False, f"entry ({r + 1}, {col + 1}): finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)


def _entry(v: sp.Expr) -> mpmath.mpf:
    """An example number as an mpmath number, without a round trip through evalf."""
    if v.is_Rational:
        return mpmath.mpf(v.p) / v.q
    if isinstance(v, sp.Float):
        return mpmath.mpf(v._mpf_)
    return mpmath.mpf(sp.N(v, 60))


def example_check(ex: Example, of: str = "softmax"):
    """The example's loss from its probabilities, and its gradient against central differences."""
    from derive.verify import Check

    what = "the worked example"
    method = "gradient against central finite differences of the loss (mpmath), loss against -sum y ln o"
    # The loss at z +- h differs by about 2 h dE/dz, and is known to the working precision of the
    # largest logit: 60 digits beyond its size keep the difference exact to 20 (logits of 1e20).
    with mpmath.workdps(60 + magnitude(ex.logits)):
        zm = [_mp(v) for v in ex.logits]
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
        direct = mpmath.fsum(-t * mpmath.log(_entry(p)) for t, p in zip(tm, ex.probabilities) if t != 0)
        if abs(direct - _entry(ex.loss)) > mpmath.mpf(10) ** -20 * max(1, abs(direct)):
            return Check(what, method, False, f"loss {mpmath.nstr(_entry(ex.loss), 15)}, but -sum y ln o = {mpmath.nstr(direct, 15)}")
    return Check(what, method, True)


def layer_example_check(ex: LayerExample, of: str | None = None):
    """A dense layer's example, from its inputs and parameters alone: the logits are W x + b, the
    outputs their softmax, the loss -sum y ln o, and every entry of the gradient agrees with
    central differences of that loss in the weight or bias."""
    from derive.verify import Check

    what = "the worked example"
    method = "logits W x + b, outputs and loss recomputed; every entry of the gradient with respect to the weights and the biases against central finite differences of the loss (mpmath, 60 digits)"
    tolerance = mpmath.mpf(10) ** -20
    with mpmath.workdps(60):
        xs = [_entry(v) for v in ex.x]
        tm = [_entry(v) for v in ex.target]
        zm = [mpmath.fsum(_entry(w) * v for w, v in zip(row, xs)) + _entry(b) for row, b in zip(ex.W, ex.b)]
        for r, z_ in enumerate(zm):
            if abs(z_ - _entry(ex.logits[r])) > tolerance * max(1, abs(z_)):
                return Check(what, method, False, f"logit {r + 1} is not (W x + b)_{r + 1}")
        top = max(zm)
        weights = [mpmath.exp(v - top) for v in zm]
        total = mpmath.fsum(weights)
        for r, w in enumerate(weights):
            if abs(w / total - _entry(ex.probabilities[r])) > tolerance:
                return Check(what, method, False, f"output {r + 1} is not softmax of the logits")
        mass = mpmath.fsum(tm)
        base = mpmath.fsum(t * z_ for t, z_ in zip(tm, zm))
        loss = mass * (top + mpmath.log(total)) - base
        if abs(loss - _entry(ex.loss)) > tolerance * max(1, abs(loss)):
            return Check(what, method, False, f"loss {mpmath.nstr(_entry(ex.loss), 15)}, but -sum y ln o = {mpmath.nstr(loss, 15)}")
        h = mpmath.mpf(10) ** -25

        def moved(r: int, dz: mpmath.mpf) -> mpmath.mpf:
            # Moving z_r by dz multiplies its weight e^{z_r - top} by e^{dz}: each side costs O(1).
            return mass * (top + mpmath.log(total + weights[r] * mpmath.expm1(dz))) - base - tm[r] * dz

        entries = [((r, col), xs[col], ex.gradient_W[r][col]) for r in range(len(zm)) for col in range(len(xs))]
        entries += [((r,), mpmath.mpf(1), ex.gradient_b[r]) for r in range(len(zm))]
        for where, slope, claimed in entries:
            # A weight W_rd moves z_r by h x_d, the bias b_r by h.
            numeric = (moved(where[0], h * slope) - moved(where[0], -h * slope)) / (2 * h)
            if abs(numeric - _entry(claimed)) > tolerance:
                name = f"dE/dW_{where[0] + 1},{where[1] + 1}" if len(where) == 2 else f"dE/db_{where[0] + 1}"
                return Check(what, method, False, f"{name}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(_entry(claimed), 15)}")
    return Check(what, method, True)


EXAMPLE_CHECKS: dict[type, Callable] = {Example: example_check, JacobianExample: jacobian_example_check, LayerExample: layer_example_check}
"""The check for each kind of worked example."""
