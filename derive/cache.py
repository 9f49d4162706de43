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

    The claims are printed with ``srepr``, which is exact and does not depend on how equal
    sub-terms happen to be shared in memory (pickle does, so it would miss the cache at random).
    """
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _CHECKER:
        h.update((here / name).read_bytes())
    h.update(sp.__version__.encode())
    h.update(sp.srepr(parts).encode())
    return h.hexdigest()


def cached(k: str, compute: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The stored result for ``k``, or ``compute()`` (stored only if it returns)."""
    folder = directory()
    path = folder / f"checks-{k}.json" if folder else None
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
