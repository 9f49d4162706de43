"""A derivation its user writes: definitions in the language of :mod:`derive.lang`, the variable,
the assumptions, and the sizes of a worked example; read from the command line, a TOML file or
Python, and turned into the :class:`~derive.planner.Problem` the planner solves.

Text -> :class:`Spec` (strings, as given) -> :class:`Problem` (SymPy, checked) -> steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from derive.errors import UsageError

MAX_SPEC_BYTES = 100_000
"""A spec file larger than this is refused before it is parsed."""
MAX_DEFINITIONS = 50


@dataclass(frozen=True)
class Spec:
    """A derivation as its user wrote it."""

    definitions: tuple[str, ...]
    """``NAME = EXPRESSION``, the first one the quantity differentiated."""
    wrt: str
    """The variable: ``z_k``, ``W_kd``, ``gamma``."""
    also: tuple[str, ...] = ()
    """Further variables, each derived from the same definitions in a section of its own (the
    gradients of a layer by its scale and shift beside that by its inputs)."""
    assume: tuple[str, ...] = ()
    """Equations the derivation may use last, after the general form (``sum_i y_i = 1``)."""
    ranges: tuple[tuple[str, str], ...] = ()
    """Index -> ``LOW..HIGH`` overriding the conventions (``n`` -> ``1..B``)."""
    lets: tuple[tuple[str, str], ...] = ()
    """Leaf -> numbers of the worked example (``z`` -> ``2,1,0.1``, ``W`` -> ``1,2;3,4``)."""
    sizes: tuple[tuple[str, int], ...] = ()
    """Size -> value for the worked example (``N`` -> 2); H comes from ``classes``."""
    classes: int | None = None
    name: str = "grad"
    """The document's name: ``grad`` for a derivation typed by hand, the entry's for a catalog file."""
    title: str | None = None
    describe: tuple[tuple[str, str], ...] = ()
    """Name -> its role in words, for the notation list (``y`` -> ``the target, one-hot``)."""
    special: tuple[tuple[str, str], ...] = ()
    """Name -> value: a special case shown after the result, derived again with the name set to
    the value (focal loss at gamma = 0 is the cross-entropy)."""
    reduction: str | None = None
    """``sum`` or ``mean``: the quantity is that of one example, and the derivation is of its sum
    or mean over a batch of N (every indexed quantity per example, the scalars shared)."""
    shared: tuple[str, ...] = ()
    """With a reduction: the leaves every example of the batch shares (a layer's weights W and
    bias b); every other indexed quantity is per example."""
    batch_names: tuple[tuple[str, str], ...] = ()
    """With a reduction: name -> the name the batch writes it by. A defined delta_m is delta_nm
    over a batch, which reads as a Kronecker delta: the batch writes it g_nm."""
    upstream: tuple[str, str] | None = None
    """(y, g): the first definition is a layer y inside a network, and the quantity differentiated
    is a loss L downstream of it with the given upstream gradient g = dL/dy, L = sum g y."""
    overview: tuple[tuple[str, str], ...] = ()
    """A catalog entry's row in the overview: activation, loss and why (a loss only)."""
    assume_keys: tuple[str, ...] = ()
    """A key per assumption (its wording); ``normalised`` for a target that sums to one."""
    names: tuple[tuple[str, str], ...] = ()
    """Public name -> the letter of the definitions it stands for (``mask`` -> ``m``): the
    definitions keep the letter, while ``--let``, the JSON and the notation list use the name."""


