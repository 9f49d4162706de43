"""Verification: every step is a claim ``lhs = rhs``; here each claim must survive every check.

- exact: for H = 1..6 and every value of each free index (k, and i for a Jacobian), the sums are
  written out, the definitions substituted and the derivatives evaluated; lhs - rhs must cancel to
  exactly 0 under the step's assumptions. A further limit (the inputs D of a layer, see
  ``Setting.ranges``) takes small values beside H (:func:`extents`);
- a case split: each case where its condition holds, and every index value covered by a case;
- numeric: the same instances at random points with mpmath at 30 digits;
- general H: each step (and each claim that holds) numerically at larger sizes, H = 40 and an H
  drawn from 20..60 for each run (:func:`large_sizes`), so a step right only for small H fails.
  This is evidence for every H, not a proof: only the sizes written out exactly are proved;
- the result against central finite differences of the differentiated function itself, computed
  from the definitions and never from a step;
- for a concrete H, every gradient and Jacobian entry exactly, and the worked example (see
  :mod:`derive.checking`, which runs all of them in order).

A failed check raises :class:`~derive.errors.VerificationError` naming the step and the instance.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping

import mpmath
import sympy as sp

from derive import modular, progress
from derive.errors import VerificationError
from derive.functions import ELEMENTARY
from derive.numeric import at_random
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
LARGE = 40
"""A class count far beyond SIZES at which every step is also checked numerically."""
DRAWN = (20, 60)
"""A further class count is drawn from this range for each run (see :func:`run_seed`)."""
LARGE_OTHER = 3
"""The value of the first further limit (the inputs D of a layer) beside H = LARGE, the next
one more; in a run's drawn size each further limit is drawn from DRAWN_OTHER."""
DRAWN_OTHER = (3, 5)
OTHER_MOST = 5
"""No further limit exceeds this in any check: a constraint over the examples of a training set
(each sums to one) covers this many."""
SEED_VARIABLE = "DERIVE_CHECK_SEED"
"""An environment variable: the seed of the drawn sizes, to repeat a run's check."""


@dataclass(frozen=True)
class Check:
    """One verification that ran, and how."""

    what: str
    method: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Report:
    """What ``derive.checking.check`` verified."""

    name: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def __str__(self) -> str:
        lines = [f"{self.name}: {sum(c.passed for c in self.checks)}/{len(self.checks)} checks passed"]
        lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.what}: {c.method}{' - ' + c.detail if c.detail else ''}" for c in self.checks]
        return "\n".join(lines)


def passing(d: Derivation, checks: Iterable[Check]) -> Iterator[Check]:
    """Stop at the first failed check: what comes after a wrong step proves nothing."""
    for c in checks:
        if not c.passed:
            raise VerificationError(f"{d.name}: {c.what} failed ({c.method}): {c.detail}")
        yield c


def symbolic_checks(d: Derivation) -> list[Check]:
    """The symbolic-H checks; they do not depend on the class count or the example, so a passed
    result is cached (see :mod:`derive.cache`)."""
    from derive import cache

    rows = cache.cached(check_key(d), lambda: [c.__dict__ for c in passing(d, _symbolic(d))])
    return [Check(**row) for row in rows]


