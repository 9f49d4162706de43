"""Verification: every step is a claim ``lhs = rhs``; here each claim must survive every check.

- exact: for H = 1..6 and every value of each free index (k, and i for a Jacobian), the sums are
  written out, the definitions substituted and the derivatives evaluated; lhs - rhs must cancel to
  exactly 0 under the step's assumptions. A further limit (the inputs D of a layer, see
  ``Setting.ranges``) takes small values beside H (:func:`extents`);
- a case split: each case where its condition holds, and every index value covered by a case;
- numeric: the same instances at random points with mpmath at 30 digits;
- the result against central finite differences of the differentiated function itself, computed
  from the definitions and never from a step;
- for a concrete H, every gradient and Jacobian entry exactly, and the worked example.

A failed check raises :class:`~derive.errors.VerificationError` naming the step and the instance.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping

import mpmath
import sympy as sp

from derive import progress
from derive.errors import VerificationError
from derive.model import Claim, Comparison, Derivation, Step
from derive.setting import Setting, expand_sums
from derive.symbols import ExcludedSum, y

SIZES = range(1, 7)
"""The class counts a symbolic-H claim is written out for."""
OTHER_SIZES = (1, 2)
"""The values a further limit (the number of inputs D of a layer) takes beside each H: see
:func:`extents`."""
DIGITS = 30
TOLERANCE = mpmath.mpf(10) ** -(DIGITS - 5)
POINTS = 2
"""Random points per class count in the numeric check."""
SEED = 20240601
"""Random points are drawn from a fixed seed: the same derivation is checked the same way."""


@dataclass(frozen=True)
class Check:
    """One verification that ran, and how."""

    what: str
    method: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Report:
    """What :func:`check` verified."""

    name: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def __str__(self) -> str:
        lines = [f"{self.name}: {sum(c.passed for c in self.checks)}/{len(self.checks)} checks passed"]
        lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.what}: {c.method}{' - ' + c.detail if c.detail else ''}" for c in self.checks]
        return "\n".join(lines)


def check(d: Derivation) -> Report:
    """Verify a derivation and its further parts; raise VerificationError on the first failed check."""
    checks = symbolic_checks(d)
    for part in d.parts:
        checks.extend(replace(c, what=f"{part.name}: {c.what}") for c in symbolic_checks(part))
    if d.concrete is not None:
        from derive.concrete import checks as concrete_checks

        checks.extend(_passed(d, concrete_checks(d)))
    return Report(d.name, tuple(checks))


def _passed(d: Derivation, checks: Iterable[Check]) -> Iterator[Check]:
    """Stop at the first failed check: what comes after a wrong step proves nothing."""
    for c in checks:
        if not c.passed:
            raise VerificationError(f"{d.name}: {c.what} failed ({c.method}): {c.detail}")
        yield c


def symbolic_checks(d: Derivation) -> list[Check]:
    """The symbolic-H checks; they do not depend on the class count or the example, so a passed
    result is cached (see :mod:`derive.cache`)."""
    from derive import cache

    claims = (d.pitfall.claims if d.pitfall else ()) + (d.counterexample.claims if d.counterexample else ())
    numbers = [(d.counterexample.shortcut, [(c.key, c.example.logits, c.example.target, c.example.probabilities, c.example.loss, c.example.gradient, c.shortcut) for c in d.counterexample.comparisons])] if d.counterexample else []
    k = cache.key(
        d.name,
        d.subject,
        [(s.rule, s.lhs, s.rhs, s.assumptions, s.identity, [(c.condition, c.value) for c in s.cases]) for s in d.steps],
        [(c.key, c.equation, c.holds, c.assumptions, [(x.symbol, x.value) for x in c.setting.definitions]) for c in claims],
        [(x.symbol, x.value) for x in d.setting.definitions],
        d.setting.wrt,
        d.setting.indices,
        sorted(d.setting.constraints),
        sorted(d.setting.ranges.items(), key=str),
        *numbers,
    )
    rows = cache.cached(k, lambda: [c.__dict__ for c in _passed(d, _symbolic(d))])
    return [Check(**row) for row in rows]


def _symbolic(d: Derivation) -> Iterator[Check]:
    cases = Instances(d.setting)
    yield _chain(d)
    for n, step in enumerate(d.steps, 1):
        progress.update("verifying step", n, len(d.steps))
        yield _exact(cases, step, n)
        yield _numeric(cases, step, n)
        if step.cases and step.identity is not None:
            yield _cases(d.setting, step, n)
    progress.update("checking the result against finite differences")
    yield _finite_differences(d, cases)
    if d.pitfall is not None:
        shared: dict[int, Instances] = {}
        for claim in d.pitfall.claims:
            yield _claim(claim, shared.setdefault(id(claim.setting), Instances(claim.setting)))
    if d.counterexample is not None:
        shared = {}
        for claim in d.counterexample.claims:
            yield _claim(claim, shared.setdefault(id(claim.setting), Instances(claim.setting)), "counterexample")
        for comparison in d.counterexample.comparisons:
            yield _comparison(d, comparison)


# --- the checks ---------------------------------------------------------------------------------
def _chain(d: Derivation) -> Check:
    """Each step starts where the previous one ended, and the first starts at the subject."""
    previous = d.subject
    for n, step in enumerate(d.steps, 1):
        if step.lhs != previous:
            return Check("the steps form a chain", "each lhs is the previous rhs", False, f"step {n} ({step.rule}) starts elsewhere")
        previous = step.rhs
    return Check("the steps form a chain", "each lhs is the previous rhs", True)


def _exact(cases: "Instances", step: Step, n: int) -> Check:
    what = f"step {n} ({step.rule})"
    method = f"exact, H = {SIZES[0]}..{SIZES[-1]}{_beside(cases.setting)}, every {_names(cases.setting)}"
    for size in SIZES:
        for index in assignments(cases.setting, size):
            diff = cases.get(step.lhs, size, index, step.assumptions) - cases.get(step.rhs, size, index, step.assumptions)
            if not is_zero(diff, cases.setting):
                return Check(what, method, False, f"lhs - rhs = {sp.sstr(diff)} at {_sizes(cases.setting, size)}, {_where(cases.setting, index)}")
    return Check(what, method, True)


def _cases(setting: Setting, step: Step, n: int) -> Check:
    """A case split: the identity holds, each case's value holds where its condition does, and
    every choice of the indices falls under some case (a dropped case leaves some uncovered)."""
    what = f"step {n} ({step.rule}): the cases"
    lhs, rhs = step.identity.args
    limits = {setting.classes, *setting.ranges.values()}
    free = sorted({s for s in lhs.free_symbols | rhs.free_symbols if isinstance(s, sp.Symbol) and s.is_integer} - limits - {setting.index}, key=str)
    split = replace(setting, outer=tuple(free))
    cases = Instances(split)
    method = f"exact, H = {SIZES[0]}..{SIZES[-1]}{_beside(split)}, every {_names(split)}: each case where its condition holds, every choice covered"
    for size in SIZES:
        for index in assignments(split, size):
            fix = dict(zip(split.indices, map(sp.Integer, index)))
            where = f"{_sizes(split, size)}, {_where(split, index)}"
            value = cases.get(lhs, size, index, step.assumptions)
            if not is_zero(value - cases.get(rhs, size, index, step.assumptions), split):
                return Check(what, method, False, f"the identity fails at {where}")
            holding = [c for c in step.cases if bool(c.condition.xreplace(fix))]
            if not holding:
                return Check(what, method, False, f"no case covers {where}")
            for c in holding:
                if not is_zero(value - cases.get(c.value, size, index, step.assumptions), split):
                    return Check(what, method, False, f"the case {sp.sstr(c.condition)} is wrong at {where}")
    return Check(what, method, True)


def _numeric(cases: "Instances", step: Step, n: int) -> Check:
    what = f"step {n} ({step.rule})"
    method = f"mpmath at {DIGITS} digits, {POINTS} random points for each H = 2..{SIZES[-1]}"
    rng = random.Random(f"{SEED}:{n}")
    for size in SIZES[1:]:
        index = tuple(rng.randint(1, _extent(cases.setting, ix, size)) for ix in cases.setting.indices)
        lhs = cases.get(step.lhs, size, index, step.assumptions)
        rhs = cases.get(step.rhs, size, index, step.assumptions)
        for _ in range(POINTS):
            point = random_point(lhs.free_symbols | rhs.free_symbols, rng)
            a, b = evaluate(lhs, point), evaluate(rhs, point)
            if abs(a - b) > TOLERANCE * max(1, abs(a)):
                return Check(what, method, False, f"lhs = {mpmath.nstr(a, 12)}, rhs = {mpmath.nstr(b, 12)} at {_sizes(cases.setting, size)}, {_where(cases.setting, index)}")
    return Check(what, method, True)


def _finite_differences(d: Derivation, cases: "Instances") -> Check:
    """The result against central differences of the differentiated function (the loss, or the
    output of a Jacobian), written out from the definitions."""
    setting = d.setting
    what = "the result"
    method = f"central finite differences of the differentiated function itself, mpmath at {DIGITS} digits, H = 1..{SIZES[-1]}"
    assumptions = tuple(a.key for a in d.assumptions)
    rng = random.Random(f"{SEED}:result")
    loss = d.subject.expr
    wrt = setting.wrt
    h = mpmath.mpf(10) ** -12
    with mpmath.workdps(DIGITS + 20):
        for size in SIZES:
            for index in assignments(setting, size):
                f = cases.get(loss, size, index, assumptions)
                g = cases.get(d.result.rhs, size, index, assumptions)
                variable = symbolize(wrt.xreplace(dict(zip(setting.indices, map(sp.Integer, index)))))
                point = random_point(f.free_symbols | g.free_symbols | {variable}, rng)
                up, down = dict(point), dict(point)
                up[variable] += h
                down[variable] -= h
                numeric = (evaluate(f, up) - evaluate(f, down)) / (2 * h)
                claimed = evaluate(g, point)
                if abs(numeric - claimed) > mpmath.mpf(10) ** -15 * max(1, abs(claimed)):
                    return Check(what, method, False, f"finite differences give {mpmath.nstr(numeric, 12)}, the result {mpmath.nstr(claimed, 12)} at {_sizes(setting, size)}, {_where(setting, index)}")
    return Check(what, method, True)


def _claim(claim: Claim, cases: "Instances", section: str = "pitfall") -> Check:
    """A claim that holds must hold exactly for H = 1..6; one that does not must fail somewhere."""
    lhs, rhs = claim.equation.args
    failures = (
        (size, index)
        for size in SIZES
        for index in assignments(claim.setting, size)
        if not is_zero(cases.get(lhs, size, index, claim.assumptions) - cases.get(rhs, size, index, claim.assumptions), claim.setting)
    )
    failures = list(itertools.islice(failures, 1))
    if claim.holds:
        detail = f"fails at H = {failures[0][0]}, {_where(claim.setting, failures[0][1])}" if failures else ""
        return Check(f"{section}: {claim.key} holds", f"exact, H = {SIZES[0]}..{SIZES[-1]}, every index", not failures, detail)
    return Check(f"{section}: {claim.key} is wrong", f"exact, H = {SIZES[0]}..{SIZES[-1]}, every index", bool(failures), "" if failures else "it holds everywhere")


def _comparison(d: Derivation, comparison: Comparison) -> Check:
    """A counterexample's numbers, exactly: the outputs are softmax of the logits, the loss is its
    definition and each gradient entry the derivative of the loss written out from the
    definitions (never a step), each shortcut entry is the tempting formula at these outputs,
    and the shortcut differs from the gradient in some entry."""
    ex = comparison.example
    n = len(ex.logits)
    setting = d.setting
    what = f"counterexample: the numbers of the {comparison.key} example"
    method = "exact: outputs, loss and every gradient entry from the definitions at these logits, the shortcut at these outputs"
    fix = {symbolize(setting.wrt.base[m + 1]): ex.logits[m] for m in range(n)} | {symbolize(y[m + 1]): ex.target[m] for m in range(n)}
    values = intermediate_values(setting, n)
    loss = instantiate(setting, d.subject.expr, n, (1,) * len(setting.indices), (), values)
    outputs = [values[symbolize(setting.intermediates[0][m + 1])] for m in range(n)]

    def same(a: sp.Expr, b: sp.Expr) -> bool:
        return sp.simplify(sp.expand_log(sp.sympify(a) - b, force=True)) == 0

    for m in range(n):
        if not same(outputs[m].xreplace(fix), ex.probabilities[m]):
            return Check(what, method, False, f"output {m + 1} is not softmax of the logits")
    if not same(loss.xreplace(fix), ex.loss):
        return Check(what, method, False, "the loss differs from its definition")
    at_outputs = {setting.intermediates[0][m + 1]: ex.probabilities[m] for m in range(n)} | {y[m + 1]: ex.target[m] for m in range(n)}
    for m in range(n):
        variable = symbolize(setting.wrt.base[m + 1])
        if not same(sp.diff(loss, variable).xreplace(fix), ex.gradient[m]):
            return Check(what, method, False, f"gradient entry {m + 1} differs from the derivative of the loss")
        formula = d.counterexample.shortcut.xreplace({setting.index: sp.Integer(m + 1), setting.classes: sp.Integer(n)}).doit()
        if not same(formula.xreplace(at_outputs), comparison.shortcut[m]):
            return Check(what, method, False, f"shortcut entry {m + 1} is not the formula at these outputs")
    if all(same(a, b) for a, b in zip(ex.gradient, comparison.shortcut)):
        return Check(what, method, False, "the shortcut agrees with the gradient everywhere: no counterexample")
    return Check(what, method, True)


# --- writing a claim out for a concrete H ------------------------------------------------------
def extents(setting: Setting, size: "int | Mapping[sp.Symbol, int]") -> dict[sp.Symbol, sp.Integer]:
    """The value of each limit: H = size, and each further limit of ``setting.ranges`` (sorted by
    name) a small value from OTHER_SIZES that changes with H and differs between limits, so that
    H = 1..6 meets several values of each and a sum over the wrong range shows. A mapping gives
    every value itself (a concrete instance: H = 3 classes, D = 2 inputs)."""
    if isinstance(size, Mapping):
        return {s: sp.Integer(v) for s, v in size.items()}
    out = {setting.classes: sp.Integer(size)}
    further = sorted({v for v in setting.ranges.values() if v != setting.classes and not v.is_Integer}, key=str)
    for n, limit in enumerate(further):
        out[limit] = sp.Integer(OTHER_SIZES[(size + n) % len(OTHER_SIZES)])
    return out


def _extent(setting: Setting, index: sp.Symbol, size: "int | Mapping[sp.Symbol, int]") -> int:
    limit = setting.limit(index)
    return int(limit) if limit.is_Integer else int(extents(setting, size)[limit])


def _beside(setting: Setting) -> str:
    """How the further limits were chosen, for a check's method: " with D = 1, 2 beside H"."""
    further = sorted(set(extents(setting, SIZES[0])) - {setting.classes}, key=str)
    if not further:
        return ""
    values = ", ".join(map(str, OTHER_SIZES))
    return f" with {' and '.join(map(str, further))} = {values} in turn beside H"