def from_mapping(data: Mapping[str, Any], where: str) -> Spec:
    """A spec from a parsed TOML table; every key is checked, an unknown one is named."""
    known = {"definitions", "wrt", "assume", "range", "let", "size", "classes", "name", "title", "describe", "overview", "upstream", "reduction", "special", "shared", "names", "batch_names"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: {key} must be a string or a list of strings")
        return tuple(value)

    def table(key: str, kind: type) -> tuple[tuple[str, Any], ...]:
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value.values()):
            raise UsageError(f"{where}: {key} must be a table of {kind.__name__} values")
        return tuple(value.items())

    lets = []
    for key, value in (data.get("let", {}) or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = repr(value)
        elif isinstance(value, list):
            value = ",".join(repr(v) if isinstance(v, float) else str(v) for v in value) if not any(isinstance(v, list) for v in value) else ";".join(",".join(map(str, row)) for row in value)
        if not isinstance(value, str):
            raise UsageError(f"{where}: let.{key} must be numbers")
        lets.append((key, value))
    names = table("names", str)
    lets = [(letter_of(names, key), value) for key, value in lets]
    wrt = data.get("wrt")
    if isinstance(wrt, list) and wrt and all(isinstance(v, str) for v in wrt):
        wrt, also = wrt[0], tuple(wrt[1:])
    elif isinstance(wrt, str):
        also = ()
    else:
        raise UsageError(f"{where}: wrt must be a string naming the variable, e.g. \"z_k\", or a list of them")
    classes = data.get("classes")
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool)):
        raise UsageError(f"{where}: classes must be a whole number")
    return Spec(
        definitions=strings("definitions"),
        wrt=wrt,
        also=also,
        assume=strings("assume"),
        ranges=table("range", str),
        lets=tuple(lets),
        sizes=table("size", int),
        classes=classes,
        name=str(data.get("name", "grad")),
        title=data.get("title"),
        describe=table("describe", str),
        overview=table("overview", str),
        special=tuple((k, str(v)) for k, v in table("special", (int, float, str))),
        reduction=parse_reduction(data["reduction"]) if "reduction" in data else None,
        shared=_shared(strings("shared"), None, where) if "shared" in data else (),
        batch_names=table("batch_names", str),
        upstream=parse_upstream(data["upstream"]) if isinstance(data.get("upstream"), str) else _no_upstream(data, where),
        names=names,
    )


PUBLIC_NAME = re.compile(r"^[a-z][a-z0-9_]+$")


def check_names(spec: Spec, where: str) -> None:
    """The ``[names]`` table of a spec file: each public name a word of two or more lower-case
    letters, digits or underscores that is not itself a name of the definitions, each standing for
    a different given quantity of the definitions (a name no definition defines)."""
    if not spec.names:
        return
    from derive.lang import parse_definition

    defined, used = set(), set()
    for text in spec.definitions:
        try:
            lhs, rhs = parse_definition(text, _overrides(spec))
        except UsageError:
            return  # the definition's own error is the one to report, when the spec is planned
        defined.add(str(getattr(lhs, "base", lhs)))
        used |= {str(h) for h in _heads(rhs)}
    given = (used - defined) | ({spec.upstream[1]} if spec.upstream is not None else set())
    seen: dict[str, str] = {}
    for name, leaf in spec.names:
        if not PUBLIC_NAME.match(name):
            raise UsageError(f"{where}: names.{name}: a public name is a word of lower-case letters, digits and underscores, two characters or more, like mask")
        if name in used | defined:
            raise UsageError(f"{where}: names.{name}: {name} is already a name of the definitions")
        if leaf not in given:
            raise UsageError(f"{where}: names.{name} = {leaf!r}: not a given quantity of the definitions (given: {', '.join(sorted(given))})")
        if leaf in seen:
            raise UsageError(f"{where}: names.{name} and names.{seen[leaf]} both stand for {leaf}")
        seen[leaf] = name


def letter_of(names: Sequence[tuple[str, str]], name: str) -> str:
    """The letter of the definitions that ``name`` stands for: itself, or the one its public name
    in the spec's ``names`` stands for (``mask`` -> ``m``)."""
    return dict(names).get(name, name)


def public_name(names: Sequence[tuple[str, str]], leaf: str) -> str:
    """The name the command line and the JSON use for the letter ``leaf`` (``m`` -> ``mask``)."""
    return {v: k for k, v in names}.get(leaf, leaf)


