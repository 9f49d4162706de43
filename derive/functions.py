"""The elementary functions the language offers beyond SymPy's exp, log and powers.

Each prints as the documents write it (``\\sigma``, ``\\tanh``, ``\\operatorname``-free
``\\mathrm{softplus}``), knows its derivative written with itself (``sigma (1 - sigma)``), and
turns into exponentials and logarithms on ``doit``: verification writes every claim out with
``doit`` and then needs nothing but exp, log and rational arithmetic.
"""

from __future__ import annotations

import sympy as sp


class sigmoid(sp.Function):
    """The logistic sigmoid 1 / (1 + e^{-x})."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return self * (1 - self)

    def doit(self, deep: bool = True, **hints) -> sp.Expr:
        x = self.args[0].doit(deep=deep, **hints) if deep else self.args[0]
        return 1 / (1 + sp.exp(-x))

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs) -> sp.Expr:
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer, exp=None) -> str:
        body = rf"\sigma\left({printer._print(self.args[0])}\right)"
        return body if exp is None else rf"{body}^{{{exp}}}"


class tanh(sp.Function):
    """The hyperbolic tangent (e^{2x} - 1) / (e^{2x} + 1)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 - self**2

    def doit(self, deep: bool = True, **hints) -> sp.Expr:
        x = self.args[0].doit(deep=deep, **hints) if deep else self.args[0]
        return (sp.exp(2 * x) - 1) / (sp.exp(2 * x) + 1)

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs) -> sp.Expr:
        return (sp.exp(2 * x) - 1) / (sp.exp(2 * x) + 1)

    def _latex(self, printer, exp=None) -> str:
        head = r"\tanh" if exp is None else rf"\tanh^{{{exp}}}"
        return rf"{head}\left({printer._print(self.args[0])}\right)"


class softplus(sp.Function):
    """ln(1 + e^x), whose derivative is the sigmoid."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sigmoid(self.args[0])

    def doit(self, deep: bool = True, **hints) -> sp.Expr:
        x = self.args[0].doit(deep=deep, **hints) if deep else self.args[0]
        return sp.log(1 + sp.exp(x))

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs) -> sp.Expr:
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer, exp=None) -> str:
        body = rf"\mathrm{{softplus}}\left({printer._print(self.args[0])}\right)"
        return body if exp is None else rf"{body}^{{{exp}}}"


ELEMENTARY: tuple[type[sp.Function], ...] = (sigmoid, tanh, softplus)
"""The functions of this module: numeric evaluation writes them with exp and log (``doit``)."""

FUNCTIONS: dict[str, type[sp.Function] | sp.Function] = {
    "exp": sp.exp,
    "ln": sp.log,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softplus": softplus,
    "erf": sp.erf,
}
"""The functions of the language by their plain-text name (``softmax(z)_i`` is written out by the
parser as e^{z_i} / sum_j e^{z_j})."""
