"""Any loss derivation for a concrete number of classes, from its definitions alone.

A derivation whose subject is dE/dz_k gets its appendix here: the error written out, the
Jacobian of the outputs, the gradient vector, a worked example, and the checks of all of them.
Nothing is taken from the steps except the result being checked:

- the worked example's outputs and loss are the definitions evaluated with mpmath at 60 digits;
  its gradient is the derived result, checked against central differences of the loss;
- every gradient entry and every Jacobian entry is checked exactly, in arithmetic modulo a prime,
  against forward-mode derivatives of the written-out loss and outputs (see :class:`Dual`).

The softmax-CE derivation has hand-written counterparts of these in :mod:`derive.concrete`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import mpmath
import sympy as sp

from derive.concrete import DIGITS, PRIME, _default_logits, _entry, _inverse, _one_hot, classes_of, exact_value, normalised, numbers
from derive import progress
from derive.errors import UsageError
from derive.model import Concrete, Definition, Derivation, Example, RuleMatrix
from derive.setting import Setting, expand_sums
from derive.symbols import k

POINTS = 2
"""Random points for the exact checks."""
WORKING = DIGITS + 30
"""Digits the example is computed with; it is stored with DIGITS."""


@dataclass(frozen=True)
class Inputs:
    """A worked example's numbers, validated before any symbolic work."""

    classes: int
    logits: tuple[sp.Expr, ...]
    target: tuple[sp.Expr, ...]
    given: bool


def inputs(classes: object, logits: Sequence | None, target: Sequence | None) -> Inputs | None:
    """Validate --classes, --logits and --target; None when H stays symbolic."""
    if classes is None:
        if logits is not None or target is not None:
            raise UsageError("--logits and --target need --classes: the worked example is for a concrete number of classes")
        return None
    n = classes_of(classes)
    z_ = numbers(logits, "--logits", n) if logits is not None else _default_logits(n)
    t_ = numbers(target, "--target", n) if target is not None else _one_hot(n)
    if any(t < 0 for t in t_):
        raise UsageError("--target entries must not be negative (they are probabilities)")
    if sum(t_) == 0:
        raise UsageError("--target must not be all zeros: a target is a distribution over the classes")
    return Inputs(n, tuple(z_), tuple(t_), logits is not None or target is not None)


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
    fixed_h = {setting.classes: sp.Integer(n), **fixed}
    gradient = tuple(_at(formula, m, fixed_h) for m in range(1, n + 1))
    written = _written_out(loss.value, setting.classes, n, fixed)
    example = _example(given, setting, loss, formula, fixed, extra)
    return Concrete(classes=n, loss=written, jacobian=jacobian, gradient=gradient, example=example, of=None, parameters=tuple(fixed.items()), assumptions=assumptions)


def _at(e: sp.Expr, m: int, fixed: dict) -> sp.Expr:
    return e.xreplace({k: sp.Integer(m), **fixed})


def _written_out(value: sp.Expr, classes: sp.Symbol, n: int, fixed: dict) -> sp.Expr:
    """The loss with its sum written out term by term, unevaluated (a factor in front stays)."""
    value = value.xreplace({classes: sp.Integer(n), **fixed})

    def terms(s: sp.Sum) -> sp.Expr:
        idx, lo, hi = s.limits[0]
        return sp.Add(*[s.function.xreplace({idx: sp.Integer(v)}) for v in range(int(lo), int(hi) + 1)], evaluate=False)

    if isinstance(value, sp.Sum):
        return terms(value)
    if isinstance(value, sp.Mul) and any(isinstance(a, sp.Sum) for a in value.args):
        return sp.Mul(*[terms(a) if isinstance(a, sp.Sum) else a for a in value.args], evaluate=False)
    return expand_sums(value)


# --- the worked example ----------------------------------------------------------------------------
def _written(setting: Setting, e: sp.Expr, n: int, index: int, fixed: dict, intermediates: dict) -> sp.Expr:
    from derive.verify import instantiate

    return instantiate(setting, e.xreplace(fixed), n, (index,) * len(setting.indices), (), intermediates).xreplace(fixed)