def _sizes(setting: Setting, size: "int | Mapping[sp.Symbol, int]") -> str:
    return ", ".join(f"{s} = {v}" for s, v in extents(setting, size).items())


def assignments(setting: Setting, size: "int | Mapping[sp.Symbol, int]") -> Iterator[tuple[int, ...]]:
    """Every choice of values for the setting's free indices, each over its range (1..H)."""
    return itertools.product(*(range(1, _extent(setting, ix, size) + 1) for ix in setting.indices))


def _values(setting: Setting, index: "int | tuple[int, ...]") -> dict[sp.Symbol, sp.Integer]:
    values = (index,) if isinstance(index, int) else tuple(index)
    if len(values) != len(setting.indices):
        raise ValueError(f"need a value for each of the indices {', '.join(map(str, setting.indices))}")
    return dict(zip(setting.indices, map(sp.Integer, values)))


def _names(setting: Setting) -> str:
    return ", ".join(str(s) for s in setting.indices)


def _where(setting: Setting, index: "int | tuple[int, ...]") -> str:
    return ", ".join(f"{s} = {v}" for s, v in _values(setting, index).items())


class Instances:
    """Claims written out for concrete H and free indices, each computed once (a step's lhs is
    the previous step's rhs)."""

    def __init__(self, setting: Setting):
        self.setting = setting
        self._cache: dict[tuple, sp.Expr] = {}
        self._values: dict[int, dict[sp.Symbol, sp.Expr]] = {}

    def get(self, expr: sp.Expr, size: int, index: "int | tuple[int, ...]", assumptions: tuple[str, ...]) -> sp.Expr:
        key = (expr, size, tuple(_values(self.setting, index).values()), assumptions)
        if key not in self._cache:
            self._cache[key] = instantiate(self.setting, expr, size, index, assumptions, self._intermediates(size))
        return self._cache[key]

    def _intermediates(self, size: int) -> dict[sp.Symbol, sp.Expr]:
        """o_1..o_H written out for this H, once."""
        if size not in self._values:
            self._values[size] = intermediate_values(self.setting, size)
        return self._values[size]


