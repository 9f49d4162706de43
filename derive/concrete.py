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

from derive import directions, progress
from derive.errors import UsageError
from derive.model import Concrete, Derivation, Example, JacobianExample, LayerExample, RuleMatrix
from derive.symbols import i, k, o, y

MAX_CLASSES = 1_000_000
"""The checks of a concrete H cost O(H) per random direction (see :mod:`derive.directions`), the
documents show a few entries of each vector; what grows is the JSON, which holds every entry."""
MATRIX_MOST = 100
"""A Jacobian's worked example holds every entry up to this many classes (the JSON has the
H x H matrix); beyond, its entries are computed from the probabilities when a document shows
them, and the JSON holds the vectors."""
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
        raise UsageError(f"at most {MAX_CLASSES} classes (asked for {classes})")
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
    return _spread(classes, sp.Integer(0), {2: sp.log(3)})


def _one_hot(classes: int) -> tuple[sp.Expr, ...]:
    return _spread(classes, sp.Integer(0), {1: sp.Integer(1)})


def _spread(classes: int, value: sp.Expr, others: dict[int, sp.Expr]) -> tuple[sp.Expr, ...]:
    """``value`` in every class but ``others`` (1-based): one shared object, so that a vector of
    100,000 classes costs its references and not 100,000 SymPy numbers."""
    out = [value] * classes
    for m, v in others.items():
        if m <= classes:
            out[m - 1] = v
    return tuple(out)


def _default_probabilities(classes: int) -> tuple[sp.Expr, ...]:
    """Softmax of our logits: weights e^0 = 1 and e^{ln 3} = 3 for class 2, over their total."""
    total = classes + 2 if classes >= 2 else 1
    return _spread(classes, sp.Rational(1, total), {2: sp.Rational(3, total)})


def _default_example(classes: int) -> Example:
    logits, target = _default_logits(classes), _one_hot(classes)
    probabilities = _default_probabilities(classes)
    loss = sp.expand_log(-sp.log(probabilities[0]), force=True)  # the one-hot target's class 1
    shared: dict[sp.Expr, sp.Expr] = {}
    gradient = tuple(shared.setdefault((p, t), p - t) for p, t in zip(probabilities, target))  # sum y = 1
    counts: dict[sp.Expr, int] = {}
    for g in gradient:
        counts[g] = counts.get(g, 0) + 1
    return Example(logits, target, probabilities, loss, gradient, gradient_sum=sp.nsimplify(sp.Add(*(g * n for g, n in counts.items()))))


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
        probabilities = _default_probabilities(classes)
        shared: dict[sp.Expr, sp.Expr] = {}
        complements = tuple(shared.setdefault(p, 1 - p) for p in probabilities)
        if classes > MATRIX_MOST:
            return JacobianExample(z_, probabilities, LazyJacobian(function, probabilities, complements))
        entries = [[function.entry(probabilities, complements, r, c) for c in range(classes)] for r in range(classes)]
        return JacobianExample(z_, probabilities, tuple(map(tuple, entries)))
    z_ = numbers(logits, "--logits", classes)
    every = classes <= MATRIX_MOST

    def compute() -> dict[str, Any]:
        zm = [_mp(v) for v in z_]
        _, w, first, rest = softmax_weights(zm)
        total = 1 + rest
        p = [x / total for x in w]
        # 1 - o_k from the weights of the other classes, not as 1 less a number near 1.
        q = [(rest if m == first else (1 - x) + rest) / total for m, x in enumerate(w)]
        return {"p": p, "q": q, "entries": [function.entry(p, q, r, c) for r in range(classes) for c in range(classes)] if every else []}

    numbers_ = settled(compute, DIGITS + 20)
    p, flat = numbers_["p"], numbers_["entries"]
    if not every:
        return JacobianExample(z_, tuple(p), LazyJacobian(function, tuple(p), tuple(numbers_["q"])), given=("logits",))
    entries = [flat[r * classes:(r + 1) * classes] for r in range(classes)]
    return JacobianExample(z_, tuple(p), tuple(map(tuple, entries)), given=("logits",))


