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

from derive.equality import canonical, plain, same
from derive.errors import DeriveError, UsageError
from derive.symbols import ExcludedSum

_SOURCES = ("proofread.py", "equality.py", "lang/grammar.lark", "lang/document.lark", "lang/parse.py", "lang/document.py", "lang/__init__.py", "lang/names.py", "latex.py")
"""What a cached proofreading depends on beside the formulas: the reader and the printer."""


def at(e: sp.Basic, path: Sequence[int]) -> sp.Basic:
    for n in path:
        e = e.args[n]
    return e


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


_SCIENTIFIC = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\\times\s*10\^\{(-?\d+)\}\s*$")


def printed_number(text: str, value: Any) -> str | None:
    """Why the decimal ``text`` is not ``value`` to the digits it shows (None when it is)."""
    from derive.lang.document import MAX_EXPONENT

    huge = _SCIENTIFIC.match(text)
    if huge and abs(int(huge.group(2))) > MAX_EXPONENT:
        # 3.855 \times 10^{-43429448190325182766}: a power of ten no rational can hold; mpmath
        # keeps any exponent, so the digits are compared there.
        with mpmath.workdps(60):
            scaled = _mp(value) * mpmath.power(10, -int(huge.group(2)))
            places = len(huge.group(1).split(".")[1]) if "." in huge.group(1) else 0
            ok = abs(scaled - mpmath.mpf(huge.group(1))) <= mpmath.mpf(10) ** -places / 2 * (1 + mpmath.mpf(10) ** -20)
        return None if ok else f"it is not {_decimal(value)} to the digits shown"
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
        mantissa = text.split(r"\times")[0].strip()
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


def label(text: str, derivative: sp.Expr, condition: sp.Basic | None, notation: Any = None) -> str | None:
    """Why the label ``text`` does not name ``derivative`` (where ``condition`` holds), or None: a
    label in words (\\text{...}) names nothing to compare; one in math must read back to the
    derivative, and to its condition where it has one."""
    from derive.lang.document import parse_label

    try:
        formula = parse_label(text, notation)
    except UsageError:
        return "does not read back as a formula"
    if formula is None:
        return None
    sides = [s.sides for s in formula.statements]
    if not sides or len(sides[0]) != 1 or not same(sides[0][0], derivative):
        return f"names {plain(sides[0][0]) if sides and sides[0] else 'nothing'}, but stands under {plain(derivative)}"
    if condition is not None:
        stated = formula.statements[1] if len(formula.statements) > 1 else None
        if stated is None or stated.relations != ("≠",) or not (same(stated.sides[0], condition.args[0]) and same(stated.sides[1], condition.args[1])):
            return f"does not say where it holds ({plain(condition)})"
    return None


# --- at render time ------------------------------------------------------------------------------
def facts(checked: "WordingFacts") -> None:
    """Check the wording's formulas (see :class:`WordingFacts`), cached like the rest."""
    from derive import cache

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in (*_SOURCES, "numeric.py", "shown.py"):
        h.update((here / name).read_bytes())
    h.update(checked.key.encode())
    cache.cached(h.hexdigest(), lambda: checked() or True, kind="proofread")


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


# --- the wording's formulas ----------------------------------------------------------------------
INLINE = re.compile(r"\\\((.+?)\\\)")
"""Inline math in the wording, as it is written there."""
FACT_SIZES = (2, 3, 4)
"""The class counts at which a formula of the wording is evaluated, at random points."""


class WordingFacts:
    """The formulas of a document's wording that state a fact about its derivation, each checked
    against the derivation (see :func:`fact`); called, it raises DeriveError at the first that
    does not hold. ``unchecked`` lists those it does not read as a fact (with why), for tests."""

    def __init__(self, d: Any, texts: Iterable[str], notation: Any = None):
        from derive import cache

        self.d = d
        self.notation = notation
        names = tuple(sorted(notation.names.items())) if notation is not None else ()
        self.formulas = sorted({m for t in texts if isinstance(t, str) for m in INLINE.findall(t)})
        self.unchecked: list[tuple[str, str]] = []
        c = d.concrete
        numbers = (c.classes, c.parameters, c.example.__dict__) if c is not None else None
        content = (
            self.formulas,
            [(x.symbol, x.value) for x in d.setting.definitions],
            [a.statement for a in d.assumptions],
            d.subject,
            d.result.rhs,
            d.general.rhs if d.general is not None else None,
            list(d.options),
        )
        self.key = hashlib.sha256((cache.encode(content) + repr(numbers) + repr(names)).encode()).hexdigest()

    def __call__(self) -> None:
        for tex in self.formulas:
            problem = fact(self.d, tex, self.notation, self.unchecked)
            if problem is not None:
                raise DeriveError(f"the wording says {tex!r}, which {problem}")


