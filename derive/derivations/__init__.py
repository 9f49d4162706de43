"""The catalog: derivation name -> one-line description and the module that builds it.

This module imports no SymPy, so the command line can list derivations without paying for it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Sequence

from derive.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from derive.model import Derivation

CATALOG: dict[str, str] = {
    "softmax-ce": "Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k",
    "softmax": "The softmax Jacobian: do_i/dz_k = o_i (delta_ik - o_k)",
    "log-softmax": "The log-softmax Jacobian: d ln o_i/dz_k = delta_ik - o_k",
}

_MODULES: dict[str, str] = {
    "softmax-ce": "derive.derivations.softmax_ce",
    "softmax": "derive.derivations.softmax",
    "log-softmax": "derive.derivations.log_softmax",
}


def build(
    name: str,
    classes: int | None = None,
    logits: Sequence[float | str] | None = None,
    target: Sequence[float | str] | None = None,
) -> "Derivation":
    """Build a derivation by name; the module's ``build`` does the work."""
    if name not in _MODULES:
        raise UsageError(_unknown(name))
    return import_module(_MODULES[name]).build(classes=classes, logits=logits, target=target)


def _unknown(name: str) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, list(CATALOG), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(CATALOG)}"
    return f"unknown derivation {name!r}{hint}"