def check_key(d: Derivation) -> str:
    """The cache key of the symbolic checks: everything they read. The steps and the claims,
    the assumptions with their statements, and each setting (the derivation's and every
    claim's) with its definitions, intermediates, indices, ranges and constraints; a constraint
    is a Python function, keyed by its code (see ``cache.code``) and by its values at the class
    counts written out exactly."""
    from derive import cache

    claims = (d.pitfall.claims if d.pitfall else ()) + (d.counterexample.claims if d.counterexample else ())
    numbers = [(d.counterexample.shortcut, [(c.key, c.example.logits, c.example.target, c.example.probabilities, c.example.loss, c.example.gradient, c.shortcut) for c in d.counterexample.comparisons])] if d.counterexample else []
    settings: dict[int, object] = {}

    def setting(s: Setting) -> object:
        if id(s) not in settings:
            settings[id(s)] = (
                s.wrt,
                [(x.symbol, x.value) for x in s.definitions],
                tuple(s.intermediates),
                s.classes,
                s.indices,
                sorted(s.ranges.items(), key=str),
                [(name, cache.code(fn), [list(fn(n).items()) for n in SIZES]) for name, fn in sorted(s.constraints.items())],
            )
        return settings[id(s)]

    return cache.key(
        d.name,
        d.subject,
        [(s.rule, s.lhs, s.rhs, s.assumptions, s.identity, [(c.condition, c.value) for c in s.cases]) for s in d.steps],
        [(c.key, c.equation, c.holds, c.assumptions, setting(c.setting)) for c in claims],
        [(a.key, a.statement) for a in d.assumptions],
        setting(d.setting),
        *numbers,
    )


def _symbolic(d: Derivation) -> Iterator[Check]:
    cases = Instances(d.setting)
    yield _chain(d)
    for n, step in enumerate(d.steps, 1):
        progress.update("verifying step", n, len(d.steps))
        yield _exact(cases, step, n)
        yield _numeric(cases, step, n)
        yield _general(d.setting, step.lhs, step.rhs, step.assumptions, f"step {n} ({step.rule})", str(n))
        if step.cases and step.identity is not None:
            yield _cases(d.setting, step, n)
    progress.update("checking the result against finite differences")
    yield _finite_differences(d, cases)
    if d.pitfall is not None:
        shared: dict[int, Instances] = {}
        for claim in d.pitfall.claims:
            yield from _claim_checks(claim, shared)
    if d.counterexample is not None:
        shared = {}
        for claim in d.counterexample.claims:
            yield from _claim_checks(claim, shared, "counterexample")
        for comparison in d.counterexample.comparisons:
            yield _comparison(d, comparison)


def _claim_checks(claim: Claim, shared: dict, section: str = "pitfall") -> Iterator[Check]:
    """A claim exactly for H = 1..6, and one that holds also numerically at larger H."""
    yield _claim(claim, shared.setdefault(id(claim.setting), Instances(claim.setting)), section)
    if claim.holds:
        lhs, rhs = claim.equation.args
        yield _general(claim.setting, lhs, rhs, claim.assumptions, f"{section}: {claim.key} holds", claim.key)


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
    method = f"exact modulo a 61-bit prime at random points, H = {SIZES[0]}..{SIZES[-1]}{_beside(cases.setting)}, every {_names(cases.setting)}"
    undefined: list[int] = []
    for size in SIZES:
        for index in assignments(cases.setting, size):
            if cases.agree(step.lhs, step.rhs, size, index, step.assumptions):
                continue
            diff = cases.get(step.lhs, size, index, step.assumptions) - cases.get(step.rhs, size, index, step.assumptions)
            if diff.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
                # A claim written out where it is not defined (0^(gamma - 1) at H = 1, where the
                # one softmax output is 1) says nothing there; it must hold at every other size.
                undefined.append(size)
                break
            if not is_zero(diff, cases.setting):
                return Check(what, method, False, f"lhs - rhs = {sp.sstr(diff)} at {_sizes(cases.setting, size)}, {_where(cases.setting, index)}")
    if undefined:
        sizes = ", ".join(map(str, undefined))
        if len(undefined) > len(SIZES) // 2:
            return Check(what, method, False, f"the claim is undefined at H = {sizes}")
        method += f" (at H = {sizes} the claim is undefined, as the derivative is there)"
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
    method = f"exact modulo a 61-bit prime at random points, H = {SIZES[0]}..{SIZES[-1]}{_beside(split)}, every {_names(split)}: each case where its condition holds, every choice covered"
    for size in SIZES:
        for index in assignments(split, size):
            fix = dict(zip(split.indices, map(sp.Integer, index)))
            where = f"{_sizes(split, size)}, {_where(split, index)}"
            if not cases.same(lhs, rhs, size, index, step.assumptions):
                return Check(what, method, False, f"the identity fails at {where}")
            holding = [c for c in step.cases if bool(c.condition.xreplace(fix))]
            if not holding:
                return Check(what, method, False, f"no case covers {where}")
            for c in holding:
                if not cases.same(lhs, c.value, size, index, step.assumptions):
                    return Check(what, method, False, f"the case {sp.sstr(c.condition)} is wrong at {where}")
    return Check(what, method, True)