def intermediate_values(setting: Setting, size: "int | Mapping[sp.Symbol, int]") -> dict[sp.Symbol, sp.Expr]:
    """Every entry of every intermediate (o_1..o_H), written out in the variables: an intermediate
    defined through another (softmax of the logits of a dense layer) has that one substituted."""
    level = written_definitions(setting, size)
    composed: dict[sp.IndexedBase, dict[sp.Symbol, sp.Expr]] = {}

    def compose(base: sp.IndexedBase) -> dict[sp.Symbol, sp.Expr]:
        if base not in composed:
            below: dict[sp.Symbol, sp.Expr] = {}
            for other in level[base][1]:
                below.update(compose(other))
            composed[base] = {s: v.xreplace(below) for s, v in level[base][0].items()} if below else level[base][0]
        return composed[base]

    values: dict[sp.Symbol, sp.Expr] = {}
    for base in level:
        values.update(compose(base))
    return values


def written_definitions(setting: Setting, size: "int | Mapping[sp.Symbol, int]") -> dict[sp.IndexedBase, tuple[dict[sp.Symbol, sp.Expr], set]]:
    """For each intermediate, its entries in terms of the quantities its definition names (o in
    terms of z), and the intermediates among those: each level written out once, without the
    levels below substituted (a softmax over a dense layer stays linear in its size)."""
    sizes = extents(setting, size)
    level: dict[sp.IndexedBase, tuple[dict[sp.Symbol, sp.Expr], set]] = {}
    for d in setting.definitions:
        if isinstance(d.symbol, sp.Indexed):
            base, patterns = d.symbol.base, d.symbol.indices
            # Written out once with the indices still symbols; each entry then shares the parts
            # that do not depend on them (the softmax denominator). Those stand in as placeholders
            # while the entries are written, so an entry costs the size of its own part only.
            shared = expand_sums(d.value.xreplace(sizes))
            shared = shared.xreplace({x: _symbol(x) for x in shared.atoms(sp.Indexed) if all(ix.is_Integer for ix in x.indices)})
            varying = [x for x in shared.atoms(sp.Indexed) if any(p in x.free_symbols for p in patterns)]
            template, restore = _placeholders(shared, varying)
            entries: dict[sp.Symbol, sp.Expr] = {}
            for at in itertools.product(*(range(1, _extent(setting, p, size) + 1) for p in patterns)):
                fix = dict(zip(patterns, map(sp.Integer, at)))
                entries[_symbol(base[at])] = template.xreplace({x: _symbol(x.xreplace(fix)) for x in varying}).xreplace(restore)
            level[base] = (entries, {b for b in setting.intermediates if b != base and d.value.has(b)})
    return level


