"""The catalog entries that are spec files (``derive/catalog/NAME.toml``): the planner derives
them like a derivation typed by hand, and the entry's command takes the worked-example options
of ``derive grad`` (``--let NAME=VALUES``, ``--size NAME=VALUE``, ``--classes N``) and its own
(``--gamma`` of focal loss, a number for the worked example; the steps keep gamma a symbol)."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Sequence

from derive.errors import UsageError
from derive.model import Derivation


@lru_cache(maxsize=None)
def spec(name: str):
    """The entry's spec as shipped (read once: the overview asks for it per row)."""
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
    reduction: str | None = None,
    **options: object,
) -> Derivation:
    from derive import assemble
    from derive import spec as specs

    from derive.derivations.entries import CATALOG, VARIANTS

    for key, values in VARIANTS.get(name, {}).items():
        value = options.pop(key, None)
        if value is None:
            continue
        text = str(value).strip().lower()
        if text not in values:
            raise UsageError(f"{name}: --{key.replace('_', '-')} takes {' or '.join(values)}, not {str(value)!r}")
        if text != values[0]:
            name = f"{name}-{text}"
    decay = options.pop("weight_decay", None)
    if decay is not None:
        name, value = f"{name}-weight-decay", weight_decay(decay)
        if classes is not None:
            options["lambda"] = value  # the worked example's; the steps keep lambda a symbol
    if classes is None and options:
        # A number of the worked example (focal's gamma): the steps keep it a symbol.
        flags = " and ".join(f"--{key.replace('_', '-')}" for key in options)
        raise UsageError(f"{flags} {'sets' if len(options) == 1 else 'set'} a number of the worked example (the steps keep it a symbol): give --classes N as well")
    given = spec(name)
    asked = classes is not None or size or let or options or logits is not None or target is not None
    if not asked:
        given = replace(given, lets=(), sizes=())  # the file's numbers are those of a worked example
    elif size:
        # The file's vectors and matrices have its own sizes: under other sizes the numbers are ours.
        given = _numbers_kept(given)
    lets = []
    # --logits and --target name the leaves z and y, where the entry has them.
    for option, leaf, numbers in (("--logits", "z", logits), ("--target", "y", target)):
        if numbers is None:
            continue
        if not any(f"{leaf}_" in text for text in given.definitions):
            raise UsageError(f"{name} has no {leaf}, so no {option}: give its numbers with --let NAME=VALUES")
        lets.append(f"{leaf}={','.join(map(str, numbers))}")
    lets += [f"{key}={value}" for key, value in options.items()]
    lets += [_public(given, text) for text in let or []]
    if name in MASKS:
        leaf = MASKS[name]
        if classes is not None and not any(text.partition("=")[0].strip() == leaf for text in lets):
            # Ours: every position attended but the second, which a mask exists to show.
            lets.append(f"{leaf}={','.join('0' if n == 2 else '1' for n in range(1, int(classes) + 1))}")
        _check_mask(name, dict(given.lets), lets)
    if reduction is not None:
        reduction = specs.parse_reduction(reduction)
        # An example's numbers are a row of the batch's: the file's are given up, but for what
        # the examples share (the layers' weights).
        given = _numbers_kept(given, given.shared)
        over = {"mean": "averaged", "sum": "summed"}[reduction]
        given = replace(given, reduction=reduction, title=f"{given.title}, {over} over a batch of N examples" if given.title else None)
        if name not in CATALOG or not CATALOG[name].spec:
            # A module entry's own wording speaks of one example's indices (z_k, not z_nk).
            given = replace(given, name=f"{given.name}-{reduction}")
    extra = specs.from_arguments(["-"], "-", lets=lets, sizes=list(size or []), classes=classes)
    return assemble.build(specs.with_example(given, extra))


def _numbers_kept(given, names: tuple[str, ...] = ()):
    """The spec with its worked example's numbers for the scalars and for ``names`` only: its
    vectors and matrices are of its own sizes."""
    return replace(given, lets=tuple((key, text) for key, text in given.lets if key in names or ("," not in text and ";" not in text)))


def weight_decay(value: object) -> str:
    """Validate --weight-decay: a finite number LAMBDA >= 0 (0 leaves the cross-entropy alone)."""
    from fractions import Fraction

    text = str(value).strip()
    try:
        number = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--weight-decay takes a number LAMBDA >= 0, not {text!r}") from None
    if number < 0:
        raise UsageError(f"--weight-decay takes a number LAMBDA >= 0, not {text}: a negative decay grows the weights")
    return text


MASKS: dict[str, str] = {"attention": "m"}
"""An entry's mask: ones and zeros, at least one 1 (a softmax over no position has no denominator)."""


def _public(given, text: str) -> str:
    """``NAME=VALUES`` of --let with a public name of the spec read as its letter (``mask=1,0,1``
    is the m of attention, see the spec's ``names``)."""
    from derive.spec import letter_of

    key, sep, value = text.partition("=")
    return letter_of(given.names, key.strip()) + sep + value if sep else text


def _check_mask(name: str, shipped: dict, lets: list[str]) -> None:
    """The mask of the worked example, as given or as shipped: every entry 0 or 1, one at least 1."""
    leaf = MASKS[name]
    given = [value for key, _, value in (text.partition("=") for text in lets) if key.strip() == leaf]
    text = given[-1] if given else shipped.get(leaf)
    if text is None:
        return
    entries = [t.strip() for t in text.replace(";", ",").split(",")]
    try:
        numbers = [float(t) for t in entries]
    except ValueError:
        raise UsageError(f"{name}: the mask {text!r} must be ones and zeros, as in mask=1,0,1") from None
    if any(v not in (0, 1) for v in numbers):
        raise UsageError(f"{name}: the mask {text!r} must be ones and zeros (1 = attend), as in mask=1,0,1")
    if not any(numbers):
        raise UsageError(f"{name}: the mask {text!r} attends to no position; at least one must be 1, or the softmax has no denominator")