def _example(given: Inputs, setting: Setting, loss: Definition, formula: sp.Expr, fixed: dict, extra) -> Example:
    from derive.verify import intermediate_values, symbolize

    n = given.classes
    intermediates = {s: v.xreplace(fixed) for s, v in intermediate_values(setting, n).items()}
    with mpmath.workdps(WORKING):
        point = _point(setting, given)
        memo: dict = {}
        outputs = [_eval(intermediates[symbolize(setting.intermediates[0][m])], point, memo) for m in range(1, n + 1)]
        value = _eval(_written(setting, loss.symbol, n, 1, fixed, intermediates), point, memo)
        gradient = [_eval(_written(setting, formula, n, m, fixed, intermediates), point, memo) for m in range(1, n + 1)]
        numbers_ = {"outputs": outputs, "loss": value, "gradient": gradient, "point": point, "memo": memo, "intermediates": intermediates}
        more = extra(numbers_) if extra else ()
    f = lambda v: sp.Float(v, DIGITS)
    return Example(
        logits=given.logits,
        target=given.target,
        probabilities=tuple(map(f, outputs)),
        loss=f(value),
        gradient=tuple(map(f, gradient)),
        given=given.given,
        extra=tuple((key, tuple(map(f, v)) if isinstance(v, (list, tuple)) else f(v) if isinstance(v, mpmath.mpf) else v) for key, v in more),
    )


def _point(setting: Setting, given: Inputs) -> dict[sp.Basic, mpmath.mpf]:
    from derive.verify import symbolize
    from derive.symbols import y

    point = {}
    for m in range(1, given.classes + 1):
        point[symbolize(setting.wrt.base[m])] = _entry(given.logits[m - 1])
        point[symbolize(y[m])] = _entry(given.target[m - 1])
    return point


def _eval(e: sp.Basic, point: dict, memo: dict) -> mpmath.mpf:
    """Evaluate with mpmath, each distinct sub-term once (the softmax denominator is shared by
    every output, so this keeps a written-out loss linear in H)."""
    if e in point:
        return point[e]
    if e in memo:
        return memo[e]
    if e.is_Number:
        out = mpmath.mpf(e.p) / e.q if e.is_Rational else mpmath.mpf(str(e))
    elif isinstance(e, sp.Add):
        out = mpmath.fsum(_eval(a, point, memo) for a in e.args)
    elif isinstance(e, sp.Mul):
        out = mpmath.fprod(_eval(a, point, memo) for a in e.args)
    elif isinstance(e, sp.Pow):
        out = mpmath.power(_eval(e.base, point, memo), _eval(e.exp, point, memo))
    elif isinstance(e, sp.exp):
        out = mpmath.exp(_eval(e.args[0], point, memo))
    elif isinstance(e, sp.log):
        out = mpmath.log(_eval(e.args[0], point, memo))
    elif e is sp.E:
        out = mpmath.e
    else:
        raise TypeError(f"cannot evaluate {type(e).__name__} numerically: {sp.sstr(e)}")
    memo[e] = out
    return out


