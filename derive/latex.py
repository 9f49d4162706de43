"""The one place that turns SymPy expressions into LaTeX.

SymPy's own printer reorders factors (``\\log{(o_i)} y_i``), drops the parentheses an unevaluated
product needs (``\\frac{y_i}{o_i} - o_i o_k`` for a product with a negative factor) and uses macros
GitHub rejects. Derivations keep their terms in the textbook's order as unevaluated expressions, so
this printer prints ``.args`` in order, and only canonical (evaluated) products are sorted into
reading order: numbers, plain symbols, brackets, then functions and sums.

Every formula it writes uses only macros that KaTeX and GitHub's MathJax accept.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator, Mapping

import sympy as sp

from derive import functions as fn
from derive.model import Path
from derive.symbols import ExcludedSum


@dataclass(frozen=True)
class Notation:
    """How internal names are written: ``names`` maps z, o, y, H, i, j, k, E to LaTeX.

    :mod:`derive.notation` builds them: presets, overrides, validation."""

    names: Mapping[str, str] = field(default_factory=dict)
    log: str = r"\ln"

    def name(self, internal: str) -> str:
        # A decorated letter follows its letter: the smoothed target y', the scaled logits \tilde{z}.
        if internal.endswith("'"):
            return self.name(internal[:-1]) + "'"
        if internal.startswith(r"\tilde{") and internal.endswith("}"):
            return rf"\tilde{{{self.name(internal[7:-1])}}}"
        return self.names.get(internal, internal)


DEFAULT = Notation()

GREEK = {name: "\\" + name for name in "alpha beta gamma delta zeta eta theta kappa lambda mu nu xi pi rho sigma tau phi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega".split()} | {
    "epsilon": r"\varepsilon"
}
"""A symbol named after a Greek letter is that letter (epsilon in the textbooks' form)."""

_NOTATION: ContextVar[Notation] = ContextVar("notation", default=DEFAULT)
_RECORD: ContextVar[list | None] = ContextVar("record", default=None)


def latex(
    expr: sp.Basic,
    labels: Mapping[Path, str] | None = None,
    notation: Notation | None = None,
) -> str:
    """Print ``expr``; sub-terms at the paths in ``labels`` get an underbrace with that (math) text.

    Without ``notation``, the one :func:`printing` set is used (outside it, the seed notation).
    """
    n = notation or _NOTATION.get()
    text = _Printer(n, dict(labels or {})).print(expr, ())
    record = _RECORD.get()
    if record is not None:
        record.append((text, expr, labels, n))
    return text


def printing_notation() -> Notation:
    """The notation :func:`printing` set (the seed notation outside it)."""
    return _NOTATION.get()


@contextmanager
def recording() -> Iterator[list]:
    """Every :func:`latex` call in the block is noted as (text, expression, labels, notation), so
    that what a document shows can be read back and compared (see :mod:`derive.proofread`)."""
    record: list = []
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)


@contextmanager
def printing(notation: Notation) -> Iterator[None]:
    """Every :func:`latex` call in the block (a whole document) writes ``notation``."""
    token = _NOTATION.set(notation)
    try:
        yield
    finally:
        _NOTATION.reset(token)


def plain(expr: sp.Basic) -> str:
    """A one-line text form, for the readable tree of a derivation and for error messages."""
    return sp.sstr(expr, order="none")


