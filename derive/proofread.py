"""Proofreading: every formula a document shows is read back and compared with what was checked.

The printer (:mod:`derive.latex`) writes LaTeX for SymPy expressions; :func:`derive.lang.parse_document`
reads LaTeX back into SymPy expressions. While a document is rendered, every formula the printer
writes is recorded with the expression it was written for (see ``latex.recording``), and so is
every number written for a reader and every formula of the wording; then:

- each printed formula must read back to its expression, equal up to SymPy's evaluation (both
  sides rebuilt with evaluation, names stripped of their assumptions; numbers by value), and each
  underbrace must stand over the sub-term at its label's path, with that label's text;
- each number must read back to the value it was written for, to the digits shown;
- each formula of the wording that states a fact about the derivation (an equation between its
  quantities, or a value of one of its sizes and options) must hold: see :func:`wording_facts`.

A failure raises :class:`~derive.errors.DeriveError` naming the formula, and no document is
written. A passed proofreading is cached like the symbolic checks (keyed by everything it read
and by the sources of this module and of the language), so a warm render pays only for the key.

:class:`Proofreader` applies the same reading to a finished document, formula by formula, against
everything the derivation's checks saw (the test over the gallery uses it).
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import mpmath
import sympy as sp

from derive.errors import DeriveError, UsageError
from derive.symbols import ExcludedSum

_SOURCES = ("proofread.py", "lang/grammar.lark", "lang/document.lark", "lang/parse.py", "lang/document.py", "lang/__init__.py", "latex.py")
"""What a cached proofreading depends on beside the formulas: the reader and the printer."""


# --- equality up to evaluation -------------------------------------------------------------------
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
    return sp.expand(ca - cb) == 0


def at(e: sp.Basic, path: Sequence[int]) -> sp.Basic:
    for n in path:
        e = e.args[n]
    return e


def plain(e: Any) -> str:
    from derive.latex import plain as text

    if isinstance(e, sp.Basic):
        return text(e)
    return str(e)


# --- reading ------------------------------------------------------------------------------------
_READ: dict[tuple[str, Any], Any] = {}


def read(tex: str, notation: Any = None) -> Any:
    """The formula ``tex`` read back (memoised: a document and its formats repeat formulas)."""
    from derive.lang import parse_document

    key = (tex, tuple(sorted(notation.names.items())) if notation is not None else ())
    if key not in _READ:
        if len(_READ) > 20_000:
            _READ.clear()
        _READ[key] = parse_document(tex, notation)
    return _READ[key]


def _label_text(written: str) -> str:
    """A label as written after an underbrace, ``_{\\text{no } i}``, without ``_{`` and ``}``."""
    body = written.strip()[1:].strip()
    return re.sub(r"\s+", " ", body[1:-1].strip())


# --- what the printer wrote -----------------------------------------------------------------------
def printed_formula(text: str, expr: sp.Basic, labels: Mapping[tuple, str] | None, notation: Any = None) -> str | None:
    """Why ``text`` is not what the printer should have written for ``expr`` (None when it is):
    it must read back to ``expr``, and each label of ``labels`` (path -> text) must stand under
    the sub-term at its path."""
    try:
        formula = read(text, notation)
    except UsageError as error:
        return f"it does not read back: {error}"
    if len(formula.statements) != 1:
        return f"it reads back as {len(formula.statements)} formulas, not one"
    statement = formula.statements[0]
    if isinstance(expr, (sp.Eq, sp.Ne)):
        relation = "=" if isinstance(expr, sp.Eq) else "≠"
        expected: tuple = (expr.lhs, expr.rhs)
        if statement.relations != (relation,):
            return f"it reads back with the relations {' '.join(statement.relations) or 'none'}, not {relation}"
    else:
        expected = (expr,)
        if statement.relations:
            return f"it reads back as a statement with {' '.join(statement.relations)}, not as one expression"
    for side, value in zip(statement.sides, expected):
        if not same(side, value):
            return f"it reads back as {plain(side)}, not {plain(value)}"
    wanted = sorted((re.sub(r"\s+", " ", t.strip()), path) for path, t in (labels or {}).items())
    found = [(_label_text(t), sub) for sub, t in formula.labels]
    if len(found) != len(wanted):
        return f"it has {len(found)} underbraces for {len(wanted)} labels"
    for label, path in wanted:
        term = at(expr, path)
        match = next((n for n, (t, sub) in enumerate(found) if t == label and same(sub, term)), None)
        if match is None:
            under = [plain(sub) for t, sub in found if t == label]
            return f"the label {label!r} stands under {', '.join(under) or 'nothing'}, not under {plain(term)} (its path {list(path)})"
        found.pop(match)
    return None


def printed_number(text: str, value: Any) -> str | None:
    """Why the decimal ``text`` is not ``value`` to the digits it shows (None when it is)."""
    try:
        formula = read(text)
        (statement,) = formula.statements
        (shown,) = statement.sides
    except (UsageError, ValueError) as error:
        return f"it does not read back as a number: {error}"
    if not (isinstance(shown, sp.Basic) and shown.is_Rational):
        return f"it reads back as {plain(shown)}, not as a number"
    return None if rounds_to(shown, value, text) else f"it is not {_decimal(value)} to the digits shown"


def rounds_to(shown: sp.Rational, value: Any, text: str) -> bool:
    """Whether the decimal ``shown`` (written as ``text``) is ``value`` rounded to its last digit:
    within half a unit of that digit, and of the value's own size (4 significant digits)."""
    with mpmath.workdps(60):
        v = _mp(value)
        s = mpmath.mpf(shown.p) / shown.q
        mantissa = text.split(r"\times")[0]
        places = len(mantissa.split(".")[1]) if "." in mantissa else 0
        exponent = re.search(r"10\^\{(-?\d+)\}", text)
        unit = mpmath.mpf(10) ** (-places + (int(exponent.group(1)) if exponent else 0))
        if v == 0:
            return s == 0
        return abs(s - v) <= unit / 2 * (1 + mpmath.mpf(10) ** -20)