# --- checks ----------------------------------------------------------------------------------------
class Dual:
    """Forward-mode differentiation modulo PRIME: a value and a derivative. The value of a
    logarithm is not in the field; it is ``None`` and only its derivative may be used."""

    __slots__ = ("v", "d")

    def __init__(self, v: int | None, d: int):
        self.v, self.d = v, d

    def add(self, o: "Dual") -> "Dual":
        return Dual(None if self.v is None or o.v is None else (self.v + o.v) % PRIME, (self.d + o.d) % PRIME)

    def mul(self, o: "Dual") -> "Dual":
        if (self.d and o.v is None) or (o.d and self.v is None):
            raise ValueError("the value of a logarithm is not in the field")
        v = None if self.v is None or o.v is None else self.v * o.v % PRIME
        return Dual(v, (self.d * (o.v or 0) + (self.v or 0) * o.d) % PRIME)

    def inverse(self) -> "Dual":
        inv = _inverse(self.v)
        return Dual(inv, -self.d * inv * inv % PRIME)


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
        self.memo: dict[sp.Basic, Dual] = {}

    def differentiate_by(self, variable: sp.Symbol) -> None:
        self.by, self.memo = variable, {}

    def __call__(self, e: sp.Basic) -> Dual:
        if e in self.memo:
            return self.memo[e]
        if e in self.values:
            out = Dual(self.values[e], 1 if e == self.by else 0)
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
    """Every gradient entry and Jacobian entry exactly, then the worked example."""
    from derive.symbols import y
    from derive.verify import Check, intermediate_values, symbolize

    c = d.concrete
    n = c.classes
    setting = d.setting
    fixed = dict(c.parameters)
    assumptions = c.assumptions
    intermediates = {s: v.xreplace(fixed) for s, v in intermediate_values(setting, n).items()}
    loss = _written(setting, d.subject.expr, n, 1, fixed, intermediates)
    logits = [symbolize(setting.wrt.base[m]) for m in range(1, n + 1)]
    targets = [symbolize(y[m]) for m in range(1, n + 1)]
    outputs = [intermediates[symbolize(setting.intermediates[0][m])] for m in range(1, n + 1)]
    rng = random.Random(f"derive:{d.name}:{n}")
    how = f"exact arithmetic modulo the 61-bit Mersenne prime at {POINTS} random points, against forward-mode derivatives of the {{}}"
    bad_gradient = bad_jacobian = None
    for _ in range(POINTS):
        field = Field(rng, logits + targets, {})
        for key in assumptions:
            for variable, value in setting.constraints[key](n).items():
                field.values[symbolize(variable)] = field(symbolize(value)).v
        field.memo = {}
        o_values = {("o", m + 1): field(outputs[m]).v for m in range(n)}
        values = o_values | {("y", m + 1): field.values[targets[m]] for m in range(n)}
        for col in range(n):
            progress.update(f"checking every entry for H = {n}", col + 1, n)
            field.differentiate_by(logits[col])
            if bad_gradient is None and _exact(c.gradient[col], values) != field(loss).d:
                bad_gradient = col + 1
            for r in range(n):
                entry = exact_value(c.jacobian.rule(r, col), values, {c.jacobian.row: r + 1, c.jacobian.col: col + 1})
                if bad_jacobian is None and entry != field(outputs[r]).d:
                    bad_jacobian = (r + 1, col + 1)
    return [
        Check(f"the gradient for H = {n}", f"each of the {n} entries, " + how.format("loss"), bad_gradient is None, f"entry {bad_gradient} differs" if bad_gradient else ""),
        Check(f"the Jacobian for H = {n}", f"each of the {n * n} entries, " + how.format("outputs"), bad_jacobian is None, f"entry {bad_jacobian} differs" if bad_jacobian else ""),
        _example_check_reported(d),
    ]


def _example_check_reported(d: Derivation):
    progress.update("checking the worked example")
    return example_check(d)


def _exact(e: sp.Expr, values: dict) -> int:
    return exact_value(expand_sums(e), values)


def example_check(d: Derivation):
    """The example's gradient against central differences of its loss, written out from the
    definitions; the loss against the definitions evaluated directly."""
    from derive.verify import Check, intermediate_values

    c = d.concrete
    ex = c.example
    n = c.classes
    fixed = dict(c.parameters)
    what = "the worked example"
    method = "gradient against central finite differences of the loss (mpmath, 60 digits); loss against its definition"
    intermediates = {s: v.xreplace(fixed) for s, v in intermediate_values(d.setting, n).items()}
    loss = _written(d.setting, d.subject.expr, n, 1, fixed, intermediates)
    given = Inputs(n, ex.logits, ex.target, ex.given)
    with mpmath.workdps(WORKING):
        point = _point(d.setting, given)
        variables = [v for v in point if str(v).startswith(str(d.setting.wrt.base))][:n]
        h = mpmath.mpf(10) ** -25
        value = _eval(loss, point, {})
        if abs(value - _entry(ex.loss)) > mpmath.mpf(10) ** -20 * max(1, abs(value)):
            return Check(what, method, False, f"loss {mpmath.nstr(_entry(ex.loss), 15)}, but the definition gives {mpmath.nstr(value, 15)}")
        for m, variable in enumerate(variables):
            up, down = dict(point), dict(point)
            up[variable] += h
            down[variable] -= h
            numeric = (_eval(loss, up, {}) - _eval(loss, down, {})) / (2 * h)
            claimed = _entry(ex.gradient[m])
            if abs(numeric - claimed) > mpmath.mpf(10) ** -20 * max(1, abs(claimed)):
                return Check(what, method, False, f"class {m + 1}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)
