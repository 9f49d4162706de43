"""derive: gradient derivations of machine learning as verified, step-by-step documents.

The public API is small and imports SymPy only when a derivation is built, so that the command
line answers ``--help``, ``list`` and ``--version`` without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from derive.errors import DeriveError, UsageError, VerificationError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Mapping

    from derive.latex import Notation
    from derive.model import Derivation

__version__ = "0.1.0"
__all__ = [
    "DeriveError",
    "UsageError",
    "VerificationError",
    "catalog",
    "derivation",
    "render",
    "__version__",
]


def catalog() -> list[str]:
    """Return the names of the available derivations, in catalog order."""
    from derive.derivations import CATALOG

    return list(CATALOG)


def derivation(
    name: str,
    classes: int | None = None,
    logits: Sequence[float | str] | None = None,
    target: Sequence[float | str] | None = None,
    **options: object,
) -> "Derivation":
    """Build the derivation called ``name``.

    Args:
        name: a name from :func:`catalog`, e.g. ``"softmax-ce"``.
        classes: a concrete number of classes H; ``None`` keeps H symbolic.
        logits: the worked example's logits (needs ``classes``).
        target: the worked example's target (needs ``classes``).
        options: a derivation's own options, e.g. ``temperature=2`` for softmax-ce; see
            ``derive NAME --help``.

    Raises:
        UsageError: an unknown name or bad parameters.
    """
    from derive.derivations import build

    return build(name, classes=classes, logits=logits, target=target, **options)


def render(
    derivation: "Derivation",
    format: str = "md",
    templates: "Path | str | None" = None,
    notation: "Notation | str | Mapping[str, str] | None" = None,
    markdown: str | None = None,
) -> str | bytes:
    """Render a derivation as ``"md"``, ``"tex"`` or ``"json"`` text, or ``"pdf"`` bytes.

    Args:
        derivation: what :func:`derivation` returned.
        format: the output format.
        templates: a directory whose templates take precedence over the packaged ones.
        notation: how the symbols are written: a preset name (``"seed"``, the default,
            ``"textbook"``, ``"bishop"``, ``"probability"``), a dict of roles to names with
            optional ``"preset"`` and ``"log"`` keys (``{"target": "t", "log": "log"}``), or a
            :class:`derive.notation.Notation` from :func:`derive.notation.notation`.
        markdown: the math syntax of ``"md"``: ``"github"`` (the default: ```` ```math ````
            fences and ``$`...`$``) or ``"dollars"`` (``$$ ... $$`` and ``$...$``, for Jupyter,
            MkDocs, MyST, pandoc and Quarto).

    Raises:
        UsageError: an unknown format, a notation that is not valid, or a Markdown math syntax
            with another format than md.
    """
    from derive.rendering import render as _render

    return _render(derivation, format, templates, notation, markdown)