class _Printer:
    def __init__(self, notation: Notation, labels: dict[Path, str]):
        self.n = notation
        self.labels = labels

    def print(self, e: sp.Basic, path: Path, parens: bool = False) -> str:
        for cls in type(e).__mro__:
            method = _DISPATCH.get(cls)
            if method is not None:
                text = method(self, e, path)
                break
        else:
            raise TypeError(f"no LaTeX rule for {type(e).__name__}: {plain(e)}")
        if parens:
            text = rf"\left({text}\right)"
        label = self.labels.get(path)
        if label is not None:
            return rf"\underbrace{{{text}}}_{{{label}}}"
        return text

    def child(self, e: sp.Basic, path: Path, n: int) -> str:
        return self.print(e.args[n], path + (n,))

    # --- atoms ---------------------------------------------------------------------------------
    def symbol(self, e: sp.Symbol, path: Path) -> str:
        name = self.n.name(e.name)
        return GREEK.get(name, name)

    def integer(self, e: sp.Integer, path: Path) -> str:
        return str(e.p)

    def rational(self, e: sp.Rational, path: Path) -> str:
        sign = "-" if e < 0 else ""
        return rf"{sign}\frac{{{abs(e.p)}}}{{{e.q}}}"

    def pi(self, e: sp.Basic, path: Path) -> str:
        return r"\pi"

    def float_(self, e: sp.Float, path: Path) -> str:
        return sp.latex(e)

    def indexed(self, e: sp.Indexed, path: Path) -> str:
        label = e.base.label
        base = self.n.name(label.name if label.is_Symbol else str(label))
        base = GREEK.get(base, base)  # gamma_d is \gamma_d
        parts = [self.print(ix, path + (n + 1,)) for n, ix in enumerate(e.indices)]
        # W_{kd} for single letters, as textbooks write a matrix entry; W_{1,2} for numbers.
        letters = all(ix.is_Symbol for ix in e.indices) and all(len(t) == 1 for t in parts)
        index = ("" if letters else ",").join(parts)
        return f"{base}_{index}" if len(index) == 1 else f"{base}_{{{index}}}"

    def delta(self, e: sp.KroneckerDelta, path: Path) -> str:
        a, b = (self.child(e, path, n) for n in (0, 1))
        # A name that is a command (\alpha) is kept apart from a letter after it.
        gap = " " if a[-1:].isalpha() and a.startswith("\\") and b[:1].isalpha() else ""
        return rf"\delta_{{{a}{gap}{b}}}"

    # --- operators -----------------------------------------------------------------------------
    def add(self, e: sp.Add, path: Path) -> str:
        order = list(range(len(e.args)))
        if _canonical(e):
            # SymPy stores sums in its hash-free canonical order; print them as polynomials read.
            ranked = e.as_ordered_terms()
            order.sort(key=lambda n: ranked.index(e.args[n]))
        out = ""
        for pos, n in enumerate(order):
            term = self._term(e, path, n)
            if pos == 0:
                out = term
            elif term.startswith("-"):
                out += " - " + term[1:].lstrip()
            else:
                out += " + " + term
        return out

    def _term(self, e: sp.Add, path: Path, n: int) -> str:
        nested = isinstance(e.args[n], sp.Add) and path + (n,) not in self.labels
        return self.print(e.args[n], path + (n,), parens=nested)

    def mul(self, e: sp.Mul, path: Path) -> str:
        order = list(range(len(e.args)))
        if _canonical(e):
            order.sort(key=lambda n: _factor_rank(e.args[n]))
        sign = ""
        num: list[tuple[int, sp.Basic]] = []
        den: list[tuple[int, sp.Basic]] = []
        for n in order:
            f = e.args[n]
            if f == 1 and len(e.args) > 1:
                continue
            if f == -1 and not num and not sign:
                sign = "-"
            elif isinstance(f, sp.Pow) and f.exp.is_Number and f.exp < 0 and path + (n,) not in self.labels:
                # A labelled 1/T keeps its own fraction, so that its underbrace has something to stand under.
                den.append((n, f))
            else:
                num.append((n, f))
        halves = [f for _, f in num if f.is_Rational and not f.is_Integer]
        rooted = any(isinstance(f, sp.Pow) and f.base.is_Integer and f.base > 1 and f.exp == sp.S.Half and halves and halves[0].q % int(f.base) == 0 for _, f in num)
        if den or rooted:
            # Derivatives, sums and functions stay beside the fraction, not inside its numerator.
            inside = [(n, f) for n, f in num if _simple(f) and path + (n,) not in self.labels]
            after = [(n, f) for n, f in num if (n, f) not in inside]
            if not inside and after and isinstance(after[0][1], sp.Add) and path + (after[0][0],) not in self.labels:
                # A sum over the denominator is the numerator of one fraction, as in the quotient rule;
                # what follows it stays beside: (1 - y_i)/(1 - o_i) do_i/dz_k.
                (n, f), rest = after[0], after[1:]
                frac = rf"\frac{{{self.print(f, path + (n,))}}}{{{self._product([(m, None) for m, _ in den], path, inverse=True, source=e)}}}"
                return sign + frac + (" " + self._product(rest, path, lead=True) if rest else "")
            # A fraction of a fraction is one fraction: (1/2) x / T is x / (2 T); sqrt(2)/2 is
            # 1/sqrt(2), and the roots below the line are one root: 1 / (sqrt(2) sqrt(pi)) is
            # 1 / sqrt(2 pi).
            ratio = next(((n, f) for n, f in inside if f.is_Rational and not f.is_Integer and path + (n,) not in self.labels), None)
            lead, roots = "", []
            if ratio is not None:
                inside = [(n, f) for n, f in inside if (n, f) != ratio]
                p, q = ratio[1].p, ratio[1].q
                for n, f in list(inside):
                    if isinstance(f, sp.Pow) and f.base.is_Integer and f.base > 1 and f.exp == sp.S.Half and q % int(f.base) == 0 and path + (n,) not in self.labels:
                        inside.remove((n, f))
                        q //= int(f.base)
                        roots.append(str(f.base))
                if p < 0:
                    sign = "" if sign else "-"
                if abs(p) != 1:
                    inside = [(ratio[0], sp.Integer(abs(p))), *inside]
                lead = f"{q} " if q != 1 else ""
            rooted = [(n, f) for n, f in den if f.exp == -sp.S.Half and f.base.is_number and path + (n,) not in self.labels]
            roots += [self.print(f.base, path + (n, 0)) for n, f in rooted]
            den = [(n, f) for n, f in den if (n, f) not in rooted]
            num = inside
            top = self._product(num, path) if num else "1"
            below = [lead.strip()] if lead else []
            if roots:
                below.append(rf"\sqrt{{{' '.join(roots)}}}")
            if den:
                below.append(self._product([(n, None) for n, _ in den], path, inverse=True, source=e))
            bottom = " ".join(below)
            frac = rf"\frac{{{top}}}{{{bottom}}}"
            if after:
                frac += " " + self._product(after, path, lead=True)
            return sign + frac
        return sign + self._product(num, path)

    def _product(self, factors, path: Path, inverse: bool = False, source: sp.Basic | None = None, lead: bool = False) -> str:
        parts: list[str] = []
        for pos, (n, f) in enumerate(factors, int(lead)):
            if inverse:
                p = source.args[n]
                base, exp = p.base, -p.exp
                text = self.print(base, path + (n, 0))
                if exp == sp.S.Half:
                    text = rf"\sqrt{{{text}}}"
                elif exp != 1:
                    text = (text if _atomic(base) else rf"\left({text}\right)") + f"^{{{exp}}}"
                elif isinstance(base, sp.Add) and len(factors) > 1:
                    text = rf"\left({text}\right)"  # N (epsilon + v), not N epsilon + v
            else:
                text = self.print(f, path + (n,), parens=isinstance(f, sp.Add) or (pos > 0 and _signed(f)))
            parts.append(text)
        out = parts[0] if parts else "1"
        for prev, text in zip(parts, parts[1:]):
            joint = r" \cdot " if (prev.startswith(r"\frac") and text.startswith(r"\frac")) or text[0].isdigit() or (prev[-1:].isdigit() and text.startswith(r"\frac")) else " "
            out += joint + text
        return out

    def pow(self, e: sp.Pow, path: Path) -> str:
        base, exp = e.args
        if exp == sp.S.Half:
            return rf"\sqrt{{{self.child(e, path, 0)}}}"
        if exp.is_Number and exp < 0:
            den = self.print(base, path + (0,))
            if exp == -sp.S.Half:
                return rf"\frac{{1}}{{\sqrt{{{den}}}}}"
            if exp != -1:
                den = (den if _atomic(base) else rf"\left({den}\right)") + f"^{{{-exp}}}"
            return rf"\frac{{1}}{{{den}}}"
        text = self.child(e, path, 0)
        if not _atomic(base):
            text = rf"\left({text}\right)"
        return f"{text}^{{{self.child(e, path, 1)}}}"

    def exp(self, e: sp.exp, path: Path) -> str:
        return f"e^{{{self.child(e, path, 0)}}}"

    def log(self, e: sp.log, path: Path) -> str:
        arg = self.child(e, path, 0)
        if _atomic(e.args[0]):
            return rf"{self.n.log} {arg}"
        return rf"{self.n.log}\left({arg}\right)"

    def function(self, e: sp.Function, path: Path) -> str:
        """sigma(u), tanh(u), softplus(u): the name, then the argument in brackets."""
        name = _FUNCTION_NAMES[type(e).__name__]
        return rf"{name}\left({self.child(e, path, 0)}\right)"

    def sum_(self, e: sp.Sum, path: Path) -> str:
        body = self.print(e.function, path + (0,), parens=isinstance(e.function, sp.Add) or _signed(e.function))
        # SymPy merges nested sums into one with several limits, the first the innermost.
        signs = "".join(rf"\sum_{{{self.print(idx, ())}={self.print(lo, ())}}}^{{{self.print(hi, ())}}} " for idx, lo, hi in reversed(e.limits))
        return signs + body

    def excluded_sum(self, e: ExcludedSum, path: Path) -> str:
        f, idx, lo, hi, skip = e.args
        body = self.print(f, path + (0,), parens=isinstance(f, sp.Add) or _signed(f))
        i, s = self.print(idx, ()), self.print(skip, ())
        return rf"\sum_{{\substack{{{i}={self.print(lo, ())} \\ {i} \neq {s}}}}}^{{{self.print(hi, ())}}} {body}"

    def derivative(self, e: sp.Derivative, path: Path) -> str:
        (var, count), = e.variable_count
        wrt = self.print(var, ())
        d = r"\partial" if count == 1 else rf"\partial^{{{count}}}"
        wrt = rf"\partial {wrt}" if count == 1 else rf"\partial {wrt}^{{{count}}}"
        inner = self.child(e, path, 0)
        if _atomic(e.expr) or (isinstance(e.expr, sp.Function) and _atomic(e.expr.args[0])):
            return rf"\frac{{{d} {inner}}}{{{wrt}}}"
        if isinstance(e.expr, sp.Pow) and e.expr.exp.is_positive:
            # A power is already one piece, (o_i - y_i)^2: no second bracket around it.
            return rf"\frac{{{d}}}{{{wrt}}} {inner}"
        if isinstance(e.expr, sp.Function):
            # ln(1 - o_i) brings its own brackets.
            return rf"\frac{{{d}}}{{{wrt}}} {inner}"
        return rf"\frac{{{d}}}{{{wrt}}}\left({inner}\right)"

    def relation(self, e: sp.Basic, path: Path) -> str:
        op = {sp.Eq: "=", sp.Ne: r"\neq"}[type(e)]
        return f"{self.child(e, path, 0)} {op} {self.child(e, path, 1)}"

    def matrix(self, e: sp.MatrixBase, path: Path) -> str:
        rows = [" & ".join(self.print(e[r, c], ()) for c in range(e.cols)) for r in range(e.rows)]
        return r"\begin{pmatrix}" + r" \\ ".join(rows) + r"\end{pmatrix}"