def _placeholders(e: sp.Expr, varying: list) -> tuple[sp.Expr, dict]:
    """``e`` with each largest sub-term free of ``varying`` replaced by a placeholder, and the
    mapping back."""
    hidden: dict[sp.Expr, sp.Dummy] = {}

    def walk(x: sp.Basic) -> sp.Basic:
        if not x.args or isinstance(x, sp.Indexed):
            return x
        if not x.has(*varying):
            return hidden.setdefault(x, sp.Dummy())
        return x.func(*[walk(a) for a in x.args])

    template = walk(e)
    return template, {v: k for k, v in hidden.items()}


def _above(setting: Setting, bases: set) -> set:
    """The intermediates defined in terms of ``bases``, directly or through each other (o above z)."""
    out: set = set()
    grown = True
    while grown:
        grown = False
        for d in setting.definitions:
            b = d.symbol.base if isinstance(d.symbol, sp.Indexed) else None
            if b is not None and b not in out | bases and any(d.value.has(x) for x in out | bases):
                out.add(b)
                grown = True
    return out


def instantiate(
    setting: Setting,
    expr: sp.Expr,
    size: "int | Mapping[sp.Symbol, int]",
    index: "int | tuple[int, ...]",
    assumptions: tuple[str, ...],
    intermediates: dict[sp.Symbol, sp.Expr] | None = None,
) -> sp.Expr:
    """Write ``expr`` out for H = size (and the further limits, see :func:`extents`) and the free
    indices set to ``index`` (one value, or one per index of ``setting.indices``): explicit sums,
    definitions substituted, derivatives evaluated, assumptions imposed. The result depends only
    on the variables (z_1..z_H, y_1..y_H)."""
    sizes = extents(setting, size)
    fix = {**sizes, **_values(setting, index)}
    e = expr
    for d in setting.definitions:
        if not isinstance(d.symbol, sp.Indexed):
            e = e.xreplace({d.symbol: d.value})
    e = expand_sums(e.xreplace(fix))
    # Derivatives by an intermediate (d ln o_i / d o_i) are taken while o_i is still a variable;
    # the intermediates defined through it are written out first (dE/dz_i needs o in terms of z).
    level: list = []
    e = e.replace(
        lambda x: isinstance(x, sp.Derivative) and any(isinstance(v, sp.Indexed) and v.base in setting.intermediates for v in x.variables),
        lambda x: _by_intermediate(setting, x, size, level),
    )
    e = symbolize(e)
    if intermediates is None:
        intermediates = intermediate_values(setting, size)
    # Constraints bind the variables, also where a definition names them (a smoothed target).
    e = e.xreplace(intermediates)
    for key in assumptions:
        e = e.xreplace({symbolize(a): symbolize(v) for a, v in setting.constraints[key](int(sizes[setting.classes])).items()})
    return e.doit()