def read(path: str | Path) -> Spec:
    """A spec file: TOML with ``definitions``, ``wrt`` and optional ``assume``, ``range``,
    ``let``, ``size``, ``classes``, ``title``, ``describe``, ``names``."""
    import tomllib

    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise UsageError(f"spec file {str(p)!r} is {size} bytes; the limit is {MAX_SPEC_BYTES}")
        text = p.read_bytes()[: MAX_SPEC_BYTES + 1].decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"spec file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read spec file {str(p)!r}: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"spec file {str(p)!r}: {error}") from None
    spec = from_mapping(data, f"spec file {str(p)!r}")
    check_names(spec, f"spec file {str(p)!r}")
    return spec


RANGE = re.compile(r"^\s*([a-z])\s*=\s*(\d+|[A-Za-z])\s*\.\.\s*(\d+|[A-Za-z])\s*$")


def parse_range(text: str) -> tuple[str, str]:
    """``n=1..B`` -> (``n``, ``1..B``)."""
    m = RANGE.match(text)
    if not m:
        raise UsageError(f"--range must look like n=1..B (an index letter, then LOW..HIGH), not {text!r}")
    return m.group(1), f"{m.group(2)}..{m.group(3)}"


UPSTREAM = re.compile(r"^\s*([A-Za-z]+)\s*=\s*([A-Za-z]+)\s*$")


def parse_upstream(text: str) -> tuple[str, str]:
    """``y=g`` -> (``y``, ``g``): the layer's output and the name of its upstream gradient."""
    m = UPSTREAM.match(text)
    if not m or m.group(1) == m.group(2) or "L" in (m.group(1), m.group(2)):
        raise UsageError(f"--upstream must look like y=g (the layer's output, then the name of its upstream gradient; L is the loss), not {text!r}")
    return m.group(1), m.group(2)


REDUCTIONS = ("sum", "mean")


def parse_reduction(text: object) -> str:
    value = str(text).strip().lower()
    if value not in REDUCTIONS:
        raise UsageError(f"--reduction takes sum or mean, not {text!r}")
    return value


def _no_upstream(data: Mapping[str, Any], where: str) -> None:
    if "upstream" in data:
        raise UsageError(f"{where}: upstream must be a string like \"y=g\"")
    return None


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """``NAME=VALUE`` of --let and --size."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise UsageError(f"{option} must look like NAME=VALUE, not {text!r}")
    return name, value.strip()


def from_arguments(
    definitions: Sequence[str],
    wrt: "str | Sequence[str] | None",
    assume: Sequence[str] = (),
    ranges: Sequence[str] = (),
    lets: Sequence[str] = (),
    sizes: Sequence[str] = (),
    classes: int | None = None,
    upstream: str | None = None,
    reduction: str | None = None,
    shared: Sequence[str] = (),
) -> Spec:
    """A spec from the command line's strings."""
    if not definitions:
        raise UsageError("give at least one definition, e.g. 'E = -sum_i y_i*ln(o_i)'")
    if len(definitions) > MAX_DEFINITIONS:
        raise UsageError(f"at most {MAX_DEFINITIONS} definitions")
    if not wrt:
        raise UsageError("--wrt names the variable to differentiate by, e.g. --wrt z_k")
    variables = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    parsed_sizes = []
    for s in sizes:
        name, value = parse_assignment(s, "--size")
        try:
            parsed_sizes.append((name, int(value)))
        except ValueError:
            raise UsageError(f"--size {name} must be a whole number, not {value!r}") from None
    return Spec(
        definitions=tuple(definitions),
        wrt=variables[0],
        also=variables[1:],
        assume=tuple(assume),
        ranges=tuple(parse_range(r) for r in ranges),
        lets=tuple(parse_assignment(x, "--let") for x in lets),
        sizes=tuple(parsed_sizes),
        classes=classes,
        upstream=parse_upstream(upstream) if upstream is not None else None,
        reduction=parse_reduction(reduction) if reduction is not None else None,
        shared=_shared(shared, reduction),
    )