def _numeric(cases: "Instances", step: Step, n: int) -> Check:
    what = f"step {n} ({step.rule})"
    method = f"mpmath at {DIGITS} digits, {POINTS} random points for each H = 2..{SIZES[-1]}"
    rng = random.Random(f"{SEED}:{n}")
    for size in SIZES[1:]:
        index = tuple(rng.randint(1, _extent(cases.setting, ix, size)) for ix in cases.setting.indices)
        for _ in range(POINTS):
            try:
                # Evaluated where they stand (derive.numeric), as the exact check no longer
                # writes the claim out; written out only where the evaluator has no rule.
                with mpmath.workdps(DIGITS + 10):
                    a, b = at_random(cases.setting, (step.lhs, step.rhs), extents(cases.setting, size), dict(zip(cases.setting.indices, index)), step.assumptions, rng)
            except (TypeError, KeyError):  # a term without a rule, an entry beyond its range
                lhs = cases.get(step.lhs, size, index, step.assumptions)
                rhs = cases.get(step.rhs, size, index, step.assumptions)
                point = random_point(lhs.free_symbols | rhs.free_symbols, rng)
                a, b = evaluate(lhs, point), evaluate(rhs, point)
            if abs(a - b) > TOLERANCE * max(1, abs(a)):
                return Check(what, method, False, f"lhs = {mpmath.nstr(a, 12)}, rhs = {mpmath.nstr(b, 12)} at {_sizes(cases.setting, size)}, {_where(cases.setting, index)}")
    return Check(what, method, True)


def _general(setting: Setting, lhs: sp.Expr, rhs: sp.Expr, assumptions: tuple[str, ...], what: str, tag: str) -> Check:
    """``lhs = rhs`` numerically at the large sizes (:func:`large_sizes`), at one random choice
    of the free indices and POINTS random points each: a claim that holds only for small H
    (a term that vanishes for H <= 6) fails here. A claim with a term the evaluator does not
    know fails too, saying so: a check that cannot run has not passed."""
    method = f"also at H = {LARGE} and at an H drawn from {DRAWN[0]}..{DRAWN[1]} for each run{_beside_large(setting)}: exact modulo a 61-bit prime at random points where that decides, else mpmath"
    for size, drawn in large_sizes(setting):
        label = ", ".join(f"{s} = {v}" for s, v in size.items())
        rng = random.Random(f"{SEED}:{tag}:{label}")
        index = tuple(rng.randint(1, _extent(setting, ix, size)) for ix in setting.indices)
        # Exact where the field evaluation decides (derive.fieldcheck): an identity at this size,
        # which the numbers below would only approximate; else the numbers decide.
        from derive import fieldcheck

        if fieldcheck.agree(setting, lhs, rhs, size, dict(zip(setting.indices, index)), assumptions, f"{SEED}:{tag}:{label}:exact"):
            continue
        for _ in range(POINTS):
            # Evaluated where they stand, sums as loops and derivatives by forward mode
            # (derive.numeric): written out at H = 40 a claim would cost seconds.
            try:
                with mpmath.workdps(DIGITS + 10):
                    a, b = at_random(setting, (lhs, rhs), size, dict(zip(setting.indices, index)), assumptions, rng)
            except TypeError as e:
                return Check(what, method, False, f"cannot be evaluated at {label}: {e}")
            if not abs(a - b) <= TOLERANCE * max(1, abs(a)):
                where = f"{label}{', ' if setting.indices else ''}{_where(setting, index)}"
                repeat = f" (drawn for this run: {SEED_VARIABLE}={run_seed()} draws it again)" if drawn else ""
                return Check(what, method, False, f"lhs = {mpmath.nstr(a, 12)}, rhs = {mpmath.nstr(b, 12)} at {where}{repeat}")
    return Check(what, method, True)


