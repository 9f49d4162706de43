"""A cache of passed symbolic-H checks, keyed by what was checked and by the checker itself.

The symbolic steps of a derivation do not depend on the class count or the example, and checking
them exactly takes seconds. A passed report is stored under a hash of everything the checks read
(every step's two sides, the pitfall's claims and the setting of each, the definitions, the
intermediates, the assumptions with their statements, the constraints with their code and their
values; see ``verify.check_key``) and of the verifier's own source, so a changed step, a changed
constraint or a changed checker is checked again. Failures are never stored.

Location: ``$DERIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/derive``, else ``~/.cache/derive``;
``DERIVE_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from pathlib import Path
from typing import Any, Callable

import sympy as sp

_CHECKER = ("verify.py", "setting.py", "symbols.py", "numeric.py", "modular.py", "fieldcheck.py", "functions.py", "worked.py")


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


def code(fn: Callable, seen: set | None = None) -> str:
    """What a function computes, as text: its bytecode with its constants and names, its default
    arguments, the values it closes over, and the same for each function it names from its
    module's globals (a lambda that calls a module function changes when that function does).

    Two functions get the same text only if they run the same code on the same values; a value
    that :func:`encode` cannot write is written by its type and ``repr``.
    """
    seen = set() if seen is None else seen
    inner = getattr(fn, "__func__", fn)
    c = getattr(inner, "__code__", None)
    if c is None:
        return f"{getattr(inner, '__module__', '')}.{getattr(inner, '__qualname__', type(inner).__qualname__)}"
    if id(inner) in seen:
        return f"<again {inner.__qualname__}>"
    seen.add(id(inner))
    parts = [_code_object(c), _value(inner.__defaults__, seen), _value(getattr(inner, "__kwdefaults__", None), seen)]
    parts += [_value(cell.cell_contents, seen) for cell in inner.__closure__ or ()]
    scope = getattr(inner, "__globals__", {})
    for name in sorted(_names(c)):
        if callable(scope.get(name)) and hasattr(scope[name], "__code__"):
            parts.append(f"{name}={code(scope[name], seen)}")
    return "|".join(parts)


def _code_object(c: types.CodeType) -> str:
    consts = ",".join(_code_object(k) if isinstance(k, types.CodeType) else _constant(k) for k in c.co_consts)
    return f"{c.co_code.hex()}({consts}){c.co_names}{c.co_varnames}"


def _constant(k: Any) -> str:
    """A literal of the code; a frozenset (``x in {...}``) sorted, as its order varies by process."""
    if isinstance(k, frozenset):
        return "{" + ",".join(sorted(map(_constant, k))) + "}"
    return repr(k)


def _names(c: types.CodeType) -> set[str]:
    """The global names the code and the code nested in it (lambdas, comprehensions) use."""
    out = set(c.co_names)
    for k in c.co_consts:
        if isinstance(k, types.CodeType):
            out |= _names(k)
    return out


def _value(v: Any, seen: set) -> str:
    if callable(v) and not isinstance(v, (sp.Basic, type)):
        return code(v, seen)
    if isinstance(v, dict):
        return "{" + ",".join(f"{_value(a, seen)}:{_value(b, seen)}" for a, b in sorted(v.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_value(x, seen) for x in v) + ")"
    try:
        return encode(v)
    except TypeError:
        return f"{type(v).__qualname__}:{v!r}"


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
