"""A derivation for a concrete number of classes: the sums written out, the Jacobian, the gradient
and a worked example with numbers, all checked. Every derivation's appendix for a concrete H is
made and checked here, and nothing is taken from the steps except the result being checked:

- softmax and log-softmax (their Jacobian) and softmax-ce without options have hand-written
  counterparts of each part: the example from log-sum-exp, the exact checks by forward mode
  through softmax (:class:`SoftmaxPoint`);
- any other loss of the logits gets them from its definitions alone (:func:`loss_instance`): the
  worked example's outputs and loss are the definitions evaluated with mpmath, its gradient is the
  derived result, checked against central differences of the loss; every gradient entry and
  every Jacobian entry is checked exactly, in arithmetic modulo a prime, against forward-mode
  derivatives of the written-out loss and outputs (:class:`Field`);
- a dense layer before a loss (:func:`layer_instance`): every entry of the gradient with respect
  to the weights and the biases, against reverse-mode derivatives (:func:`gradient`).

Numbers are SymPy numbers: exact where the example is ours (the seed's O = (1/5, 3/5, 1/5) comes
from logits (0, ln 3, 0)), 30-digit floats where the user supplied them. Softmax and the loss are
evaluated through log-sum-exp, so logits such as (1000, 0, -1000) stay finite.

The class count is validated once, where a derivation is asked for (:func:`classes_of`), and
passed down as a number.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import mpmath
import sympy as sp

from derive import directions, modular, progress
from derive.errors import UsageError
from derive.model import Concrete, Definition, Derivation, Example, JacobianExample, LayerExample, RuleMatrix, RuleVector, WrittenOut
from derive.rules import evaluated, rewrite, substitute
from derive.setting import Setting, expand_sums
from derive.symbols import ExcludedSum, i, k, o, y
from derive.verify import Check, evaluate_shared, instantiate, intermediate_values, symbolize, written_definitions

MAX_CLASSES = 1_000_000
"""The checks of a concrete H cost O(H) per random direction (see :mod:`derive.directions`), the
documents show a few entries of each vector; what grows is the JSON, which holds every entry."""
MATRIX_MOST = 100
"""A Jacobian's worked example holds every entry up to this many classes (the JSON has the
H x H matrix); beyond, its entries are computed from the probabilities when a document shows
them, and the JSON holds the vectors."""
DIGITS = 30
"""Digits a worked example's numbers are shown and stored with (a planned derivation's too, see
:mod:`derive.worked`)."""
NORMALISED_WITHIN = 1e-9
"""A target whose entries sum to 1 within this counts as normalised."""
WORKING = DIGITS + 30
"""Digits the example of a loss from its definitions is computed with; it is stored with DIGITS.
Large logits add more (see :func:`working_digits`), and the numbers are computed again with more
until they settle (see :func:`settled`)."""


# --- input ------------------------------------------------------------------------------------
def classes_of(classes: object) -> int:
    """Validate a class count: once, where a derivation is asked for (``derive.derivations.build``)."""
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
    """Parse user numbers exactly (0.1 is 1/10, not the nearest double; see :func:`exact`)."""
    values = list(values)
    if len(values) != classes:
        raise UsageError(f"{what} needs {classes} numbers, one per class, but got {len(values)}")
    out = []
    for v in values:
        try:
            value = exact(repr(v) if isinstance(v, float) else str(v))
        except ValueError as error:
            raise UsageError(f"{what}: {error}") from None
        out.append(sp.Rational(value.numerator, value.denominator))
    return tuple(out)


def _zero(text: str) -> bool:
    """Whether a number's text is 0 (0.0, 0e5), read without expanding its exponent."""
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(text) == 0
    except InvalidOperation:
        return False