def fact(d: Any, tex: str, notation: Any = None, unchecked: list | None = None) -> str | None:
    """Why the wording's formula ``tex`` is false of the derivation ``d`` (None when it holds or
    states no fact).

    Every equation of it is checked: the two sides agree at random points for several H, with
    the derivation's definitions and, if need be, its assumptions (the summary states the result
    under them); a size or option written with its value (H = 3, T = 2) is the document's; what
    holds only at the worked example (o_2 = sigma(ln 3) = 0.75) is checked there, to the digits
    shown. Not a fact, and not checked: a condition (i = k, T > 0), a letter given a meaning
    (u = o_i - y_i), an entry given its example value (y_i = 1 for the true class), lists and
    names alone. ``unchecked`` collects those with the reason.
    """
    skip = (lambda why: unchecked.append((tex, why))) if unchecked is not None else (lambda why: None)
    try:
        formula = read(tex, notation)
    except UsageError as error:
        skip(f"not read: {error}")
        return None
    if any(statement.sides == (_elided(),) for statement in formula.statements):
        skip("a list")
        return None
    for statement in formula.statements:
        if not statement.relations:
            continue
        if any(r not in ("=", "≈") for r in statement.relations):
            skip("a condition")
            continue
        if not all(isinstance(s, sp.Expr) and not isinstance(s, (sp.Tuple, sp.MatrixBase)) and not s.has(_elided()) for s in statement.sides):
            skip("a list or a matrix")
            continue
        from derive.lang.document import PartialOf

        if any(s.atoms(PartialOf) for s in statement.sides):
            skip("a rule in differentials")
            continue
        kind = _kind(d, statement.sides)
        if kind is not None:
            skip(kind)
            continue
        problem = _holds(d, statement)
        if problem is not None:
            return problem
    return None


def _elided() -> sp.Symbol:
    from derive.lang.document import ELIDED

    return ELIDED


def _names(e: sp.Basic) -> set:
    """The names of an expression: indexed bases and symbols that are not indices."""
    return {x.base for x in e.atoms(sp.Indexed)} | {x for x in e.free_symbols if isinstance(x, sp.Symbol) and not x.is_integer} - {x.label for x in e.atoms(sp.IndexedBase)}


def _kind(d: Any, sides: Sequence[sp.Expr]) -> str | None:
    """Why an equation of the wording is not a fact to check, or None when it is one."""
    settings = _settings(d)
    defined = {canonical(x.symbol.base if isinstance(x.symbol, sp.Indexed) else x.symbol) for s in settings for x in s.definitions}
    known = defined | {canonical(x) for s in settings for x in _names(sp.Tuple(*[e for x in s.definitions for e in (x.symbol, x.value)]))}
    known |= {canonical(x) for x in _names(d.subject)}
    options = {canonical(x) for x in _values_of(d)}
    names = [{canonical(x) for x in _names(s)} for s in sides]
    bare = [isinstance(s, (sp.Symbol, sp.Indexed)) and not (isinstance(s, sp.Symbol) and s.is_integer) for s in sides]
    if all(not n for n in names):
        if any(isinstance(s, sp.Symbol) and s.is_integer and s.name.isupper() for s in sides):
            return "a size"
        return "indices and numbers: a condition" if any(s.free_symbols for s in sides) else None
    if any("'" in str(x) and x not in known for n in names for x in n):
        return "a name with a prime that the derivation does not define"
    for side, n, alone in zip(sides, names, bare):
        if alone and canonical(side) in options:
            return None  # an option with its value: T = 2
        if alone and not (n & known):
            return "a letter given a meaning"
    if not any(n & defined for n in names) and any(bare):
        return "an entry given its example value"
    return None


