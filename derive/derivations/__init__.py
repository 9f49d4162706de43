"""The catalog: derivation name -> one-line description, the module that builds it, and the
options its command takes.

This module imports no SymPy, so the command line can list derivations without paying for it.
Adding a derivation: one module in this package with a ``build`` function, its wording in
``templates/derivations/NAME.toml``, and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from derive.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from derive.model import Derivation

STANDARD = ("classes", "logits", "target")
"""The options of every derivation command: the class count and a worked example's numbers."""


@dataclass(frozen=True)
class Entry:
    description: str
    module: str
    options: tuple[str, ...] = ()
    """Options beyond STANDARD, as keyword names of the module's ``build`` (``label_smoothing``
    is ``--label-smoothing`` on the command line)."""


CATALOG: dict[str, Entry] = {
    "softmax-ce": Entry(
        "Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k",
        "derive.derivations.softmax_ce",
    ),
    "softmax": Entry("The softmax Jacobian: do_i/dz_k = o_i (delta_ik - o_k)", "derive.derivations.softmax"),
    "log-softmax": Entry("The log-softmax Jacobian: d ln o_i/dz_k = delta_ik - o_k", "derive.derivations.log_softmax"),
}


def option_name(keyword: str) -> str:
    return "--" + keyword.replace("_", "-")


def build(name: str, classes: int | None = None, logits=None, target=None, **options: Any) -> "Derivation":
    """Build a derivation by name; the module's ``build`` does the work."""
    if name not in CATALOG:
        raise UsageError(_unknown(name))
    entry = CATALOG[name]
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in entry.options:
            takes = f" (it takes {', '.join(map(option_name, entry.options))})" if entry.options else ""
            raise UsageError(f"{name} takes no {option_name(key)}{takes}")
    return import_module(entry.module).build(classes=classes, logits=logits, target=target, **given)


def _unknown(name: str) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, list(CATALOG), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(CATALOG)}"
    return f"unknown derivation {name!r}{hint}"
