"""The worked example of a planned derivation: every given quantity gets numbers, every defined one
is computed from its definition, and the derived gradient is evaluated at them and checked
against central finite differences of the quantity itself (never against a step).

One evaluator serves all of it, the one of the checks (:class:`derive.numeric.Evaluator`): it
walks a SymPy expression with the indices bound to integers, loops over sums, and computes each
defined entry once from its definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Mapping, Sequence

import mpmath
import sympy as sp

from derive.numeric import Evaluator
from derive import spec as specs
from derive.concrete import DIGITS, central_difference, exact, rounded, to_mpf
from derive.errors import UsageError
from derive.model import Definition
from derive.shapes import entries, shapes

WORKING = DIGITS + 50
"""Digits they are computed with, once (a module entry's example is computed again with more
until it settles, see :func:`derive.concrete.settled`); the finite-difference step is
10^-(WORKING/3)."""
MAX_ENTRIES = 100_000
"""A worked example with more numbers than this is refused before any work."""
NICE = tuple(Fraction(x) for x in ("2", "-1", "1/2", "3/2", "-1/2", "1", "-2", "1/4", "5/2", "-3/2", "3/4", "-1/4", "7/4", "-5/4", "1/10", "-3/4"))
"""Default numbers of a given quantity: distinct, irregular, of both signs."""
DEFAULT_SIZE = 2
"""The size of N, M, D and any other range the user does not set with --size."""
SCALARS = {"gamma": Fraction(2), "T": Fraction(2), "lambda": Fraction(1, 10), "epsilon": Fraction(1, 10), "beta": Fraction(1, 2), "alpha": Fraction(1, 4)}
"""Defaults for the usual constants (focal gamma = 2, temperature 2, weight decay 0.1)."""


def rational(v: object) -> object:
    """A number of the worked example as SymPy writes it: a Fraction is a Rational; anything else
    (an mpmath number, a table of them) is returned as it is."""
    return sp.Rational(v.numerator, v.denominator) if isinstance(v, Fraction) else v


@dataclass(frozen=True)
class Worked:
    """The numbers of the example: sizes, every given and every defined quantity by name
    (nested tuples, first index outer), the quantity's value and the gradient."""

    sizes: tuple[tuple[sp.Symbol, int], ...]
    given: tuple[tuple[sp.Basic, object], ...]
    defined: tuple[tuple[str, object], ...]
    quantity: object
    gradient: object
    gradient_of: str
    """The gradient's entries are d(quantity)/d(this variable's entries)."""
    user: tuple[str, ...] = ()
    """The names whose numbers the user gave."""
    general: bool = False
    """True when an assumption does not hold at these numbers and the general form was used."""
    failed: tuple[str, ...] = ()
    """The assumptions that do not hold at these numbers."""


def evaluator(definitions: Sequence[Definition], sizes: Mapping[sp.Symbol, int], values: Mapping[sp.Basic, object]) -> Evaluator:
    """The shared evaluator (:class:`derive.numeric.Evaluator`) over the example's tables: a
    given quantity's nested tuple becomes a table by index tuple, each number an mpf."""
    tables = {}
    with mpmath.workdps(WORKING):  # an mpf keeps the precision it was made with
        for head, value in values.items():
            shape = _shape_of(value)
            tables[head] = {at: to_mpf(_lookup(value, at, head)) for at in entries(shape)} if shape else to_mpf(value)
    return Evaluator(definitions, sizes, tables)


def _lookup(table: object, at: tuple[int, ...], e: sp.Basic) -> object:
    for n in at:
        if not isinstance(table, tuple) or not 1 <= n <= len(table):
            raise UsageError(f"the worked example has no entry {e} at {at}")
        table = table[n - 1]
    if isinstance(table, tuple):
        raise UsageError(f"{e} needs {len(at) + 1} indices in the worked example")
    return table


# --- the numbers -----------------------------------------------------------------------------------
def parse_numbers(text: str, name: str) -> tuple:
    """``2,1,0.1`` -> a tuple; ``1,2;3,4`` -> rows; ``2`` -> a number. Exact: 0.1 is 1/10."""
    rows = [r for r in text.split(";")]
    try:
        parsed = tuple(tuple(_exact(x) for x in r.split(",")) for r in rows)
    except ValueError as error:
        raise UsageError(f"--let {name}: {error}") from None
    if len(parsed) == 1:
        return parsed[0] if len(parsed[0]) > 1 or "," in text else parsed[0][0]
    if len({len(r) for r in parsed}) != 1:
        raise UsageError(f"--let {name}: every row needs the same count of numbers")
    return parsed


def _exact(x: str) -> Fraction:
    """One number of --let, read as every user number is (:func:`derive.concrete.exact`), at
    most 60 characters and 1e12 in size."""
    x = x.strip()
    if len(x) > 60:
        raise ValueError(f"{x[:20]!r} is not a number")
    value = exact(x)
    if abs(value) > 10**12:
        raise ValueError(f"{x} is too large for a worked example (at most 1e12 in size)")
    return value


