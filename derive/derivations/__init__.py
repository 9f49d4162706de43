"""The catalog: derivation name -> one-line description, the module that builds it, and the
options its command takes.

This module imports no SymPy, so the command line can list derivations without paying for it.
Adding a derivation: one module in this package with a ``build`` function, its wording in
``templates/derivations/NAME.toml``, and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Iterable

from derive.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from derive.model import Derivation

STANDARD = ("classes", "logits", "target")
"""The options of every derivation command: the class count and a worked example's numbers."""


@dataclass(frozen=True)
class Entry:
    description: str
    module: str
    options: tuple[str, ...] = ()
    """Options beyond STANDARD, as keyword names of the module's ``build`` (``label_smoothing``
    is ``--label-smoothing`` on the command line). Those in UNNAMED do not go into file names."""
    spec: bool = False
    """The entry is a spec file, ``derive/catalog/NAME.toml``, that the planner derives (see
    :mod:`derive.derivations.from_spec`); ``module`` is that module."""


PLANNED = "derive.derivations.from_spec"


CATALOG: dict[str, Entry] = {
    "softmax-ce": Entry(
        "Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k",
        "derive.derivations.softmax_ce",
        ("temperature", "label_smoothing", "reduction"),
    ),
    "softmax": Entry("The softmax Jacobian: do_i/dz_k = o_i (delta_ik - o_k)", "derive.derivations.softmax"),
    "log-softmax": Entry("The log-softmax Jacobian: d ln o_i/dz_k = delta_ik - o_k", "derive.derivations.log_softmax"),
    "sigmoid-bce": Entry("Binary cross-entropy through sigmoid outputs: dE/dz_k = o_k - y_k", "derive.derivations.sigmoid_bce", ("reduction",)),
    "sse-linear": Entry("Squared error through linear outputs: dE/dz_k = o_k - y_k", "derive.derivations.sse_linear", ("reduction",)),
    "mse-softmax": Entry(
        "Squared error through a softmax layer: the gradient is NOT o_k - y_k, but o_k ((o_k - y_k) - sum_i o_i (o_i - y_i))",
        "derive.derivations.mse_softmax",
        ("reduction",),
    ),
    "dense-softmax-ce": Entry(
        "A dense layer before softmax-CE: dE/dW_kd = (o_k - y_k) x_d, dE/db_k = o_k - y_k",
        "derive.derivations.dense_softmax_ce",
        ("inputs", "let", "weight_decay", "reduction"),
    ),
    "focal": Entry("Focal loss through a softmax layer, for any focusing parameter gamma (gamma = 0 is cross-entropy)", PLANNED, ("gamma", "reduction", "let", "size"), spec=True),
    "kl-softmax": Entry("The KL divergence of the softmax from a target distribution: dE/dz_k = o_k - y_k", PLANNED, ("reduction", "let", "size"), spec=True),
    "tanh-sse": Entry("Half the squared error through tanh outputs: dE/dz_k = (o_k - y_k)(1 - o_k^2)", PLANNED, ("reduction", "let", "size"), spec=True),
    "batch-norm": Entry("Batch normalisation backward, one feature over a batch of N: the gradients by x_n, gamma and beta", PLANNED, ("let", "size"), spec=True),
    "layer-norm": Entry("Layer normalisation backward, one example over D features: the gradients by x_d, gamma_d and beta_d", PLANNED, ("let", "size"), spec=True),
    "attention": Entry(
        "Attention backward, one query q over H positions with keys k_j, values v_j and a mask, given the upstream gradient g: dL/dv_jd = a_j g_d, dL/dk_jd = q_d a_j sum_c g_c (v_jc - o_c) / sqrt(D), and dL/dq_d",
        PLANNED,
        ("let", "size"),
        spec=True,
    ),
    "mlp": Entry(
        "One sigmoid hidden layer before softmax-CE: dE/dV_md = delta_m h_m (1 - h_m) x_d with the backpropagated error delta_m = sum_i (o_i - y_i) W_im",
        PLANNED,
        ("weight_decay", "let", "size"),
        spec=True,
    ),
    "gelu": Entry("GELU backward, y = x Phi(x), given the upstream gradient g: dL/dx_k = g_k (Phi(x_k) + x_k phi(x_k))", PLANNED, ("approximate", "let", "size"), spec=True),
}

VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {"gelu": {"approximate": ("none", "tanh")}}
"""Options that choose another spec file: ``gelu --approximate tanh`` is ``derive/catalog/gelu-tanh.toml``;
the first value is the entry's own file."""


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
    from dataclasses import replace

    import sympy as sp

    from derive import rules
    from derive import spec as specs
    from derive.errors import DeriveError
    from derive.files import catalog_spec
    from derive.planner import plan
    from derive.symbols import E

    same = {sp.Symbol("E"): E} | dict(names or {})
    given = specs.read(catalog_spec(name))
    if wrt is not None:
        chosen = [v for v in specs.variables(given) if v.wrt.strip() == wrt]
        if not chosen:
            raise DeriveError(f"{name}: the spec file lists no variable {wrt}")
        given = chosen[0]
    problem = specs.problem(given)
    if reduction is not None:
        one, general = problem, plan(problem).general
        problem = replace(specs.problem(replace(given, reduction=reduction)), citable=lambda: ((name, one.definitions, one.wrt, general),))
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
    def renamed(e: sp.Basic) -> sp.Basic:
        """``e`` with the language's names replaced by the entry's: a product or sum left
        unevaluated (dE/dz_i (delta_ik x_d)) keeps its shape, one SymPy had evaluated is
        evaluated again (its order is that of the new names)."""
        if not e.args or isinstance(e, (sp.Indexed, sp.Tuple, sp.Derivative, sp.KroneckerDelta)) or not e.has(*same):
            return rules.substitute(e, same)
        args = [renamed(a) for a in e.args]
        if isinstance(e, (sp.Add, sp.Mul)):
            canonical = e.func(*e.args)
            return e.func(*args) if canonical.func == e.func and canonical.args == e.args else e.func(*args, evaluate=False)
        return rules.rebuild(e, args)

    steps = (
        replace(
            s,
            lhs=renamed(s.lhs),
            rhs=renamed(s.rhs),
            identity=sp.Eq(renamed(s.identity.lhs), renamed(s.identity.rhs), evaluate=False) if s.identity is not None else None,
            cases=tuple(replace(c, condition=c.condition.xreplace(same), value=renamed(c.value)) for c in s.cases),
        )
        for s in plan(problem).steps
    )
    return tuple(s for s in steps if s.lhs != s.rhs or s.cases)


UNNAMED = frozenset({"let", "size"})
"""Options that are a worked example's numbers, like --logits and --target: the default file
name does not change with them."""


def option_name(keyword: str) -> str:
    return "--" + keyword.replace("_", "-")


def option_text(value: object) -> str:
    """An option's value as a short exact decimal, the same however it was written: 2, 2.0 and
    2e0 are 2, a SymPy 1/10 is 0.1; what is not a number stays as it was given."""
    from decimal import Decimal, InvalidOperation, localcontext

    with localcontext(prec=60):
        try:
            p, q = getattr(value, "p", None), getattr(value, "q", None)
            if p is not None and q is not None and _repeats(int(q)):
                return f"{p}/{q}"  # 1/3 has no decimal of its own
            number = Decimal(p) / Decimal(q) if p is not None and q is not None else Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except (InvalidOperation, ValueError):
            return str(value).strip()
    if not number.is_finite():
        return str(value).strip()
    text = format(number.normalize(), "f")
    if len(text) > 16:
        text = format(number.normalize(), "e").replace("e+", "e")
    return "0" if text == "-0" else text