class LazyJacobian:
    """The rows of a worked example's Jacobian beyond MATRIX_MOST classes: entry (r, c) is the
    function's entry rule at the probabilities p and their complements q = 1 - p (each true to
    DIGITS digits), computed when asked for; a document shows a few."""

    def __init__(self, function: "Jacobian", p: tuple[sp.Expr, ...], q: tuple[sp.Expr, ...]):
        self.function, self.p, self.q = function, p, q

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, r: int) -> "_LazyRow":
        if not -len(self.p) <= r < len(self.p):
            raise IndexError(r)
        return _LazyRow(self, r % len(self.p))


class _LazyRow:
    def __init__(self, matrix: LazyJacobian, r: int):
        self.matrix, self.r = matrix, r

    def __len__(self) -> int:
        return len(self.matrix.p)

    def __getitem__(self, c: int) -> sp.Expr:
        m = self.matrix
        value = m.function.entry(m.p, m.q, self.r, c % len(m.p))
        return value if value.is_Rational else sp.Float(value, DIGITS)


# --- checks -----------------------------------------------------------------------------------
POINTS = 2
"""Random points for the exact concrete-H checks."""
PRIME = 2**61 - 1
"""Exact checks run in the integers modulo this prime: a wrong entry is a non-zero rational
function of degree at most 2H, which vanishes at a random point with probability at most
2H / PRIME (Schwartz-Zippel), below 1e-12 per point for H <= 10^6; a random direction then
misses it with probability 1 / PRIME (see :mod:`derive.directions`)."""
EVERY_ENTRY = 4096
"""Up to this many classes a worked example's gradient is checked entry by entry against
central differences; beyond, along random directions, each one pass over the classes."""


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
    tangent: Callable[["SoftmaxPoint", list[int]], list[int]]
    """The Jacobian-vector product along a direction, by forward mode through softmax, modulo PRIME."""
    outputs: Callable[[list, mpmath.mpf, list], list]
    """Every output of the function, for finite differences, from the weights e^{z_m - c}, their
    total and the shifted logits z_m - c (c is any constant: softmax does not see it)."""


def _delta(r: int, c: int) -> int:
    return 1 if r == c else 0


JACOBIANS: dict[str, Jacobian] = {
    "softmax": Jacobian(
        jacobian,
        lambda p, q, r, c: p[r] * (q[c] if r == c else -p[c]),
        lambda point, v: point.tangent(v),
        lambda weights, total, shifted: [w / total for w in weights],
    ),
    "log-softmax": Jacobian(
        log_jacobian,
        lambda p, q, r, c: q[c] if r == c else -p[c],
        lambda point, v: [d * w % PRIME for d, w in zip(point.tangent(v), point.inverse_o)],
        lambda weights, total, shifted: (lambda lse: [v - lse for v in shifted])(mpmath.log(total)),
    ),
}


class SoftmaxPoint:
    """Softmax at a random point of the field, differentiated along directions by forward mode:
    A_m = e^{z_m} is a random field element, o_m = A_m / S with S = sum_m A_m; a direction v
    seeds the tangent of z_m, so that of A_m is A_m v_m and that of S their sum."""

    def __init__(self, a: list[int], target: list[int]):
        self.a, self.target = a, target
        self.total = sum(a) % PRIME
        self.inverse_total = _inverse(self.total)
        self.o = [x * self.inverse_total % PRIME for x in a]
        self.inverse_o = directions.inverses(self.o)

    def tangent(self, v: list[int]) -> list[int]:
        """The tangent of every o_m: (A'_m S - A_m S') / S^2."""
        da = [x * w % PRIME for x, w in zip(self.a, v)]
        ds = sum(da) % PRIME
        square = self.inverse_total * self.inverse_total % PRIME
        return [(x * self.total - w * ds) * square % PRIME for x, w in zip(da, self.a)]

    def loss_tangent(self, v: list[int]) -> int:
        """The derivative of E = -sum_m y_m ln o_m along v: -sum_m y_m o'_m / o_m."""
        return -sum(t * d % PRIME * w for t, d, w in zip(self.target, self.tangent(v), self.inverse_o)) % PRIME


