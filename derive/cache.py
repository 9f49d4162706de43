"""A cache of passed symbolic-H checks, keyed by what was checked and by the checker itself.

The symbolic steps of a derivation do not depend on the class count or the example, and checking
them exactly takes seconds. A passed report is stored under a hash of the claims (every step's
two sides, the pitfall's claims, the definitions and assumptions) and of the verifier's own
source, so a changed step or a changed checker is checked again. Failures are never stored.

Location: ``$DERIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/derive``, else ``~/.cache/derive``;
``DERIVE_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import sympy as sp

_CHECKER = ("verify.py", "setting.py", "symbols.py")


def directory() -> Path | None:
    if os.environ.get("DERIVE_NO_CACHE"):
        return None
    if os.environ.get("DERIVE_CACHE_DIR"):
        return Path(os.environ["DERIVE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "derive"


def key(*parts: Any) -> str:
    """A hash of the claims and of the checker's source.

    The claims are written out exactly by :func:`encode`, which does not depend on how equal
    sub-terms happen to be shared in memory (pickle does, so it would miss the cache at random).
    """
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _CHECKER:
        h.update((here / name).read_bytes())
    h.update(sp.__version__.encode())
    h.update(encode(parts).encode())
    return h.hexdigest()


def encode(value: Any) -> str:
    """Write ``value`` (SymPy objects in tuples, lists, strings, numbers) out exactly.

    Two values get the same text only if they are equal: SymPy defines a term's equality by its
    class and its ``_hashable_content()`` (the arguments, a symbol's name and assumptions, a
    number's digits), and that is what is written. A shared sub-term is written once and its text
    reused, so this is faster than ``srepr``, which prints every occurrence again through the
    printer and its sorting.
    """
    memo: dict[int, tuple[Any, str]] = {}

    def write(v: Any) -> str:
        if isinstance(v, sp.Basic):
            seen = memo.get(id(v))
            if seen is None:
                seen = memo[id(v)] = (v, f"{type(v).__name__}{write(v._hashable_content())}")  # v held: its id stays unique
            return seen[1]
        if isinstance(v, tuple):
            return f"({''.join(write(x) + ',' for x in v)})"
        if isinstance(v, list):
            return f"[{','.join(map(write, v))}]"
        if v is None or isinstance(v, (str, bool, int)):
            return repr(v)
        raise TypeError(f"cannot write {type(v).__name__} into a cache key")

    return write(value)


def cached(k: str, compute: Callable[[], Any], kind: str = "checks") -> Any:
    """The stored result for ``k``, or ``compute()`` (stored only if it returns); ``kind`` names
    what is stored (passed checks, the parsed wording)."""
    folder = directory()
    path = folder / f"{kind}-{k}.json" if folder else None
    if path is not None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    result = compute()
    if path is not None:
        try:
            from derive.files import write_atomic

            write_atomic(path, json.dumps(result, indent=1))
        except Exception:  # a cache that cannot be written is only slower
            pass
    return result