def run_seed() -> int:
    """The seed of this run's drawn sizes: ``$DERIVE_CHECK_SEED``, else drawn once per process."""
    global _RUN_SEED
    if _RUN_SEED is None:
        given = os.environ.get(SEED_VARIABLE, "").strip()
        _RUN_SEED = int(given) if given.isdigit() else random.SystemRandom().randrange(10**6)
    return _RUN_SEED


_RUN_SEED: int | None = None


def large_sizes(setting: Setting) -> list[tuple[dict[sp.Symbol, int], bool]]:
    """The sizes of the general-H check, each with whether it was drawn: H = LARGE (each further
    limit LARGE_OTHER, the next one more), and H drawn from DRAWN (each further limit from
    DRAWN_OTHER) with this run's seed."""
    further = sorted(set(extents(setting, SIZES[0])) - {setting.classes}, key=str)
    rng = random.Random(f"{run_seed()}:sizes")
    fixed = {setting.classes: LARGE} | {limit: LARGE_OTHER + n for n, limit in enumerate(further)}
    drawn = {setting.classes: rng.randint(*DRAWN)} | {limit: rng.randint(*DRAWN_OTHER) for limit in further}
    return [(fixed, False), (drawn, True)]


def _beside_large(setting: Setting) -> str:
    """How the further limits were chosen at the large sizes, for a check's method."""
    further = sorted(set(extents(setting, SIZES[0])) - {setting.classes}, key=str)
    if not further:
        return ""
    fixed = " and ".join(f"{limit} = {LARGE_OTHER + n}" for n, limit in enumerate(further))
    return f", with {fixed} and then each drawn from {DRAWN_OTHER[0]}..{DRAWN_OTHER[1]} beside H"


def _finite_differences(d: Derivation, cases: "Instances") -> Check:
    """The result against central differences of the differentiated function (the loss, or the
    output of a Jacobian), computed from the definitions: the leaves drawn at random, the
    variable's entry moved by +-h before the assumptions are imposed, and the function evaluated
    at both (derive.numeric), or written out where the evaluator has no rule."""
    setting = d.setting
    what = "the result"
    method = f"central finite differences of the differentiated function itself, mpmath at {DIGITS} digits, H = 1..{SIZES[-1]}"
    assumptions = tuple(a.key for a in d.assumptions)
    rng = random.Random(f"{SEED}:result")
    loss = d.subject.expr
    h = mpmath.mpf(10) ** -12
    with mpmath.workdps(DIGITS + 20):
        for size in SIZES:
            for index in assignments(setting, size):
                try:
                    numeric, claimed = _differences(setting, loss, d.result.rhs, size, index, assumptions, h, rng)
                except (TypeError, KeyError):  # a term without a rule: written out
                    numeric, claimed = _written_differences(cases, loss, d.result.rhs, size, index, assumptions, h, rng)
                if abs(numeric - claimed) > mpmath.mpf(10) ** -15 * max(1, abs(claimed)):
                    return Check(what, method, False, f"finite differences give {mpmath.nstr(numeric, 12)}, the result {mpmath.nstr(claimed, 12)} at {_sizes(setting, size)}, {_where(setting, index)}")
    return Check(what, method, True)