def _by_intermediate(setting: Setting, x: sp.Derivative, size: "int | Mapping[sp.Symbol, int]", level: list) -> sp.Expr:
    above = _above(setting, {v.base for v in x.variables if isinstance(v, sp.Indexed)})
    if not above:
        return x.doit()
    if not level:
        level.append(written_definitions(setting, size))
    mapping = {s: v for b in above for s, v in level[0][b][0].items()}
    e = symbolize(x.expr)
    while e.has(*mapping):
        e = e.xreplace(mapping)
    return sp.Derivative(e, *[(symbolize(v), c) for v, c in x.variable_count]).doit()


def symbolize(expr: sp.Expr) -> sp.Expr:
    """Indexed entries with concrete indices become plain symbols (z[2] -> z2): SymPy
    differentiates and cancels those much faster."""
    return expr.xreplace({x: _symbol(x) for x in expr.atoms(sp.Indexed)})


def _symbol(x: sp.Indexed) -> sp.Symbol:
    name = f"{x.base}{'_'.join(str(i) for i in x.indices)}"
    return sp.Symbol(name, **{k: v for k, v in x.base.assumptions0.items() if k in ("real", "positive")})


def is_zero(expr: sp.Expr, setting: Setting) -> bool:
    """Exact: every logit z_m becomes ln a_m with a_m > 0, so exponentials turn into powers of
    a_m; logs are split and the rational function that remains must cancel to 0."""
    if expr == 0:
        return True
    prefix = str(setting.wrt.base)
    logits = [x for x in expr.free_symbols if x.name.startswith(prefix) and x.name[len(prefix):].isdigit()]
    names = {x: sp.log(sp.Symbol(f"a{x.name[len(prefix):]}", positive=True)) for x in logits}
    e = expr.xreplace(names)
    if e.has(sp.log):
        e = sp.expand_log(e, force=True)
    e = sp.together(_exponentials(e))
    # A numerator that multiplies out to 0 proves it; otherwise cancel decides.
    return sp.expand(e.as_numer_denom()[0]) == 0 or sp.cancel(e) == 0