def _mp(value: Any) -> mpmath.mpf:
    if isinstance(value, mpmath.mpf):
        return value
    value = sp.sympify(value)
    if value.is_Rational:
        return mpmath.mpf(value.p) / value.q
    if isinstance(value, sp.Float):
        return mpmath.mpf(value._mpf_)
    return mpmath.mpf(sp.N(value, mpmath.mp.dps))


def _decimal(value: Any) -> str:
    with mpmath.workdps(30):
        return mpmath.nstr(_mp(value), 15)


# --- at render time ------------------------------------------------------------------------------
def rendered(printed: Iterable[tuple[str, sp.Basic, Mapping | None]], numbers: Iterable[tuple[str, Any]], notation: Any = None, facts: Any = None) -> None:
    """Proofread what a document's data holds (see the module's docstring); raise DeriveError at
    the first problem. ``facts`` is a callable that checks the wording's formulas, or None."""
    from derive import cache

    printed = _distinct((t, e, tuple(sorted((labels or {}).items()))) for t, e, labels in printed)
    numbers = _distinct((t, v) for t, v in numbers if not t.lstrip("-").isdigit() or not isinstance(v, (int, sp.Integer)))
    key = _key(printed, numbers, notation, facts)

    def run() -> bool:
        for text, expr, labels in printed:
            problem = printed_formula(text, expr, dict(labels), notation)
            if problem is not None:
                raise DeriveError(f"the printer wrote {text!r} for {plain(expr)}: {problem}")
        for text, value in numbers:
            problem = printed_number(text, value)
            if problem is not None:
                raise DeriveError(f"the number {text!r} was written for {_decimal(value)}: {problem}")
        if facts is not None:
            facts()
        return True

    cache.cached(key, run, kind="proofread")


def _distinct(items: Iterable[tuple]) -> list[tuple]:
    out, seen = [], set()
    for item in items:
        try:
            marker = hash(item)
        except TypeError:
            marker = repr(item)
        if marker not in seen:
            seen.add(marker)
            out.append(item)
    return out


def _key(printed: list, numbers: list, notation: Any, facts: Any) -> str:
    from derive import cache

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    h.update(sp.__version__.encode())
    names = tuple(sorted(getattr(notation, "names", {}).items())) if notation is not None else ()
    h.update(repr((names, getattr(notation, "log", None))).encode())
    h.update(cache.encode([(t, e, tuple((tuple(p), s) for p, s in labels)) for t, e, labels in printed]).encode())
    h.update(repr([(t, str(v)) for t, v in numbers]).encode())
    if facts is not None:
        h.update(facts.key.encode())
    return h.hexdigest()