def default_numbers(name: str, shape: tuple[int, ...], target: bool, soft: bool = False) -> object:
    """Deterministic numbers that make a good test: distinct, not symmetric; a one-hot row for a
    target that sums to one (or a soft, strictly positive one when ``soft``)."""
    if not shape:
        return SCALARS.get(name, Fraction(1, 2))
    size = 1
    for s in shape:
        size *= s
    if target:
        last = shape[-1]
        row = [Fraction(2 * (last - p), last * (last + 1)) for p in range(last)] if soft else None
        rows = []
        for r in range(size // last):
            rows.append(tuple(row) if soft else tuple(Fraction(int(p == r % last)) for p in range(last)))
        flat = [v for row_ in rows for v in row_]
    else:
        offset = sum(map(ord, name)) % len(NICE)
        # Distinct, irregular, both signs; past the list, a stride through the residues mod 1009.
        flat = [NICE[(p + offset) % len(NICE)] if size <= len(NICE) else Fraction((p * 37 + offset) % 1009 - 504, 200) for p in range(size)]
    return _reshape(flat, shape)


def _reshape(flat: list, shape: tuple[int, ...]) -> object:
    if len(shape) == 1:
        return tuple(flat)
    step = len(flat) // shape[0]
    return tuple(_reshape(flat[n * step : (n + 1) * step], shape[1:]) for n in range(shape[0]))


def _shape_of(value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple):
        return ()
    return (len(value), *_shape_of(value[0]))


# --- the example ------------------------------------------------------------------------------------
def build(problem, spec, subject: sp.Derivative, result: sp.Expr, general: sp.Expr | None) -> Worked:
    """The worked example of ``spec`` for H = spec.classes: numbers for every given quantity
    (the user's, else defaults), the defined ones from their definitions, the gradient from
    ``result`` (or ``general`` where an assumption does not hold at these numbers)."""
    from derive.symbols import H

    sizes: dict[sp.Symbol, int] = {H: int(spec.classes)} if spec.classes is not None else {}
    named = {str(k): v for k, v in spec.sizes}
    for name, value in named.items():
        if name == "H":
            raise UsageError("--size H: the number of classes is --classes")
        if value < 1:
            raise UsageError(f"--size {name} must be at least 1, not {value}")
    table = shapes(problem.definitions, problem.wrt, problem.ranges)
    limits = {s for shape in table.values() for s in shape if isinstance(s, sp.Symbol)}
    limits |= {s for d in problem.definitions for x in d.value.atoms(sp.Sum) for lim in x.limits for s in lim[2].free_symbols}
    for s in sorted(limits, key=str):
        if s != H:
            sizes[s] = named.pop(str(s), DEFAULT_SIZE)
    if H in sizes and not specs.uses_classes(problem):
        del sizes[H]  # --classes of a derivation with no classes: not a size of its example
    if named:
        raise UsageError(f"--size {next(iter(named))}: no such size in these definitions (sizes: {', '.join(sorted(map(str, sizes)))})")
    concrete = {base: tuple(int(sp.sympify(s).xreplace(sizes)) if not isinstance(s, int) else s for s in shape) for base, shape in table.items()}
    total = sum(_count(shape) for shape in concrete.values())
    if total > MAX_ENTRIES:
        raise UsageError(f"the worked example would have {total} numbers; at most {MAX_ENTRIES}")
    lets = dict(spec.lets)
    by_name = {str(base): base for base in concrete}
    shown = lambda name: specs.public_name(spec.names, name)  # the public name: mask for m
    for name in lets:
        if name not in by_name:
            raise UsageError(f"--let {shown(name)}: no such given quantity (given: {', '.join(sorted(map(shown, by_name)))})")
    targets = {a.statement.args[0].function.base for a in problem.assumptions if isinstance(a.statement.args[0], sp.Sum) and isinstance(a.statement.args[0].function, sp.Indexed)}
    values: dict[sp.Basic, object] = {}
    for name, base in sorted(by_name.items()):
        shape = concrete[base]
        if name in lets:
            value = parse_numbers(lets[name], shown(name))
            if _shape_of(value) != shape:
                want = " x ".join(map(str, shape)) or "one"
                raise UsageError(f"--let {shown(name)} needs {want} number{'s' if _count(shape) != 1 else ''} ({_sizes_text(table[base], sizes)}), not {' x '.join(map(str, _shape_of(value))) or 'one'}")
            values[base] = value
        else:
            values[base] = default_numbers(name, shape, base in targets)
    numbers = evaluator(problem.definitions, sizes, values)
    quantity = subject.expr
    q_shape = tuple(sizes.get(problem.ranges.get(i), None) or int(problem.ranges[i].xreplace(sizes)) for i in getattr(quantity, "indices", ()))
    with mpmath.workdps(WORKING):
        try:
            finite = all(mpmath.isfinite(v) for v in _values(numbers, quantity, q_shape))
        except ZeroDivisionError:  # a denominator 0 at these numbers (a mask that attends to nothing)
            finite = False
        if not finite:
            soft = {b for b in targets if str(b) not in lets}
            if not soft:
                raise UsageError(f"{quantity} is not finite at the worked example's numbers")
            for b in soft:
                values[b] = default_numbers(str(b), concrete[b], True, soft=True)
            numbers = evaluator(problem.definitions, sizes, values)
        failed = tuple(a.key for a in problem.assumptions if not _holds(numbers, a.statement, problem.ranges, sizes))
        formula = general if failed and general is not None else result
        q_values = _values(numbers, quantity, q_shape)
        w_shape = concrete[getattr(problem.wrt, "base", problem.wrt)]
        free = (*getattr(quantity, "indices", ()), *getattr(problem.wrt, "indices", ()))
        grad = [numbers.value(formula, dict(zip(free, at))) for at in entries(q_shape + w_shape)]
    defined = []
    for d in problem.definitions[1:]:
        if isinstance(d.symbol, sp.Indexed):
            shape = tuple(int(problem.ranges[i].xreplace(sizes)) for i in d.symbol.indices)
            with mpmath.workdps(WORKING):
                flat = [numbers.value(d.symbol, dict(zip(d.symbol.indices, at))) for at in entries(shape)]
            defined.append((str(d.symbol.base), _reshape([rounded(v) for v in flat], shape)))
        else:
            with mpmath.workdps(WORKING):
                defined.append((str(d.symbol), rounded(numbers.value(d.symbol))))
    return Worked(
        sizes=tuple(sizes.items()),
        given=tuple((b, values[b]) for b in sorted(values, key=str)),
        defined=tuple(defined),
        quantity=_reshape([rounded(v) for v in q_values], q_shape) if q_shape else rounded(q_values[0]),
        gradient=_reshape([rounded(v) for v in grad], q_shape + w_shape) if q_shape + w_shape else rounded(grad[0]),
        gradient_of=str(getattr(problem.wrt, "base", problem.wrt)),
        user=tuple(sorted(lets)),
        general=bool(failed and general is not None),
        failed=failed,
    )


def _holds(numbers: Evaluator, statement: sp.Eq, ranges: Mapping, sizes: Mapping) -> bool:
    """Whether an assumption holds at the example, for every value of its free indices
    (sum_i y_ni = 1 in every row n)."""
    lhs, rhs = statement.args
    free = sorted((s for s in lhs.free_symbols | rhs.free_symbols if isinstance(s, sp.Symbol) and s.is_integer and s not in sizes), key=str)
    shape = tuple(int(sp.sympify(ranges[s]).xreplace(sizes)) for s in free)
    tolerance = mpmath.mpf(10) ** -(WORKING - 10)
    return all(abs(numbers.value(lhs, dict(zip(free, at))) - numbers.value(rhs, dict(zip(free, at)))) <= tolerance for at in entries(shape))


def _values(numbers: Evaluator, quantity: sp.Basic, shape: tuple[int, ...]) -> list:
    if not shape:
        return [numbers.value(quantity)]
    return [numbers.value(quantity, dict(zip(quantity.indices, at))) for at in entries(shape)]


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _sizes_text(shape: tuple, sizes: Mapping) -> str:
    return " x ".join(f"{s} = {sizes[s]}" if s in sizes else str(s) for s in shape) or "a scalar"


def checks(d) -> list:
    """The worked example's gradient against central finite differences of the quantity written
    out from the definitions: entry by entry, at WORKING digits."""
    from derive.verify import Check

    w = d.worked
    sizes = dict(w.sizes)
    values = dict(w.given)
    quantity = d.subject.expr
    q_shape = _shape_of(w.quantity)
    wrt = d.setting.wrt
    head = getattr(wrt, "base", wrt)
    definitions = d.definitions
    w_shape = _shape_of(values[head])
    what = "the worked example"
    method = f"each gradient entry against central finite differences of {quantity} written out from the definitions, mpmath at {WORKING} digits"
    h = mpmath.mpf(10) ** -(WORKING // 3)
    flat_grad = list(_flatten(w.gradient))
    n = 0
    with mpmath.workdps(WORKING):
        for q_at in entries(q_shape):
            for w_at in entries(w_shape):
                def at(delta: mpmath.mpf) -> mpmath.mpf:
                    table = _replace(values[head], w_at, to_mpf(_lookup(values[head], w_at, wrt)) + delta)
                    numbers = evaluator(definitions, sizes, {**values, head: table})
                    return numbers.value(quantity, dict(zip(getattr(quantity, "indices", ()), q_at)))

                fd = central_difference(at, h)
                claimed = mpmath.mpf(str(flat_grad[n]))
                n += 1
                if abs(fd - claimed) > mpmath.mpf(10) ** -(DIGITS - 5) * max(1, abs(fd)):
                    where = ", ".join(map(str, q_at + w_at))
                    return [Check(what, method, False, f"entry ({where}): the result gives {mpmath.nstr(claimed, 12)}, finite differences {mpmath.nstr(fd, 12)}")]
    return [Check(what, method, True)]


def _flatten(v: object) -> Iterator:
    if isinstance(v, tuple):
        for x in v:
            yield from _flatten(x)
    else:
        yield v


def _replace(table: object, at: tuple[int, ...], value: object) -> object:
    if not at:
        return value
    items = list(table)
    items[at[0] - 1] = _replace(items[at[0] - 1], at[1:], value)
    return tuple(items)