def _settings(d: Any) -> list:
    """Where the wording's formulas may hold: the derivation's setting, its parts', and those of
    its claims (the pitfall's linear outputs)."""
    out = [d.setting, *(p.setting for p in d.parts)]
    for x in (d.pitfall, d.counterexample):
        for c in x.claims if x is not None else ():
            if all(c.setting is not s for s in out):
                out.append(c.setting)
    return out


def _holds(d: Any, statement: Any) -> str | None:
    """None when each relation of the statement holds for the derivation (see :func:`fact`)."""
    sides = statement.sides
    sizes_and_options = _values_of(d)
    for a, relation, b in zip(sides, statement.relations, sides[1:]):
        if relation == "≈" or (a.is_number and b.is_number):
            if _at_document(d, a, b, sizes_and_options):
                continue
            return f"does not hold at this document's numbers ({plain(a)} against {plain(b)})"
        if any(_at_random(d, setting, a, b) for setting in _settings(d)) or _at_document(d, a, b, sizes_and_options):
            continue
        return f"does not hold: {plain(a)} and {plain(b)} differ at random points (with or without the assumptions) and at the worked example"
    return None


OPTION_SYMBOLS = {"temperature": "T", "label_smoothing": "epsilon"}
"""The symbol of each option in the formulas (T = 2, \\varepsilon = 0.1)."""


def _values_of(d: Any) -> dict:
    """The options a document states with their values, by the symbol the formulas write."""
    return {sp.Symbol(OPTION_SYMBOLS.get(key, key)): value for key, value in d.options}


def _at_random(d: Any, setting: Any, a: sp.Expr, b: sp.Expr) -> bool:
    """Whether a = b at random points for several H, with the definitions of ``setting``, and
    either without assumptions or with all of the setting's (those a derivation or a claim may
    assume)."""
    from derive.numeric import Evaluator
    from derive.shown import limit
    from derive.verify import extents

    rename = _internal(d, (a, b))
    a, b = a.xreplace(rename), b.xreplace(rename)
    free = sorted({x for e in (a, b) for x in _free_indices(e)}, key=str)
    for assumptions in ((), tuple(sorted(setting.constraints))):
        rng = random.Random(f"derive-wording:{a}:{b}")
        good = True
        try:
            for size in FACT_SIZES:
                sizes = {s: int(v) for s, v in extents(setting, size).items()}
                index = {x: rng.randint(1, int(sizes.get(limit(setting, x), size))) for x in free}
                with mpmath.workdps(40):
                    evaluator = Evaluator(setting.definitions, sizes, _random_leaves(setting, (a, b), sizes, assumptions, rng))
                    u, v = evaluator.value(a, index), evaluator.value(b, index)
                    if not abs(u - v) <= mpmath.mpf(10) ** -25 * max(1, abs(u)):
                        good = False
                        break
        except (TypeError, KeyError, ValueError, ZeroDivisionError, IndexError):
            good = False
        if good:
            return True
    return False


class _Random:
    """Random values for the entries of a given quantity, drawn as they are asked for: from
    [-3, 3], or from [1/2, 3] for one known to be positive."""

    def __init__(self, rng: random.Random, positive: bool):
        self.rng, self.positive, self.drawn = rng, positive, {}

    def draw(self) -> mpmath.mpf:
        return mpmath.mpf(self.rng.uniform(0.5, 3) if self.positive else self.rng.uniform(-3, 3))

    def __getitem__(self, at: tuple) -> mpmath.mpf:
        if at not in self.drawn:
            self.drawn[at] = self.draw()
        return self.drawn[at]

    def __setitem__(self, at: tuple, value: mpmath.mpf) -> None:
        self.drawn[at] = value


