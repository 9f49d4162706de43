"""derive: gradient derivations of machine learning as verified, step-by-step documents.

The public API is small and imports SymPy only when a derivation is built, so that the command
line answers ``--help``, ``list`` and ``--version`` without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from derive.errors import DeriveError, UsageError, VerificationError
from derive.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Mapping

    from derive.latex import Notation
    from derive.public import Derivation
    from derive.spec import Spec

__all__ = [
    "DeriveError",
    "UsageError",
    "VerificationError",
    "catalog",
    "derivation",
    "grad",
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
    from derive.public import public

    return public(build(name, classes=classes, logits=logits, target=target, **options))


def grad(
    *definitions: "str | Spec",
    wrt: str | None = None,
    assume: Sequence[str] = (),
    let: "Mapping[str, object] | None" = None,
    classes: int | None = None,
    size: "Mapping[str, int] | None" = None,
    range: "Mapping[str, str] | None" = None,
    spec: "Path | str | None" = None,
    upstream: str | None = None,
    reduction: str | None = None,
    shared: Sequence[str] = (),
) -> "Derivation":
    """Derive the gradient of your own definitions, step by step (the ``derive grad`` command).

    Args:
        definitions: ``"NAME = EXPRESSION"`` in plain text or LaTeX, the quantity first
            (``"E = -sum_i y_i*ln(o_i)"``, ``"o_i = exp(z_i)/sum_j exp(z_j)"``).
        wrt: the variable, ``"z_k"``.
        assume: equations used last, after the general form (``"sum_i y_i = 1"``).
        let: a worked example's numbers by name (``{"z": [2, 1, 0.1], "gamma": 2}``).
        classes: H for the worked example; ``None`` keeps H symbolic.
        size: further sizes of the worked example (``{"N": 2}``).
        range: index ranges overriding the conventions (``{"n": "1..B"}``).
        spec: a TOML spec file instead of the arguments above.
        upstream: ``"y=g"``: the first definition is a layer with output y inside a network, given
            the upstream gradient g = dL/dy; the quantity differentiated is L = sum g y.
        reduction: ``"sum"`` or ``"mean"``: the first definition is one example's loss, derived
            as its sum or mean over a batch of N (every indexed quantity per example; a term with
            none, a penalty on shared weights, is added once).
        shared: with a reduction, the given quantities the examples share (``["W", "b"]``).

    Raises:
        UsageError: text that does not parse, or a problem that is not well posed.
        DeriveError: no rule applies to some sub-expression (the message names it).
    """
    from derive import spec as specs
    from derive.assemble import build
    from derive.public import public

    if len(definitions) == 1 and isinstance(definitions[0], specs.Spec):
        return public(build(definitions[0]))
    if spec is not None:
        given = specs.read(spec)
        extra = specs.from_arguments(["-"], "-", lets=[f"{k}={_numbers(v)}" for k, v in (let or {}).items()], sizes=[f"{k}={v}" for k, v in (size or {}).items()], classes=classes)
        return public(build(specs.with_example(given, extra)))
    given = specs.from_arguments(
        list(definitions),
        wrt,
        list(assume),
        [f"{k}={v}" for k, v in (range or {}).items()],
        [f"{k}={_numbers(v)}" for k, v in (let or {}).items()],
        [f"{k}={v}" for k, v in (size or {}).items()],
        classes,
        upstream,
        reduction,
        shared,
    )
    return public(build(given))


def _numbers(value: object) -> str:
    """[2, 1, 0.1] -> "2,1,0.1"; [[1, 2], [3, 4]] -> "1,2;3,4"; a string as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ";".join(_numbers(v) for v in value) if any(isinstance(v, (list, tuple)) for v in value) else ",".join(repr(v) if isinstance(v, float) else str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def render(
    derivation: "Derivation",
    format: str = "md",
    templates: "Path | str | None" = None,
    notation: "Notation | str | Mapping[str, str] | None" = None,
    markdown: str | None = None,
) -> str | bytes:
    """Render a derivation as ``"md"``, ``"tex"``, ``"json"``, ``"html"`` or ``"py"`` text, or
    ``"pdf"`` bytes.

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

    ``"py"`` is a self-contained pytest file that checks your backprop code against the
    derivation (see :mod:`derive.pytest_file`); a catalog entry built by a module of its own
    (softmax-ce, dense-softmax-ce, ...) needs a concrete number of classes for it.

    Raises:
        UsageError: an unknown format, a notation that is not valid, a Markdown math syntax with
            another format than md, or py for such an entry with a symbolic number of classes.
    """
    from derive.rendering import render as _render

    return _render(derivation, format, templates, notation, markdown)
