"""The math syntax of a Markdown document: GitHub's, or the dollars that other readers know.

The templates write math the way GitHub renders it: a ```` ```math ```` fence per display formula
and ``$`...`$`` inline. MkDocs (pymdownx.arithmatex), MyST, Jupyter, pandoc and Quarto read
``$$ ... $$`` and ``$...$`` instead, and show GitHub's forms as code. :func:`math_syntax` writes a
rendered document in the syntax asked for, so that one set of templates (the packaged ones or a
course's own) serves both.
"""

from __future__ import annotations

import re
from typing import Callable

from derive.errors import UsageError

DEFAULT = "github"

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_INLINE = re.compile(r"\$`(?P<tex>[^`\n]+?)`\$")


def _github(text: str) -> str:
    return text


def _dollars(text: str) -> str:
    """```` ```math ```` fences become ``$$`` blocks and ``$`x`$`` becomes ``$x$``; other code
    fences (the Mermaid picture) are kept as they are.

    Pandoc reads ``$x$`` as math only when no space follows the opening dollar or precedes the
    closing one, so the formula is trimmed.
    """
    out: list[str] = []
    lines = text.split("\n")
    n = 0
    while n < len(lines):
        opening = _OPEN.match(lines[n])
        if opening is None:
            out.append(_INLINE.sub(lambda m: f"${m['tex'].strip()}$", lines[n]))
            n += 1
            continue
        # A fence closes at a line of at least as many backticks and nothing else (CommonMark).
        close = re.compile(rf"^[ \t]*`{{{len(opening['ticks'])},}}[ \t]*$")
        end = next((m for m in range(n + 1, len(lines)) if close.match(lines[m])), len(lines))
        body = lines[n + 1 : end]
        if opening["info"] == "math" and end < len(lines):
            indent = opening["indent"]
            out += [f"{indent}$$", *body, f"{indent}$$"]
        else:
            out += lines[n : end + 1]
        n = end + 1
    return "\n".join(out)


SYNTAX: dict[str, Callable[[str], str]] = {"github": _github, "dollars": _dollars}
"""Markdown math syntax -> how a document in GitHub's syntax is written in it."""


def math_syntax(text: str, syntax: str | None) -> str:
    """A Markdown document (written in GitHub's math syntax) in ``syntax``: ``"github"`` (the
    default) or ``"dollars"``."""
    return SYNTAX[check(syntax)](text)


def check(syntax: str | None) -> str:
    """The syntax asked for, or the default; an unknown one is a usage error that names it."""
    if syntax is None:
        return DEFAULT
    if syntax not in SYNTAX:
        raise UsageError(f"unknown Markdown math syntax {syntax!r}; choose one of {', '.join(SYNTAX)}")
    return syntax
