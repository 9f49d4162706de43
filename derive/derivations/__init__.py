"""The catalog: the table of derivations (:mod:`derive.derivations.entries`) and ``build``, which
loads an entry's module by name and lets it build the document.

This module imports no SymPy, so the command line can list derivations without paying for it.
The modules of the package import what they share from modules of their own (the table from
``entries``, names of options and files from ``naming``, a spec file's steps from ``steps``),
never from here: the package loads them, they do not load it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Mapping

from derive.derivations.entries import BATCHED, CATALOG, NUMBERED, Entry
from derive.derivations.naming import did_you_mean, option_name, option_text, suggestions
from derive.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from derive.model import Derivation

__all__ = ["CATALOG", "Entry", "build"]


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
    if classes is not None:
        from derive.concrete import classes_of

        classes = classes_of(classes)  # validated here, once: below, the class count is a number
    if entry.spec:
        return import_module(entry.module).build(name, classes=classes, logits=logits, target=target, **given)
    spelled: dict[str, str] = {}
    if name in NUMBERED and given.get("let") is not None:
        before = (logits, target)
        logits, target = _numbered(name, given.pop("let"), logits, target)
        spelled = {option: f"--let {leaf}" for option, leaf, was, now in (("--logits", "z", before[0], logits), ("--target", "y", before[1], target)) if was is None and now is not None}
    try:
        if given.get("reduction") is not None:
            return _over_a_batch(name, classes, logits, target, given)
        return import_module(entry.module).build(classes=classes, logits=logits, target=target, **given)
    except UsageError as error:
        if not spelled:
            raise
        # The numbers were given as --let z=...: the error speaks of what the user typed.
        message = str(error)
        for option, typed in spelled.items():
            message = message.replace(option, typed)
        raise UsageError(message) from None


def _over_a_batch(name: str, classes, logits, target, given: dict) -> "Derivation":
    """A module entry's loss summed or averaged over a batch of N: its spec file, derived by the
    planner over the batch (the module's pitfall and counterexample are of one example)."""
    from derive.derivations import from_spec

    letters = BATCHED.get(name, {})
    spec_name = "-".join([name, *(key.replace("_", "-") for key in CATALOG[name].options if key in letters and key in given)])
    lets = [f"{letters[key]}={option_text(value)}" for key, value in given.items() if key in letters]
    if given.get("inputs") is not None:
        lets.append(f"x={','.join(map(str, given['inputs']))}")
    lets += list(given.get("let") or [])
    return from_spec.build(spec_name, classes=classes, logits=logits, target=target, let=lets, reduction=given["reduction"], weight_decay=given.get("weight_decay"))


def _numbered(name: str, let: Any, logits: Any, target: Any) -> tuple[Any, Any]:
    """--let z=2,1,0.1 and --let y=0,1,0 of an entry built by a module: its --logits and
    --target, by the names its definitions use (in Python also a mapping of a name to numbers)."""
    takes = NUMBERED[name]
    options = {"z": "logits", "y": "target"}
    given = {"z": logits, "y": target}
    items = list(let.items()) if isinstance(let, Mapping) else [str(text).partition("=")[::2] for text in let]
    seen = set()
    for key, value in items:
        key = str(key).strip()
        if key not in takes:
            names = " and ".join(f"{t} (the {options[t]})" for t in takes)
            raise UsageError(f"--let {key or '?'}: {name} takes --let for {names}, as in --let z=2,1,0.1")
        if key in seen or given[key] is not None:
            raise UsageError(f"--let {key} is given twice" if key in seen else f"--let {key} and --{options[key]} give the same numbers: give one")
        seen.add(key)
        numbers = [t.strip() for t in value.split(",")] if isinstance(value, str) else list(value)
        if not numbers or numbers == [""]:
            raise UsageError(f"--let must look like NAME=VALUES, e.g. {key}=2,1,0.1")
        given[key] = numbers
    return given["z"], given["y"]


def _unknown(name: str) -> str:
    close = suggestions(name, CATALOG)
    hint = did_you_mean(close) if close else f"; available: {', '.join(CATALOG)}"
    return f"unknown derivation {name!r}{hint}"