_DISPATCH: dict[type, Callable[[_Printer, sp.Basic, Path], str]] = {
    sp.Symbol: _Printer.symbol,
    sp.Integer: _Printer.integer,
    sp.Rational: _Printer.rational,
    sp.Float: _Printer.float_,
    type(sp.pi): _Printer.pi,
    sp.Indexed: _Printer.indexed,
    sp.KroneckerDelta: _Printer.delta,
    sp.Add: _Printer.add,
    sp.Mul: _Printer.mul,
    sp.Pow: _Printer.pow,
    sp.exp: _Printer.exp,
    sp.log: _Printer.log,
    sp.Sum: _Printer.sum_,
    fn.sigmoid: _Printer.function,
    fn.tanh: _Printer.function,
    fn.softplus: _Printer.function,
    sp.erf: _Printer.function,
    ExcludedSum: _Printer.excluded_sum,
    sp.Derivative: _Printer.derivative,
    sp.Eq: _Printer.relation,
    sp.Ne: _Printer.relation,
    sp.MatrixBase: _Printer.matrix,
}


_FUNCTION_NAMES = {"sigmoid": r"\sigma", "tanh": r"\tanh", "softplus": r"\mathrm{softplus}", "erf": r"\mathrm{erf}"}
"""The functions of :mod:`derive.functions` as the documents write them."""