def _differences(setting: Setting, f: sp.Expr, g: sp.Expr, size: int, index: tuple[int, ...], assumptions: tuple[str, ...], h: mpmath.mpf, rng: random.Random) -> tuple[mpmath.mpf, mpmath.mpf]:
    """(f(x + h) - f(x - h)) / 2h in the variable's entry x at a random point, and g there."""
    from derive import numeric

    sizes = extents(setting, size)
    at = _values(setting, index)
    wrt = setting.wrt.xreplace(at)
    values = numeric.draw(setting, (f, g), sizes, at, rng)
    out = []
    for step in (h, -h, 0):
        moved = {head: dict(v) if isinstance(v, dict) else v for head, v in values.items()}
        if isinstance(wrt, sp.Indexed):
            entry = tuple(int(i) for i in wrt.indices)
            moved[wrt.base][entry] += step  # KeyError: not a leaf
        else:
            moved[wrt] += step
        numeric.impose(setting, moved, sizes, assumptions)
        out.append(numeric.evaluate(setting, (f,) if step else (g,), sizes, at, moved)[0])
    up, down, claimed = out
    return (up - down) / (2 * h), claimed


def _written_differences(cases: "Instances", f: sp.Expr, g: sp.Expr, size: int, index: tuple[int, ...], assumptions: tuple[str, ...], h: mpmath.mpf, rng: random.Random) -> tuple[mpmath.mpf, mpmath.mpf]:
    """:func:`_differences` with f and g written out for this H (:meth:`Instances.get`)."""
    setting = cases.setting
    f = cases.get(f, size, index, assumptions)
    g = cases.get(g, size, index, assumptions)
    variable = symbolize(setting.wrt.xreplace(dict(zip(setting.indices, map(sp.Integer, index)))))
    point = random_point(f.free_symbols | g.free_symbols | {variable}, rng)
    up, down = dict(point), dict(point)
    up[variable] += h
    down[variable] -= h
    return (evaluate(f, up) - evaluate(f, down)) / (2 * h), evaluate(g, point)


def _claim(claim: Claim, cases: "Instances", section: str = "pitfall") -> Check:
    """A claim that holds must hold exactly for H = 1..6; one that does not must fail somewhere."""
    lhs, rhs = claim.equation.args
    failures = (
        (size, index)
        for size in SIZES
        for index in assignments(claim.setting, size)
        if not cases.same(lhs, rhs, size, index, claim.assumptions)
    )
    failures = list(itertools.islice(failures, 1))
    if claim.holds:
        detail = f"fails at H = {failures[0][0]}, {_where(claim.setting, failures[0][1])}" if failures else ""
        return Check(f"{section}: {claim.key} holds", f"exact modulo a 61-bit prime at random points, H = {SIZES[0]}..{SIZES[-1]}, every index", not failures, detail)
    return Check(f"{section}: {claim.key} is wrong", f"exact modulo a 61-bit prime at random points, H = {SIZES[0]}..{SIZES[-1]}, every index", bool(failures), "" if failures else "it holds everywhere")


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
        self._values: dict[object, dict[sp.Symbol, sp.Expr]] = {}

    def get(self, expr: sp.Expr, size: "int | Mapping[sp.Symbol, int]", index: "int | tuple[int, ...]", assumptions: tuple[str, ...]) -> sp.Expr:
        at = size if isinstance(size, int) else tuple(sorted(size.items(), key=str))
        key = (expr, at, tuple(_values(self.setting, index).values()), assumptions)
        if key not in self._cache:
            self._cache[key] = instantiate(self.setting, expr, size, index, assumptions, self._intermediates(size, at))
        return self._cache[key]

    def agree(self, lhs: sp.Expr, rhs: sp.Expr, size: "int | Mapping[sp.Symbol, int]", index: "int | tuple[int, ...]", assumptions: tuple[str, ...]) -> bool:
        """Whether lhs = rhs here is decided true without writing them out: both evaluated where
        they stand modulo the prime at random points (:mod:`derive.fieldcheck`). False decides
        nothing: the instance is then written out (:meth:`get`) and decided by :func:`is_zero`."""
        from derive import fieldcheck

        where = extents(self.setting, size)
        return fieldcheck.agree(self.setting, lhs, rhs, where, _values(self.setting, index), assumptions, f"{SEED}:{sp.srepr(sorted(where.items(), key=str))}:{index}")

    def same(self, lhs: sp.Expr, rhs: sp.Expr, size: "int | Mapping[sp.Symbol, int]", index: "int | tuple[int, ...]", assumptions: tuple[str, ...]) -> bool:
        """lhs = rhs at this instance: :meth:`agree`, else written out and decided by :func:`is_zero`."""
        if self.agree(lhs, rhs, size, index, assumptions):
            return True
        return is_zero(self.get(lhs, size, index, assumptions) - self.get(rhs, size, index, assumptions), self.setting)

    def _intermediates(self, size: "int | Mapping[sp.Symbol, int]", at: object) -> dict[sp.Symbol, sp.Expr]:
        """o_1..o_H written out for this H, once."""
        if at not in self._values:
            self._values[at] = intermediate_values(self.setting, size)
        return self._values[at]


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
    """The defined names (an indexed base, or a scalar) defined in terms of ``bases``, directly or
    through each other (o above z; a variance above its mean)."""
    out: set = set()
    grown = True
    while grown:
        grown = False
        for d in setting.definitions:
            b = _head(d)
            if b not in out | bases and any(d.value.has(x) for x in out | bases):
                out.add(b)
                grown = True
    return out