def _random_leaves(setting: Any, exprs: Sequence[sp.Expr], sizes: Mapping, assumptions: Sequence[str], rng: random.Random) -> dict:
    """A random value for every quantity the definitions do not define (every entry of an indexed
    one, drawn when first used), then the assumptions imposed by their constraints."""
    from derive.numeric import Evaluator

    defined = {x.symbol.base if isinstance(x.symbol, sp.Indexed) else x.symbol for x in setting.definitions}
    terms = (*exprs, *(x.value for x in setting.definitions))
    values: dict = {}
    for e in terms:
        for base in e.atoms(sp.IndexedBase):
            if base not in defined and base not in values:
                values[base] = _Random(rng, bool(getattr(base, "is_positive", False)))
        labels = {b.label for b in e.atoms(sp.IndexedBase)}
        for x in e.free_symbols:
            if isinstance(x, sp.Symbol) and not x.is_integer and x not in defined and x not in values and x not in labels:
                values[x] = _Random(rng, bool(x.is_positive)).draw()
    for key in assumptions:
        constraint = setting.constraints[key]
        n = int(sizes[setting.classes])
        fixed = constraint(n, sizes) if getattr(constraint, "rows", None) else constraint(n)
        evaluator = Evaluator((), sizes, values)
        for entry, value in fixed.items():
            table = values.setdefault(entry.base, _Random(rng, False))
            table[tuple(int(v) for v in entry.indices)] = evaluator.value(value)
    return values


def _at_document(d: Any, a: sp.Expr, b: sp.Expr, values: Mapping) -> bool:
    """Whether a = b at the document's own numbers: its sizes and options, and its worked
    example's numbers where it has one; a decimal is its value rounded to the digits shown."""
    from derive.shown import example_values

    a, b = a.xreplace(values), b.xreplace(values)
    rename = _internal(d, (a, b))
    a, b = a.xreplace(rename), b.xreplace(rename)
    try:
        with mpmath.workdps(40):
            if d.concrete is not None and (a.free_symbols or b.free_symbols):
                evaluator, _ = example_values(d)
                u, v = evaluator.value(a), evaluator.value(b)
            elif a.free_symbols or b.free_symbols:
                return False
            else:
                u, v = _mp(a), _mp(b)
    except (TypeError, KeyError, ValueError, ZeroDivisionError, IndexError):
        return False
    for x, other in ((a, v), (b, u)):
        if x.is_Rational and not x.is_Integer:
            with mpmath.workdps(40):
                return rounds_to(x, other, _decimal_text(x))
    with mpmath.workdps(40):
        return abs(u - v) <= mpmath.mpf(10) ** -25 * max(1, abs(u))


def _decimal_text(x: sp.Rational) -> str:
    """A decimal as the wording writes it (enough to know its last digit): 0.75."""
    q, places = x.q, 0
    while q % 10 != 0 and (q % 2 == 0 or q % 5 == 0) or q % 10 == 0:
        if q == 1:
            break
        places += 1
        q = (x * 10**places).q
        if places > 30:
            break
    return f"{float(x):.{places}f}"


def _internal(d: Any, exprs: Sequence[sp.Expr]) -> dict:
    """The derivation's own symbols for the names the reader built: E with its assumptions, the
    bases, the indices, so that the evaluators find their definitions."""
    own: dict[str, sp.Basic] = {}
    for x in d.setting.definitions:
        for e in (x.symbol, x.value):
            for s in e.atoms(sp.Symbol):
                own.setdefault(s.name, s)
            for b in e.atoms(sp.IndexedBase):
                own.setdefault(str(b.label), b)
    for s in (*d.subject.atoms(sp.Symbol), d.setting.classes, *d.setting.ranges.values()):
        own.setdefault(s.name, s)
    out: dict = {}
    for e in exprs:
        for s in e.atoms(sp.Symbol):
            if s.name in own and own[s.name] != s and isinstance(own[s.name], sp.Symbol):
                out[s] = own[s.name]
        for b in e.atoms(sp.IndexedBase):
            if str(b.label) in own and own[str(b.label)] != b:
                out[b] = own[str(b.label)]
    return out


def _free_indices(e: sp.Basic) -> set:
    """The index letters no sum binds (a size such as H is no index)."""
    bound = {lim[0] for s in e.atoms(sp.Sum) for lim in s.limits} | {s.index for s in e.atoms(ExcludedSum)}
    return {x for x in e.atoms(sp.Symbol) if x.is_integer and x not in bound and x.name.islower()}