def _repeats(q: int) -> bool:
    """Whether 1/q has an infinite decimal expansion (q has a prime factor other than 2 and 5)."""
    for f in (2, 5):
        while q % f == 0:
            q //= f
    return q != 1


def file_stem(name: str, classes: int | None = None, options: dict[str, Any] | None = None) -> str:
    """A document's file name without its extension: NAME, NAME-N for N classes, then each option
    given as -OPTIONVALUE in the catalog's order (softmax-ce-3-temperature2-label-smoothing0.1)."""
    stem = name if classes is None else f"{name}-{classes}"
    given = {key: value for key, value in (options or {}).items() if value is not None and key not in UNNAMED}
    order = CATALOG[name].options if name in CATALOG else tuple(given)
    for key in sorted(given, key=lambda key: order.index(key) if key in order else len(order)):
        stem += f"-{key.replace('_', '-')}{option_text(given[key]).replace('/', '_')}"
    return stem


def file_name(name: str, classes: int | None, fmt: str, options: dict[str, Any] | None = None) -> str:
    """The name the command line gives the document by default: its stem (see :func:`file_stem`)
    and the format."""
    return f"{file_stem(name, classes, options)}.{fmt}"


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
    if given.get("reduction") is not None:
        return _over_a_batch(name, classes, logits, target, given)
    return import_module(entry.module).build(classes=classes, logits=logits, target=target, **given)


BATCHED: dict[str, dict[str, str]] = {"softmax-ce": {"temperature": "T", "label_smoothing": "epsilon"}}
"""The loss entries built by a module whose --reduction is their spec file over a batch: each
option a spec file of its own (softmax-ce-temperature.toml), its value the worked example's
number of the letter given here."""


def _over_a_batch(name: str, classes, logits, target, given: dict) -> "Derivation":
    """A module entry's loss summed or averaged over a batch of N: its spec file, derived by the
    planner over the batch (the module's pitfall and counterexample are of one example)."""
    from derive.derivations import from_spec

    if given.get("weight_decay") is not None:
        raise UsageError(f"{name}: --weight-decay and --reduction together are not derived yet; take one, or write the batch with its penalty in derive grad")
    letters = BATCHED.get(name, {})
    spec_name = "-".join([name, *(key.replace("_", "-") for key in CATALOG[name].options if key in letters and key in given)])
    lets = [f"{letters[key]}={option_text(value)}" for key, value in given.items() if key in letters]
    if given.get("inputs") is not None:
        lets.append(f"x={','.join(map(str, given['inputs']))}")
    lets += list(given.get("let") or [])
    return from_spec.build(spec_name, classes=classes, logits=logits, target=target, let=lets, reduction=given["reduction"])


def suggestions(name: str, names: Iterable[str], most: int = 3) -> list[str]:
    """The names ``name`` may have meant, best first: those it begins (``mse`` for
    ``mse-softmax``), those it is part of, then close spellings (``softmax-cee``)."""
    from difflib import get_close_matches

    names, wanted = list(names), name.strip().lower()
    found = [n for n in names if n.startswith(wanted)] if wanted else []
    found += [n for n in names if len(wanted) >= 2 and wanted in n and n not in found]
    found += [n for n in get_close_matches(wanted, names, n=most, cutoff=0.8) if n not in found]
    return found[:most]


def did_you_mean(names: list[str]) -> str:
    """'; did you mean 'a'?' or '; did you mean 'a' or 'b'?' (empty without a name)."""
    if not names:
        return ""
    quoted = [repr(n) for n in names]
    return f"; did you mean {', '.join(quoted[:-1]) + ' or ' if len(quoted) > 1 else ''}{quoted[-1]}?"


def _unknown(name: str) -> str:
    close = suggestions(name, CATALOG)
    hint = did_you_mean(close) if close else f"; available: {', '.join(CATALOG)}"
    return f"unknown derivation {name!r}{hint}"