def _head(d) -> sp.Basic:
    return d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol


def _scalars(setting: Setting, size: "int | Mapping[sp.Symbol, int]") -> dict[sp.Symbol, sp.Expr]:
    """Each scalar definition (a batch's mean, its variance) written out for these sizes, in the
    names its definition uses (the variance in the mean)."""
    sizes = extents(setting, size)
    return {d.symbol: symbolize(expand_sums(d.value.xreplace(sizes))) for d in setting.definitions if not isinstance(d.symbol, sp.Indexed)}


def _substituted(e: sp.Expr, mapping: dict) -> sp.Expr:
    """``mapping`` applied until none of its names is left (definitions through each other)."""
    for _ in range(len(mapping) + 1):
        if not e.has(*mapping):
            break
        e = e.xreplace(mapping)
    return e


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
    e = expand_sums(expr.xreplace(fix))
    # Derivatives by a defined name (d ln o_i / d o_i, dL/dv by a variance) are taken while that
    # name is still a variable; the names defined through it are written out first (dE/dz_i needs
    # o in terms of z).
    scalars = _scalars(setting, size) if any(not isinstance(d.symbol, sp.Indexed) for d in setting.definitions) else {}
    scratch: dict = {"scalars": scalars}
    e = e.replace(
        lambda x: isinstance(x, sp.Derivative) and any((isinstance(v, sp.Indexed) and v.base in setting.intermediates) or v in scalars for v in x.variables),
        lambda x: _by_intermediate(setting, x, size, scratch),
    )
    e = symbolize(e)
    if intermediates is None:
        intermediates = intermediate_values(setting, size)
    # Constraints bind the variables, also where a definition names them (a smoothed target).
    e = _substituted(e, {**intermediates, **scalars}) if scalars else e.xreplace(intermediates)
    for key in assumptions:
        constraint = setting.constraints[key]
        # A constraint over rows (sum_i y_ni = 1 for every n) needs the sizes of its rows too.
        fixed = constraint(int(sizes[setting.classes]), sizes) if getattr(constraint, "rows", None) else constraint(int(sizes[setting.classes]))
        e = e.xreplace({symbolize(a): symbolize(v) for a, v in fixed.items()})
    return e.doit()