# --- a finished document -------------------------------------------------------------------------
class Proofreader:
    """Every formula of a finished document against what the derivation's checks saw.

    A relation between two expressions must be one the checks saw (the two sides in one class of
    the checked equations: the steps, each definition, assumption and identity, the claims that
    hold and the written-out error; ``?=`` and ``\\neq`` only between the sides of a claim that
    does not hold); an expression equal to a number, a matrix or a list of numbers must be so at
    the worked example, to the digits shown; a symbolic matrix must be the appendix's, entry by
    entry (elided ones left out); a case split must be the cases of the step that states them.
    A formula of the wording (``prose``, as the document wrote it) is read as :func:`fact` reads
    it. :meth:`formula` returns what is wrong with one formula, or None.
    """

    def __init__(self, d: Any, notation: Any = None, prose: Iterable[str] = ()):
        self.d, self.notation = d, notation
        self.prose = set(prose)
        self.parent: dict = {}
        self.wrong: list[tuple] = []
        self.cases: list[tuple] = []
        self.matrices: dict = {}
        self.numbers: list = []
        for x in (d, *d.parts):
            previous = x.subject
            for s in x.steps:
                self._equal(previous, s.rhs)
                self._equal(s.lhs, s.rhs)
                previous = s.rhs
                if s.identity is not None:
                    self._equal(*s.identity.args)
                    if s.cases:
                        self.cases.append((s.identity.rhs, tuple((c.value, c.condition) for c in s.cases)))
            for defn in x.setting.definitions:
                self._definition(defn)
            for a in x.assumptions:
                if isinstance(a.statement, sp.Eq):
                    self._equal(*a.statement.args)
        for section in (d.pitfall, d.counterexample):
            for c in section.claims if section is not None else ():
                if c.holds:
                    self._equal(*c.equation.args)
                else:
                    self.wrong.append(tuple(canonical(x) for x in c.equation.args))
                for defn in c.setting.definitions:
                    self._definition(defn)
        self._concrete()

    # The classes of checked equations.
    def _root(self, e: Any) -> Any:
        key = canonical(e)
        while self.parent.get(key, key) != key:
            key = self.parent[key]
        return key

    def _equal(self, a: Any, b: Any) -> None:
        ra, rb = self._root(a), self._root(b)
        self.parent.setdefault(ra, ra)
        self.parent.setdefault(rb, rb)
        if ra != rb:
            self.parent[ra] = rb

    def _definition(self, defn: Any) -> None:
        self._equal(defn.symbol, defn.value)
        if isinstance(defn.symbol, sp.Indexed):
            from derive.symbols import i, j, k

            for pattern in defn.symbol.indices:
                for other in (i, j, k):
                    if other not in defn.value.atoms(sp.Symbol) - {pattern}:
                        self._equal(defn.symbol.xreplace({pattern: other}), defn.value.xreplace({pattern: other}))

    def _known(self, a: Any, b: Any) -> bool:
        """Whether a = b is an equation the checks saw (or the same expression)."""
        if same(a, b):
            return True
        ra, rb = self._root(a), self._root(b)
        if ra == rb and ra in self.parent:
            return True
        members = [k for k in self.parent if self._root(k) == rb]
        near = [k for k in self.parent if self._root(k) == ra]
        if rb in self.parent and any(same(a, m) for m in members):
            return True
        return ra in self.parent and any(same(b, m) for m in near)

    # The appendix and the worked example.
    def _concrete(self) -> None:
        d = self.d
        c = d.concrete
        self.evaluator = None
        if d.worked is not None:
            self.evaluator = _worked_values(d)
            w = d.worked
            for _, v in (*w.given, *w.defined):
                self.numbers.extend(_flat_numbers(v))
            self.numbers.extend(_flat_numbers(w.quantity) + _flat_numbers(w.gradient))
        if d.pitfall is not None:
            p = d.pitfall
            self.numbers.extend([*p.shortcut, *p.quotient, *p.direct, *p.example.probabilities, *p.example.target, *p.example.gradient])
        if d.counterexample is not None:
            for x in d.counterexample.comparisons:
                ex = x.example
                self.numbers.extend([*ex.probabilities, *ex.target, *ex.gradient, *x.shortcut])
                self.numbers.extend(g and s / g for g, s in zip(ex.gradient, x.shortcut))
        if c is None:
            return
        from derive.shown import example_values

        with mpmath.workdps(40):
            self.evaluator, _ = example_values(d)
        n = c.classes
        ex = c.example
        for name in ("logits", "probabilities", "target", "gradient", "x", "b", "gradient_b"):
            self.numbers.extend(_flat_numbers(getattr(ex, name, ())))
        for name in ("W", "gradient_W", "jacobian"):
            self.numbers.extend(_flat_numbers(getattr(ex, name, ())))
        for value in (getattr(ex, "loss", None), getattr(ex, "gradient_sum", None)):
            if value is not None:
                self.numbers.append(value)
        for _, value in getattr(ex, "extra", ()):
            self.numbers.extend(_flat_numbers(value))
        fixed = {d.setting.classes: sp.Integer(n), **dict(c.parameters)}
        definition = next((x for x in d.definitions if x.symbol == d.subject.expr), None)
        if definition is not None:
            self._equal(definition.symbol, definition.value.xreplace(fixed))
            if c.loss is not None:
                self._equal(definition.symbol, getattr(c.loss, "expr", c.loss))
        if c.jacobian is not None:
            # Written \frac{\partial o}{\partial z} (\frac{\partial \ln o}{\partial z} for log-softmax).
            name = _bare(d.subject) if c.gradient is None else sp.Derivative(sp.Symbol(str(d.setting.intermediates[0])), sp.Symbol(str(d.setting.wrt.base)))
            self.matrices[canonical(name)] = lambda r, col: c.jacobian[r, col]
        if c.gradient is not None and not c.by:
            self.matrices[canonical(_bare(d.subject))] = lambda r, col: c.gradient[r]
        elif c.gradient is not None:
            inputs = len(ex.x)
            self.matrices[canonical(sp.Derivative(d.subject.expr, _bare(d.setting.wrt)))] = lambda r, col: c.gradient[r * inputs + col]
            if d.parts:
                self.matrices[canonical(sp.Derivative(d.subject.expr, _bare(d.parts[0].setting.wrt)))] = lambda r, col: c.gradient[n * inputs + r]

    # One formula.
    def formula(self, tex: str) -> str | None:
        if tex in self.prose:
            return fact(self.d, tex, self.notation)
        try:
            formula = read(tex, self.notation)
        except UsageError as error:
            return f"it does not read back: {error}"
        for statement in formula.statements:
            problem = self._statement(statement)
            if problem is not None:
                return problem
        return None

    def _statement(self, statement: Any) -> str | None:
        sides = statement.sides
        if not statement.relations:
            return self._alone(sides[0])
        for a, relation, b in zip(sides, statement.relations, sides[1:]):
            problem = self._relation(a, relation, b)
            if problem is not None:
                return f"{plain(a)} {relation} {plain(b)}: {problem}"
        return None

    def _alone(self, side: Any) -> str | None:
        """A formula alone: a decimal must be one of the document's numbers; a matrix one of its
        matrices; anything else only has to read."""
        from derive.lang.document import Approximately

        if isinstance(side, Approximately):
            return None if self._approx(side.value, side.decimal) else "the decimal is not the value rounded"
        if isinstance(side, sp.Expr) and side.is_Rational and not side.is_Integer:
            return None if any(rounds_to(side, v, _decimal_text(side)) for v in self.numbers) else "a number the document does not have"
        return None

    def _relation(self, a: Any, relation: str, b: Any) -> str | None:
        from derive.lang.document import Cases

        if relation in ("?=", "≠"):
            pair = (canonical(a), canonical(b))
            return None if any(same(pair[0], x) and same(pair[1], y) for x, y in self.wrong) else "not a claim the checks showed wrong"
        if relation not in ("=", "≈"):
            return None  # a condition (T > 0)
        if isinstance(b, Cases) or isinstance(a, Cases):
            cases, other = (b, a) if isinstance(b, Cases) else (a, b)
            for compact, rows in self.cases:
                if same(compact, other) and len(rows) == len(cases.rows) and all(same(v, w) and same(c, e) for (v, c), (w, e) in zip(rows, cases.rows)):
                    return None
            return "not the cases of a step"
        if isinstance(b, sp.MatrixBase) or isinstance(a, sp.MatrixBase):
            return self._matrix(a, b)
        if isinstance(b, sp.Tuple) or isinstance(a, sp.Tuple):
            return self._matrix(a, sp.ImmutableMatrix(list(b)) if isinstance(b, sp.Tuple) else b) if not isinstance(a, sp.Tuple) else "a list on the left"
        if relation == "=" and self._known(a, b):
            return None
        if relation == "=" and any(same(a, x) and same(b, y) for x, y in self.wrong):
            return None  # a claim as the table of checks states it, with its verdict beside it
        if relation == "≈" or a.is_number or b.is_number:
            return None if self._approx(a, b) else "not so at the worked example"
        return "not an equation the checks saw"

    def _value(self, e: sp.Expr) -> mpmath.mpf:
        if not e.free_symbols:
            return _mp(e)
        if self.evaluator is None:
            raise KeyError("no worked example")
        values = {sp.Symbol(name): v for name, v in ((OPTION_SYMBOLS.get(k, k), v) for k, v in self.d.options)}
        e = e.xreplace(values)
        return self.evaluator.value(e.xreplace(_internal(self.d, (e,))))

    def _approx(self, a: sp.Expr, b: sp.Expr) -> bool:
        """a = b at the document's numbers; a decimal is the other side rounded to its digits."""
        from derive.lang.document import Approximately

        try:
            with mpmath.workdps(40):
                values = [(_mp(x) if x.is_number else self._value(x)) for x in (a, b)]
        except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
            return False
        for x, other in ((b, values[0]), (a, values[1])):
            if isinstance(x, Approximately):
                return False
            if x.is_Rational and not x.is_Integer:
                return rounds_to(x, other, _decimal_text(x))
        with mpmath.workdps(40):
            return abs(values[0] - values[1]) <= mpmath.mpf(10) ** -25 * max(1, abs(values[0]))

    def _matrix(self, name: Any, m: Any) -> str | None:
        """A name and its matrix (or two matrices): entry by entry, elided ones left out."""
        from derive.lang.document import ELIDED, Approximately

        if isinstance(name, sp.MatrixBase) and isinstance(m, sp.MatrixBase):
            # Two matrices (the layer z = W x + b): equal at the worked example.
            if name.shape != m.shape:
                return "matrices of different shapes"
            for x, y in zip(name, m):
                if not x.has(ELIDED) and not y.has(ELIDED) and not (self._known(x, y) or self._approx(x, y)):
                    return f"{plain(x)} and {plain(y)} differ"
            return None
        if isinstance(name, sp.MatrixBase):
            name, m = m, name
        n = self.d.classes
        rows, cols = _unelided(m.rows, self._size(name, 0, m)), _unelided(m.cols, self._size(name, 1, m))
        rows_map, cols_map = _positions(m, rows, axis=0), _positions(m, cols, axis=1)
        symbolic = self.matrices.get(canonical(name))
        for r, row in rows_map.items():
            for col, column in cols_map.items():
                entry = m[r, col]
                if entry == ELIDED:
                    continue
                if isinstance(entry, Approximately) or entry.is_number:
                    value = entry.value if isinstance(entry, Approximately) else entry
                    target = _entry_of(self.d, name, row, column, m.cols == 1)
                    if target is None or not self._approx(target, value) or (isinstance(entry, Approximately) and not self._approx(entry.value, entry.decimal)):
                        return f"entry ({row + 1}, {column + 1}) is not {plain(target)} at the worked example"
                elif symbolic is None or not same(entry, symbolic(row, column)):
                    return f"entry ({row + 1}, {column + 1}) is not the appendix's {plain(symbolic(row, column)) if symbolic else '(no such matrix)'}"
        return None

    def _size(self, name: Any, axis: int, m: Any) -> int:
        """How many rows (axis 0) or columns the matrix of ``name`` has in full."""
        n = self.d.classes or 0
        if axis == 1 and m.cols == 1:
            return 1
        c = self.d.concrete
        inputs = len(c.example.x) if c is not None and isinstance(getattr(c.example, "x", None), tuple) else None
        names = {str(x) for x in name.atoms(sp.Symbol)}
        if axis == 1 and inputs is not None and ({"W", "x"} & names) and not {"z", "o"} <= names:
            return inputs
        if axis == 0 and inputs is not None and names == {"x"}:
            return inputs
        if self.d.worked is not None:
            return _worked_shape(self.d, name, axis, m)
        return n


