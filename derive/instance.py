"""Any loss derivation for a concrete number of classes, from its definitions alone.

A derivation whose subject is dE/dz_k gets its appendix here: the error written out, the
Jacobian of the outputs, the gradient vector, a worked example, and the checks of all of them.
Nothing is taken from the steps except the result being checked:

- the worked example's outputs and loss are the definitions evaluated with mpmath at 60 digits;
  its gradient is the derived result, checked against central differences of the loss;
- every gradient entry and every Jacobian entry is checked exactly, in arithmetic modulo a prime,
  against forward-mode derivatives of the written-out loss and outputs (see :class:`derive.concrete.Dual`).

The softmax-CE derivation has hand-written counterparts of these in :mod:`derive.concrete`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import mpmath
import sympy as sp

from derive.concrete import DIGITS, MOST_DIGITS, PRIME, STEPS, Dual, _default_logits, _entry, _inverse, classes_of, exact_value, example_numbers, magnitude, normalised, settled
from derive import directions, progress
from derive.errors import UsageError
from derive.model import Concrete, Definition, Derivation, Example, LayerExample, RuleMatrix, RuleVector, WrittenOut
from derive.setting import Setting, expand_sums
from derive.verify import evaluate_shared
from derive.symbols import ExcludedSum, k, y

POINTS = 2
"""Random points for the exact checks."""
WORKING = DIGITS + 30
"""Digits the example is computed with; it is stored with DIGITS. Large logits add more (see
:func:`working_digits`), and the numbers are computed again with more until they settle (see
``concrete.settled``)."""


@dataclass(frozen=True)
class Inputs:
    """A worked example's numbers, validated before any symbolic work."""

    classes: int
    logits: tuple[sp.Expr, ...]
    target: tuple[sp.Expr, ...]
    given: tuple[str, ...]
    """The numbers the user supplied, by name ("logits", "target")."""


def inputs(classes: object, logits: Sequence | None, target: Sequence | None) -> Inputs | None:
    """Validate --classes, --logits and --target; None when H stays symbolic."""
    if classes is None:
        if logits is not None or target is not None:
            raise UsageError("--logits and --target need --classes: the worked example is for a concrete number of classes")
        return None
    n = classes_of(classes)
    z_, t_ = example_numbers(n, logits, target)
    return Inputs(n, tuple(z_), tuple(t_), tuple(name for name, v in (("logits", logits), ("target", target)) if v is not None))


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
    written = _written_out(loss.value, setting.classes, n, fixed)
    # The example's numbers come from the form that holds for any target: a target whose entries
    # sum to one only within concrete.NORMALISED_WITHIN still gets the gradient of its own loss.
    example = _example(given, setting, loss, general if general is not None else formula, fixed, extra)
    return Concrete(classes=n, loss=written, jacobian=jacobian, gradient=gradient, example=example, of=None, parameters=tuple(fixed.items()), assumptions=assumptions)


def gradient_vector(formula: sp.Expr, n: int, fixed: dict) -> RuleVector:
    """The result for every class, each entry written when asked for (see :func:`_at`)."""
    sums = {s: s.xreplace(fixed) for s in formula.atoms(sp.Sum)}
    return RuleVector(n, k, formula.xreplace(sums).xreplace(fixed), lambda m: _at(formula, m, fixed))


def _at(e: sp.Expr, m: int, fixed: dict) -> sp.Expr:
    """The result for class m, its shape kept: (o_1 - y_1)/2 stays a bracket over 2."""
    from derive.rules import evaluated, rewrite, substitute

    sums = {s: s.xreplace(fixed) for s in e.atoms(sp.Sum)}  # limits sit in a Tuple substitute keeps
    e = substitute(e, {k: sp.Integer(m), **fixed, **sums})
    # Parameters become numbers: (1 - 1/10) is 9/10, (1/10)/3 is 1/30.
    e, _ = rewrite(e, lambda x: not x.is_Atom and x.is_number and not x.has(sp.Sum), evaluated)
    return e


def _written_out(value: sp.Expr, classes: sp.Symbol, n: int, fixed: dict) -> WrittenOut:
    """The loss with its sum written out term by term, unevaluated (a factor in front stays);
    each term is built when asked for."""
    value = value.xreplace({classes: sp.Integer(n), **fixed})

    from derive.rules import substitute  # keeps each term in the definition's order

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
    from derive.verify import instantiate

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
    from derive.verify import _symbol

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
            return _symbol(x.xreplace({idx: m}))
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
    from derive.verify import intermediate_values

    key = (id(setting), n)
    if key not in _WRITTEN or _WRITTEN[key][0] is not setting:
        _WRITTEN[key] = (setting, intermediate_values(setting, n))
    return _WRITTEN[key][1]