def _shared(names: Sequence[str], reduction: str | None, where: str | None = None) -> tuple[str, ...]:
    """--shared W,b (or repeated): names, each a name of the language, and only with a reduction.
    A spec file (``where``) may name them without one: they apply when a reduction is asked for."""
    out = tuple(n.strip() for text in names for n in str(text).split(",") if n.strip())
    if out and reduction is None and where is None:
        raise UsageError("--shared names what the examples of a batch share: give --reduction sum or mean as well")
    from derive.lang import parse_variable

    parsed = []
    for n in out:
        try:
            name = parse_variable(n)
        except UsageError:
            name = None
        if name is None or not name.is_Symbol:
            raise UsageError(f"{where + ': shared' if where else '--shared'} {n!r}: give the name of a given quantity without indices, a letter or a spelled-out Greek letter (W, b)")
        parsed.append(str(name))
    return tuple(parsed)


def with_example(spec: Spec, extra: Spec) -> Spec:
    """A spec file's derivation with the worked-example options of the command line over its own."""
    from dataclasses import replace

    lets = {letter_of(spec.names, k): v for k, v in spec.lets} | {letter_of(spec.names, k): v for k, v in extra.lets}
    sizes = dict(spec.sizes) | dict(extra.sizes)
    return replace(spec, lets=tuple(lets.items()), sizes=tuple(sizes.items()), classes=extra.classes if extra.classes is not None else spec.classes)


def file_stem(spec: Spec) -> str:
    """The default file name: the spec's name, or grad-QUANTITY-VARIABLE, then -N for N classes."""
    if spec.name != "grad":
        stem = spec.name
    else:
        quantity = spec.definitions[0].split("=")[0].strip() if spec.definitions else "f"
        stem = f"grad-{quantity}-{spec.wrt.strip()}"
        stem = re.sub(r"[^A-Za-z0-9_-]+", "", stem.replace("\\", ""))
    return stem if spec.classes is None else f"{stem}-{spec.classes}"


def variables(spec: Spec) -> tuple[Spec, ...]:
    """One spec per variable: the first the document's derivation, the others its parts."""
    from dataclasses import replace

    seen = set()
    for v in (spec.wrt, *spec.also):
        if v.strip() in seen:
            raise UsageError(f"--wrt {v.strip()} is given twice")
        seen.add(v.strip())
    return (spec, *(replace(spec, wrt=v, also=()) for v in spec.also))


# --- from text to a problem -----------------------------------------------------------------------
def problem(spec: Spec) -> "Problem":
    """Parse and check a spec: every definition once, no cycle, a variable that the quantity
    depends on, ranges for every index, assumptions that parse."""
    import sympy as sp

    from derive.lang import RANGES, index_symbol, parse_definition, parse_equation, parse_variable, size_symbol
    from derive.model import Assumption, Definition
    from derive.planner import Problem

    overrides = _overrides(spec)
    definitions: list[Definition] = []
    seen: dict = {}
    for n, text in enumerate(spec.definitions, 1):
        if not text.strip():
            raise UsageError(f"definition {n} is empty")
        lhs, rhs = parse_definition(text, overrides)
        head = lhs.base if isinstance(lhs, sp.Indexed) else lhs
        if head in seen:
            raise UsageError(f"{head} is defined twice (definitions {seen[head]} and {n})")
        seen[head] = n
        definitions.append(Definition(_key(lhs, rhs), lhs, rhs))
    if spec.upstream is not None:
        definitions.insert(0, _upstream(spec.upstream, definitions, seen, overrides))
        seen = {k: v + 1 for k, v in seen.items()} | {definitions[0].symbol: 1}
    wrt = parse_variable(spec.wrt)
    whead = wrt.base if isinstance(wrt, sp.Indexed) else wrt
    if whead in seen:
        raise UsageError(f"--wrt {spec.wrt}: {whead} is defined (definition {seen[whead]}); differentiate by a leaf, a name no definition defines")
    _check_cycles(definitions)
    used = _leaves_under(definitions)
    if whead not in used:
        names = ", ".join(sorted({str(h) for h in used if h not in seen})) or "nothing"
        raise UsageError(f"--wrt {spec.wrt}: {definitions[0].symbol} does not depend on {whead} (its leaves: {names})")
    ranges = {}
    for letter, size in RANGES.items():
        ranges[index_symbol(letter)] = overrides.get(letter, (1, size_symbol(size)))[1]
    for letter, (_, high) in overrides.items():
        ranges[index_symbol(letter)] = high
    assumptions = []
    for n, text in enumerate(spec.assume, 1):
        lhs, rhs = parse_equation(text, overrides)
        key = spec.assume_keys[n - 1] if n <= len(spec.assume_keys) else ("normalised" if _is_normalisation(lhs, rhs) else f"assumption{n}")
        assumptions.append(Assumption(key, sp.Eq(lhs, rhs, evaluate=False)))
    if spec.reduction is not None:
        definitions, wrt, assumptions = _batched(spec.reduction, definitions, wrt, assumptions, spec.shared, spec.batch_names)
        ranges.setdefault(index_symbol("n"), size_symbol("N"))
    from derive.planner import hygienic

    _check_variable_ranges(spec.wrt, wrt, definitions, ranges)
    free = set(wrt.free_symbols) | set(getattr(definitions[0].symbol, "free_symbols", ()))
    cite = _with_own(spec) if spec.reduction is not None and str(getattr(wrt, "base", wrt)) in spec.shared else citable
    return Problem(hygienic(tuple(definitions), free, ranges), wrt, tuple(assumptions), ranges, cite)