def _bare(e: sp.Basic) -> sp.Basic:
    """An expression with its entries written as the names of their quantities: o_i -> o."""
    return e.xreplace({x: sp.Symbol(str(x.base)) for x in e.atoms(sp.Indexed)})


def _flat_numbers(v: Any) -> list:
    if isinstance(v, (tuple, list)) or hasattr(v, "__len__") and hasattr(v, "__getitem__") and not isinstance(v, (str, sp.Basic)):
        out = []
        for x in v:
            out.extend(_flat_numbers(x))
        return out
    return [v] if v is not None else []


def _unelided(shown: int, full: int) -> int:
    return full if full else shown


def _positions(m: Any, full: int, axis: int) -> dict[int, int]:
    """Shown row (or column) -> its index in the full matrix: those after an elided one count
    from the end."""
    from derive.lang.document import ELIDED

    count = m.rows if axis == 0 else m.cols
    lines = [[m[r, c] for c in range(m.cols)] if axis == 0 else [m[r, c] for r in range(m.rows)] for r_or_c in range(count) for r, c in [(r_or_c, 0) if axis == 0 else (0, r_or_c)]]
    gap = next((n for n, line in enumerate(lines) if all(x == ELIDED for x in line)), None)
    if gap is None:
        return {n: n for n in range(count)}
    return {n: (n if n < gap else full - (count - n)) for n in range(count) if n != gap}