def checks(d: Derivation) -> list:
    """Every gradient and Jacobian entry against derivatives of the loss and of the function
    themselves, along random directions (see :mod:`derive.directions`), and the worked example
    against finite differences."""
    from derive.verify import Check

    c = d.concrete
    if c.of is None:
        from derive import instance

        return instance.parameter_checks(d) if c.by else instance.checks(d)
    n = c.classes
    function = JACOBIANS[c.of]
    rng = random.Random(f"derive:{d.name}:{n}")
    how = f"exact arithmetic modulo the 61-bit Mersenne prime at {POINTS} random points, {directions.DIRECTIONS} random directions each, against forward-mode derivatives of the {{}}"
    bad_gradient = bad_jacobian = None
    for at in range(POINTS):
        progress.update(f"checking every entry for H = {n}", at + 1, POINTS)
        a, t = random_point(n, rng, "normalised" in c.assumptions)
        point = SoftmaxPoint(a, t)
        leaves = {o: point.o, y: t}
        # The gradient is the derivation's result for each class (sums in it evaluated whole).
        gradient = directions.entries(c.gradient, leaves, n) if c.gradient is not None else None
        for _ in range(directions.DIRECTIONS):
            v = directions.direction(rng, n)
            if gradient is not None and bad_gradient is None:
                along = lambda u: directions.dot(gradient, u) != point.loss_tangent(u)
                if along(v):
                    bad_gradient = directions.locate(along, v) + 1
            if bad_jacobian is None:
                claimed, true = directions.product(c.jacobian, v, leaves), function.tangent(point, v)
                row = next((r for r in range(n) if claimed[r] != true[r]), None)
                if row is not None:
                    column = directions.locate(lambda u: directions.product(c.jacobian, u, leaves)[row] != function.tangent(point, u)[row], v)
                    bad_jacobian = (row + 1, column + 1)
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
    if isinstance(ex.jacobian, LazyJacobian):
        return _shown_jacobian_check(ex, of)
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