def _check_variable_ranges(text: str, wrt, definitions, ranges) -> None:
    """Each index of the variable must run over what the definitions index it by: W_im with m
    over 1..M and --wrt W_kd, d over 1..D, are not the same entries."""
    import sympy as sp

    if not isinstance(wrt, sp.Indexed):
        return
    mine = [ranges.get(ix) for ix in wrt.indices]

    def walk(e, bound):
        if isinstance(e, sp.Sum):
            bound = dict(bound) | {lim[0]: lim[2] for lim in e.limits}
        if isinstance(e, sp.Indexed) and e.base == wrt.base:
            for position, (ix, limit) in enumerate(zip(e.indices, mine), 1):
                theirs = bound.get(ix, ranges.get(ix)) if isinstance(ix, sp.Symbol) else None
                if theirs is not None and limit is not None and theirs != limit:
                    raise UsageError(
                        f"--wrt {text.strip()}: index {position} of {wrt.base} runs over 1..{theirs} in the definitions ({ix}), "
                        f"but {wrt.indices[position - 1]} runs over 1..{limit}; name the variable with an index of the same range"
                    )
            return
        for a in e.args:
            walk(a, bound)

    for d in definitions:
        walk(d.value, {})


def _with_own(spec: Spec):
    """The results a batch may cite when its variable is shared by the examples: the catalog's,
    and the spec's own result for one example, which the batch's error sums or averages
    (planned once, when first asked for)."""
    from dataclasses import replace

    own: list = []

    def cited() -> tuple:
        if not own:
            from derive.planner import plan

            one = problem(replace(spec, reduction=None))
            if spec.batch_names:
                # Written with the batch's names (delta_m as g_m), as the batch's definitions are.
                import sympy as sp

                to = {sp.IndexedBase(a): sp.IndexedBase(b) for a, b in spec.batch_names}
                one = replace(one, definitions=tuple(replace(d, symbol=d.symbol.xreplace(to), value=d.value.xreplace(to)) for d in one.definitions))
            own.append((spec.name, one.definitions, one.wrt, plan(one).general))
            own.extend(_parts_of_one(spec, one, plan))
        return citable() + tuple(own)

    return cited