def _simple(e: sp.Basic) -> bool:
    """A factor that reads well in a numerator; products, sums and operators follow the fraction."""
    if isinstance(e, (sp.Symbol, sp.Indexed, sp.KroneckerDelta)) or e.is_Number or e is sp.pi:
        return True
    if isinstance(e, sp.Pow):
        return _atomic(e.base) and e.exp.is_positive
    return isinstance(e, (sp.exp, sp.log)) and _atomic(e.args[0])


@lru_cache(maxsize=4096)
def _canonical(e: sp.Basic) -> bool:
    """True when evaluating ``e`` would change nothing but the order of its args.

    Such terms are sorted into reading order; a deliberately unevaluated form keeps its own.
    """
    rebuilt = e.func(*e.args)
    return rebuilt.func == e.func and rebuilt.args == e.args


def _signed(e: sp.Basic) -> bool:
    """Whether ``e`` prints with a leading minus sign."""
    if e.is_Number:
        return e < 0
    return isinstance(e, sp.Mul) and bool(e.args) and e.args[0].is_Number and e.args[0] < 0


def _atomic(e: sp.Basic) -> bool:
    return isinstance(e, (sp.Symbol, sp.Indexed)) or (e.is_Integer and e >= 0)


def _factor_rank(e: sp.Basic) -> int:
    if e.is_Number or (e.is_number and not e.atoms(sp.Function)):  # 2, sqrt(2), pi: coefficients first
        return 0
    if isinstance(e, (sp.Symbol, sp.Indexed, sp.KroneckerDelta)):
        return 1
    if isinstance(e, sp.Pow) and _atomic(e.base):
        return 2 if e.exp.is_Number and e.exp < 0 else 1
    if isinstance(e, sp.Add):
        # A bracket of parameters alone, (1 - epsilon), is a coefficient and goes first.
        return 3 if e.atoms(sp.Indexed, sp.Sum, sp.Function) else 0
    return 4