def _with_defined(point: dict, intermediates: Mapping[sp.Symbol, sp.Expr], memo: dict) -> dict:
    """The point and every intermediate entry (o_m, a smoothed target y'_m) evaluated there."""
    return point | {s: evaluate_shared(v, point, memo) for s, v in intermediates.items()}


def _example(given: Inputs, setting: Setting, loss: Definition, formula: sp.Expr, fixed: dict, extra) -> Example:
    from derive.verify import intermediate_values, symbolize

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
    must keep its DIGITS after that. More than ``concrete.MOST_DIGITS`` is refused."""
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
    from derive.verify import symbolize

    point = {}
    for m in range(1, given.classes + 1):
        point[symbolize(setting.wrt.base[m])] = _entry(given.logits[m - 1])
        point[symbolize(y[m])] = _entry(given.target[m - 1])
    return point


# --- checks ----------------------------------------------------------------------------------------
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
    """Every gradient entry and Jacobian entry exactly, along random directions (see
    :mod:`derive.directions`), then the worked example."""
    from derive.verify import Check, intermediate_values, symbolize

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
        _example_check_reported(d),
    ]


def _example_check_reported(d: Derivation):
    progress.update("checking the worked example")
    return example_check(d)


def _exact(e: sp.Expr, values: dict, sums: dict) -> int:
    """An entry modulo PRIME; each distinct sum in the entries is written out once (``sums``)."""
    if not e.has(sp.Sum, ExcludedSum):
        return exact_value(e, values)
    for s in e.atoms(sp.Sum, ExcludedSum) - sums.keys():
        sums[s] = expand_sums(s)
    found = {s: sums[s] for s in e.atoms(sp.Sum, ExcludedSum)}
    return exact_value(e.xreplace(found), values)


def example_check(d: Derivation):
    """The example's gradient against central differences of its loss, written out from the
    definitions; the loss, and the example's own numbers named after a definition (a smoothed
    target), against the definitions evaluated directly."""
    from derive.verify import Check, intermediate_values, symbolize

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
        scale = min([mpmath.mpf(1)] + [abs(_entry(v)) for v in (*ex.logits, *fixed.values()) if v.is_number and v != 0])
    digits = working_digits(d.setting, given, intermediates) + magnitude(ex.logits) + int(-mpmath.log10(scale))
    method = f"gradient against central finite differences of the loss (mpmath, {digits} digits); loss against its definition"
    with mpmath.workdps(digits):
        point = _point(d.setting, given)
        variables = [v for v in point if str(v).startswith(str(d.setting.wrt.base))][:n]
        h = mpmath.mpf(10) ** -25 * scale
        base: dict = {}
        value = evaluate_shared(loss, _with_defined(point, intermediates, base), base)
        if abs(value - _entry(ex.loss)) > mpmath.mpf(10) ** -20 * max(1, abs(value)):
            return Check(what, method, False, f"loss {mpmath.nstr(_entry(ex.loss), 15)}, but the definition gives {mpmath.nstr(value, 15)}")
        # The example's own numbers named after a definition (the smoothed target) are its values.
        own = [(x, v) for key, v in ex.extra for x in d.setting.definitions if x.key == key and isinstance(x.symbol, sp.Indexed)]
        if own:
            method += f"; {', '.join(x.key.replace('_', ' ') for x, _ in own)} against the definition"
        for x, numbers_ in own:
            for m, v in enumerate(numbers_, 1):
                defined = evaluate_shared(intermediates[symbolize(x.symbol.base[m])], point, base)
                if abs(defined - _entry(v)) > mpmath.mpf(10) ** -20 * max(1, abs(defined)):
                    return Check(what, method, False, f"{x.key.replace('_', ' ')} {m}: {mpmath.nstr(_entry(v), 15)}, but the definition gives {mpmath.nstr(defined, 15)}")
        # Taken after the example's own numbers, whose evaluation adds sub-terms (one class's
        # smoothed target adds its epsilon / 1).
        if n > EVERY_ENTRY:
            # Each entry moves the loss on its own; along a random direction they move it
            # together, and a wrong entry moves the product (no entry of the direction is 0).
            method = method.replace("gradient against", f"gradient along {directions.DIRECTIONS} random directions against")
            rng = random.Random(f"derive:example:{n}")
            claimed = [_entry(g) for g in ex.gradient]
            for _ in range(directions.DIRECTIONS):
                v = [rng.choice(STEPS) for _ in range(n)]
                up, down = dict(point), dict(point)
                for variable, u in zip(variables, v):
                    up[variable] += h * u
                    down[variable] -= h * u
                numeric = (evaluate_shared(loss, _with_defined(up, intermediates, {}), {}) - evaluate_shared(loss, _with_defined(down, intermediates, {}), {})) / (2 * h)
                expected = mpmath.fsum(g * u for g, u in zip(claimed, v))
                if abs(numeric - expected) > mpmath.mpf(10) ** -20 * max(1, abs(expected)):
                    return Check(what, method, False, f"along a random direction: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(expected, 15)}")
            return Check(what, method, True)
        for m, variable in enumerate(variables):
            up, down = dict(point), dict(point)
            up[variable] += h
            down[variable] -= h
            numeric = (evaluate_shared(loss, _with_defined(up, intermediates, {}), {}) - evaluate_shared(loss, _with_defined(down, intermediates, {}), {})) / (2 * h)
            claimed = _entry(ex.gradient[m])
            if abs(numeric - claimed) > mpmath.mpf(10) ** -20 * max(1, abs(claimed)):
                return Check(what, method, False, f"class {m + 1}: finite differences {mpmath.nstr(numeric, 15)}, example {mpmath.nstr(claimed, 15)}")
    return Check(what, method, True)


EVERY_ENTRY = 64
"""Up to this many classes the example's gradient is checked entry by entry (each costs a pass
over the loss); beyond, along random directions (see ``concrete.STEPS``)."""


# --- a dense layer before the loss: the gradient with respect to its parameters ---------------------
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
    from derive.verify import symbolize

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
        point = {symbolize(y[r + 1]): _entry(given.target[r]) for r in range(n)}
        point |= {symbolize(x[col + 1]): _entry(xs[col]) for col in range(inputs)}
        point |= {symbolize(W[r + 1, col + 1]): _entry(ws[r][col]) for r in range(n) for col in range(inputs)}
        point |= {symbolize(b[r + 1]): _entry(bs[r]) for r in range(n)}
        memo: dict = {}
        for symbol, definition in defined.items():  # each level after the one it is defined through
            point[symbol] = evaluate_shared(definition, point, memo)
        outputs = [point[symbolize(s.intermediates[0][r])] for r in range(1, n + 1)]
        value = evaluate_shared(loss, point, memo)
        # The derived formulas at these numbers: o_k, y_k and x_d stand for their values.
        at = _by_entry(point, n, inputs, s, x)
        numbers_ = [evaluate_shared(expand_sums(g) if g.has(sp.Sum) else g, at, {}) for g in gradient_]
    f = lambda v: sp.Float(v, DIGITS)
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


def parameter_checks(d: Derivation) -> list:
    """A layer's gradient for a concrete H and D: every entry (dE/dW_kd and dE/db_k) exactly,
    modulo PRIME at random points, against reverse-mode derivatives of the loss written out from
    the definitions; then the worked example (see ``derive.concrete.EXAMPLE_CHECKS``)."""
    from derive.concrete import EXAMPLE_CHECKS
    from derive.verify import Check, symbolize

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
    progress.update("checking the worked example")
    return [
        Check(f"the gradient for {what}", how, bad is None, f"the entry for {bad} differs" if bad is not None else ""),
        EXAMPLE_CHECKS[type(c.example)](c.example, c.of),
    ]


def written_loss(setting: Setting, loss: sp.Expr, sizes: Mapping[sp.Symbol, int]) -> tuple[sp.Expr, dict[sp.Symbol, sp.Expr]]:
    """The loss written out in the entries of the last intermediates (E in o_1..o_H), and every
    intermediate entry by its definition, in an order where each follows those it names."""
    from derive.verify import instantiate, written_definitions

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
    from derive.verify import symbolize

    names = [b[m] for b in (s.intermediates[0], y) for m in range(1, n + 1)] + [x[m] for m in range(1, inputs + 1)]
    return point | {q: point[symbolize(q)] for q in names}
