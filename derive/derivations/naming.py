"""The names the catalog gives: an option's on the command line and its value's as a short exact
decimal, a document's default file name, and the names a mistyped one may have meant.
No SymPy: the command line names files and options without it."""

from __future__ import annotations

from typing import Any, Iterable

from derive.derivations.entries import CATALOG

UNNAMED = frozenset({"let", "size"})
"""Options that are a worked example's numbers, like --logits and --target: the default file
name does not change with them."""


def option_name(keyword: str) -> str:
    return "--" + keyword.replace("_", "-")


def option_text(value: object) -> str:
    """An option's value as a short exact decimal, the same however it was written: 2, 2.0 and
    2e0 are 2, a SymPy 1/10 is 0.1; what is not a number stays as it was given."""
    from decimal import Decimal, InvalidOperation, localcontext

    with localcontext(prec=60):
        try:
            p, q = getattr(value, "p", None), getattr(value, "q", None)
            if p is not None and q is not None and _repeats(int(q)):
                return f"{p}/{q}"  # 1/3 has no decimal of its own
            number = Decimal(p) / Decimal(q) if p is not None and q is not None else Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except (InvalidOperation, ValueError):
            return str(value).strip()
    if not number.is_finite():
        return str(value).strip()
    text = format(number.normalize(), "f")
    if len(text) > 16:
        text = format(number.normalize(), "e").replace("e+", "e")
    return "0" if text == "-0" else text


def _repeats(q: int) -> bool:
    """Whether 1/q has an infinite decimal expansion (q has a prime factor other than 2 and 5)."""
    for f in (2, 5):
        while q % f == 0:
            q //= f
    return q != 1


def file_stem(name: str, classes: int | None = None, options: dict[str, Any] | None = None) -> str:
    """A document's file name without its extension: NAME, NAME-N for N classes, then each option
    given as -OPTIONVALUE in the catalog's order (softmax-ce-3-temperature2-label-smoothing0.1)."""
    stem = name if classes is None else f"{name}-{classes}"
    given = {key: value for key, value in (options or {}).items() if value is not None and key not in UNNAMED}
    order = CATALOG[name].options if name in CATALOG else tuple(given)
    for key in sorted(given, key=lambda key: order.index(key) if key in order else len(order)):
        stem += f"-{key.replace('_', '-')}{option_text(given[key]).replace('/', '_')}"
    return stem


def file_name(name: str, classes: int | None, fmt: str, options: dict[str, Any] | None = None) -> str:
    """The name the command line gives the document by default: its stem (see :func:`file_stem`)
    and the format. A pytest file's name is a module's, which a dot would cut short: its
    stem writes 0.5 as 0_5 (softmax-ce-3-temperature0_5.py)."""
    stem = file_stem(name, classes, options)
    return f"{stem.replace('.', '_') if fmt == 'py' else stem}.{fmt}"


def suggestions(name: str, names: Iterable[str], most: int = 3) -> list[str]:
    """The names ``name`` may have meant, best first: those it begins (``mse`` for
    ``mse-softmax``), those it is part of, then close spellings (``softmax-cee``)."""
    from difflib import get_close_matches

    names, wanted = list(names), name.strip().lower()
    found = [n for n in names if n.startswith(wanted)] if wanted else []
    found += [n for n in names if len(wanted) >= 2 and wanted in n and n not in found]
    found += [n for n in get_close_matches(wanted, names, n=most, cutoff=0.8) if n not in found]
    return found[:most]


def did_you_mean(names: list[str]) -> str:
    """'; did you mean 'a'?' or '; did you mean 'a' or 'b'?' (empty without a name)."""
    if not names:
        return ""
    quoted = [repr(n) for n in names]
    return f"; did you mean {', '.join(quoted[:-1]) + ' or ' if len(quoted) > 1 else ''}{quoted[-1]}?"
