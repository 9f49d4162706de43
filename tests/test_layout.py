"""The layout shows the engine: data flows one way, text -> parsed definitions (``lang``, ``spec``)
-> planned steps (``planner``, ``rules``) -> checks (``verify``, ``shown``, ``worked``,
``concrete``, run in order by ``checking``) -> documents (``rendering`` and the formats) and the
public API (``public``, the package).

Every import between derive's modules is read from the source with ``ast``, those inside a
function included: a cycle hidden in a function body is still a cycle, only postponed. Imports
under ``if TYPE_CHECKING:`` are for the type checker and never run; they are left out. Importing
a submodule runs its package's ``__init__`` first, but the package's own imports of its
submodules (``derive.render`` importing the renderer) run only when called: the package is a node
like the others, and an edge to it is an import of a name it defines.

One import no ``import`` statement shows: the catalog (``derive.derivations``) loads each entry's
builder by name with importlib, so that listing it imports no SymPy. Those edges are read from the
catalog's table (LOADS): the package reaches every builder. The builders take what they share
from modules of their own (the table from ``entries``, names from ``naming``, a spec file's steps
from ``steps``), never from the package, so no circle runs through it and KNOWN is empty.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "derive"

ENGINE = ("derive.model", "derive.symbols", "derive.setting", "derive.rules", "derive.planner", "derive.spec", "derive.functions", "derive.errors", "derive.lang")
"""The language and the engine: what a derivation is made of and how its steps are planned."""
ABOVE_ENGINE = (
    "derive.verify", "derive.numeric", "derive.fieldcheck", "derive.modular", "derive.shown", "derive.worked", "derive.concrete",
    "derive.directions", "derive.checking", "derive.public", "derive.rendering", "derive.notebook", "derive.proofread", "derive.pytest_file",
    "derive.pycode", "derive.pdf", "derive.markdown", "derive.mathml", "derive.figure", "derive.overview", "derive.gallery", "derive.cli",
)
"""The checks, the documents and the command line: nothing the engine may import."""
PRINTING = ("derive.latex", "derive.notation")
"""The LaTeX printer: the planner asks it how a bracket prints (a leading minus), the model not."""


KNOWN: set[tuple[str, str]] = set()
"""Imports left out of the graph (see the module's docstring): (module, module it imports)."""

LOADS = {"derive.derivations": "derive.derivations.entries"}
"""A module that imports modules by name with importlib -> the module whose strings name them:
the catalog's ``build`` loads the module of each entry of its table and calls its ``build``."""


def sources(package: Path = PACKAGE) -> dict[str, str]:
    """Module name -> source text, for every module of the package and its subpackages."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text(encoding="utf-8")
    return out


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")


def _nodes(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks, function bodies included."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not _type_checking(child))


def uses(name: str, source: str, known: set[str]) -> dict[str, set[str]]:
    """The modules of ``known`` that module ``name`` imports, each with the names it takes from
    it (``from derive.verify import Check``, or ``rules.rebuild`` through an imported module)."""
    out: dict[str, set[str]] = {}
    package = name if f"{name}.__init__" in known or any(k.startswith(name + ".") for k in known) else name.rpartition(".")[0]
    aliases: dict[str, str] = {}
    tree = ast.parse(source)
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known:
                    out.setdefault(a.name, set())
                    if a.asname:
                        aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:  # from derive import concrete: the module itself
                    out.setdefault(sub, set())
                    aliases[a.asname or a.name] = sub
                elif base in known:
                    out.setdefault(base, set()).add(a.name)
    for node in _nodes(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            out[aliases[node.value.id]].add(node.attr)
    out.pop(name, None)
    return out


def graph(texts: dict[str, str]) -> dict[str, dict[str, set[str]]]:
    known = frozenset(texts)
    edges = {name: {n: names for n, names in _uses(name, text, known).items() if (name, n) not in KNOWN} for name, text in texts.items()}
    for loader, table in LOADS.items():
        if loader in edges and table in texts:
            for n in loaded(texts[table], known):
                edges[loader].setdefault(n, set()).add("build")
    return edges


def loaded(source: str, known: frozenset[str]) -> set[str]:
    """The modules of ``known`` a table names in its strings (``"derive.derivations.softmax_ce"``)."""
    return {node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant) and node.value in known}


@lru_cache(maxsize=None)
def _uses(name: str, source: str, known: frozenset[str]) -> dict[str, set[str]]:
    return uses(name, source, set(known))


def cycle(edges: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """A circle of imports (its modules in order, the first again at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def reach(edges: dict[str, dict[str, set[str]]], start: str) -> set[str]:
    """Every module that importing ``start`` may import, at once or later."""
    seen, todo = set(), [start]
    while todo:
        for n in edges.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _in(module: str, names: tuple[str, ...]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def upward(edges: dict[str, dict[str, set[str]]]) -> list[tuple[str, str]]:
    """(engine module, module above the engine it reaches); the model reaches no printer either."""
    out = []
    for m in edges:
        if _in(m, ENGINE):
            above = ABOVE_ENGINE + (PRINTING if m == "derive.model" else ())
            out += [(m, n) for n in sorted(reach(edges, m)) if _in(n, above)]
    return out


def private(edges: dict[str, dict[str, set[str]]]) -> list[tuple[str, str, str]]:
    """(module, module it takes a private name from, the name), but within one subpackage
    (the language's document reader and its parser share their grammar's helpers)."""
    out = []
    for m, targets in edges.items():
        for n, names in targets.items():
            inside = m.rpartition(".")[0] == n.rpartition(".")[0] != "derive"
            out += [(m, n, x) for x in sorted(names) if x.startswith("_") and not x.startswith("__") and not inside]
    return out


# --- the package ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return sources()


def test_no_import_circle(texts):
    assert cycle(graph(texts)) is None


def test_the_engine_imports_nothing_above_it(texts):
    assert upward(graph(texts)) == []
    assert graph(texts)["derive.model"].keys() <= {"derive.symbols"}  # plain data


def test_no_module_takes_another_modules_private_names(texts):
    assert private(graph(texts)) == []


def test_one_module_for_a_concrete_size(texts):
    """The appendix for a concrete H is one module, with one entry for its checks and one for its
    example's, and the checks of the steps do not reach it."""
    assert not any(m.startswith("derive.instance") for m in texts)
    body = ast.parse(texts["derive.concrete"]).body
    defined = [n.name for n in body if isinstance(n, ast.FunctionDef)] + [t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    assert [defined.count(x) for x in ("checks", "example_check", "POINTS")] == [1, 1, 1]
    assert "derive.concrete" not in reach(graph(texts), "derive.verify")


# --- planted errors: each rule fails where it should --------------------------------------------------
def _planted(texts: dict[str, str], module: str, line: str) -> dict[str, str]:
    """``texts`` with ``line`` in a function at the end of ``module``."""
    return texts | {module: texts[module] + f"\n\ndef _planted():\n    {line}\n"}


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("derive.model", "from derive.checking import check", "derive.model"),  # the memo the model once held
        ("derive.verify", "from derive import concrete", "derive.concrete"),  # a check run from verify
        ("derive.numeric", "import derive.worked", "derive.worked"),
        ("derive.lang.parse", "from derive.lang import RANGES", "derive.lang"),
        # a builder, loaded by the catalog with importlib, taking a name from the package
        ("derive.derivations.softmax", "from derive.derivations import build", "derive.derivations"),
        ("derive.derivations.from_spec", "from derive.derivations import CATALOG", "derive.derivations"),
    ],
)
def test_a_planted_circle_is_found(texts, module, line, expected):
    found = cycle(graph(_planted(texts, module, line)))
    assert found is not None and found[0] == found[-1] and expected in found and module in found


def test_a_circle_of_two_modules_and_what_is_no_import():
    loop = {"derive.a": "def f():\n    from derive.b import g\n", "derive.b": "from derive import a\n"}
    assert cycle(graph(loop)) == ["derive.a", "derive.b", "derive.a"]
    typing = {"derive.a": "from derive.b import g\n", "derive.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from derive.a import f\n"}
    assert cycle(graph(typing)) is None


@pytest.mark.parametrize(
    ("module", "line", "found"),
    [
        ("derive.model", "from derive.latex import plain", ("derive.model", "derive.latex")),
        ("derive.model", "from derive.notebook import mimebundle", ("derive.model", "derive.notebook")),
        ("derive.planner", "from derive.verify import Check", ("derive.planner", "derive.verify")),
        ("derive.rules", "import derive.cli", ("derive.rules", "derive.cli")),
        ("derive.lang.parse", "from derive.rendering import render", ("derive.lang.parse", "derive.rendering")),
    ],
)
def test_a_planted_upward_import_is_found(texts, module, line, found):
    assert found in upward(graph(_planted(texts, module, line)))


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("from derive.concrete import _settle", ("derive.checking", "derive.concrete", "_settle")),
        ("return concrete._written_out", ("derive.checking", "derive.concrete", "_written_out")),
    ],
)
def test_a_planted_private_name_is_found(texts, line, found):
    assert found in private(graph(_planted(texts, "derive.checking", line)))


def stale(known: set[tuple[str, str]], texts: dict[str, str]) -> list[tuple[str, str]]:
    """The imports of ``known`` that the source no longer has."""
    return sorted((m, n) for m, n in known if n not in _uses(m, texts[m], frozenset(texts)))


def test_what_is_left_out_is_still_there(texts):
    """An edge of KNOWN that no longer exists is taken out of KNOWN."""
    assert stale(KNOWN, texts) == []


def test_a_stale_edge_is_found(texts):
    assert stale({("derive.derivations", "derive.derivations.from_spec")}, texts) == []  # the batch of a module entry
    assert stale({("derive.model", "derive.cli"), ("derive.derivations.softmax", "derive.derivations")}, texts) == [
        ("derive.derivations.softmax", "derive.derivations"),
        ("derive.model", "derive.cli"),
    ]


def test_what_is_loaded_by_name_is_in_the_graph(texts):
    """The catalog still loads by name, and the graph has an edge to each entry's builder."""
    from derive.derivations import CATALOG

    assert all("import_module" in texts[loader] for loader in LOADS)
    edges = graph(texts)
    assert {entry.module for entry in CATALOG.values()} <= edges["derive.derivations"].keys()