def _shown_jacobian_check(ex: JacobianExample, of: str):
    """Beyond MATRIX_MOST classes: the probabilities against softmax of the logits, their
    complements against 1 - o, and the entries a document shows (the first three and last two
    rows and columns) and a few drawn at random, each against central differences of the
    function in its logit (moving one logit changes one weight and the total: O(1) per entry)."""
    from derive.verify import Check

    function = JACOBIANS[of]
    m = ex.jacobian
    n = len(ex.logits)
    what = "the worked example"
    method = f"the outputs against softmax of the logits, and the entries shown and {SAMPLED} drawn at random against central finite differences of the {of} (mpmath)"
    tolerance = mpmath.mpf(10) ** -20
    with mpmath.workdps(60 + magnitude(ex.logits)):
        zm = [_mp(v) for v in ex.logits]
        top = max(zm)
        shifted = [v - top for v in zm]
        weights = [mpmath.exp(v) for v in shifted]
        total = mpmath.fsum(weights)
        for r, (w, p, q) in enumerate(zip(weights, m.p, m.q)):
            if abs(w / total - _entry(p)) > tolerance or abs(1 - w / total - _entry(q)) > tolerance:
                return Check(what, method, False, f"output {r + 1} is not softmax of the logits")
        rng = random.Random(f"derive:{of}:{n}")
        shown = sorted({0, 1, 2, n - 2, n - 1} & set(range(n)))
        entries = [(r, c) for r in shown for c in shown] + [(rng.randrange(n), rng.randrange(n)) for _ in range(SAMPLED)]
        h = mpmath.mpf(10) ** -25
        for r, col in entries:
            sides = []
            for dz, factor in ((h, mpmath.exp(h)), (-h, mpmath.exp(-h))):
                moved = weights[col] * factor if r == col else weights[r]
                sides.append(function.outputs([moved], total - weights[col] + weights[col] * factor, [shifted[r] + (dz if r == col else 0)])[0])
            numeric = (sides[0] - sides[1]) / (2 * h)
            claimed = _entry(m[r][col])
            if abs(numeric - claimed) > tolerance:
                return Check(what, method, False, f"entry ({r + 1}, {col + 1}): finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)


SAMPLED = 8
"""Entries of a large worked Jacobian checked at random beside those a document shows."""
STEPS = tuple(u for u in range(-16, 17) if u)
"""The entries of a random direction for finite differences."""


def example_check(ex: Example, of: str = "softmax"):
    """The example's loss from its probabilities, and its gradient against central differences:
    entry by entry up to EVERY_ENTRY classes, beyond along random directions."""
    from derive.verify import Check

    n = len(ex.logits)
    what = "the worked example"
    every = n <= EVERY_ENTRY
    method = ("gradient against central finite differences of the loss" if every else f"gradient along {directions.DIRECTIONS} random directions against central finite differences of the loss") + " (mpmath), loss against -sum y ln o"
    # The loss at z +- h differs by about 2 h dE/dz, and is known to the working precision of the
    # largest logit: 60 digits beyond its size keep the difference exact to 20 (logits of 1e20).
    with mpmath.workdps(60 + magnitude(ex.logits)):
        # A vector of many classes holds few distinct numbers (ours: two logits): each is
        # converted, and exponentiated, once.
        converted: dict = {}
        zm, tm, claimed = ([converted[v] if v in converted else converted.setdefault(v, _mp(v)) for v in values] for values in (ex.logits, ex.target, ex.gradient))
        # E = sum_i y_i (lse(z) - z_i) = mass lse(z) - base; moving the logits by dz multiplies
        # each weight e^{z_m - top} by e^{dz_m}: lse(z + dz) = top + ln(total + sum_m w_m (e^{dz_m} - 1)).
        top = max(zm)
        exps: dict = {}
        w = [exps[v] if v in exps else exps.setdefault(v, mpmath.exp(v - top)) for v in zm]
        total = mpmath.fsum(w)
        mass = mpmath.fsum(tm)
        h = mpmath.mpf(10) ** -25
        if every:
            for m in range(n):
                sides = [mass * mpmath.log(total + w[m] * mpmath.expm1(dz)) - tm[m] * dz for dz in (h, -h)]
                numeric = (sides[0] - sides[1]) / (2 * h)
                if abs(numeric - claimed[m]) > mpmath.mpf(10) ** -20:
                    return Check(what, method, False, f"class {m + 1}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed[m], 15)}")
        else:
            rng = random.Random(f"derive:example:{n}")
            for _ in range(directions.DIRECTIONS):
                # Each entry of the direction a whole number from -16 to 16 but 0, so that a wrong
                # entry always moves the product; the classes are summed by their entry.
                v = [rng.choice(STEPS) for _ in range(n)]
                groups: dict[int, tuple[list, list, list]] = {u: ([], [], []) for u in STEPS}
                for u, x, t, g in zip(v, w, tm, claimed):
                    group = groups[u]
                    group[0].append(x)
                    group[1].append(t)
                    group[2].append(g)
                sums = {u: [mpmath.fsum(part) for part in group] for u, group in groups.items()}
                # e^{h v_m} - 1 by its series: the terms beyond the third are below 10^-100.
                powers = [mpmath.fsum(u**p * sums[u][0] for u in STEPS) for p in (1, 2, 3)]
                moved = mpmath.fsum(u * sums[u][1] for u in STEPS)
                sides = [mass * mpmath.log(total + s * powers[0] + s**2 * powers[1] / 2 + s**3 * powers[2] / 6) - moved * s for s in (h, -h)]
                numeric = (sides[0] - sides[1]) / (2 * h)
                expected = mpmath.fsum(u * sums[u][2] for u in STEPS)
                if abs(numeric - expected) > mpmath.mpf(10) ** -20 * max(1, abs(expected)):
                    return Check(what, method, False, f"along a random direction: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(expected, 15)}")
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
