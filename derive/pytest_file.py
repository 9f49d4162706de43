"""The pytest file of a derivation (``--format py``): your backprop code, checked.

:func:`document` turns a derivation into plain data for ``templates/document.py.j2``: the worked
example's numbers (those the checks verified, not computed again), a NumPy reference of the
differentiated function and of the verified result (printed by :mod:`derive.pycode` from the
definitions and the result), the shape of each input in terms of the sizes (H, N, D, ...), and
the signature of the function the file checks. The file needs only NumPy and pytest.

Every derivation has one: a catalog entry built by a module (its example a
:class:`~derive.model.Concrete`, so it needs a concrete number of classes) and a planned one,
from ``derive grad`` or a spec file of the catalog (its example a :class:`~derive.worked.Worked`).
A planned derivation without a worked example (a symbolic H) is checked at random points only.

The function a user writes takes the inputs in the order of ``INPUTS`` (the derivation's own
options and fixed scalars as keywords) and returns the derivative by each differentiated
variable, one array each (a tuple when there are several):

- a loss by the logits: ``backward(z, y) -> dE/dz``, shape (H,);
- a Jacobian: ``jacobian(z) -> J``, shape (H, H), row i an output, column k a logit;
- a dense layer before the loss: ``backward(x, W, b, y) -> (dE/dW, dE/db)``, shapes (H, D), (H,);
- a planned derivation: the variables it is differentiated by first, in the order derived, then
  the other given arrays in the order the definitions use them; a given scalar it is not
  differentiated by (epsilon; gamma of focal loss) is a keyword:
  ``backward(x, gamma, beta, g, epsilon=0.1) -> (dL/dx, dL/dgamma, dL/dbeta)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sympy as sp

from derive.version import __version__
from derive.concrete import normalised
from derive.derivations.entries import CATALOG
from derive.derivations.naming import file_stem, option_name, option_text
from derive.errors import DeriveError, UsageError
from derive.model import Definition, Derivation, Example, JacobianExample, LayerExample
from derive.pycode import Printer, identifier

WIDTH = 100
"""Lines of numbers are wrapped at this many characters."""
CLASSES = 3
"""H of the random points of a planned derivation without a worked example (other sizes: 2,
as a worked example's)."""
LARGER = (1, 2)
"""The file's last random points have every size larger by these (H = 4 and 5 beside a worked
example of 3): the function checked must not know the example's sizes."""


@dataclass(frozen=True)
class Numbers:
    """A worked example by the names the file uses: inputs in the order the user's function takes
    them, the value of the differentiated function (None when the example does not state it),
    and the derivative by each differentiated variable."""

    inputs: dict[str, Any]
    value: Any
    derivatives: dict[str, Any]
    function: str
    """The name the file suggests for the user's function."""


def _loss(ex: Example) -> Numbers:
    return Numbers({"z": ex.logits, "y": ex.target}, ex.loss, {"z": ex.gradient}, "backward")


def _jacobian(ex: JacobianExample) -> Numbers:
    return Numbers({"z": ex.logits}, None, {"z": ex.jacobian}, "jacobian")


def _layer(ex: LayerExample) -> Numbers:
    return Numbers(
        {"x": ex.x, "W": ex.W, "b": ex.b, "y": ex.target},
        ex.loss,
        {"W": ex.gradient_W, "b": ex.gradient_b},
        "backward",
    )


NUMBERS: dict[type, Callable[[Any], Numbers]] = {Example: _loss, JacobianExample: _jacobian, LayerExample: _layer}
"""What each kind of worked example gives the file."""

ABOUT = {
    "normal": "given",
    "uniform": "given",
    "dirichlet": "given, summing to one along its last axis",
    "mask": "given, ones and zeros (at least one 1)",
}
"""An input of a planned derivation, by how the random points draw it."""

RESERVED = frozenset(
    "np math os sys importlib pytest softmax log_softmax sigmoid log_sigmoid softplus erf mask forward gradient random_point "
    "points arguments reference finite_differences tolerance load yours compare_with_reference compare_with_finite_differences "
    "check your_function INPUTS OPTIONS VARIABLES EXAMPLE VALUE DERIVATIVES SIZES LARGER RANDOM_POINTS SEED STEP RTOL ATOL "
    "FD_RTOL FD_ATOL EXACT_RTOL EXACT_ATOL IMPL POINTS".split()
)
"""The names the file gives its own modules, functions and settings: no quantity may have one."""

TARGET = "y"
"""The input of a catalog module's entry drawn as a target at the file's random points."""


@dataclass(frozen=True)
class Source:
    """What a derivation gives the file, whichever kind it is."""

    numbers: Numbers | None
    """The worked example; None for a planned derivation with a symbolic size."""
    inputs: tuple[str, ...]
    results: list[dict[str, Any]]
    constants: list[tuple[sp.Symbol, Any]]
    """Scalars fixed for the file: module constants of the reference, keywords of your function."""
    options: list[tuple[str, Any]]
    """Keywords of your function: the derivation's options, or its fixed scalars."""
    sizes: dict[sp.Symbol, int]
    """The sizes of the worked example (H = 3), or those the random points start from."""
    draws: dict[str, str]
    """How the random points draw each input: normal, dirichlet, uniform or mask."""
    limit: Callable[[sp.Symbol], sp.Symbol]
    function: str
    """The name the file suggests for your function."""
    command: str | None
    given: tuple[str, ...]
    description: str
    file: str


def require_concrete(d: Derivation) -> None:
    """The file of a catalog module's entry holds its worked example: a symbolic number of
    classes has none. A planned derivation has a file either way."""
    if d.concrete is None and _module(d):
        raise UsageError(f"--format py needs a concrete number of classes: add --classes N (derive {d.name} --classes 3 --format py)")


def _module(d: Derivation) -> bool:
    """Whether ``d`` is a catalog entry built by a module of its own (not planned from a spec)."""
    return d.name in CATALOG and not CATALOG[d.name].spec


def document(d: Derivation) -> dict[str, Any]:
    """Everything ``document.py.j2`` needs, as strings and numbers."""
    require_concrete(d)
    source = _from_concrete(d) if _module(d) else _from_planned(d)
    numbers, results, limit = source.numbers, source.results, source.limit
    definitions = d.setting.definitions
    defined = {_head(x.symbol): x for x in definitions}
    dims = _dims(definitions, limit, source.inputs)
    size_code = _size_code(source.inputs, dims)
    known = {s.name for s, _ in source.constants} | {name for name in source.inputs if not dims[name]}
    names = [*source.inputs, *(_name(q) for q in defined), *(s.name for s, _ in source.constants), *(s.name for s in source.sizes)]
    taken = sorted({identifier(name) for name in names} & RESERVED)
    if taken:
        raise DeriveError(f"the pytest file of {d.name} cannot name a quantity {taken[0]}: the file uses that name itself")

    forward = _function(d, limit, [(d.subject.expr, _axes(d.subject.expr, d.setting.indices))], defined, size_code, known)
    gradient = _function(d, limit, [(r["formula"], r["axes"]) for r in results], defined, size_code, known)
    used = sorted({s for name in source.inputs for s in dims[name]} | forward["sizes"] | gradient["sizes"], key=lambda s: s.name)
    unknown = [s for s in used if s not in source.sizes]
    if unknown:
        raise DeriveError(f"the pytest file of {d.name} has no value for the size {unknown[0]}")
    sizes = {s: source.sizes[s] for s in used}
    of = _of(d.subject.expr)
    wrts = [r["wrt"] for r in results]
    example = numbers is not None
    return {
        "name": d.name,
        "version": __version__,
        "description": source.description,
        "file": source.file,
        "command": source.command,
        "definitions": [] if _module(d) else [f"{sp.sstr(x.symbol)} = {sp.sstr(x.value)}" for x in definitions],
        "sizes_text": ", ".join(f"{s.name} = {n}" for s, n in sizes.items()),
        "example": example,
        "given": source.given,
        "function": source.function,
        "inputs": [
            {
                "name": name,
                "dims": [s.name for s in dims[name]],
                "numbers": _value(numbers.inputs[name], _column(name)) if example else None,
                "draw": _draw(source.draws[name], dims[name]),
                "about": "differentiated" if name in wrts else ABOUT[source.draws[name]],
            }
            for name in source.inputs
        ],
        "inputs_tuple": _tuple(source.inputs),
        "targets_normalised": "dirichlet" in source.draws.values(),
        "variables_tuple": _tuple(wrts),
        "value": None if not example or numbers.value is None else _value(numbers.value, len("VALUE = ")),
        "derivatives": [
            {
                "wrt": r["wrt"],
                "numbers": _value(numbers.derivatives[r["wrt"]], _column(r["wrt"])) if example else None,
                "dims": [limit(a).name for a in r["axes"]],
                "axes": [a.name for a in r["axes"]],
                "general": r["general"],
            }
            for r in results
        ],
        "of": of,
        "d": "d" + (of if of.isidentifier() else f"({of})"),
        "options": [{"name": key, "value": repr(_float(v)), "keyword": f"{key}={_float(v)!r}"} for key, v in source.options],
        "constants": [{"name": identifier(s.name), "value": repr(_float(v))} for s, v in source.constants],
        "sizes": [{"name": s.name, "value": n} for s, n in sizes.items()],
        "larger": list(LARGER),
        "forward": forward,
        "gradient": gradient,
        "helpers": sorted(set(forward["helpers"]) | set(gradient["helpers"]) | {"mask" for name in source.inputs if source.draws[name] == "mask"}),
    }


# --- a catalog module's entry --------------------------------------------------------------------------
def _from_concrete(d: Derivation) -> Source:
    c = d.concrete
    if type(c.example) not in NUMBERS:
        raise DeriveError(f"no pytest file for a worked example of kind {type(c.example).__name__}")
    numbers = NUMBERS[type(c.example)](c.example)
    defined = {_head(x.symbol) for x in d.setting.definitions}
    leaves = _leaves(d.setting.definitions, defined)
    general = not _target_normalised(d)
    results = [_result(chain, general) for chain in _chains(d)]
    if set(leaves) != set(numbers.inputs) or [r["wrt"] for r in results] != list(numbers.derivatives):
        raise DeriveError(f"the worked example of {d.name} does not match its definitions: {sorted(leaves)} vs {list(numbers.inputs)}")
    limits = {d.setting.classes, *d.setting.ranges.values()}
    inputs = tuple(numbers.inputs)
    dims = _dims(d.setting.definitions, d.setting.limit, inputs)
    sizes: dict[sp.Symbol, int] = {}
    for name in inputs:
        for s, n in zip(dims[name], _shape(numbers.inputs[name])):
            sizes.setdefault(s, n)
    target = "dirichlet" if _draws_normalised(d) else "uniform"
    return Source(
        numbers=numbers,
        inputs=inputs,
        results=results,
        constants=[(s, v) for s, v in c.parameters if s not in limits],
        options=list(d.options),
        sizes=sizes,
        draws={name: target if name == TARGET else "normal" for name in inputs},
        limit=d.setting.limit,
        function=numbers.function,
        command=" ".join(["derive", d.name, "--classes", str(c.classes), *(f"{option_name(k)} {option_text(v)}" for k, v in d.options), "--format", "py"]),
        given=c.example.given,
        description=CATALOG[d.name].description,
        file=f"{file_stem(d.name, c.classes, dict(d.options))}.py",
    )


def _target_normalised(d: Derivation) -> bool:
    target = getattr(d.concrete.example, "target", None)
    return target is None or normalised(target)


def _draws_normalised(d: Derivation) -> bool:
    """Whether the file's random targets must sum to one: the result it checks assumes so."""
    return _target_normalised(d) and any(a.key == "normalised" for a in d.assumptions)


def _leaves(definitions: Sequence[Definition], defined: set) -> list[str]:
    """The indexed quantities the definitions use but do not define: the function's inputs."""
    names = []
    for x in definitions:
        for q in sorted(x.value.atoms(sp.Indexed), key=sp.default_sort_key):
            if q.base not in defined and q.base.name not in names:
                names.append(q.base.name)
    return names


# --- a planned derivation ----------------------------------------------------------------------------
def _from_planned(d: Derivation) -> Source:
    """derive grad or a spec file of the catalog: the inputs are the leaves of the definitions,
    the variables first; the worked example's numbers where there is one."""
    from derive import worked as examples
    from derive.derivations.from_spec import MASKS

    w = d.worked
    chains = _chains(d)
    ranges: dict[sp.Symbol, sp.Symbol] = {}
    for chain in chains:
        for index, high in chain.setting.ranges.items():
            ranges.setdefault(index, high)
    classes = d.setting.classes

    def limit(index: sp.Symbol) -> sp.Symbol:
        return ranges.get(index, classes)

    general = w is not None and w.general
    results = [_result(chain, general) for chain in chains]
    variables = [r["wrt"] for r in results]
    table = {_name(base): base for base in examples.shapes(d.setting.definitions, d.setting.wrt, ranges)}
    defined = {_head(x.symbol) for x in d.setting.definitions}
    order = [*variables, *(name for name in _leaves(d.setting.definitions, defined) if name not in variables)]
    scalars = sorted((name for name in table if name not in order), key=str)
    values = {_name(base): v for base, v in w.given} if w is not None else {}
    sizes = {s: n for s, n in w.sizes} if w is not None else {}
    for name in scalars:
        values.setdefault(name, examples.default_numbers(name, (), False))
    if w is None:
        dims = _dims(d.setting.definitions, limit, order)
        for s in sorted({s for name in order for s in dims[name]} | {limit(a) for r in results for a in r["axes"]}, key=lambda s: s.name):
            sizes[s] = CLASSES if s == classes else examples.DEFAULT_SIZE
    targets = _targets(chains)
    draws = {}
    for name in order:
        if name in targets:
            draws[name] = "uniform" if general else "dirichlet"
        elif name == MASKS.get(d.name) or (name not in variables and w is not None and name in w.user and _binary(values[name])):
            draws[name] = "mask"
        else:
            draws[name] = "normal"
    numbers = None
    if w is not None:
        derivatives = {r["wrt"]: chain.worked.gradient for r, chain in zip(results, chains)}
        numbers = Numbers({name: values[name] for name in order}, w.quantity, derivatives, "")
    of = _of(d.subject.expr)
    words = dict(d.words)
    stem = file_stem(d.name, d.classes if w is not None else None)
    return Source(
        numbers=numbers,
        inputs=tuple(order),
        results=results,
        constants=[(table[name], values[name]) for name in scalars],
        options=[(identifier(name), values[name]) for name in scalars],
        sizes=sizes,
        draws=draws,
        limit=limit,
        function="jacobian" if _axes(d.subject.expr, d.setting.indices) else "backward",
        command=None,
        given=w.user if w is not None else (),
        description=CATALOG[d.name].description if d.name in CATALOG else words.get("title", "The derivative of " + ", ".join(f"{of} by {v}" for v in variables)),
        file=f"{stem}.py",
    )


def _targets(chains: Sequence[Derivation]) -> set[str]:
    """The inputs that the results assume sum to one along their last index (sum_i y_i = 1, in
    every row n of a batch): the file draws them so. An assumption of another form has no draw."""
    out = set()
    for chain in chains:
        for a in chain.assumptions:
            lhs, rhs = a.statement.args
            if isinstance(lhs, sp.Sum) and rhs == 1 and len(lhs.limits) == 1 and isinstance(lhs.function, sp.Indexed) and lhs.function.indices[-1] == lhs.limits[0][0]:
                out.add(lhs.function.base.name)
            else:
                raise DeriveError(f"the pytest file draws random points that keep a sum equal to 1, not {sp.sstr(a.statement)}")
    return out


def _binary(value: Any) -> bool:
    """Whether an example's array holds only zeros and ones, both: given so, it is a mask."""
    flat = list(_flat(value)) if isinstance(value, tuple) else []
    return bool(flat) and set(flat) == {0, 1}


def _flat(value: Any):
    for v in value:
        yield from (_flat(v) if isinstance(v, tuple) else (v,))


# --- shared -------------------------------------------------------------------------------------------
def _chains(d: Derivation) -> list[Derivation]:
    """The main chain, then each part by another variable of the same function (the bias of a
    dense layer; the scale and shift of a normalisation). A part that restates a variable's
    result, or that derives a special case with other definitions (focal loss at gamma = 0), is
    not another derivative of the function the file checks."""
    out = [d]
    for chain in d.parts:
        if any(_name(c.setting.wrt) == _name(chain.setting.wrt) for c in out) or not _same_function(chain, d):
            continue
        out.append(chain)
    return out


def _same_function(chain: Derivation, d: Derivation) -> bool:
    """The same quantity and the same definitions, up to the names of the indices summed over."""
    mine, theirs = chain.setting.definitions, d.setting.definitions
    return (
        chain.subject.expr == d.subject.expr
        and len(mine) == len(theirs)
        and all(a.symbol == b.symbol and _canonical(a.value) == _canonical(b.value) for a, b in zip(mine, theirs))
    )


def _canonical(e: sp.Basic, depth: int = 0) -> sp.Basic:
    """``e`` with the indices of its sums renamed by depth: sum_m g_m y_m is sum_n g_n y_n."""
    if isinstance(e, sp.Sum):
        body, limits = e.function, []
        for index, low, high in e.limits:
            bound = sp.Symbol(f"_{depth}", integer=True)
            body = body.xreplace({index: bound})
            limits.append((bound, low, high))
            depth += 1
        return sp.Sum(_canonical(body, depth), *limits)
    if not e.args or isinstance(e, sp.Indexed):
        return e
    return e.func(*(_canonical(a, depth) for a in e.args))


def _result(chain: Derivation, general: bool) -> dict[str, Any]:
    """The verified result by one variable; where the example's target does not sum to one, the
    form that holds for any target."""
    wrt = chain.setting.wrt
    general = general and chain.general is not None
    return {
        "wrt": _name(wrt),
        "formula": chain.general.rhs if general else chain.result.rhs,
        "axes": _axes(chain.subject.expr, chain.setting.indices) + tuple(getattr(wrt, "indices", ())),
        "general": general,
    }


def _head(e: sp.Basic) -> sp.Basic:
    return e.base if isinstance(e, sp.Indexed) else e


def _name(e: sp.Basic) -> str:
    return _head(e).name if isinstance(e, sp.Indexed) else getattr(e, "name", str(e))


def _of(subject: sp.Expr) -> str:
    """What is differentiated, as the file names it: E, o, log(o)."""
    return sp.sstr(subject.xreplace({q: sp.Symbol(q.base.name) for q in subject.atoms(sp.Indexed)}))


def _axes(e: sp.Expr, indices: Sequence[sp.Symbol]) -> tuple[sp.Symbol, ...]:
    """The free indices of ``e`` among the setting's, in the setting's order (row i of a Jacobian)."""
    return tuple(s for s in indices if s in e.free_symbols)


def _dims(definitions: Sequence[Definition], limit: Callable[[sp.Symbol], sp.Symbol], names: Sequence[str]) -> dict[str, tuple[sp.Symbol, ...]]:
    """Each input's shape as sizes: ``W`` -> (H, D); a scalar's is ()."""
    out: dict[str, tuple[sp.Symbol, ...]] = {name: () for name in names}
    seen: set[str] = set()

    def walk(e: sp.Basic, bound: dict) -> None:
        if isinstance(e, sp.Sum):
            inner = dict(bound)
            for index, _, high in e.limits:
                inner[index] = high
            walk(e.function, inner)
        elif isinstance(e, sp.Indexed):
            if e.base.name in out and e.base.name not in seen:
                seen.add(e.base.name)
                out[e.base.name] = tuple(bound.get(index, limit(index)) for index in e.indices)
        else:
            for a in e.args:
                walk(a, bound)

    for x in definitions:
        walk(x.value, {})
    return out


def _size_code(inputs: Sequence[str], dims: dict[str, tuple[sp.Symbol, ...]]) -> dict[sp.Symbol, str]:
    """H, D, ... as the length of an axis of an input: ``H = z.shape[0]``."""
    out: dict[sp.Symbol, str] = {}
    for name in inputs:
        for axis, s in enumerate(dims[name]):
            out.setdefault(s, f"{name}.shape[{axis}]")
    return out


def _function(d: Derivation, limit, returns: list[tuple[sp.Expr, tuple]], defined: dict, sizes: dict[sp.Symbol, str], known: set[str]) -> dict[str, Any]:
    """The body of a reference function: the sizes it needs, the definitions it needs (each
    quantity before its use), and what it returns, each value with every axis it names (a
    result that does not vary along an index is broadcast along it). ``known``: the names of
    the scalars it is given (constants of the file, scalar arguments)."""
    printer = Printer(limit)
    needed = _needed([e for e, _ in returns], defined)
    lines = [printer.definition(defined[q]) for q in needed]
    values = []
    for e, axes in returns:
        code = printer.code(e, axes)
        if not set(axes) <= e.free_symbols:
            shape = ", ".join(identifier(limit(a).name) for a in axes)
            printer.used.update(limit(a) for a in axes)
            code = f"np.broadcast_to({code}, ({shape},))"
        values.append(code)
    missing = {s for s in printer.used - sizes.keys() - set(defined) if s.name not in known}
    if missing:
        raise DeriveError(f"the pytest file of {d.name} cannot tell the value of {', '.join(sorted(map(str, missing)))}")
    used = printer.used & sizes.keys()
    size_lines = [f"{identifier(s.name)} = {sizes[s]}" for s in sorted(used, key=lambda s: s.name)]
    return {"lines": size_lines + lines, "returns": values, "helpers": sorted(printer.helpers), "sizes": used}


def _needed(expressions: Sequence[sp.Expr], defined: dict) -> list[sp.Basic]:
    """The defined quantities the expressions use, each after those it uses."""
    order: list[sp.Basic] = []

    def visit(e: sp.Expr) -> None:
        for q in sorted(_quantities(e), key=sp.default_sort_key):
            if q in defined and q not in order:
                visit(defined[q].value)
                if q not in order:
                    order.append(q)

    for e in expressions:
        visit(e)
    return order


def _quantities(e: sp.Expr) -> set[sp.Basic]:
    return {q.base for q in e.atoms(sp.Indexed)} | e.atoms(sp.Symbol)


def _tuple(names: Sequence[str]) -> str:
    """``("z", "y")``; ``("z",)`` for one."""
    return "(" + ", ".join(f'"{name}"' for name in names) + ("," if len(names) == 1 else "") + ")"


def _draw(kind: str, dims: tuple[sp.Symbol, ...]) -> str:
    """The code that draws an input at a random point, its shape from ``sizes``."""
    shape = "(" + ", ".join(f'sizes["{s.name}"]' for s in dims) + ("," if len(dims) == 1 else "") + ")"
    if kind == "dirichlet":
        rows = dims[:-1]
        size = "" if not rows else ", size=(" + ", ".join(f'sizes["{s.name}"]' for s in rows) + ("," if len(rows) == 1 else "") + ")"
        return f'rng.dirichlet([1.0] * sizes["{dims[-1].name}"]{size})'
    if kind == "mask":
        return f"mask(rng, {shape})"
    if not dims:
        return f"rng.{kind}()"
    return f"rng.{kind}(size={shape})"


def _value(v: Any, column: int) -> str:
    """A number, or ``np.array(...)`` of numbers."""
    return _array(v, column) if isinstance(v, (tuple, list)) else repr(_float(v))


# --- numbers ------------------------------------------------------------------------------------------
def _float(v: Any) -> float:
    return float(sp.N(v, 30)) if isinstance(v, sp.Basic) else float(v)


def _shape(values: Any) -> tuple[int, ...]:
    if isinstance(values, (tuple, list)):
        return (len(values), *_shape(values[0])) if values else (0,)
    return ()


def _column(name: str) -> int:
    """Where an array starts in the template: ``    "z": np.array(...)``."""
    return len(f'    "{name}": ')


def _array(values: Any, column: int) -> str:
    """``np.array([...])`` of the example's numbers, as the nearest doubles, wrapped at WIDTH with
    continuation lines under the first number (the array starts at ``column``)."""
    return f"np.array({_nested(values, column + len('np.array('))})"


def _nested(values: Any, indent: int) -> str:
    """A list of numbers, or of lists, whose opening bracket is at column ``indent``."""
    if not isinstance(values[0], (tuple, list)):
        items = [repr(_float(v)) for v in values]
        lines, line = [], ""
        for item in items:
            if line and indent + len(line) + len(item) + 2 > WIDTH:
                lines.append(line.rstrip())
                line = ""
            line += item + ", "
        lines.append(line[:-2])
        return "[" + ("\n" + " " * (indent + 1)).join(lines) + "]"
    rows = [_nested(row, indent + 1) for row in values]
    return "[" + (",\n" + " " * (indent + 1)).join(rows) + "]"
