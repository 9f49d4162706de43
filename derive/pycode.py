"""The one place that turns SymPy expressions into NumPy code: a derivation's definitions and its
verified result, vectorised over their indices, for the pytest file (``--format py``).

An expression with free indices (``o_k - y_k``; ``o_i (delta_ik - o_k)``) becomes one array
expression whose axes are those indices in the order asked for (``o - y``;
``o[:, None] * (np.eye(H) - o)``). A sum appends an axis for its index and sums it away again
(``np.sum(..., axis=-1)``). Indexed quantities are arrays named after their base; H, D and other
limits are the lengths of those arrays; fixed parameters (a temperature) are module constants.
A sum over several indices sums each away in turn; pi is ``np.pi``; erf is the file's own
``erf`` (the standard library's, entry by entry: NumPy has none).

Two patterns are printed as the stable functions the file defines, so that large logits stay
finite, as they do in the worked example (log-sum-exp): the softmax quotient
``exp(a_i) / sum_j exp(a_j)`` as ``softmax(a)`` and the logarithm of such an output as
``log_softmax(a)``; the logistic ``1 / (1 + exp(-a_i))`` as ``sigmoid(a)`` and the logarithms of
it and of one minus it as ``log_sigmoid(a)`` and ``log_sigmoid(-a)``.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import sympy as sp

from derive.errors import DeriveError
from derive.model import Definition
from derive.symbols import ExcludedSum

Axes = tuple[sp.Symbol, ...]

ATOM, POWER, UNARY, PRODUCT, SUM = 50, 40, 35, 30, 20
"""Precedence of what an expression prints as, highest binds tightest."""


class NoNumpyForm(DeriveError):
    """An expression the printer has no NumPy form for (it names the expression)."""


def identifier(name: str) -> str:
    """A Python name for an indexed base or a symbol: ``\\tilde{z}`` is ``z_tilde``, ``y'`` is
    ``y_prime``, ``epsilon`` stays ``epsilon``, a keyword of Python gains an underscore
    (``lambda_``)."""
    decorated = re.fullmatch(r"\\(\w+)\{(\w+)\}", name)
    if decorated:
        return f"{decorated.group(2)}_{decorated.group(1)}"
    text = name.replace("'", "_prime")
    text = re.sub(r"\W", "_", text)
    if keyword.iskeyword(text):
        return f"{text}_"
    return text if text.isidentifier() else f"v_{text}"


@dataclass
class Printer:
    """Prints expressions of one derivation.

    ``limit``: each index's upper limit (i -> H, d -> D; ``Setting.limit``); ``stable``: bases
    defined by a softmax or a logistic function, with the kind and the argument
    (o -> ("softmax", z_i, i)), for the logarithms of those outputs.
    """

    limit: Callable[[sp.Symbol], sp.Symbol]
    stable: dict[sp.Basic, tuple[str, sp.Expr, sp.Symbol]] = field(default_factory=dict)
    used: set[sp.Symbol] = field(default_factory=set)
    """The limits (H, D) and parameters the printed code refers to."""
    helpers: set[str] = field(default_factory=set)
    """The file's own functions the printed code calls (softmax, log_softmax, ...)."""
    bound: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    """The indices of the sums being printed, each with its upper limit (that of a sum's own
    index, n' = 1..N, which ``limit`` need not know)."""

    # --- the entry points -----------------------------------------------------------------------
    def code(self, e: sp.Expr, axes: Axes) -> str:
        """``e`` as an array whose axes are ``axes`` (an axis of length one where ``e`` does not
        depend on that index; the caller broadcasts)."""
        return self._print(e, axes)[0]

    def definition(self, d: Definition) -> str:
        """``o = softmax(z)``: one assignment, vectorised over the symbol's indices."""
        axes = _indices(d.symbol)
        value = self._stable_definition(d, axes) or self.code(d.value, axes)
        if axes and not set(axes) <= d.value.free_symbols:
            value = f"np.broadcast_to({value}, ({', '.join(self._size(a) for a in axes)},))"
        return f"{identifier(_base_name(d.symbol))} = {value}"

    # --- dispatch --------------------------------------------------------------------------------
    def _print(self, e: sp.Basic, axes: Axes) -> tuple[str, int]:
        for cls in type(e).__mro__:
            method = _RULES.get(cls)
            if method is not None:
                return method(self, e, axes)
        if isinstance(e, sp.Function):
            return self._function(e, axes)
        raise NoNumpyForm(f"no NumPy form for {type(e).__name__}: {sp.sstr(e)}")

    def _child(self, e: sp.Basic, axes: Axes, above: int) -> str:
        text, precedence = self._print(e, axes)
        return f"({text})" if precedence <= above else text

    # --- the rules -------------------------------------------------------------------------------
    def _number(self, e: sp.Number, axes: Axes) -> tuple[str, int]:
        if e.is_Integer:
            return str(int(e)), ATOM if e >= 0 else UNARY
        if e.is_Rational:
            return f"{int(e.p)} / {int(e.q)}", PRODUCT
        return repr(float(e)), ATOM if e >= 0 else UNARY

    def _symbol(self, e: sp.Symbol, axes: Axes) -> tuple[str, int]:
        if e in axes:
            raise NoNumpyForm(f"no NumPy form for the index {e} outside a subscript")
        self.used.add(e)
        return identifier(e.name), ATOM

    def _indexed(self, e: sp.Indexed, axes: Axes) -> tuple[str, int]:
        return _placed(identifier(_base_name(e)), tuple(e.indices), axes), ATOM

    def _delta(self, e: sp.KroneckerDelta, axes: Axes) -> tuple[str, int]:
        a, b = e.args
        if a not in axes or b not in axes or self._limit(a) != self._limit(b):
            raise NoNumpyForm(f"no NumPy form for {sp.sstr(e)}: both indices must run over the same range")
        return _placed(f"np.eye({self._size(a)})", (a, b), axes), ATOM

    def _add(self, e: sp.Add, axes: Axes) -> tuple[str, int]:
        terms = list(e.args)
        # Positive terms first: o - y, not -y + o.
        terms = [t for t in terms if not _negative(t)] + [t for t in terms if _negative(t)]
        out = self._child(terms[0], axes, SUM)
        for t in terms[1:]:
            if _negative(t):
                out += f" - {self._child(_negated(t) if isinstance(t, sp.Mul) else -t, axes, SUM)}"
            else:
                out += f" + {self._child(t, axes, SUM)}"
        return out, SUM

    def _mul(self, e: sp.Mul, axes: Axes) -> tuple[str, int]:
        if _negative(e) and e.args[0] == -1:
            return f"-{self._child(_negated(e), axes, UNARY)}", UNARY
        top = [f for f in e.args if not (isinstance(f, sp.Pow) and f.exp.is_negative and f.exp.is_Rational)]
        bottom = [1 / f for f in e.args if f not in top]
        numerator = " * ".join(self._child(f, axes, PRODUCT) for f in top) if top else "1"
        if not bottom:
            return numerator, PRODUCT
        denominator = bottom[0] if len(bottom) == 1 else sp.Mul(*bottom, evaluate=False)
        return f"{numerator} / {self._child(denominator, axes, PRODUCT)}", PRODUCT

    def _pow(self, e: sp.Pow, axes: Axes) -> tuple[str, int]:
        base, exponent = e.args
        if exponent == -1:
            return f"1 / {self._child(base, axes, PRODUCT)}", PRODUCT
        if exponent == sp.Rational(1, 2):
            return f"np.sqrt({self.code(base, axes)})", ATOM
        if exponent.is_Integer and exponent < 0:
            return f"1 / {self._child(base, axes, POWER)} ** {-int(exponent)}", PRODUCT
        return f"{self._child(base, axes, POWER)} ** {self._child(exponent, axes, POWER)}", POWER

    def _exp(self, e: sp.exp, axes: Axes) -> tuple[str, int]:
        return f"np.exp({self.code(e.args[0], axes)})", ATOM

    def _log(self, e: sp.log, axes: Axes) -> tuple[str, int]:
        (x,) = e.args
        stable = self._stable_log(x, axes)
        return stable or f"np.log({self.code(x, axes)})", ATOM

    def _sum(self, e: sp.Sum, axes: Axes) -> tuple[str, int]:
        for index, low, high in e.limits:
            if low != 1 or not (high.is_Symbol or high == self.limit(index)):
                raise NoNumpyForm(f"no NumPy form for {sp.sstr(e)}: a sum must run over its index's whole range from 1")
        outer = dict(self.bound)
        self.bound.update((index, high) for index, _, high in e.limits)
        try:
            return self._summed(e.function, tuple(e.limits), axes)
        finally:
            self.bound = outer

    def _summed(self, body: sp.Expr, limits: tuple, axes: Axes) -> tuple[str, int]:
        """The sum of ``body`` over ``limits``, the innermost first as SymPy keeps them: the
        outermost index is summed away last."""
        *inner, (index, _, _) = limits
        if index not in body.free_symbols - {limit[0] for limit in inner}:
            text, precedence = self._summed(body, tuple(inner), axes) if inner else self._print(body, axes)
            return f"{self._size(index)} * {f'({text})' if precedence <= PRODUCT else text}", PRODUCT
        within = (*axes, index)
        return f"np.sum({self._summed(body, tuple(inner), within)[0] if inner else self.code(body, within)}, axis=-1)", ATOM

    def _constant(self, e: sp.NumberSymbol, axes: Axes) -> tuple[str, int]:
        if e not in CONSTANTS:
            raise NoNumpyForm(f"no NumPy form for the constant {sp.sstr(e)}")
        return CONSTANTS[e], ATOM

    def _excluded_sum(self, e: ExcludedSum, axes: Axes) -> tuple[str, int]:
        return self._print(e.full(), axes)

    def _function(self, e: sp.Function, axes: Axes) -> tuple[str, int]:
        """A function of the definition language (sigmoid, tanh, ...): the stable helpers where
        there is one, NumPy's where it has it, else what it is in exponentials and logarithms."""
        name = type(e).__name__
        if name in FUNCTIONS:
            if not FUNCTIONS[name].startswith("np."):
                self.helpers.add(FUNCTIONS[name])
            return f"{FUNCTIONS[name]}({', '.join(self.code(a, axes) for a in e.args)})", ATOM
        written = e.doit(deep=False)
        if written == e:
            raise NoNumpyForm(f"no NumPy form for the function {name}")
        return self._print(written, axes)

    # --- stability ---------------------------------------------------------------------------------
    def _stable_definition(self, d: Definition, axes: Axes) -> str | None:
        """softmax(a) or sigmoid(a) for a definition of that form (remembered for its logarithms)."""
        if len(axes) != 1:
            return None
        kind, argument = _activation(d.value, axes[0])
        if kind is None:
            return None
        self.stable[d.symbol.base] = (kind, argument, axes[0])
        self.helpers.add(kind)
        return f"{kind}({self.code(argument, axes)})"

    def _stable_log(self, x: sp.Expr, axes: Axes) -> str | None:
        """log_softmax(a), log_sigmoid(a) or log_sigmoid(-a) for the log of a remembered output."""
        negated = False
        if isinstance(x, sp.Add) and len(x.args) == 2 and sp.Integer(1) in x.args:
            other = x.args[0] if x.args[1] == 1 else x.args[1]
            if isinstance(other, sp.Mul) and other.args[0] == -1 and len(other.args) == 2:
                x, negated = other.args[1], True
        if not isinstance(x, sp.Indexed) or x.base not in self.stable or len(x.indices) != 1:
            return None
        kind, argument, index = self.stable[x.base]
        if negated and kind != "sigmoid":
            return None
        argument = argument.xreplace({index: x.indices[0]})
        written = f"-{self._child(argument, axes, UNARY)}" if negated else self.code(argument, axes)
        self.helpers.add(f"log_{kind}")
        return f"log_{kind}({written})"

    def _limit(self, index: sp.Symbol) -> sp.Expr:
        return self.bound.get(index, self.limit(index))

    def _size(self, index: sp.Symbol) -> str:
        limit = self._limit(index)
        self.used.add(limit)
        return identifier(limit.name)