def _entry_of(d: Any, name: Any, row: int, column: int, vector: bool) -> sp.Expr | None:
    """The entry (row, column) of the quantity ``name`` writes: z_r, W_rc, dE/dz_r, do_r/dz_c."""
    arity = {str(x.base): len(x.indices) for defn in d.setting.definitions for e in (defn.symbol, defn.value) for x in e.atoms(sp.Indexed)}
    arity |= {str(d.setting.wrt.base): len(d.setting.wrt.indices)}
    if d.worked is not None:
        arity |= {str(b): len(_shape(v)) for b, v in d.worked.given}

    def entry(symbol: sp.Symbol, *at: int) -> sp.Basic:
        count = arity.get(symbol.name, 0)
        return symbol if count == 0 else sp.IndexedBase(symbol.name)[tuple(a + 1 for a in at[:count])]

    if isinstance(name, sp.Symbol):
        return entry(name, row, column)
    if isinstance(name, sp.Derivative):
        (variable, _), = name.variable_count
        f = name.expr
        own = {s: entry(s, row) for s in f.atoms(sp.Symbol) if arity.get(s.name)}
        if vector:
            return sp.Derivative(f.xreplace(own), entry(variable, row))
        if arity.get(variable.name) == 2:
            return sp.Derivative(f, entry(variable, row, column))
        return sp.Derivative(f.xreplace(own), entry(variable, column))
    return None


def _shape(v: Any) -> tuple:
    shape = []
    while isinstance(v, tuple) and v:
        shape.append(len(v))
        v = v[0]
    return tuple(shape)


def _worked_shape(d: Any, name: Any, axis: int, m: Any) -> int:
    for b, v in d.worked.given:
        if str(b) in {str(s) for s in name.atoms(sp.Symbol)}:
            shape = _shape(v)
            return shape[axis] if axis < len(shape) else 1
    return m.rows if axis == 0 else m.cols


def _worked_values(d: Any) -> Any:
    """An evaluator at a planned derivation's worked example: its given numbers, its sizes."""
    from derive.numeric import Evaluator
    from derive.worked import rational

    w = d.worked
    values: dict = {}
    for base, v in w.given:
        if isinstance(v, tuple):
            table: dict = {}

            def fill(x: Any, at: tuple) -> None:
                if isinstance(x, tuple):
                    for n, y in enumerate(x, 1):
                        fill(y, (*at, n))
                else:
                    table[at] = _mp(rational(x))

            fill(v, ())
            values[base] = table
        else:
            values[base] = _mp(rational(v))
    return Evaluator(d.setting.definitions, dict(w.sizes), values)


