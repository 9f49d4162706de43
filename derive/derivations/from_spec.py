"""The catalog entries that are spec files (``derive/catalog/NAME.toml``): the planner derives
them like a derivation typed by hand, and the entry's command takes the worked-example options
of ``derive grad`` (``--let NAME=VALUES``, ``--size NAME=VALUE``, ``--classes N``) and its own
(``--gamma`` of focal loss, a number for the worked example; the steps keep gamma a symbol)."""

from __future__ import annotations

from typing import Sequence

from derive.errors import UsageError
from derive.model import Derivation


def spec(name: str):
    """The entry's spec as shipped."""
    from derive import spec as specs
    from derive.files import catalog_spec

    return specs.read(catalog_spec(name))


def build(
    name: str,
    classes: int | None = None,
    logits: Sequence | None = None,
    target: Sequence | None = None,
    let: Sequence[str] | None = None,
    size: Sequence[str] | None = None,
    **options: object,
) -> Derivation:
    from derive import assemble
    from derive import spec as specs

    from derive.derivations import VARIANTS

    for key, values in VARIANTS.get(name, {}).items():
        value = options.pop(key, None)
        if value is None:
            continue
        text = str(value).strip().lower()
        if text not in values:
            raise UsageError(f"{name}: --{key.replace('_', '-')} takes {' or '.join(values)}, not {str(value)!r}")
        if text != values[0]:
            name = f"{name}-{text}"
    given = spec(name)
    asked = classes is not None or size or let or options or logits is not None or target is not None
    if not asked:
        from dataclasses import replace

        given = replace(given, lets=(), sizes=())  # the file's numbers are those of a worked example
    lets = []
    # --logits and --target name the leaves z and y, where the entry has them.
    for option, leaf, numbers in (("--logits", "z", logits), ("--target", "y", target)):
        if numbers is None:
            continue
        if not any(f"{leaf}_" in text for text in given.definitions):
            raise UsageError(f"{name} has no {leaf}, so no {option}: give its numbers with --let NAME=VALUES")
        lets.append(f"{leaf}={','.join(map(str, numbers))}")
    lets += [f"{key}={value}" for key, value in options.items()]
    lets += list(let or [])
    extra = specs.from_arguments(["-"], "-", lets=lets, sizes=list(size or []), classes=classes)
    return assemble.build(specs.with_example(given, extra))