def _parts_of_one(spec: Spec, one, plan) -> list:
    """The results for one example of each defined scalar the loss adds to a term of its own
    (the cross-entropy C of E = C + lambda/2 sum W^2): over a batch C is C_n, and the penalty is
    added once, so the batch cites C's result at every example, not E's."""
    import sympy as sp

    from dataclasses import replace

    if spec.upstream is not None:
        return []
    heads = [d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol for d in one.definitions]
    found = []
    for position, d in enumerate(one.definitions[1:], 1):
        if not isinstance(d.symbol, sp.Symbol) or d.symbol not in one.definitions[0].value.free_symbols:
            continue
        reached, todo = {d.symbol}, [d]
        while todo:
            for x in _heads(todo.pop().value):
                if x in heads and x not in reached:
                    reached.add(x)
                    todo.append(one.definitions[heads.index(x)])
        texts = [spec.definitions[position]] + [t for t, h in zip(spec.definitions, heads) if h in reached and h != d.symbol]
        try:
            part = problem(replace(spec, definitions=tuple(texts), reduction=None, also=()))
        except UsageError:
            continue  # the scalar does not depend on the variable
        found.append((f"{spec.name}:{d.symbol}", part.definitions, part.wrt, plan(part).general))
    return found


def _overrides(spec: Spec) -> dict:
    """Index letter -> (1, high) of the spec's ranges."""
    import sympy as sp

    from derive.lang import size_symbol

    overrides = {}
    for index, text in spec.ranges:
        low, high = text.split("..")
        overrides[index] = tuple(sp.Integer(int(v)) if v.isdigit() else size_symbol(v) for v in (low, high))
        if overrides[index][0] != 1:
            raise UsageError(f"--range {index}={text}: a range starts at 1")
    return overrides


def citable() -> tuple:
    """(name, definitions, variable, general form) of each result a plan may cite
    (``planner.RESULTS``), planned from its spec file once, without citing one another."""
    global _CITABLE
    if _CITABLE is None:
        from derive.files import catalog_spec
        from derive.planner import RESULTS, plan

        _CITABLE = ()  # the results are planned without citing one another
        found = []
        for name in RESULTS:
            cited = problem(read(catalog_spec(name)))
            found.append((name, cited.definitions, cited.wrt, plan(cited).general))
        _CITABLE = tuple(found)
    return _CITABLE


_CITABLE: tuple | None = None


def _batched(reduction: str, definitions: list, wrt, assumptions: list, shared: tuple[str, ...] = (), names: tuple[tuple[str, str], ...] = ()):
    """The derivation over a batch of N examples: every indexed quantity gains the example index
    n in front (z_k is z_nk, an assumption holds in every row), and the quantity is the sum or
    the mean of its value per example. The scalars (a temperature, gamma) are shared, and so are
    the leaves named in ``shared`` (a layer's weights); a term of the quantity without a
    per-example quantity (a penalty on the shared weights) is added once, not per example.
    ``names``: a defined name -> the name the batch writes it by (delta_m -> g_nm)."""
    import sympy as sp

    from derive.lang import index_symbol, size_symbol
    from derive.model import Assumption, Definition

    n, N = index_symbol("n"), size_symbol("N")
    everything = [wrt, *(x for d in definitions for x in (d.symbol, d.value)), *(a.statement for a in assumptions)]
    if any(e.has(n) for e in everything) or any(e.has(N) for e in everything):
        raise UsageError("--reduction puts the examples of a batch at the index n = 1..N: the definitions must not use n or N already")
    if isinstance(definitions[0].symbol, sp.Indexed):
        raise UsageError("--reduction sums or averages a loss, a scalar: the first definition defines an indexed quantity")

    defined = {str(getattr(d.symbol, "base", d.symbol)) for d in definitions}
    for name in shared:
        if name in defined:
            raise UsageError(f"shared {name}: {name} is defined, and what is defined from per-example quantities is per example; share a leaf (a layer's weights)")

    # A defined scalar (the cross-entropy part C of E = C + a penalty) is one example's too.
    scalars = {d.symbol: sp.IndexedBase(d.symbol.name)[n] for d in definitions[1:] if isinstance(d.symbol, sp.Symbol)}
    renamed = _batch_names(names, definitions, everything)

    def per_example(e):
        e = e.replace(lambda x: isinstance(x, sp.Indexed) and str(x.base) not in shared, lambda x: renamed.get(x.base, x.base)[(n, *x.indices)])
        return e.xreplace(scalars) if scalars else e

    first, *rest = definitions
    # A term without a per-example quantity (the penalty lambda/2 sum W^2 on shared weights) is
    # added once to the reduced loss, not once per example.
    terms = [(t, per_example(t)) for t in sp.Add.make_args(first.value)]
    once = [t for t, p in terms if not p.has(n)]
    body = sp.Sum(sp.Add(*(p for _, p in terms if p.has(n))), (n, 1, N))
    total = Definition(first.key, first.symbol, sp.Add(body / N if reduction == "mean" else body, *once))
    out = [total] + [Definition(d.key, per_example(d.symbol), per_example(d.value)) for d in rest]
    rows = [Assumption(a.key, sp.Eq(per_example(a.statement.lhs), a.statement.rhs, evaluate=False)) for a in assumptions]
    return out, per_example(wrt) if isinstance(wrt, sp.Indexed) else wrt, rows