def _by_intermediate(setting: Setting, x: sp.Derivative, size: "int | Mapping[sp.Symbol, int]", scratch: dict) -> sp.Expr:
    """A derivative by a defined name (dE/dz_i when z = W x + b; dL/dv by a variance): the names
    defined through it written out in it, then differentiated; ``scratch`` keeps what the
    derivatives of one claim share (the written-out definitions, and each function written out
    once)."""
    bases = frozenset(v.base if isinstance(v, sp.Indexed) else v for v in x.variables)
    above = _above(setting, set(bases))
    if not above:
        return symbolize(x).doit()
    if "level" not in scratch:
        scratch["level"] = written_definitions(setting, size)
    if (x.expr, bases) not in scratch:
        mapping = {s: v for b in above if b in scratch["level"] for s, v in scratch["level"][b][0].items()}
        mapping.update({b: scratch["scalars"][b] for b in above if b in scratch["scalars"]})
        scratch[x.expr, bases] = _substituted(symbolize(x.expr), mapping)
    return sp.Derivative(scratch[x.expr, bases], *[(symbolize(v), c) for v, c in x.variable_count]).doit()


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
    prefix = str(getattr(setting.wrt, "base", setting.wrt))
    logits = [x for x in expr.free_symbols if x.name.startswith(prefix) and x.name[len(prefix):].isdigit()]
    names = {x: sp.log(sp.Symbol(f"a{x.name[len(prefix):]}", positive=True)) for x in logits}
    e = expr.xreplace(names)
    if e.has(sp.log):
        e = sp.expand_log(e, force=True)
    e = _exponentials(e)
    if any(not p.exp.is_Number for p in e.atoms(sp.Pow)):
        e = _symbolic_powers(e)
    # What remains is a rational function of independent symbols (logs of the a_m are symbols
    # too): evaluated modulo a prime at random points, not multiplied out (derive.modular).
    e = e.xreplace({x: sp.Symbol(f"log_{n}_", real=True) for n, x in enumerate(sorted(e.atoms(sp.log), key=sp.default_sort_key))})
    # erf is not rational in anything: each erf(u) left is a symbol of its own, as a log is.
    e = e.xreplace({x: sp.Symbol(f"erf_{n}_", real=True) for n, x in enumerate(sorted(e.atoms(sp.erf), key=sp.default_sort_key))})
    zero = modular.vanishes(e, sp.srepr(sorted(e.free_symbols, key=sp.default_sort_key)))
    if zero is not None:
        return zero
    e = sp.together(e)
    # A numerator that multiplies out to 0 proves it; otherwise cancel decides.
    return sp.expand(e.as_numer_denom()[0]) == 0 or sp.cancel(e) == 0


def _symbolic_powers(expr: sp.Expr) -> sp.Expr:
    """b^(gamma - 1) -> B / b with one positive symbol B = b^gamma per base (bases compared
    after cancelling, so 1 - a/(a + c) and c/(a + c) are one base): the powers of a symbolic
    exponent (focal loss) become rational, and the identity becomes one of rational functions,
    valid for every gamma where the bases are positive."""
    names: dict[tuple[sp.Expr, sp.Expr], sp.Symbol] = {}

    def split(p: sp.Pow) -> sp.Expr:
        base = sp.cancel(sp.together(p.base))
        numeric, symbolic = sp.S.Zero, sp.S.Zero
        for t in sp.Add.make_args(sp.expand(p.exp)):
            if t.is_Number:
                numeric += t
            else:
                symbolic += t
        if symbolic == 0:
            return sp.Pow(base, numeric)
        key = (base, symbolic)
        if key not in names:
            names[key] = sp.Symbol(f"p{len(names)}_", positive=True)
        return names[key] * sp.Pow(base, numeric)

    return expr.replace(lambda x: isinstance(x, sp.Pow) and not x.exp.is_Number, split)


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
    elif e is sp.pi:
        out = mpmath.pi
    elif isinstance(e, sp.erf):
        out = mpmath.erf(evaluate_shared(e.args[0], point, memo))
    elif isinstance(e, ELEMENTARY):
        out = evaluate_shared(e.doit(deep=False), point, memo)
    else:
        raise TypeError(f"cannot evaluate {type(e).__name__} numerically: {sp.sstr(e)}")
    memo[e] = out
    return out


__all__ = ["Check", "Report", "instantiate", "is_zero", "ExcludedSum"]