FUNCTIONS = {"sigmoid": "sigmoid", "tanh": "np.tanh", "softplus": "softplus", "erf": "erf"}
"""Functions of the definition language by name -> the NumPy or helper function of the file."""

CONSTANTS = {sp.pi: "np.pi", sp.E: "np.e"}
"""The constants of the language -> NumPy's."""

_RULES: dict[type, Callable[..., tuple[str, int]]] = {
    sp.Number: Printer._number,
    sp.Symbol: Printer._symbol,
    sp.Indexed: Printer._indexed,
    sp.KroneckerDelta: Printer._delta,
    sp.Add: Printer._add,
    sp.Mul: Printer._mul,
    sp.Pow: Printer._pow,
    sp.exp: Printer._exp,
    sp.log: Printer._log,
    sp.Sum: Printer._sum,
    sp.NumberSymbol: Printer._constant,
    ExcludedSum: Printer._excluded_sum,
}


# --- helpers ---------------------------------------------------------------------------------------
def _base_name(e: sp.Indexed | sp.Symbol) -> str:
    return e.base.name if isinstance(e, sp.Indexed) else e.name


def _indices(e: sp.Basic) -> Axes:
    return tuple(e.indices) if isinstance(e, sp.Indexed) else ()


def _negative(e: sp.Basic) -> bool:
    return (e.is_Number and e < 0) or (isinstance(e, sp.Mul) and e.args[0].is_Number and e.args[0] < 0)


