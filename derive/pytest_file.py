"""The pytest file of a derivation (``--format py``): your backprop code, checked.

:func:`document` turns a derivation for a concrete number of classes into plain data for
``templates/document.py.j2``: the worked example's numbers (those the checks verified, not
computed again), a NumPy reference of the differentiated function and of the verified result
(printed by :mod:`derive.pycode` from the definitions and the result), and the signature of the
function the file checks. The file needs only NumPy and pytest.

The function a user writes takes the example's inputs in the order of ``INPUTS`` below (the
derivation's own options as keywords) and returns the derivative by each differentiated
variable, one array each (a tuple when there are several):

- a loss by the logits: ``backward(z, y) -> dE/dz``, shape (H,);
- a Jacobian: ``jacobian(z) -> J``, shape (H, H), row i an output, column k a logit;
- a dense layer before the loss: ``backward(x, W, b, y) -> (dE/dW, dE/db)``, shapes (H, D), (H,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sympy as sp

from derive import __version__
from derive.concrete import normalised
from derive.derivations import CATALOG, file_stem, option_name, option_text
from derive.errors import DeriveError, UsageError
from derive.model import Definition, Derivation, Example, JacobianExample, LayerExample
from derive.pycode import Printer, identifier

WIDTH = 100
"""Lines of numbers are wrapped at this many characters."""


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

TARGET = "y"
"""The input drawn as a target at the file's random points (see ``draw``)."""


def require_concrete(d: Derivation) -> None:
    """The file holds a worked example: a symbolic number of classes has none. A planned
    derivation (derive grad) keeps its example in another form, which the file does not read yet."""
    if d.concrete is None and getattr(d, "worked", None) is not None:
        raise UsageError("--format py is written for the catalog's derivations (derive NAME --classes N --format py); derive grad has no pytest file yet")
    if d.concrete is None:
        raise UsageError(f"--format py needs a concrete number of classes: add --classes N (derive {d.name} --classes 3 --format py)")


def document(d: Derivation) -> dict[str, Any]:
    """Everything ``document.py.j2`` needs, as strings and numbers."""
    require_concrete(d)
    c = d.concrete
    if type(c.example) not in NUMBERS:
        raise DeriveError(f"no pytest file for a worked example of kind {type(c.example).__name__}")
    numbers = NUMBERS[type(c.example)](c.example)
    results = _results(d)
    defined = {x.symbol.base if isinstance(x.symbol, sp.Indexed) else x.symbol: x for x in d.setting.definitions}
    leaves = _leaves(d.setting.definitions, defined)
    if set(leaves) != set(numbers.inputs) or [r["wrt"] for r in results] != list(numbers.derivatives):
        raise DeriveError(f"the worked example of {d.name} does not match its definitions: {sorted(leaves)} vs {list(numbers.inputs)}")
    limits = {d.setting.classes, *d.setting.ranges.values()}
    constants = [(s, v) for s, v in c.parameters if s not in limits]
    sizes = _sizes(d, list(numbers.inputs))
    targets_normalised = _draws_normalised(d)

    forward = _function(d, [(d.subject.expr, _axes(d.subject.expr, d.setting.indices))], defined, sizes)
    gradient = _function(d, [(r["formula"], r["axes"]) for r in results], defined, sizes)
    return {
        "name": d.name,
        "classes": c.classes,
        "version": __version__,
        "description": CATALOG[d.name].description if d.name in CATALOG else d.name,
        "file": f"{file_stem(d.name, c.classes, dict(d.options))}.py",
        "command": " ".join(["derive", d.name, "--classes", str(c.classes), *(f"{option_name(k)} {option_text(v)}" for k, v in d.options), "--format", "py"]),
        "given": c.example.given,
        "function": numbers.function,
        "inputs": [
            {"name": name, "shape": _shape(values), "numbers": _array(values, _column(name)), "draw": "target" if name == TARGET else "normal"}
            for name, values in numbers.inputs.items()
        ],
        "inputs_tuple": "(" + ", ".join(f'"{name}"' for name in numbers.inputs) + ("," if len(numbers.inputs) == 1 else "") + ")",
        "targets_normalised": targets_normalised,
        "value": None if numbers.value is None else repr(_float(numbers.value)),
        "derivatives": [
            {"wrt": r["wrt"], "numbers": _array(numbers.derivatives[r["wrt"]], _column(r["wrt"])), "shape": _shape(numbers.derivatives[r["wrt"]]), "general": r["general"]}
            for r in results
        ],
        "of": _of(d.subject.expr),
        "d": "d" + (_of(d.subject.expr) if _of(d.subject.expr).isidentifier() else f"({_of(d.subject.expr)})"),
        "options": [{"name": key, "value": repr(_float(v)), "keyword": f"{key}={_float(v)!r}"} for key, v in d.options],
        "constants": [{"name": identifier(s.name), "value": repr(_float(v))} for s, v in constants],
        "forward": forward,
        "gradient": gradient,
        "helpers": sorted(set(forward["helpers"]) | set(gradient["helpers"])),
    }