def _batch_names(names: tuple[tuple[str, str], ...], definitions: list, everything: list) -> dict:
    """batch_names: each a defined indexed quantity, renamed to a name no definition uses."""
    import sympy as sp

    from derive.lang import parse_variable

    defined = {str(d.symbol.base): d.symbol.base for d in definitions if isinstance(d.symbol, sp.Indexed)}
    used = {str(getattr(x, "label", x)) for e in everything for x in e.atoms(sp.Symbol, sp.IndexedBase)}
    out = {}
    for old, new in names:
        if old not in defined:
            raise UsageError(f"batch_names {old}: rename a defined indexed quantity (one of {', '.join(sorted(defined)) or 'none'})")
        try:
            name = parse_variable(new)
        except UsageError:
            name = None
        if name is None or not name.is_Symbol or str(name) in used or str(name) in ("n", "N"):
            raise UsageError(f"batch_names {old} = {new!r}: give a letter or a spelled-out Greek letter that the definitions do not use")
        out[defined[old]] = sp.IndexedBase(str(name))
    return out


def _upstream(upstream: tuple[str, str], definitions: list, seen: dict, overrides: dict):
    """L = sum_n g_n y_n over the indices of the layer's output y (L = g y for a scalar): the
    loss downstream of the layer, whose derivative by y is the given upstream gradient g."""
    import sympy as sp

    from derive.lang import parse_definition
    from derive.model import Definition

    out, grad = upstream
    first = definitions[0].symbol if definitions else None
    head = first.base if isinstance(first, sp.Indexed) else first
    if str(head) != out:
        raise UsageError(f"--upstream {out}={grad}: the first definition must define the layer's output {out}, not {head}")
    names = {str(h) for h in seen} | {str(h) for d in definitions for h in _heads(d.value)}
    for name in ("L", grad):
        if name in names:
            raise UsageError(f"--upstream {out}={grad}: {name} is already a name of these definitions; the upstream loss is L and its gradient {grad}")
    if isinstance(first, sp.Indexed):
        letters = [str(i) for i in first.indices]
        index = "".join(letters)
        text = "L = " + " ".join(f"sum_{x}" for x in letters) + f" {grad}_{index}*{out}_{index}"
    else:
        text = f"L = {grad}*{out}"
    lhs, rhs = parse_definition(text, overrides)
    return Definition("given", lhs, rhs)


def uses_classes(p: "Problem") -> bool:
    """Whether H is a size of this problem: H itself, or an index over the classes."""
    from derive.symbols import H

    over = [ix for ix, limit in p.ranges.items() if limit == H]
    return any(e.has(H, *over) for d in p.definitions for e in (d.symbol, d.value)) or p.wrt.has(H, *over)


def _key(lhs, rhs) -> str:
    """The wording of a definition: a softmax is a softmax, whatever its letters."""
    from derive.planner import softmax_of
    from derive.model import Definition

    return "softmax" if softmax_of(Definition("", lhs, rhs)) is not None else "given"


def _is_normalisation(lhs, rhs) -> bool:
    import sympy as sp

    return isinstance(lhs, sp.Sum) and isinstance(lhs.function, sp.Indexed) and rhs == 1


