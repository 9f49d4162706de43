"""A catalog entry's steps as the planner derives them from its spec file, in the names the
entry's document writes: what the modules of the first catalog build their documents from."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

import sympy as sp

from derive import files, rules
from derive import spec as specs
from derive.errors import DeriveError
from derive.planner import plan
from derive.symbols import E


def planned(name: str, written: Iterable[Any] = (), names: dict | None = None, wrt: str | None = None, reduction: str | None = None) -> tuple:
    """A catalog entry's steps as the planner derives them from its spec file
    (derive/catalog/NAME.toml). The language's E has no assumptions and the catalog's is real:
    one symbol throughout, the catalog's. ``names`` maps more of the language's names to what the
    entry's document writes (the quantity l_i is ln o_i there); a step that then only restates
    its expression (l_i replaced by its definition) is left out.

    ``written``: definitions as the entry's document writes them, each the spec's definition of
    the same symbol in the order of terms a reader expects (the language hands SymPy's order on:
    (1 - y_i) ln(1 - o_i) + y_i ln o_i). Each must be the spec's once SymPy evaluates it, or the
    plan is refused.

    ``wrt``: another variable the spec file lists (its ``wrt`` is a list), whose steps are a part
    of the entry's document (b_k beside W_kd).

    ``reduction``: the steps over a batch of N examples (``sum`` or ``mean`` of the error of each),
    which cite the spec's own result for one example at every example n."""
    same = {sp.Symbol("E"): E} | dict(names or {})
    given = specs.read(files.catalog_spec(name))  # looked up when called: a test may point it elsewhere
    if wrt is not None:
        chosen = [v for v in specs.variables(given) if v.wrt.strip() == wrt]
        if not chosen:
            raise DeriveError(f"{name}: the spec file lists no variable {wrt}")
        given = chosen[0]
    # Over a batch, the spec's shared variable cites its result for one example (spec.problem).
    problem = specs.problem(given if reduction is None else replace(given, reduction=reduction))
    if written:
        by = {w.symbol.xreplace({E: sp.Symbol("E")}): w for w in written}
        definitions = []
        for d in problem.definitions:
            w = by.pop(d.symbol, None)
            if w is not None and rules.evaluated(w.value) != d.value:
                raise DeriveError(f"{name}: the written definition of {d.symbol} is not the spec file's: {sp.sstr(w.value)} against {sp.sstr(d.value)}")
            definitions.append(d if w is None else replace(d, value=w.value))
        if by:
            raise DeriveError(f"{name}: the spec file defines no {', '.join(sorted(map(str, by)))}")
        problem = replace(problem, definitions=tuple(definitions))
    steps = (
        replace(
            s,
            lhs=_renamed(same, s.lhs),
            rhs=_renamed(same, s.rhs),
            identity=sp.Eq(_renamed(same, s.identity.lhs), _renamed(same, s.identity.rhs), evaluate=False) if s.identity is not None else None,
            cases=tuple(replace(c, condition=c.condition.xreplace(same), value=_renamed(same, c.value)) for c in s.cases),
        )
        for s in plan(problem).steps
    )
    return tuple(s for s in steps if s.lhs != s.rhs or s.cases)


def _renamed(same: dict, e: sp.Basic) -> sp.Basic:
    """``e`` with the language's names replaced by the entry's (``same``): a product or sum left
    unevaluated (dE/dz_i (delta_ik x_d)) keeps its shape, one SymPy had evaluated is
    evaluated again (its order is that of the new names)."""
    if not e.args or isinstance(e, (sp.Indexed, sp.Tuple, sp.Derivative, sp.KroneckerDelta)) or not e.has(*same):
        return rules.substitute(e, same)
    args = [_renamed(same, a) for a in e.args]
    if isinstance(e, (sp.Add, sp.Mul)):
        canonical = e.func(*e.args)
        return e.func(*args) if canonical.func == e.func and canonical.args == e.args else e.func(*args, evaluate=False)
    return rules.rebuild(e, args)