def exact(text: str) -> Fraction:
    """A number as the user wrote it, exactly: 0.1 is 1/10, not the nearest double, and 1/3 a
    third. What is not a number, or beyond the range of a double (nan, inf, 1e400, 1e-400: an
    exponent that a fraction would write out digit by digit), is refused with a ValueError that
    quotes it. The one reading of a user's number, here and in :mod:`derive.worked`."""
    text = text.strip()
    numerator, slash, denominator = text.partition("/")
    try:
        parts = [float(numerator), float(denominator)] if slash else [float(text)]
        finite = all(math.isfinite(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not finite:
        raise ValueError(f"{text!r} is not a finite number")
    if not slash and parts[0] == 0:
        if _zero(text):
            return Fraction(0)  # 0e99999999 too
        raise ValueError(f"{text!r} is too close to 0 (below the smallest double, 5e-324)")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number") from None


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
        return rounded(b)
    return None


def example(classes: int, logits: Sequence | None = None, target: Sequence | None = None) -> Example:
    """The worked example: ours (exact) unless the user gave logits or a target."""
    if logits is None and target is None:
        return _default_example(classes)
    z_, t_ = example_numbers(classes, logits, target)

    def compute() -> dict[str, Any]:
        zm = [to_mpf(v) for v in z_]
        tm = [to_mpf(v) for v in t_]
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
        return all(abs(to_mpf(p) - to_mpf(c)) <= mpmath.mpf(10) ** -(DIGITS - 2) for p, c in zip(probabilities, CLASSIC))


def to_mpf(v: sp.Expr | Fraction | mpmath.mpf) -> mpmath.mpf:
    """An example number (SymPy's here, a Fraction or an mpmath number in :mod:`derive.worked`) as
    an mpmath number at the current precision, without a round trip through evalf: an exact number
    is rounded once; another (ln 3) is evaluated to at least 60 digits."""
    if isinstance(v, Fraction):
        return mpmath.mpf(v.numerator) / v.denominator
    if not isinstance(v, sp.Basic):
        return mpmath.mpf(v)  # an mpf, an int or a float
    if v.is_Rational:
        return mpmath.mpf(v.p) / v.q
    if isinstance(v, sp.Float):
        return mpmath.mpf(v._mpf_)
    return mpmath.mpf(sp.N(v, max(mpmath.mp.dps, 60)))


def magnitude(values: Sequence[sp.Expr]) -> int:
    """The number of decimal digits before the point of the largest of ``values`` (0 below 1)."""
    with mpmath.workdps(20):
        top = max((abs(to_mpf(v)) for v in values), default=mpmath.mpf(0))
        return int(mpmath.ceil(mpmath.log10(top))) if top > 1 else 0


def rounded(v: mpmath.mpf) -> sp.Float:
    """A computed number as a worked example shows and stores it, here and in
    :mod:`derive.worked`: DIGITS significant digits (an infinity or a NaN as it is)."""
    return sp.Float(v, DIGITS)


def central_difference(f: Callable[[mpmath.mpf], mpmath.mpf], h: mpmath.mpf) -> mpmath.mpf:
    """The derivative of ``f`` at 0 by central finite differences, (f(h) - f(-h)) / 2h, exact to
    O(h^2): what every worked example's gradient is checked against, here and in
    :mod:`derive.worked`."""
    return (f(h) - f(-h)) / (2 * h)


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
    function = JACOBIANS[name]
    return Concrete(classes=classes, loss=None, jacobian=(matrix or function.matrix)(classes), gradient=None, example=jacobian_example(name, classes, logits), of=name)


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
        zm = [to_mpf(v) for v in z_]
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
        return value if value.is_Rational else rounded(value)


# --- checks -----------------------------------------------------------------------------------
POINTS = 2
"""Random points for the exact concrete-H checks."""
PRIME = modular.P
"""Exact checks run in the integers modulo this prime (that of :mod:`derive.modular`): a wrong entry is a non-zero rational
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


# --- any loss from its definitions ---------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    """A worked example's numbers, validated before any symbolic work."""

    classes: int
    logits: tuple[sp.Expr, ...]
    target: tuple[sp.Expr, ...]
    given: tuple[str, ...]
    """The numbers the user supplied, by name ("logits", "target")."""


def needs_classes(logits: Sequence | None, target: Sequence | None) -> str:
    """The error of --logits or --target given without --classes, naming what was given."""
    given = [option for option, value in (("--logits", logits), ("--target", target)) if value is not None]
    return f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --classes: the worked example is for a concrete number of classes"


def inputs(classes: int | None, logits: Sequence | None, target: Sequence | None) -> Inputs | None:
    """Validate --logits and --target for ``classes`` classes (already validated, see
    :func:`classes_of`); None when H stays symbolic."""
    if classes is None:
        if logits is not None or target is not None:
            raise UsageError(needs_classes(logits, target))
        return None
    z_, t_ = example_numbers(classes, logits, target)
    return Inputs(classes, tuple(z_), tuple(t_), tuple(name for name, v in (("logits", logits), ("target", target)) if v is not None))


def loss_instance(
    given: Inputs,
    setting: Setting,
    loss: Definition,
    result: sp.Expr,
    jacobian: RuleMatrix,
    general: sp.Expr | None = None,
    assumptions: tuple[str, ...] = (),
    parameters: Mapping[sp.Symbol, sp.Expr] | None = None,
    extra: Callable[[dict], tuple[tuple[str, object], ...]] | None = None,
) -> Concrete:
    """The appendix of a loss derivation for ``given.classes`` classes.

    ``result`` is dE/dz_k in terms of the outputs (o_k - y_k) under ``assumptions``;
    ``general`` the form that holds for any target, used when the example's target does not sum
    to one. ``parameters`` fixes
    symbols such as a temperature. ``extra`` adds derivation-specific numbers to the example
    (it receives the evaluated quantities by name, see :func:`_example`).
    """
    n = given.classes
    fixed = dict(parameters or {})
    if general is not None and not normalised(given.target):
        formula, assumptions = general, ()
    else:
        formula = result
    gradient = gradient_vector(formula, n, {setting.classes: sp.Integer(n), **fixed})
    written = written_out(loss.value, setting.classes, n, fixed)
    # The example's numbers come from the form that holds for any target: a target whose entries
    # sum to one only within NORMALISED_WITHIN still gets the gradient of its own loss.
    example = _example(given, setting, loss, general if general is not None else formula, fixed, extra)
    return Concrete(classes=n, loss=written, jacobian=jacobian, gradient=gradient, example=example, of=None, parameters=tuple(fixed.items()), assumptions=assumptions)


def gradient_vector(formula: sp.Expr, n: int, fixed: dict) -> RuleVector:
    """The result for every class, each entry written when asked for (see :func:`_at`)."""
    sums = {s: s.xreplace(fixed) for s in formula.atoms(sp.Sum)}
    return RuleVector(n, k, formula.xreplace(sums).xreplace(fixed), lambda m: _at(formula, m, fixed))


def _at(e: sp.Expr, m: int, fixed: dict) -> sp.Expr:
    """The result for class m, its shape kept: (o_1 - y_1)/2 stays a bracket over 2."""
    sums = {s: s.xreplace(fixed) for s in e.atoms(sp.Sum)}  # limits sit in a Tuple substitute keeps
    e = substitute(e, {k: sp.Integer(m), **fixed, **sums})
    # Parameters become numbers: (1 - 1/10) is 9/10, (1/10)/3 is 1/30.
    e, _ = rewrite(e, lambda x: not x.is_Atom and x.is_number and not x.has(sp.Sum), evaluated)
    return e


def written_out(value: sp.Expr, classes: sp.Symbol, n: int, fixed: dict) -> WrittenOut:
    """The loss with its sum written out term by term, unevaluated (a factor in front stays);
    each term is built when asked for."""
    value = value.xreplace({classes: sp.Integer(n), **fixed})

    def terms(s: sp.Sum) -> RuleVector:
        idx, lo, hi = s.limits[0]
        return RuleVector(int(hi) - int(lo) + 1, idx, s.function, lambda m: substitute(s.function, {idx: sp.Integer(int(lo) + m - 1)}))

    if isinstance(value, sp.Sum):
        return WrittenOut(None, terms(value))
    if isinstance(value, sp.Mul) and sum(isinstance(a, sp.Sum) for a in value.args) == 1:
        (inner,) = [a for a in value.args if isinstance(a, sp.Sum)]
        return WrittenOut(sp.Mul(*[a for a in value.args if a is not inner]), terms(inner))
    return WrittenOut(None, (expand_sums(value),))


# --- the worked example ----------------------------------------------------------------------------
def _written(setting: Setting, e: sp.Expr, n: int, index: int, fixed: dict) -> sp.Expr:
    """``e`` written out for n classes in the entries of the intermediates (o_1..o_H stay
    symbols, their values come from :func:`_with_defined`): substituted into a sigmoid's
    ln(1 - o_m), SymPy would spend seconds on assumptions at a thousand classes."""
    key = (id(setting), e, n, index, tuple(fixed.items()))
    if key not in _WRITTEN or _WRITTEN[key][0] is not setting:
        # The example, the entries' checks and the example's check write out the same loss;
        # the setting is kept beside it, so its id cannot stand for another while cached.
        plain = _plainly_written(setting, e, n, fixed)
        _WRITTEN[key] = (setting, plain if plain is not None else instantiate(setting, e.xreplace(fixed), n, (index,) * len(setting.indices), (), {}).xreplace(fixed))
    return _WRITTEN[key][1]


def _plainly_written(setting: Setting, e: sp.Expr, n: int, fixed: dict) -> sp.Expr | None:
    """A loss defined as a factor times one sum over the classes, written out term by term
    without SymPy evaluating each term (building ln(1 - o_m) asks the assumptions whether
    1 - o_m can be 0: milliseconds a term). None where the definition is not of that shape."""
    definition = next((x for x in setting.definitions if x.symbol == e), None)
    if definition is None:
        return None
    value = definition.value.xreplace({setting.classes: sp.Integer(n), **fixed})
    sums = [a for a in sp.Mul.make_args(value) if isinstance(a, sp.Sum)]
    if len(sums) != 1 or len(sums[0].limits) != 1 or value.has(sp.Derivative, ExcludedSum):
        return None
    (total,) = sums
    idx, lo, hi = total.limits[0]
    scalars = {x.symbol for x in setting.definitions if not isinstance(x.symbol, sp.Indexed)}
    if not (lo.is_Integer and hi.is_Integer) or value.free_symbols & scalars:
        return None

    def term(x: sp.Basic, m: sp.Integer) -> sp.Basic:
        if isinstance(x, sp.Indexed):
            return symbolize(x.xreplace({idx: m}))
        if x == idx:
            return m
        if not x.args:
            return x
        args = [term(a, m) for a in x.args]
        return x.func(*args, evaluate=False) if isinstance(x, (sp.Add, sp.Mul, sp.Pow, sp.Function)) else x.func(*args)

    terms = sp.Add(*[term(total.function, sp.Integer(m)) for m in range(int(lo), int(hi) + 1)], evaluate=False)
    front = [a for a in sp.Mul.make_args(value) if a is not total]
    return sp.Mul(*front, terms, evaluate=False) if front else terms


_WRITTEN: dict[tuple, tuple[Setting, object]] = {}


def _intermediates(setting: Setting, n: int) -> dict[sp.Symbol, sp.Expr]:
    """Every intermediate entry written out in the variables (see ``verify.intermediate_values``),
    once per setting and size, kept as :func:`_written` keeps the loss."""
    key = (id(setting), n)
    if key not in _WRITTEN or _WRITTEN[key][0] is not setting:
        _WRITTEN[key] = (setting, intermediate_values(setting, n))
    return _WRITTEN[key][1]


def _with_defined(point: dict, intermediates: Mapping[sp.Symbol, sp.Expr], memo: dict) -> dict:
    """The point and every intermediate entry (o_m, a smoothed target y'_m) evaluated there."""
    return point | {s: evaluate_shared(v, point, memo) for s, v in intermediates.items()}


def _example(given: Inputs, setting: Setting, loss: Definition, formula: sp.Expr, fixed: dict, extra) -> Example:
    n = given.classes
    intermediates = {s: v.xreplace(fixed) for s, v in _intermediates(setting, n).items()}
    loss_written = _written(setting, loss.symbol, n, 1, fixed)
    # A sum in the result that does not depend on k (sum_i o_i (o_i - y_i)) is evaluated once,
    # standing in each entry as a placeholder: writing it into every entry would cost H^2.
    at_n = formula.xreplace({setting.classes: sp.Integer(n), **fixed})
    whole = {x: sp.Dummy() for x in at_n.atoms(sp.Sum, ExcludedSum) if k not in x.free_symbols}
    written = expand_sums(at_n.xreplace(whole))
    entries = [written.xreplace({k: sp.Integer(m)}) for m in range(1, n + 1)]

    def compute() -> dict:
        point = _point(setting, given)
        memo: dict = {}
        outputs = [evaluate_shared(intermediates[symbolize(setting.intermediates[0][m])], point, memo) for m in range(1, n + 1)]
        value = evaluate_shared(loss_written, _with_defined(point, intermediates, memo), memo)
        # The result is in terms of the outputs: evaluated at their values. Its sums are written
        # out once for every entry (k stays free), so a sum over the outputs is evaluated once.
        known = point | {x: point[symbolize(x)] for x in map(setting.wrt.base.__getitem__, range(1, n + 1))}
        known |= {y[m]: point[symbolize(y[m])] for m in range(1, n + 1)}
        known |= {setting.intermediates[0][m]: outputs[m - 1] for m in range(1, n + 1)}
        known |= {dummy: evaluate_shared(expand_sums(x), known, memo) for x, dummy in whole.items()}
        gradient = [evaluate_shared(e, known, memo) for e in entries]
        numbers_ = {"outputs": outputs, "loss": value, "gradient": gradient, "point": point, "memo": memo, "intermediates": intermediates}
        more = extra(numbers_) if extra else ()
        # Each of the numbers settles on its own; a sum that the identity makes 0 (softmax
        # gradients) shrinks with the precision and is 0.
        return {"outputs": outputs, "loss": value, "gradient": gradient, "gradient_sum": mpmath.fsum(gradient)} | {f"extra:{key}": v for key, v in more}

    numbers_ = settled(compute, working_digits(setting, given, intermediates))
    return Example(
        logits=given.logits,
        target=given.target,
        probabilities=tuple(numbers_["outputs"]),
        loss=numbers_["loss"],
        gradient=tuple(numbers_["gradient"]),
        given=given.given,
        extra=tuple((key[len("extra:"):], tuple(v) if isinstance(v, list) else v) for key, v in numbers_.items() if key.startswith("extra:")),
        gradient_sum=numbers_["gradient_sum"],
    )


def working_digits(setting: Setting, given: Inputs, intermediates: Mapping[sp.Symbol, sp.Expr]) -> int:
    """WORKING, plus a digit for every factor of 10 in e^{2|u|} of the largest exponent u in the
    outputs at the example (z_k / T at a temperature T): an output near 1, such as the sigmoid
    1 - sigma(z) = e^{-z} / (1 + e^{-z}), or the softmax output of a logit that tops the others
    by up to 2 |u|, is a difference of numbers that agree to that many digits, and the example
    must keep its DIGITS after that. More than MOST_DIGITS is refused."""
    with mpmath.workdps(20):
        point = _point(setting, given)
        memo: dict = {}
        top = mpmath.mpf(0)
        seen: set = set()
        todo = list(intermediates.values())
        while todo:
            e = todo.pop()
            if e in seen or not e.args:
                continue
            seen.add(e)
            if isinstance(e, sp.exp):
                top = max(top, abs(evaluate_shared(e.args[0], point, memo)))
            todo.extend(e.args)
        digits = WORKING + int(2 * top / mpmath.log(10))
    if digits > MOST_DIGITS:
        raise UsageError(f"--logits: the worked example would need {mpmath.nstr(mpmath.mpf(digits), 3)} digits to show its numbers to {DIGITS} (an exponent of {mpmath.nstr(top, 3)}), more than the {MOST_DIGITS} it may use: give smaller logits")
    return digits


def _point(setting: Setting, given: Inputs) -> dict[sp.Basic, mpmath.mpf]:
    point = {}
    for m in range(1, given.classes + 1):
        point[symbolize(setting.wrt.base[m])] = to_mpf(given.logits[m - 1])
        point[symbolize(y[m])] = to_mpf(given.target[m - 1])
    return point


# --- a dense layer before the loss: the gradient with respect to its parameters ---------------------
def layer_instance(
    given: Inputs, inputs: int, weights: Derivation, bias: Derivation, x: sp.IndexedBase, values: Mapping[str, tuple] | None = None
) -> Concrete:
    """The appendix of a dense layer z = W x + b before a loss, for ``given.classes`` classes and
    ``inputs`` inputs: the gradient with respect to every weight and bias (the derived results,
    their general forms when the target does not sum to one) and a worked example.

    The example's numbers are the user's ``values`` ("x", "W", "b", checked by the derivation)
    where given, else ours: inputs x_d = d; weights W_kd = 2 (d - k) + 1, odd and so never 0,
    no two rows alike, so that a row mixed up changes the logits; biases that make each logit
    that of the softmax-ce example (ln 3 for class 2, 0 elsewhere), b = z - W x. Its logits,
    outputs and loss are the definitions evaluated with mpmath; its gradient is the derived
    result at those numbers.
    """
    n = given.classes
    s = weights.setting
    (column,) = s.outer
    sizes = {s.classes: n, s.limit(column): inputs}
    if normalised(given.target):
        formulas, assumptions = (weights.result.rhs, bias.result.rhs), tuple(a.key for a in weights.assumptions)
    else:
        formulas, assumptions = (weights.general.rhs, bias.general.rhs), ()
    W, b = s.wrt.base, bias.setting.wrt.base
    by, gradient_ = [], []
    for r in range(1, n + 1):
        for col in range(1, inputs + 1):
            by.append(W[r, col])
            gradient_.append(formulas[0].xreplace({s.index: sp.Integer(r), column: sp.Integer(col), s.classes: sp.Integer(n)}))
    for r in range(1, n + 1):
        by.append(b[r])
        gradient_.append(formulas[1].xreplace({bias.setting.index: sp.Integer(r), s.classes: sp.Integer(n)}))

    values = dict(values or {})
    xs = values.get("x") or tuple(sp.Integer(col) for col in range(1, inputs + 1))
    ws = values.get("W") or tuple(tuple(sp.Integer(2 * (col - r) + 1) for col in range(1, inputs + 1)) for r in range(1, n + 1))
    products = [sum((w * v for w, v in zip(row, xs)), sp.Integer(0)) for row in ws]
    bs = values.get("b") or tuple(z - p for z, p in zip(_default_logits(n), products))
    logits = tuple(p + b_ for p, b_ in zip(products, bs))
    loss, defined = written_loss(s, weights.subject.expr, sizes)
    with mpmath.workdps(WORKING):
        point = {symbolize(y[r + 1]): to_mpf(given.target[r]) for r in range(n)}
        point |= {symbolize(x[col + 1]): to_mpf(xs[col]) for col in range(inputs)}
        point |= {symbolize(W[r + 1, col + 1]): to_mpf(ws[r][col]) for r in range(n) for col in range(inputs)}
        point |= {symbolize(b[r + 1]): to_mpf(bs[r]) for r in range(n)}
        memo: dict = {}
        for symbol, definition in defined.items():  # each level after the one it is defined through
            point[symbol] = evaluate_shared(definition, point, memo)
        outputs = [point[symbolize(s.intermediates[0][r])] for r in range(1, n + 1)]
        value = evaluate_shared(loss, point, memo)
        # The derived formulas at these numbers: o_k, y_k and x_d stand for their values.
        at = _by_entry(point, n, inputs, s, x)
        numbers_ = [evaluate_shared(expand_sums(g) if g.has(sp.Sum) else g, at, {}) for g in gradient_]
    f = rounded
    example = LayerExample(
        x=xs,
        W=ws,
        b=bs,
        logits=logits,
        probabilities=tuple(map(f, outputs)),
        target=given.target,
        loss=f(value),
        gradient_W=tuple(tuple(f(v) for v in numbers_[r * inputs:(r + 1) * inputs]) for r in range(n)),
        gradient_b=tuple(f(v) for v in numbers_[n * inputs:]),
        given=tuple(name for name in ("x", "W", "b") if name in values) + given.given,
    )
    return Concrete(
        classes=n, loss=None, jacobian=None, gradient=tuple(gradient_), example=example, of=None,
        parameters=((s.limit(column), sp.Integer(inputs)),), assumptions=assumptions, by=tuple(by),
    )


def written_loss(setting: Setting, loss: sp.Expr, sizes: Mapping[sp.Symbol, int]) -> tuple[sp.Expr, dict[sp.Symbol, sp.Expr]]:
    """The loss written out in the entries of the last intermediates (E in o_1..o_H), and every
    intermediate entry by its definition, in an order where each follows those it names."""
    key = (id(setting), loss, tuple(sizes.items()))
    if key in _WRITTEN and _WRITTEN[key][0] is setting:
        return _WRITTEN[key][1]  # the example and the entries' checks write out the same layer
    level = written_definitions(setting, sizes)
    defined: dict[sp.Symbol, sp.Expr] = {}
    done: set = set()
    while len(done) < len(level):
        for base, (entries, below) in level.items():
            if base not in done and below <= done:
                defined.update(entries)
                done.add(base)
    _WRITTEN[key] = (setting, (instantiate(setting, loss, sizes, (1,) * len(setting.indices), (), {}), defined))
    return _WRITTEN[key][1]


def _by_entry(point: dict, n: int, inputs: int, s: Setting, x: sp.IndexedBase) -> dict:
    """The outputs, targets and inputs of a point by their Indexed names (o[2] as well as o2), so
    that a gradient entry is evaluated as it stands."""
    names = [b[m] for b in (s.intermediates[0], y) for m in range(1, n + 1)] + [x[m] for m in range(1, inputs + 1)]
    return point | {q: point[symbolize(q)] for q in names}


# --- the checks of the appendix --------------------------------------------------------------------
class Field:
    """Written-out expressions evaluated modulo PRIME at one random point, differentiated by one
    variable. Each logit and target is a random field element; so is each distinct exponential,
    whose derivative follows from its argument: d e^u = e^u du. Logits and their exponentials are
    algebraically independent functions, so an identity that holds as functions holds for
    independent random values, and a false one fails with probability about degree / PRIME."""

    def __init__(self, rng: random.Random, variables: Sequence[sp.Symbol], fixed: dict[sp.Symbol, int]):
        self.values = {v: rng.randrange(1, PRIME) for v in variables} | fixed
        self.exps: dict[sp.Basic, int] = {}
        self.rng = rng
        self.by: sp.Symbol | None = None
        self.along: Mapping[sp.Symbol, int] | None = None
        self.defined: Mapping[sp.Symbol, sp.Expr] = {}
        """Symbols that stand for an expression in the variables (o_m for its softmax of z)."""
        self.memo: dict[sp.Basic, Dual] = {}
        self.symbols: dict[sp.Basic, set] = {}

    def differentiate_by(self, variable: sp.Symbol) -> None:
        """A sub-term without the variable keeps its value and has derivative 0: only the terms of
        an elementwise loss that contain the variable are evaluated again."""
        for e in self.memo.keys() - self.symbols.keys():
            self.symbols[e] = self._variables(e)
        self.by, self.along = variable, None
        self.memo = {e: Dual(x.v, 0) for e, x in self.memo.items() if variable not in self.symbols[e]}

    def differentiate_along(self, tangents: Mapping[sp.Symbol, int]) -> None:
        """Forward mode along a direction: each variable in ``tangents`` is seeded with its
        entry, so a derivative is the Jacobian-vector product (see :mod:`derive.directions`)."""
        # Along a direction nearly every sub-term moves: evaluating afresh costs no more than
        # finding the few that do not.
        self.by, self.along = None, tangents
        self.memo = {}

    def _variables(self, e: sp.Basic) -> set:
        """The variables ``e`` depends on, through the defined symbols too."""
        out = set(e.free_symbols)
        for s in out & self.defined.keys():
            out |= self.defined[s].free_symbols
        return out

    def __call__(self, e: sp.Basic) -> Dual:
        if e in self.memo:
            return self.memo[e]
        if e in self.defined:
            out = self(self.defined[e])
        elif e in self.values:
            out = Dual(self.values[e], self.along.get(e, 0) if self.along is not None else 1 if e == self.by else 0)
        elif e.is_Rational:
            out = Dual(int(e.p) * _inverse(int(e.q)) % PRIME, 0)
        elif isinstance(e, sp.Add):
            out = Dual(0, 0)
            for a in e.args:
                out = out.add(self(a))
        elif isinstance(e, sp.Mul):
            out = Dual(1, 0)
            for a in e.args:
                out = out.mul(self(a))
        elif isinstance(e, sp.Pow) and e.exp.is_Integer:
            base = self(e.base) if e.exp > 0 else self(e.base).inverse()
            out = Dual(1, 0)
            for _ in range(abs(int(e.exp))):
                out = out.mul(base)
        elif isinstance(e, sp.exp):
            if e not in self.exps:
                self.exps[e] = self.rng.randrange(1, PRIME)
            value = self.exps[e]
            out = Dual(value, value * self(e.args[0]).d % PRIME)
        elif isinstance(e, sp.log):
            u = self(e.args[0])
            out = Dual(None, u.d * _inverse(u.v) % PRIME)
        else:
            raise ValueError(f"cannot evaluate {sp.sstr(e)} exactly")
        self.memo[e] = out
        return out


def checks(d: Derivation) -> list:
    """Every entry of the appendix exactly, then its worked example: a Jacobian's (and
    softmax-ce's) against forward mode through softmax itself, any other loss's against the loss
    and outputs written out from its definitions, a layer's against reverse mode through the
    loss."""
    c = d.concrete
    if c.of is not None:
        return _function_checks(d)
    return _parameter_checks(d) if c.by else _defined_checks(d)


def _function_checks(d: Derivation) -> list:
    """Every gradient and Jacobian entry against derivatives of the loss and of the function
    themselves (softmax, log-softmax: ``c.of``), along random directions (see
    :mod:`derive.directions`), and the worked example against finite differences."""
    c = d.concrete
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
    out.append(example_check(d))
    return out


def _defined_checks(d: Derivation) -> list:
    """A loss from its definitions: every gradient entry and Jacobian entry exactly, along random
    directions (see :mod:`derive.directions`), then the worked example."""
    c = d.concrete
    n = c.classes
    setting = d.setting
    fixed = dict(c.parameters)
    assumptions = c.assumptions
    intermediates = {s: v.xreplace(fixed) for s, v in _intermediates(setting, n).items()}
    loss = _written(setting, d.subject.expr, n, 1, fixed)
    logits = [symbolize(setting.wrt.base[m]) for m in range(1, n + 1)]
    targets = [symbolize(y[m]) for m in range(1, n + 1)]
    outputs = [intermediates[symbolize(setting.intermediates[0][m])] for m in range(1, n + 1)]
    rng = random.Random(f"derive:{d.name}:{n}")
    how = f"exact arithmetic modulo the 61-bit Mersenne prime at {POINTS} random points, {directions.DIRECTIONS} random directions each, against forward-mode derivatives of the {{}}"
    bad_gradient = bad_jacobian = None
    fix = lambda e: e.xreplace(fixed)
    for at in range(POINTS):
        progress.update(f"checking every entry for H = {n}", at + 1, POINTS)
        field = Field(rng, logits + targets, {})
        for key in assumptions:
            for variable, value in setting.constraints[key](n).items():
                field.values[symbolize(variable)] = field(symbolize(value)).v
        field.memo = {}
        field.defined = intermediates
        leaves = {setting.intermediates[0]: [field(x).v for x in outputs], y: [field.values[t] for t in targets]}
        gradient = directions.entries(c.gradient, leaves, n, fix)

        def along(u: list[int]) -> tuple[int, list[int]]:
            """The derivatives of the loss and of every output along u."""
            field.differentiate_along(dict(zip(logits, u)))
            return field(loss).d, [field(x).d for x in outputs]

        for _ in range(directions.DIRECTIONS):
            v = directions.direction(rng, n)
            loss_d, outputs_d = along(v)
            if bad_gradient is None and directions.dot(gradient, v) != loss_d:
                bad_gradient = directions.locate(lambda u: directions.dot(gradient, u) != along(u)[0], v) + 1
            if bad_jacobian is None:
                claimed = directions.product(c.jacobian, v, leaves, fix)
                row = next((r for r in range(n) if claimed[r] != outputs_d[r]), None)
                if row is not None:
                    column = directions.locate(lambda u: directions.product(c.jacobian, u, leaves, fix)[row] != along(u)[1][row], v)
                    bad_jacobian = (row + 1, column + 1)
    return [
        Check(f"the gradient for H = {n}", f"each of the {n} entries, " + how.format("loss"), bad_gradient is None, f"entry {bad_gradient} differs" if bad_gradient else ""),
        Check(f"the Jacobian for H = {n}", f"each of the {n * n} entries, " + how.format("outputs"), bad_jacobian is None, f"entry {bad_jacobian} differs" if bad_jacobian else ""),
        example_check(d),
    ]


def _exact(e: sp.Expr, values: dict, sums: dict) -> int:
    """An entry modulo PRIME; each distinct sum in the entries is written out once (``sums``)."""
    if not e.has(sp.Sum, ExcludedSum):
        return exact_value(e, values)
    for s in e.atoms(sp.Sum, ExcludedSum) - sums.keys():
        sums[s] = expand_sums(s)
    found = {s: sums[s] for s in e.atoms(sp.Sum, ExcludedSum)}
    return exact_value(e.xreplace(found), values)


EVERY_ENTRY_DEFINED = 64
"""Up to this many classes the example of a loss from its definitions has its gradient checked
entry by entry (each costs a pass over the loss); beyond, along random directions (see STEPS)."""


def gradient(field: Field, e: sp.Basic, variables: Sequence[sp.Symbol], defined: Mapping[sp.Symbol, sp.Expr]) -> tuple[dict[sp.Symbol, int], dict[sp.Basic, int | None]]:
    """Reverse mode: the derivative of ``e`` by each of ``variables`` at once, modulo PRIME, at the
    field's point (values, exponentials and logarithms as in :class:`Field`), in one pass over the
    distinct sub-terms: a layer's H (D + 1) parameters cost no more than one. A symbol in
    ``defined`` stands for its value there (o_m for its softmax of z, z_m for its W x + b), so
    the levels of a network need not be substituted into each other. Returns the derivatives and
    the value of every sub-term (of each defined symbol too)."""
    wanted = set(variables)
    order: list[sp.Basic] = []
    depends: dict[sp.Basic, bool] = {}

    def parts(x: sp.Basic) -> tuple[sp.Basic, ...]:
        if x in defined:
            return (defined[x],)
        if x in field.values or x.is_Rational:
            return ()
        if isinstance(x, (sp.Add, sp.Mul, sp.exp, sp.log)):
            return x.args
        if isinstance(x, sp.Pow) and x.exp.is_Integer:
            return (x.base,)
        raise ValueError(f"cannot evaluate {sp.sstr(x)} exactly")

    def visit(x: sp.Basic) -> None:
        if x in depends:
            return
        for a in parts(x):
            visit(a)
        depends[x] = x in wanted or any(depends[a] for a in parts(x))
        order.append(x)

    visit(e)
    value: dict[sp.Basic, int | None] = {}
    for x in order:
        if x in defined:
            value[x] = value[defined[x]]
        elif x in field.values:
            value[x] = field.values[x]
        elif x.is_Rational:
            value[x] = int(x.p) * _inverse(int(x.q)) % PRIME
        elif isinstance(x, sp.exp):
            if x not in field.exps:
                field.exps[x] = field.rng.randrange(1, PRIME)
            value[x] = field.exps[x]
        elif isinstance(x, sp.log):
            value[x] = None
        elif isinstance(x, sp.Pow):
            b = value[x.base]
            value[x] = pow(b if x.exp > 0 else _inverse(b), abs(int(x.exp)), PRIME)
        else:
            vs = [value[a] for a in x.args]
            if None in vs:
                value[x] = None
            elif isinstance(x, sp.Add):
                value[x] = sum(vs) % PRIME
            else:
                out = 1
                for v in vs:
                    out = out * v % PRIME
                value[x] = out
    adjoint: dict[sp.Basic, int] = {e: 1}

    def add(x: sp.Basic, g: int) -> None:
        adjoint[x] = (adjoint.get(x, 0) + g) % PRIME

    for x in reversed(order):
        g = adjoint.get(x, 0)
        if not g or not depends[x] or not parts(x):
            continue
        if x in defined:
            add(defined[x], g)
        elif isinstance(x, sp.Add):
            for a in x.args:
                if depends[a]:
                    add(a, g)
        elif isinstance(x, sp.Mul):
            for n, a in enumerate(x.args):
                if depends[a]:
                    others = [value[f] for m, f in enumerate(x.args) if m != n]
                    if None in others:
                        raise ValueError("the value of a logarithm is not in the field")
                    for v in others:
                        g = g * v % PRIME
                    add(a, g)
                    g = adjoint[x]
        elif isinstance(x, sp.Pow):
            n = int(x.exp)
            add(x.base, g * (n % PRIME) * value[x] * _inverse(value[x.base]) % PRIME)
        elif isinstance(x, sp.exp):
            add(x.args[0], g * value[x] % PRIME)
        elif isinstance(x, sp.log):
            add(x.args[0], g * _inverse(value[x.args[0]]) % PRIME)
    return {v: adjoint.get(v, 0) for v in variables}, value


def _parameter_checks(d: Derivation) -> list:
    """A layer's gradient for a concrete H and D: every entry (dE/dW_kd and dE/db_k) exactly,
    modulo PRIME at random points, against reverse-mode derivatives of the loss written out from
    the definitions; then the worked example (see :func:`example_check`)."""
    c = d.concrete
    n = c.classes
    setting = d.setting
    sizes = {setting.classes: n, **{s_: int(v) for s_, v in c.parameters}}
    loss, defined = written_loss(setting, d.subject.expr, sizes)
    variables = sorted(set().union(*(v.free_symbols for v in defined.values()), loss.free_symbols) - defined.keys(), key=sp.default_sort_key)
    parameters = [symbolize(p) for p in c.by]
    found = set().union(*(g.atoms(sp.Indexed, sp.Sum, ExcludedSum) for g in c.gradient))
    found |= set().union(*(expand_sums(q).atoms(sp.Indexed) for q in found if not isinstance(q, sp.Indexed)))
    quantities = sorted((q for q in found if isinstance(q, sp.Indexed) and all(ix.is_Integer for ix in q.indices)), key=sp.default_sort_key)
    rng = random.Random(f"derive:{d.name}:{n}:{sizes}")
    sums: dict = {}
    bad = None
    for _ in range(POINTS):
        progress.update(f"checking every entry for H = {n}")
        field = Field(rng, variables, {})
        for key in c.assumptions:
            for variable, v in setting.constraints[key](n).items():
                field.values[symbolize(variable)] = field(symbolize(v)).v
        derivative, value = gradient(field, loss, parameters, defined)
        values = {(q.base.name, int(q.indices[0])): value[symbolize(q)] if symbolize(q) in value else field.values[symbolize(q)] for q in quantities}
        for p, g in zip(parameters, c.gradient):
            if bad is None and _exact(g, values, sums) != derivative[p]:
                bad = p
    what = ", ".join(f"{k_} = {v}" for k_, v in sizes.items())
    how = f"each of the {len(parameters)} entries, exact arithmetic modulo the 61-bit Mersenne prime at {POINTS} random points, against reverse-mode derivatives of the loss written out from the definitions"
    return [
        Check(f"the gradient for {what}", how, bad is None, f"the entry for {bad} differs" if bad is not None else ""),
        example_check(d),
    ]


# --- the worked example's check ----------------------------------------------------------------------
def example_check(d: Derivation) -> Check:
    """The worked example against central finite differences: a Jacobian's of the function, a
    layer's of the loss in its parameters, a loss's of the loss, written out from its definitions
    (or through log-sum-exp for softmax-ce's own example)."""
    progress.update("checking the worked example")
    c = d.concrete
    ex = c.example
    if isinstance(ex, JacobianExample):
        return jacobian_example_check(ex, c.of)
    if isinstance(ex, LayerExample):
        return layer_example_check(ex)
    return softmax_ce_example_check(ex) if c.of is not None else _defined_example_check(d)


def jacobian_example_check(ex: JacobianExample, of: str) -> Check:
    """Every entry of the example's Jacobian against central differences of the function itself."""
    function = JACOBIANS[of]
    what = "the worked example"
    if isinstance(ex.jacobian, LazyJacobian):
        return _shown_jacobian_check(ex, of)
    method = f"every entry against central finite differences of the {of} (mpmath)"
    with mpmath.workdps(60 + magnitude(ex.logits)):
        zm = [to_mpf(v) for v in ex.logits]
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
                claimed = to_mpf(ex.jacobian[r][col])
                if abs(numeric - claimed) > mpmath.mpf(10) ** -20:
                    return Check(what, method, False, f"entry ({r + 1}, {col + 1}): finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)


def _shown_jacobian_check(ex: JacobianExample, of: str) -> Check:
    """Beyond MATRIX_MOST classes: the probabilities against softmax of the logits, their
    complements against 1 - o, and the entries a document shows (the first three and last two
    rows and columns) and a few drawn at random, each against central differences of the
    function in its logit (moving one logit changes one weight and the total: O(1) per entry)."""
    function = JACOBIANS[of]
    m = ex.jacobian
    n = len(ex.logits)
    what = "the worked example"
    method = f"the outputs against softmax of the logits, and the entries shown and {SAMPLED} drawn at random against central finite differences of the {of} (mpmath)"
    tolerance = mpmath.mpf(10) ** -20
    with mpmath.workdps(60 + magnitude(ex.logits)):
        zm = [to_mpf(v) for v in ex.logits]
        top = max(zm)
        shifted = [v - top for v in zm]
        weights = [mpmath.exp(v) for v in shifted]
        total = mpmath.fsum(weights)
        for r, (w, p, q) in enumerate(zip(weights, m.p, m.q)):
            if abs(w / total - to_mpf(p)) > tolerance or abs(1 - w / total - to_mpf(q)) > tolerance:
                return Check(what, method, False, f"output {r + 1} is not softmax of the logits")
        rng = random.Random(f"derive:{of}:{n}")
        shown = sorted({0, 1, 2, n - 2, n - 1} & set(range(n)))
        entries = [(r, c) for r in shown for c in shown] + [(rng.randrange(n), rng.randrange(n)) for _ in range(SAMPLED)]
        h = mpmath.mpf(10) ** -25
        for r, col in entries:

            def output(dz: mpmath.mpf) -> mpmath.mpf:
                factor = mpmath.exp(dz)
                moved = weights[col] * factor if r == col else weights[r]
                return function.outputs([moved], total - weights[col] + weights[col] * factor, [shifted[r] + (dz if r == col else 0)])[0]

            numeric = central_difference(output, h)
            claimed = to_mpf(m[r][col])
            if abs(numeric - claimed) > tolerance:
                return Check(what, method, False, f"entry ({r + 1}, {col + 1}): finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)


SAMPLED = 8
"""Entries of a large worked Jacobian checked at random beside those a document shows."""
STEPS = tuple(u for u in range(-16, 17) if u)
"""The entries of a random direction for finite differences."""


def softmax_ce_example_check(ex: Example) -> Check:
    """softmax-ce's example: its loss from its probabilities, and its gradient against central
    differences of the loss through log-sum-exp: entry by entry up to EVERY_ENTRY classes,
    beyond along random directions."""
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
        zm, tm, claimed = ([converted[v] if v in converted else converted.setdefault(v, to_mpf(v)) for v in values] for values in (ex.logits, ex.target, ex.gradient))
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
                numeric = central_difference(lambda dz: mass * mpmath.log(total + w[m] * mpmath.expm1(dz)) - tm[m] * dz, h)
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
                numeric = central_difference(lambda s: mass * mpmath.log(total + s * powers[0] + s**2 * powers[1] / 2 + s**3 * powers[2] / 6) - moved * s, h)
                expected = mpmath.fsum(u * sums[u][2] for u in STEPS)
                if abs(numeric - expected) > mpmath.mpf(10) ** -20 * max(1, abs(expected)):
                    return Check(what, method, False, f"along a random direction: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(expected, 15)}")
        direct = mpmath.fsum(-t * mpmath.log(to_mpf(p)) for t, p in zip(tm, ex.probabilities) if t != 0)
        if abs(direct - to_mpf(ex.loss)) > mpmath.mpf(10) ** -20 * max(1, abs(direct)):
            return Check(what, method, False, f"loss {mpmath.nstr(to_mpf(ex.loss), 15)}, but -sum y ln o = {mpmath.nstr(direct, 15)}")
    return Check(what, method, True)


def layer_example_check(ex: LayerExample) -> Check:
    """A dense layer's example, from its inputs and parameters alone: the logits are W x + b, the
    outputs their softmax, the loss -sum y ln o, and every entry of the gradient agrees with
    central differences of that loss in the weight or bias."""
    what = "the worked example"
    method = "logits W x + b, outputs and loss recomputed; every entry of the gradient with respect to the weights and the biases against central finite differences of the loss (mpmath, 60 digits)"
    tolerance = mpmath.mpf(10) ** -20
    with mpmath.workdps(60):
        xs = [to_mpf(v) for v in ex.x]
        tm = [to_mpf(v) for v in ex.target]
        zm = [mpmath.fsum(to_mpf(w) * v for w, v in zip(row, xs)) + to_mpf(b) for row, b in zip(ex.W, ex.b)]
        for r, z_ in enumerate(zm):
            if abs(z_ - to_mpf(ex.logits[r])) > tolerance * max(1, abs(z_)):
                return Check(what, method, False, f"logit {r + 1} is not (W x + b)_{r + 1}")
        top = max(zm)
        weights = [mpmath.exp(v - top) for v in zm]
        total = mpmath.fsum(weights)
        for r, w in enumerate(weights):
            if abs(w / total - to_mpf(ex.probabilities[r])) > tolerance:
                return Check(what, method, False, f"output {r + 1} is not softmax of the logits")
        mass = mpmath.fsum(tm)
        base = mpmath.fsum(t * z_ for t, z_ in zip(tm, zm))
        loss = mass * (top + mpmath.log(total)) - base
        if abs(loss - to_mpf(ex.loss)) > tolerance * max(1, abs(loss)):
            return Check(what, method, False, f"loss {mpmath.nstr(to_mpf(ex.loss), 15)}, but -sum y ln o = {mpmath.nstr(loss, 15)}")
        h = mpmath.mpf(10) ** -25

        def moved(r: int, dz: mpmath.mpf) -> mpmath.mpf:
            # Moving z_r by dz multiplies its weight e^{z_r - top} by e^{dz}: each side costs O(1).
            return mass * (top + mpmath.log(total + weights[r] * mpmath.expm1(dz))) - base - tm[r] * dz

        entries = [((r, col), xs[col], ex.gradient_W[r][col]) for r in range(len(zm)) for col in range(len(xs))]
        entries += [((r,), mpmath.mpf(1), ex.gradient_b[r]) for r in range(len(zm))]
        for where, slope, claimed in entries:
            # A weight W_rd moves z_r by h x_d, the bias b_r by h.
            numeric = central_difference(lambda dz: moved(where[0], dz * slope), h)
            if abs(numeric - to_mpf(claimed)) > tolerance:
                name = f"dE/dW_{where[0] + 1},{where[1] + 1}" if len(where) == 2 else f"dE/db_{where[0] + 1}"
                return Check(what, method, False, f"{name}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(to_mpf(claimed), 15)}")
    return Check(what, method, True)


def _defined_example_check(d: Derivation) -> Check:
    """A loss's example from its definitions: its gradient against central differences of its
    loss, written out from the definitions; the loss, and the example's own numbers named after a definition (a smoothed
    target), against the definitions evaluated directly."""
    c = d.concrete
    ex = c.example
    n = c.classes
    fixed = dict(c.parameters)
    what = "the worked example"
    intermediates = {s: v.xreplace(fixed) for s, v in _intermediates(d.setting, n).items()}
    loss = _written(d.setting, d.subject.expr, n, 1, fixed)
    given = Inputs(n, ex.logits, ex.target, ex.given)
    # The step is a small part of the smallest scale of the inputs: a temperature of 1e-20 makes
    # the loss vary over logits 1e-20 apart. The precision covers the outputs (see
    # working_digits), the size of the largest logit that z +- h must keep, and the step.
    with mpmath.workdps(20):
        scale = min([mpmath.mpf(1)] + [abs(to_mpf(v)) for v in (*ex.logits, *fixed.values()) if v.is_number and v != 0])
    digits = working_digits(d.setting, given, intermediates) + magnitude(ex.logits) + int(-mpmath.log10(scale))
    method = f"gradient against central finite differences of the loss (mpmath, {digits} digits); loss against its definition"
    with mpmath.workdps(digits):
        point = _point(d.setting, given)
        variables = [v for v in point if str(v).startswith(str(d.setting.wrt.base))][:n]
        h = mpmath.mpf(10) ** -25 * scale
        base: dict = {}

        def loss_at(moves: Mapping[sp.Basic, mpmath.mpf]) -> mpmath.mpf:
            """The loss with each variable of ``moves`` moved by its amount."""
            moved = point | {x: point[x] + dz for x, dz in moves.items()}
            return evaluate_shared(loss, _with_defined(moved, intermediates, {}), {})

        value = evaluate_shared(loss, _with_defined(point, intermediates, base), base)
        if abs(value - to_mpf(ex.loss)) > mpmath.mpf(10) ** -20 * max(1, abs(value)):
            return Check(what, method, False, f"loss {mpmath.nstr(to_mpf(ex.loss), 15)}, but the definition gives {mpmath.nstr(value, 15)}")
        # The example's own numbers named after a definition (the smoothed target) are its values.
        own = [(x, v) for key, v in ex.extra for x in d.setting.definitions if x.key == key and isinstance(x.symbol, sp.Indexed)]
        if own:
            method += f"; {', '.join(x.key.replace('_', ' ') for x, _ in own)} against the definition"
        for x, numbers_ in own:
            for m, v in enumerate(numbers_, 1):
                defined = evaluate_shared(intermediates[symbolize(x.symbol.base[m])], point, base)
                if abs(defined - to_mpf(v)) > mpmath.mpf(10) ** -20 * max(1, abs(defined)):
                    return Check(what, method, False, f"{x.key.replace('_', ' ')} {m}: {mpmath.nstr(to_mpf(v), 15)}, but the definition gives {mpmath.nstr(defined, 15)}")
        # Taken after the example's own numbers, whose evaluation adds sub-terms (one class's
        # smoothed target adds its epsilon / 1).
        if n > EVERY_ENTRY_DEFINED:
            # Each entry moves the loss on its own; along a random direction they move it
            # together, and a wrong entry moves the product (no entry of the direction is 0).
            method = method.replace("gradient against", f"gradient along {directions.DIRECTIONS} random directions against")
            rng = random.Random(f"derive:example:{n}")
            claimed = [to_mpf(g) for g in ex.gradient]
            for _ in range(directions.DIRECTIONS):
                v = [rng.choice(STEPS) for _ in range(n)]
                numeric = central_difference(lambda s: loss_at({variable: s * u for variable, u in zip(variables, v)}), h)
                expected = mpmath.fsum(g * u for g, u in zip(claimed, v))
                if abs(numeric - expected) > mpmath.mpf(10) ** -20 * max(1, abs(expected)):
                    return Check(what, method, False, f"along a random direction: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(expected, 15)}")
            return Check(what, method, True)
        for m, variable in enumerate(variables):
            numeric = central_difference(lambda s: loss_at({variable: s}), h)
            claimed = to_mpf(ex.gradient[m])
            if abs(numeric - claimed) > mpmath.mpf(10) ** -20 * max(1, abs(claimed)):
                return Check(what, method, False, f"class {m + 1}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)