def _heads(e) -> set:
    import sympy as sp

    out = {x.base for x in e.atoms(sp.Indexed)}
    labels = {b.label for b in out}
    return out | {s for s in e.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer and s not in labels}


def _check_cycles(definitions) -> None:
    import sympy as sp

    by = {(d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol): d for d in definitions}
    state: dict = {}

    def visit(h, path):
        if state.get(h) == "done" or h not in by:
            return
        if state.get(h) == "open":
            cycle = " -> ".join(str(x) for x in path[path.index(h):] + [h])
            raise UsageError(f"the definitions form a cycle: {cycle}")
        state[h] = "open"
        for x in sorted(_heads(by[h].value), key=str):
            visit(x, path + [h])
        state[h] = "done"

    for h in by:
        visit(h, [])


def _leaves_under(definitions) -> set:
    """The names the first definition depends on, through the others."""
    import sympy as sp

    by = {(d.symbol.base if isinstance(d.symbol, sp.Indexed) else d.symbol): d for d in definitions}
    first = definitions[0]
    out, todo = set(), [first.symbol.base if isinstance(first.symbol, sp.Indexed) else first.symbol]
    while todo:
        h = todo.pop()
        for x in _heads(by[h].value) if h in by else ():
            if x not in out:
                out.add(x)
                todo.append(x)
    return out


def setting(p: "Problem"):
    """What verification needs to know: the variable, the definitions, which names are defined
    through it, how the assumptions constrain the leaves, and every index's limit."""
    import sympy as sp

    from derive.setting import Setting
    from derive.symbols import H

    intermediates = tuple(d.symbol.base for d in p.definitions if isinstance(d.symbol, sp.Indexed))
    used = set(p.wrt.free_symbols)
    for d in p.definitions:
        used |= {s for s in d.symbol.free_symbols | d.value.free_symbols if isinstance(s, sp.Symbol) and s.is_integer}
        for s in d.value.atoms(sp.Sum):
            used |= {lim[0] for lim in s.limits}
    constraints = {a.key: constraint(a.statement) for a in p.assumptions}
    for c in constraints.values():
        c.bind.update({r: p.ranges[r] for r in c.rows})
    return Setting(
        wrt=p.wrt,
        definitions=p.definitions,
        intermediates=intermediates,
        constraints=constraints,
        classes=H,
        index=p.wrt.indices[-1] if isinstance(p.wrt, sp.Indexed) else None,
        outer=tuple(getattr(p.quantity, "indices", ())) + tuple(getattr(p.wrt, "indices", ())[:-1]),
        ranges={ix: hi for ix, hi in p.ranges.items() if ix in used},
    )


def constraint(statement):
    """An assumption as verification imposes it: sum_i y_i = c fixes the last entry,
    y_n = c - (y_1 + ... + y_{n-1}); sum_i y_ni = c does so in every row n (up to the size of
    its range, which verification passes as ``sizes``)."""
    import sympy as sp

    lhs, rhs = statement.args
    ok = isinstance(lhs, sp.Sum) and isinstance(lhs.function, sp.Indexed) and lhs.function.indices[-1] == lhs.limits[0][0]
    ok = ok and all(isinstance(i, sp.Symbol) for i in lhs.function.indices[:-1]) and not rhs.free_symbols & set(lhs.function.indices)
    if not ok:
        raise UsageError(f"cannot use the assumption {sp.sstr(statement)}: an assumption is a sum of one indexed leaf over its last index equal to a constant, like sum_i y_i = 1")
    base, rows = lhs.function.base, lhs.function.indices[:-1]

    def fix(n: int, sizes: dict | None = None) -> dict:
        import itertools

        extents = [range(1, int((sizes or {}).get(_limit(r), 1)) + 1) for r in rows]
        out = {}
        for at in itertools.product(*extents):
            out[base[(*at, n)]] = rhs - sp.Add(*(base[(*at, m)] for m in range(1, n)))
        return out

    ranges = {}

    def _limit(r):
        return ranges.get(r)

    fix.rows = rows  # type: ignore[attr-defined]
    fix.bind = ranges  # type: ignore[attr-defined]
    return fix