def _exponentials(expr: sp.Expr) -> sp.Expr:
    """Every e^u that is left (a logit of a layer, z = W x + b) as a product of powers of one
    positive symbol per monomial of u: e^{2 W x + b} = s^2 t. SymPy writes the same exponential
    as e^{-u}, e^{u} or e^{2u} in different places; this way they are powers of the same symbols,
    which are algebraically independent as the monomials are distinct."""
    names: dict[sp.Expr, sp.Symbol] = {}
    sub: dict[sp.Expr, sp.Expr] = {}
    for x in sorted(expr.atoms(sp.exp), key=sp.default_sort_key):
        factors = []
        for term in sp.Add.make_args(sp.expand(x.args[0])):
            c, t = term.as_coeff_Mul()
            if t == 1 or not c.is_Integer or t.has(sp.exp, sp.log):
                break
            factors.append(names.setdefault(t, sp.Symbol(f"e{len(names)}_", positive=True)) ** c)
        else:
            sub[x] = sp.Mul(*factors)
    return expr.xreplace(sub) if sub else expr


def random_point(symbols: Iterable[sp.Basic], rng: random.Random) -> dict[sp.Basic, mpmath.mpf]:
    """A value in [-3, 3] for each symbol; one known to be positive (a temperature) in [1/2, 3]."""
    return {s: mpmath.mpf(rng.uniform(0.5, 3) if s.is_positive else rng.uniform(-3, 3)) for s in sorted(symbols, key=sp.default_sort_key)}