def _negated(e: sp.Mul) -> sp.Expr:
    """-e for a product with a negative number in front, its other factors kept in order."""
    coefficient, *rest = e.args
    if coefficient == -1:
        return rest[0] if len(rest) == 1 else sp.Mul(*rest, evaluate=False)
    return sp.Mul(-coefficient, *rest, evaluate=False)


def _placed(name: str, own: Sequence[sp.Basic], axes: Axes) -> str:
    """An array whose axes are the indices ``own``, placed among ``axes``: ``o[:, None]`` for o_i
    among (i, k), ``o`` for o_k (NumPy adds leading axes itself), ``W.T`` for W_kd among (d, k)."""
    for index in own:
        if index not in axes:
            raise NoNumpyForm(f"no NumPy form for {name}[{', '.join(map(str, own))}]: {index} is not an index in scope")
    if len(set(own)) != len(own):
        raise NoNumpyForm(f"no NumPy form for {name}[{', '.join(map(str, own))}]: a repeated index")
    positions = [axes.index(index) for index in own]
    if positions != sorted(positions):
        order = sorted(range(len(own)), key=lambda n: positions[n])
        name = f"{name}.T" if len(own) == 2 else f"np.transpose({name}, {tuple(order)})"
        positions = sorted(positions)
    if not positions:
        return name
    first = positions[0]
    if positions == list(range(first, len(axes))):
        return name
    slots = [":" if n in positions else "None" for n in range(first, len(axes))]
    return f"{name}[{', '.join(slots)}]"


def _activation(value: sp.Expr, index: sp.Symbol) -> tuple[str | None, sp.Expr | None]:
    """("softmax", a_i) for exp(a_i) / sum_j exp(a_j); ("sigmoid", a_i) for 1 / (1 + exp(-a_i))."""
    if isinstance(value, sp.Mul) and len(value.args) == 2:
        top = next((f for f in value.args if isinstance(f, sp.exp)), None)
        bottom = next((f for f in value.args if isinstance(f, sp.Pow) and f.exp == -1), None)
        if top is not None and bottom is not None and isinstance(bottom.base, sp.Sum):
            total = bottom.base
            (j, _, _), body = total.limits[0], total.function
            if index in top.free_symbols and body == top.xreplace({index: j}):
                return "softmax", top.args[0]
    if isinstance(value, sp.Pow) and value.exp == -1 and isinstance(value.base, sp.Add):
        rest = [a for a in value.base.args if a != 1]
        if len(rest) == 1 and len(value.base.args) == 2 and isinstance(rest[0], sp.exp):
            argument = -rest[0].args[0]
            if index in argument.free_symbols:
                return "sigmoid", argument
    return None, None