# --- what the file computes --------------------------------------------------------------------------
def _results(d: Derivation) -> list[dict[str, Any]]:
    """The verified result by each differentiated variable: the main chain's, then each part's by
    another variable (the bias of a dense layer; a training set's sum restates the weights').
    Where the example's target does not sum to one, the form that holds for any target."""
    out = []
    for chain in (d, *d.parts):
        wrt = chain.setting.wrt
        if any(r["wrt"] == wrt.base.name for r in out) or chain.setting.definitions != d.setting.definitions:
            continue
        general = chain.general is not None and not _target_normalised(d)
        formula = chain.general.rhs if general else chain.result.rhs
        out.append({
            "wrt": wrt.base.name,
            "formula": formula,
            "axes": _axes(chain.subject.expr, chain.setting.indices) + tuple(wrt.indices),
            "general": general,
        })
    return out


def _target_normalised(d: Derivation) -> bool:
    target = getattr(d.concrete.example, "target", None)
    return target is None or normalised(target)


def _draws_normalised(d: Derivation) -> bool:
    """Whether the file's random targets must sum to one: the result it checks assumes so."""
    return _target_normalised(d) and any(a.key == "normalised" for a in d.assumptions)


def _of(subject: sp.Expr) -> str:
    """What is differentiated, as the file names it: E, o, log(o)."""
    return sp.sstr(subject.xreplace({q: sp.Symbol(q.base.name) for q in subject.atoms(sp.Indexed)}))


def _axes(e: sp.Expr, indices: Sequence[sp.Symbol]) -> tuple[sp.Symbol, ...]:
    """The free indices of ``e`` among the setting's, in the setting's order (row i of a Jacobian)."""
    return tuple(s for s in indices if s in e.free_symbols)


def _leaves(definitions: Sequence[Definition], defined: dict) -> list[str]:
    """The indexed quantities the definitions use but do not define: the function's inputs."""
    names = []
    for x in definitions:
        for q in sorted(x.value.atoms(sp.Indexed), key=sp.default_sort_key):
            if q.base not in defined and q.base.name not in names:
                names.append(q.base.name)
    return names


def _sizes(d: Derivation, inputs: list[str]) -> dict[sp.Symbol, str]:
    """H, D, ... as the length of an axis of an input: ``H = z.shape[0]``."""
    out: dict[sp.Symbol, str] = {}
    for name in inputs:
        for x in d.setting.definitions:
            for q in sorted(x.value.atoms(sp.Indexed), key=sp.default_sort_key):
                if q.base.name == name:
                    for axis, index in enumerate(q.indices):
                        out.setdefault(d.setting.limit(index), f"{name}.shape[{axis}]")
    return out


def _function(d: Derivation, returns: list[tuple[sp.Expr, tuple]], defined: dict, sizes: dict[sp.Symbol, str]) -> dict[str, Any]:
    """The body of a reference function: the sizes it needs, the definitions it needs (each
    quantity before its use), and what it returns, each value with every axis it names (a
    result that does not vary along an index is broadcast along it)."""
    printer = Printer(d.setting.limit)
    needed = _needed([e for e, _ in returns], defined)
    lines = [printer.definition(defined[q]) for q in needed]
    values = []
    for e, axes in returns:
        code = printer.code(e, axes)
        if not set(axes) <= e.free_symbols:
            shape = ", ".join(identifier(d.setting.limit(a).name) for a in axes)
            printer.used.update(d.setting.limit(a) for a in axes)
            code = f"np.broadcast_to({code}, ({shape},))"
        values.append(code)
    missing = printer.used - sizes.keys() - {s for s, _ in d.concrete.parameters} - set(defined)
    if missing:
        raise DeriveError(f"the pytest file of {d.name} cannot tell the value of {', '.join(sorted(map(str, missing)))}")
    size_lines = [f"{identifier(s.name)} = {sizes[s]}" for s in sorted(printer.used & sizes.keys(), key=lambda s: s.name)]
    return {"lines": size_lines + lines, "returns": values, "helpers": sorted(printer.helpers)}


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