def evaluate(expr: sp.Basic, point: dict[sp.Basic, mpmath.mpf]) -> mpmath.mpf:
    """Evaluate a written-out claim with mpmath (faster than compiling it with lambdify)."""
    with mpmath.workdps(max(mpmath.mp.dps, DIGITS + 10)):
        return evaluate_shared(expr, point, {})


def evaluate_shared(e: sp.Basic, point: dict, memo: dict) -> mpmath.mpf:
    """Evaluate at the current mpmath precision, each distinct sub-term once (``memo``): the
    softmax denominator is shared by every output, so a written-out loss costs O(H), not O(H^2)."""
    if e in point:
        return point[e]
    if e in memo:
        return memo[e]
    if e.is_Number:
        out = mpmath.mpf(e.p) / e.q if e.is_Rational else mpmath.mpf(str(e))
    elif isinstance(e, sp.Add):
        out = mpmath.fsum(evaluate_shared(a, point, memo) for a in e.args)
    elif isinstance(e, sp.Mul):
        out = mpmath.fprod(evaluate_shared(a, point, memo) for a in e.args)
    elif isinstance(e, sp.Pow):
        out = mpmath.power(evaluate_shared(e.base, point, memo), evaluate_shared(e.exp, point, memo))
    elif isinstance(e, sp.exp):
        out = mpmath.exp(evaluate_shared(e.args[0], point, memo))
    elif isinstance(e, sp.log):
        out = mpmath.log(evaluate_shared(e.args[0], point, memo))
    elif e is sp.E:
        out = mpmath.e
    else:
        raise TypeError(f"cannot evaluate {type(e).__name__} numerically: {sp.sstr(e)}")
    memo[e] = out
    return out


__all__ = ["Check", "Report", "check", "instantiate", "is_zero", "ExcludedSum"]
