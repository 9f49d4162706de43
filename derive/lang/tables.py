"""The LALR tables of the language's two parsers, shipped with the package.

Building a parser's tables from its grammar takes about 0.1 s, loading them about 0.01 s. They
ship beside the grammars (``grammar.tables``, ``document.tables``), each under a key of its
grammar, its options, lark's version and Python's: tables whose key matches are loaded, others
are not trusted, and the parser is then built from the grammar, its tables kept in the user's
derive cache directory as lark keeps them. After a grammar changes,
``python -m derive.lang.tables`` writes the shipped tables again (a test says when).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import lark
from lark import Lark

from derive.cache import directory

FOLDER = Path(__file__).parent
PARSERS = {
    "grammar": (("grammar.lark",), {"propagate_positions": True, "start": ["equation", "expression", "variable"]}),
    "document": (("grammar.lark", "document.lark"), {"propagate_positions": False, "start": ["document", "expression"]}),
}
"""Each parser: its grammar files (joined by a newline) and its options."""


def grammar(name: str) -> str:
    return "\n".join((FOLDER / f).read_text(encoding="utf-8") for f in PARSERS[name][0])


def key(name: str) -> bytes:
    """What the shipped tables of ``name`` must have been made from."""
    text = repr((grammar(name), sorted(PARSERS[name][1].items()), lark.__version__, sys.version_info[:2]))
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")


def parser(name: str) -> Lark:
    """The LALR parser ``name``: from its shipped tables where they fit, else built."""
    try:
        with (FOLDER / f"{name}.tables").open("rb") as f:
            if f.readline().rstrip(b"\n") == key(name):
                return Lark.load(f)
    except OSError:
        pass
    cache: str | bool = False
    if (folder := directory()) is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            cache = str(folder / f"{name}.lark-tables")
        except OSError:
            pass
    return Lark(grammar(name), parser="lalr", cache=cache, **PARSERS[name][1])


def write() -> None:
    """Build every parser from its grammar and ship its tables."""
    for name, (_, options) in PARSERS.items():
        built = Lark(grammar(name), parser="lalr", **options)
        with (FOLDER / f"{name}.tables").open("wb") as f:
            f.write(key(name) + b"\n")
            built.save(f)


if __name__ == "__main__":
    write()
