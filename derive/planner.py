"""The planner: from d(quantity)/d(variable) to named steps, choosing each rule by the shape of
the expression, in the spirit of SymPy's ``manualintegrate``.

The plan runs in two phases over one expression, each step one rule applied wherever it fits:

1. **Derivatives.** While a derivative is left, the first one (in reading order) is looked at and
   the first rule of :data:`DERIVATIVE_RULES` whose condition holds is chosen; that rule is then
   applied to every derivative it is the choice for. A derivative no rule fits stops the plan with
   an error that names it: never a silent jump.
2. **Algebra.** With no derivative left, :data:`ALGEBRA_RULES` tidy the result (the Jacobian's
   case split, sifting, factors out of sums, the complement of a sum); the user's assumptions
   come last, after the general form is shown.

Rules are small functions ``(planner, node) -> Built | None``: ``None`` means "does not apply".
Every step the plan makes is later checked on its own by :mod:`derive.verify`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Mapping

import sympy as sp

from derive import functions as fn
from derive import rules
from derive.errors import DeriveError, RuleError
from derive.model import Assumption, Case, Definition, Label, Step
from derive.rules import add, at, evaluated, factors_of, find, flatten_products, mul, neg, rewrite, substitute
from derive.symbols import ExcludedSum

MAX_STEPS = 120
"""A plan longer than this is a planner bug (a rule that undoes another), not a derivation."""


FLATTEN = frozenset({"constant_factor", "log_derivative", "exp_derivative", "power_rule", "sigmoid_derivative", "tanh_derivative", "softplus_derivative", "erf_derivative", "linear_derivative", "variable_derivative", "zero_derivative"})
"""Rules after which nested products are merged (y_i (1/o_i d) reads y_i / o_i d); a Jacobian
stays one bracketed factor, so the split that follows can find it."""


FIRST = frozenset({"sum_rule"})
"""Rules taken before an elementary derivative that comes first in reading order (ELEMENTARY):
a sum is taken apart before the derivatives beside it are evaluated."""

ELEMENTARY = frozenset({"exp_derivative", "log_derivative", "power_rule", "sigmoid_derivative", "tanh_derivative", "softplus_derivative", "variable_derivative", "linear_derivative"})
"""The derivatives of the elementary functions and of the variable itself, which a sum beside
them is taken apart before."""


NUMBERS_FIRST = frozenset({"softmax_jacobian"})
"""Rules before which the numbers of a sum meet those in front of it (1/2 sum_i 2 f_i -> sum_i
f_i): a full Jacobian keeps the sum through several steps, which should carry no 1/2 and 2
(a diagonal Jacobian collapses the sum at once, and the numbers cancel with it)."""


LAST = frozenset({"derived_result"})
"""Rules taken only when no other derivative is left to take: a result is cited once the sum it
stands in has collapsed, at its own index."""

SIFT_FIRST = frozenset({"derived_result"})
"""Rules before which the sums a Kronecker delta collapses are collapsed (sum_i dE/dz_i delta_ik
x_d -> x_d dE/dz_k): the result is cited at one index, not inside a sum."""

RESULTS = ("softmax-ce",)
"""Catalog entries whose result, in its general form (before any assumption), a derivation may
cite where it needs the same derivative of the same quantity, defined the same way, on its way
to another variable: dE/dz_k of softmax-ce for a layer before the softmax. Never for the entry's
own variable."""


class PlanError(DeriveError):
    """No rule applies: the message names the sub-expression (exit code 1)."""


@dataclass(frozen=True)
class Built:
    """What a rule makes of one sub-term: the new sub-term and what the step shows beside it."""

    new: sp.Expr
    identity: sp.Eq | None = None
    cases: tuple[Case, ...] = ()
    notes: tuple[tuple[str, sp.Basic], ...] = ()
    label: str | None = None
    """Marks the new sub-term (an underbrace) with this key of the wording's labels."""
    inner: tuple[tuple[tuple[int, ...], str], ...] = ()
    """Labels inside the new sub-term: (path from it, key)."""


@dataclass(frozen=True)
class Problem:
    """What to differentiate: the definitions (the first is the quantity), the variable, the
    assumptions, and the range of every index (index -> upper limit; lower limits are 1)."""

    definitions: tuple[Definition, ...]
    wrt: sp.Expr
    assumptions: tuple[Assumption, ...] = ()
    ranges: Mapping[sp.Symbol, sp.Expr] = field(default_factory=dict)
    citable: Callable[[], tuple[tuple[str, tuple[Definition, ...], sp.Expr, sp.Expr], ...]] = field(default=lambda: (), compare=False, repr=False)
    """(name, definitions, variable, general form) of each result of RESULTS a plan may cite,
    planned once when first asked for: given by whoever reads the catalog (``spec.problem``)."""

    @property
    def quantity(self) -> sp.Expr:
        return self.definitions[0].symbol


# --- the state of one plan ----------------------------------------------------------------------
class Planner:
    """One plan's state: what each name is defined as and what it depends on."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.wrt = problem.wrt
        self.defined: dict[sp.Basic, Definition] = {}
        for d in problem.definitions:
            self.defined[_head(d.symbol)] = d
        self.leaf = _head(self.wrt)
        # The names of the quantities (attention's keys k): a summation letter is never one of them.
        self.names = frozenset(str(h) for d in problem.definitions for h in (_head(d.symbol), *_heads(d.value))) | {str(self.leaf)}
        # The number of indices of each indexed name (a batch's o_ni has one more than o_i).
        self.ranks = _ranks(problem.definitions)
        self._reach: dict[sp.Basic, frozenset] = {}
        self.steps: list[Step] = []

    # -- dependence ----------------------------------------------------------------------------
    def reach(self, head: sp.Basic) -> frozenset:
        """Every head (IndexedBase or Symbol) a defined head depends on, transitively."""
        if head not in self._reach:
            self._reach[head] = frozenset()  # a cycle was refused when the problem was built
            d = self.defined.get(head)
            out: set = set()
            if d is not None:
                for h in _heads(d.value):
                    out.add(h)
                    out |= self.reach(h)
            self._reach[head] = frozenset(out)
        return self._reach[head]

    def depends(self, expr: sp.Basic, x: sp.Expr) -> bool:
        """Whether ``expr`` can change with ``x`` (an entry of a leaf or of a defined quantity)."""
        target = _head(x)
        # A head itself (the p of p_i) is a name the expression uses, as an entry of it is.
        for h in _heads(expr) | ({expr} if isinstance(expr, sp.IndexedBase) else set()):
            if h == target or target in self.reach(h):
                return True
        return False

    def is_defined(self, e: sp.Basic) -> bool:
        return isinstance(e, (sp.Indexed, sp.Symbol)) and _head(e) in self.defined and not _is_index(e)

    def definition_at(self, e: sp.Basic, avoid: Iterable[sp.Symbol] = ()) -> sp.Expr:
        """The value of a defined entry ``e`` (o_m for o_i := ...), its bound indices renamed away
        from ``avoid`` and from the indices of ``e`` and of the variable."""
        d = self.defined[_head(e)]
        value = d.value
        if isinstance(e, sp.Indexed):
            value = _rename_bound(value, set(e.free_symbols) | set(self.wrt.free_symbols) | set(avoid))
            value = substitute(value, dict(zip(d.symbol.indices, e.indices)))
        else:
            value = _rename_bound(value, set(self.wrt.free_symbols) | set(avoid))
        return value

    def fresh(self, ix: sp.Symbol, taken: set) -> sp.Symbol:
        """A summation letter for ``ix`` that is not in ``taken``: another letter of the same
        range first (j for i) that is not the name of a quantity, then primes (m')."""
        limit = self.problem.ranges.get(ix)
        for s in self.problem.ranges:
            if limit is not None and self.problem.ranges[s] == limit and s not in taken and s not in self.wrt.free_symbols and s.name not in self.names:
                return s
        return _fresh(ix, taken)

    # -- the run -------------------------------------------------------------------------------
    def plan(self) -> tuple[Step, ...]:
        quantity = self.problem.quantity
        e: sp.Expr = sp.Derivative(quantity, self.wrt)
        while True:
            nodes = [at(e, p) for p in find(e, lambda n: isinstance(n, sp.Derivative))]
            if not nodes:
                break
            # The first derivative in reading order decides, except that a sum is taken apart
            # before an elementary derivative beside it: the elementary derivatives the sum
            # brings are then taken in one step with it (the quotient rule's e^{z_i} and
            # sum_j e^{z_j}).
            chosen = [self.choose(n) for n in nodes]
            soon = [c for c in chosen if c[0] not in LAST] or chosen
            lead = nodes[chosen.index(soon[0])]
            name, _ = next((c for c, n in zip(chosen, nodes) if c[0] in FIRST and c in soon and _same_kind(n, lead)), soon[0]) if soon[0][0] in ELEMENTARY else soon[0]
            if name in NUMBERS_FIRST and find(e, _numbers_meet):
                e = self._numbers(e)
            while name in SIFT_FIRST and find(e, lambda n: sifting(self, n) is not None):
                e = self._apply(e, "sifting", lambda n: sifting(self, n) is not None, lambda n: sifting(self, n))
            e = self._apply(e, name, lambda n: isinstance(n, sp.Derivative) and self.choose(n)[0] == name, lambda n: self.choose(n)[1](self, n))
            if find(_opaque_derivatives(e), lambda n: outputs(self, n) is not None):
                e = self._apply(e, "outputs", lambda n: outputs(self, n) is not None and not _inside_derivative(e, n), lambda n: outputs(self, n))
            self._guard()
        e = self._tidy(e)
        self.general = e
        used = set()
        while True:
            new = self._assumptions(e, used)
            if new is None:
                break
            e = self._tidy(new)
        if find(e, lambda n: combine_sums(self, n) is not None):
            e = self._apply(e, "combine_sums", lambda n: combine_sums(self, n) is not None, lambda n: combine_sums(self, n))
        e = self._collect(e)
        if used:
            e = self._written_out(e)
        if find(e, lambda n: named(self, n) is not None):
            e = self._named(e)
        self._cases(e)
        return tuple(self.steps)

    def _numbers(self, e: sp.Expr) -> sp.Expr:
        """c sum_i (n f_i) -> c (n sum_i f_i) -> (c n) sum_i f_i: a number comes out of the sum
        and meets the one in front."""
        inner = lambda n: isinstance(n, sp.Sum) and any(_numbers_meet(m) and m.args[1] is n for m in sp.preorder_traversal(e))
        e = self._apply(e, "factor_out", inner, lambda n: _number_out(n))
        return self._apply(e, "algebra", lambda n: isinstance(n, sp.Mul) and n.args[0].is_Number and len(n.args) == 2 and isinstance(n.args[1], sp.Mul) and n.args[1].args[0].is_Number, lambda n: Built(evaluated(n)))

    def _tidy(self, e: sp.Expr) -> sp.Expr:
        """The algebra rules until none applies, then multiply out and cancel."""
        while True:
            for name, rule in ALGEBRA_RULES:
                if find(e, lambda n, r=rule: r(self, n) is not None):
                    if name == "algebra":
                        # Once worth a step, the factors of every term are multiplied, not only
                        # those of the term that made it worth one.
                        e = self._apply(e, name, _product_to_evaluate, lambda n: Built(evaluated(n), notes=(("product", n),)))
                    else:
                        e = self._apply(e, name, lambda n, r=rule: r(self, n) is not None, lambda n, r=rule: r(self, n))
                    self._guard()
                    break
            else:
                break
        # An error o_k - y_k stays whole, written one way wherever it stands, so that the terms
        # it is in can cancel.
        written, _ = rewrite(e, lambda n: _is_error(n) and not _bound(n), lambda n: sp.Add(*n.args))
        sums = written.atoms(sp.Sum, ExcludedSum)
        errors = {a for a in _outside(written, (sp.Sum, ExcludedSum)) if _is_error(a)}
        keep = tuple(sorted(sums | errors, key=sp.default_sort_key))
        try:
            step = replace(rules.expand(written, keep), lhs=e)
        except RuleError:
            step = None
        if step is not None and step.labels:  # multiplying out pays only when terms cancel
            self.steps.append(replace(step, notes=(("expression", e),)))
            e = step.rhs
            self.steps.append(replace(rules.cancel(e, keep), notes=(("expression", e),)))
            e = self.steps[-1].rhs
        elif isinstance(e, sp.Add) and len(sp.Add.make_args(sp.Add(*e.args))) < len(e.args):
            # Only where terms combine or cancel: a sum that SymPy would merely reorder or
            # evaluate in place prints as it did, and a step that shows nothing new is no step.
            self.steps.append(Step(rule="cancel", lhs=e, rhs=sp.Add(*e.args), notes=(("expression", e),)))
            e = self.steps[-1].rhs
        return e

    def _collect(self, e: sp.Expr) -> sp.Expr:
        """A factor every term shares comes out in front: -y_k / N + o_k / N -> (o_k - y_k) / N."""
        signed = lambda x: rewrite(x, lambda n: isinstance(n, sp.Mul) and n.args[0] == -1, _sign_inside)[0]
        factored = sp.factor_terms(e)
        # factor_terms also splits sums; it is taken only where it finds a factor every term shares.
        # Over one denominator, a bracket of fractions is one bracket: gamma ((g_n - S/N) / s -
        # u_n T / (N s)) is gamma / (N s) (N g_n - S - u_n T), the form implementations use.
        common = signed(sp.together(e))
        if isinstance(e, (sp.Mul, sp.Add)) and isinstance(common, sp.Mul) and common != e and _size(common) < _size(e) and _printed_minus(common) <= _printed_minus(e):
            self.steps.append(Step(rule="common_factor", lhs=e, rhs=common, notes=(("expression", e),)))
            return common
        forms = [e] + ([factored] if isinstance(factored, sp.Mul) and isinstance(e, sp.Add) else [])
        try:
            # The shared factor taken out of the terms as they stand (d o_i - o_i o_k -> o_i (d - o_k)):
            # preferred where it reads as well, since it keeps the order the reader saw.
            forms.insert(1, rules.common_factor(e).rhs)
        except RuleError:
            pass
        # A leading minus goes into a bracket where that reads better, and only there.
        candidates = [c for f in forms for c in (signed(f), f)]
        new = min(candidates, key=_awkward)
        if new != e and _awkward(new) < _awkward(e):
            self.steps.append(Step(rule="common_factor", lhs=e, rhs=new, notes=(("expression", e),)))
            return new
        return e

    def _named(self, e: sp.Expr) -> sp.Expr:
        """The sums the definitions name, written with their names; a name that is a factor of
        the result comes first, then the others as the result printed them (delta_m h_m x_d (1 - h_m))."""
        new = self._apply(e, "named", lambda n: named(self, n) is not None, lambda n: named(self, n))

        def first(t: sp.Expr) -> sp.Expr:
            if isinstance(t, sp.Sum) and named(self, t) is None:
                return sp.Sum(first(t.function), *t.limits)  # over a batch: (1/N) sum_n g_nm h_nm ...
            built = [named(self, a) for a in t.args] if isinstance(t, sp.Mul) else []
            names = [b.new for b in built if b is not None]
            if not names and isinstance(t, sp.Mul) and any(isinstance(a, sp.Sum) for a in t.args):
                return mul(*(first(a) for a in t.args))
            return mul(*names, sp.Mul(*(a for a, b in zip(t.args, built) if b is None))) if names else named(self, t).new if named(self, t) else t

        # A term with a name comes first too (delta_m h_m x_d (1 - h_m) + lambda V_md).
        ordered = add(*(first(t) for t in sorted(e.args, key=lambda t: not find(t, lambda n: named(self, n) is not None)))) if isinstance(e, sp.Add) else first(e)
        if evaluated(ordered) == evaluated(new):
            self.steps[-1] = replace(self.steps[-1], rhs=ordered)
            return ordered
        return new

    def _cases(self, e: sp.Expr) -> None:
        """A result with a Kronecker delta of two free indices (delta_ik - o_k, an entry of a
        Jacobian) is stated by its two cases, the diagonal i = k and the rest."""
        deltas = e.atoms(sp.KroneckerDelta)
        if len(deltas) != 1 or set(next(iter(deltas)).args) & _bound(e):
            return
        step = rules.delta_cases(e, sp.Derivative(self.problem.quantity, self.wrt))
        self.steps.append(replace(step, notes=(("delta", next(iter(deltas))),)))

    def choose(self, node: sp.Derivative) -> tuple[str, Callable]:
        """The first derivative rule that fits ``node``, or a PlanError naming it."""
        for name, rule in DERIVATIVE_RULES:
            if rule(self, node) is not None:
                return name, rule
        raise PlanError(f"no rule applies to the derivative of {text(node.expr)} by {text(node.variables[0])}: the planner knows sums, products, quotients, powers with a constant exponent, exp, ln, sqrt, sigmoid, tanh, softplus, erf and softmax")

    def _apply(self, e: sp.Expr, name: str, match: Callable, build: Callable) -> sp.Expr:
        made: dict[sp.Basic, Built] = {}

        def make(n: sp.Basic) -> sp.Basic:
            if n not in made:
                made[n] = build(n)
            return made[n].new

        new, paths = rewrite(e, match, make)
        if not paths or new == e:
            raise PlanError(f"internal: rule {name} changed nothing in {sp.sstr(e)}")
        first = made[at(e, paths[0])]
        if name in FLATTEN:
            new = flatten_products(_drop_zeros(new))
            # n (u - c) made by the rule joins the product it stands in: 2 (o_i - y_i) do_i/dz_k
            # is one product (flattening keeps such a bracket whole, for a sign in front of it).
            scaled = {b.new for b in made.values() if _is_scaled_bracket(b.new)}
            if scaled:
                new, _ = rewrite(new, lambda n: isinstance(n, sp.Mul) and any(a in scaled for a in n.args), lambda n: mul(*(f for a in n.args for f in (a.args if a in scaled else (a,)))))
        new = unshadow(self, new)
        # The rewritten sub-terms are found again in the new tree: a sum SymPy keeps in its own
        # order may have moved them, so the paths of the old tree are not theirs.
        built = {b.new: b for b in made.values()}
        where = find(new, lambda x: x in built)
        # A label marks what replaced a derivative at the same place; where SymPy's order moved
        # it, the underbrace is left out rather than put under something else.
        where = [q for q in where if q in paths]
        labels = tuple(Label(q, first.label) for q in where) if first.label else ()
        labels += tuple(Label(q + r, key) for q in where for r, key in built[at(new, q)].inner)
        labels = tuple(l for l in labels if _reaches_path(new, l.path))
        self.steps.append(Step(rule=name, lhs=e, rhs=new, identity=first.identity, cases=first.cases, notes=first.notes, labels=labels))
        return new

    def _assumptions(self, e: sp.Expr, used: set) -> sp.Expr | None:
        """An assumption whose left side appears (sum_i y_i = 1), replaced by its right side."""
        for a in self.problem.assumptions:
            if a.key in used:
                continue
            lhs, rhs = a.statement.args
            leaf = lhs.function if isinstance(lhs, sp.Sum) and isinstance(lhs.function, sp.Indexed) else None
            if leaf is not None and not find(e, lambda n: _same_sum(n, lhs)):
                # The sum of a quantity defined linearly from the leaf (a smoothed target) holds
                # the leaf's sum once it is written by its definition.
                for d in self._given(leaf.base):
                    try:
                        step = rules.linear_sum(e, d)
                    except RuleError:
                        continue
                    self.steps.append(replace(step, notes=(("term", d.symbol), ("value", d.value))))
                    e = step.rhs
                    break
            if leaf is not None and not find(e, lambda n: _same_sum(n, lhs)) and find(e, lambda n: nest(self, n, leaf) is not None):
                e = self._apply(e, "factor_out", lambda n: nest(self, n, leaf) is not None, lambda n: nest(self, n, leaf))
            if leaf is not None and not find(e, lambda n: _same_sum(n, lhs)) and find(e, lambda n: expose(self, n, leaf) is not None):
                e = self._apply(e, "distribute", lambda n: expose(self, n, leaf) is not None, lambda n: expose(self, n, leaf))
                e = self._tidy(e)
            if find(e, lambda n: _same_sum(n, lhs)):
                new, _ = rewrite(e, lambda n: _same_sum(n, lhs), lambda n: substitute(rhs, _instance(n, lhs)))
                new = evaluated(new)
                used.add(a.key)
                self.steps.append(Step(rule="normalisation" if a.key == "normalised" else "assumption", lhs=e, rhs=new, assumptions=(a.key,), identity=a.statement, notes=(("statement", a.statement),)))
                return new
        return None

    def _given(self, base: sp.Basic | None = None) -> list[Definition]:
        """The definitions of indexed quantities made from given ones alone, without a sum, that
        the variable does not reach (a smoothed target y'_i := (1 - eps) y_i + eps / H); with
        ``base``, those that use it."""
        return [
            d for d in self.problem.definitions[1:]
            if isinstance(d.symbol, sp.Indexed) and not _bound(d.value) and not any(h in self.defined for h in _heads(d.value))
            and not self.depends(d.symbol, self.wrt) and (base is None or d.value.has(base))
        ]

    def _written_out(self, e: sp.Expr) -> sp.Expr:
        """Such a quantity left in the result only at single entries (no longer in a sum) is
        written by its definition, so that the result is in the given quantities; a minus in
        front of the bracket that leaves goes to its terms."""
        for d in self._given():
            base = d.symbol.base
            entries = [n for n in sp.preorder_traversal(e) if isinstance(n, sp.Indexed) and n.base == base]
            if not entries or any(t.has(base) for t in e.atoms(sp.Sum, ExcludedSum)):
                continue
            first = entries[0]
            value = self.definition_at(first)
            new, _ = rewrite(e, lambda n: isinstance(n, sp.Indexed) and n.base == base, lambda n: self.definition_at(n))
            self.steps.append(Step(rule="definition", lhs=e, rhs=new, identity=sp.Eq(first, value, evaluate=False), notes=(("term", first), ("value", value))))
            e = new
            try:
                step = rules.distribute_sign(e)
            except RuleError:
                continue
            self.steps.append(step)
            e = step.rhs
        return e

    def _guard(self) -> None:
        if len(self.steps) > MAX_STEPS:
            raise PlanError(f"the plan did not finish within {MAX_STEPS} steps (last rule: {self.steps[-1].rule})")


def _printed_minus(e: sp.Expr) -> int:
    """Brackets that the documents print starting with a minus."""
    from derive.latex import latex

    return latex(e).count(r"\left(-")


def _same_kind(total: sp.Derivative, lead: sp.Derivative) -> bool:
    """Whether the derivative ``total`` is of a sum of terms of the kind of ``lead``'s function
    (sum_j e^{z_j} beside e^{z_i}): taken apart, its terms' derivatives come with ``lead``'s."""
    f = total.expr
    terms = sp.Add.make_args(f.function) if isinstance(f, sp.Sum) else f.args if isinstance(f, sp.Add) else ()
    return bool(terms) and all(type(t) is type(lead.expr) for t in terms) and not isinstance(lead.expr, (sp.Add, sp.Mul))


def _awkward(e: sp.Expr) -> tuple[int, int]:
    """How hard a result is to read: brackets that start with a minus (-1 + h), then size."""
    minus = sum(1 for a in sp.preorder_traversal(e) if isinstance(a, sp.Add) and _leading(a).could_extract_minus_sign())
    lead = 1 if isinstance(e, sp.Mul) and e.args[0] == -1 else 0
    return (minus + lead, _size(e))


def _outside(e: sp.Basic, kinds: tuple) -> list:
    """The sub-terms of ``e`` that are not inside a term of one of ``kinds``."""
    if isinstance(e, kinds):
        return []
    out = [e]
    if e.args and not isinstance(e, (sp.Indexed, sp.Tuple)):
        for a in e.args:
            out += _outside(a, kinds)
    return out


def _numbers_meet(n: sp.Basic) -> bool:
    """c sum_i (n f_i) with numbers c and n other than 1 and -1."""
    if not (isinstance(n, sp.Mul) and len(n.args) == 2 and n.args[0].is_Number and abs(n.args[0]) != 1 and isinstance(n.args[1], sp.Sum)):
        return False
    body = n.args[1].function
    return isinstance(body, sp.Mul) and any(f.is_Number and abs(f) != 1 for f in body.args)


def _number_out(node: sp.Sum) -> Built:
    number = sp.Mul(*[f for f in node.function.args if f.is_Number])
    rest = [f for f in node.function.args if not f.is_Number]
    return Built(mul(number, sp.Sum(_product(rest), *node.limits)), notes=(("factor", number), ("index", node.limits[0][0])))


def _leading(a: sp.Add) -> sp.Expr:
    """The term a sum is printed with first: its first as written, or, in SymPy's own order, the
    first of the polynomial as read (as derive.latex prints it)."""
    rebuilt = sp.Add(*a.args)
    if isinstance(rebuilt, sp.Add) and rebuilt.args == a.args:
        return a.as_ordered_terms()[0]
    return a.args[0]


def _sign_inside(e: sp.Expr) -> sp.Expr:
    """-c sum_i (a_i - b_i) f_i -> c sum_i (b_i - a_i) f_i: a leading minus goes into the one
    bracket (inside a sum, or alone) that can take it."""
    if not (isinstance(e, sp.Mul) and e.args[0] == -1):
        return e
    rest = list(e.args[1:])
    # A bracket that starts with a minus takes it first, in a sum within a sum too:
    # -sum_n (1 - h_n) sum_i W_i (-o_ni + y_ni) -> sum_n (1 - h_n) sum_i W_i (o_ni - y_ni).
    for n, f in enumerate(rest):
        flipped = _flip_leading_minus(f)
        if flipped is not None:
            rest[n] = flipped
            return sp.Mul(*rest)
    for n, f in enumerate(rest):
        if isinstance(f, sp.Sum):
            inner = factors_of(f.function)
            for m, g in enumerate(inner):
                if isinstance(g, sp.Add):
                    inner[m] = sp.Add(*[-t for t in g.args])
                    rest[n] = sp.Sum(sp.Mul(*inner), *f.limits)
                    return sp.Mul(*rest)
    for n, f in enumerate(rest):
        if isinstance(f, sp.Add):
            rest[n] = sp.Add(*[-t for t in f.args])
            return sp.Mul(*rest)
    return e


def _flip_leading_minus(f: sp.Expr) -> sp.Expr | None:
    """-f, where f is a bracket that starts with a minus (-o + y -> o - y) or a sum of products
    with such a bracket among its factors, however deep; None where there is none."""
    if isinstance(f, sp.Add):
        return sp.Add(*[-t for t in f.args]) if _leading(f).could_extract_minus_sign() else None
    if isinstance(f, sp.Sum):
        inner = factors_of(f.function)
        for m, g in enumerate(inner):
            flipped = _flip_leading_minus(g)
            if flipped is not None:
                inner[m] = flipped
                return sp.Sum(sp.Mul(*inner), *f.limits)
    return None


def _opaque_derivatives(e: sp.Expr) -> sp.Expr:
    """``e`` with every derivative hidden behind a placeholder (nothing inside one is rewritten)."""
    new, _ = rewrite(e, lambda n: isinstance(n, sp.Derivative), lambda n: sp.Dummy())
    return new


def _inside_derivative(e: sp.Expr, node: sp.Basic) -> bool:
    """Whether ``node`` occurs in ``e`` only inside derivatives."""
    return node not in set(sp.preorder_traversal(_opaque_derivatives(e)))


def _is_scaled_bracket(e: sp.Basic) -> bool:
    """n (u - c) with a number n other than -1 (a minus sign in front of a bracket stays whole)."""
    return isinstance(e, sp.Mul) and len(e.args) == 2 and e.args[0].is_Number and e.args[0] != -1 and isinstance(e.args[1], sp.Add)


def _drop_zeros(e: sp.Expr) -> sp.Expr:
    """0 + a -> a, 0 b -> 0 in unevaluated sums and products (a derivative that vanished)."""

    def zero_in(n: sp.Basic) -> bool:
        return isinstance(n, (sp.Add, sp.Mul)) and any(a == 0 for a in n.args)

    def build(n: sp.Basic) -> sp.Basic:
        if isinstance(n, sp.Mul):
            return sp.Integer(0)
        rest = [_drop_zeros(a) for a in n.args if a != 0]
        return sp.Integer(0) if not rest else rest[0] if len(rest) == 1 else add(*rest)

    while find(e, zero_in):
        e, _ = rewrite(e, zero_in, build)
    return e


def _reaches_path(e: sp.Basic, path: tuple) -> bool:
    for n in path:
        if n >= len(e.args):
            return False
        e = e.args[n]
    return True


# --- helpers ---------------------------------------------------------------------------------------
def text(e: sp.Basic) -> str:
    """An expression as the language writes it in plain text: z_i^z_i, W_kd."""
    import re

    out = sp.sstr(e, order="none").replace("**", "^")
    return re.sub(r"(\w+)\[([^\]]+)\]", lambda m: m.group(1) + "_" + m.group(2).replace(", ", ""), out)


def _head(e: sp.Basic) -> sp.Basic:
    return e.base if isinstance(e, sp.Indexed) else e


def _is_index(e: sp.Basic) -> bool:
    return isinstance(e, sp.Symbol) and bool(e.is_integer)


def _heads(e: sp.Basic) -> set:
    """The names an expression uses: IndexedBases and non-index Symbols (no sizes, no indices)."""
    out = {x.base for x in e.atoms(sp.Indexed)}
    out |= {s for s in e.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer}
    return out


def _bound(e: sp.Basic) -> set:
    out = set()
    for s in e.atoms(sp.Sum):
        out |= {lim[0] for lim in s.limits}
    for s in e.atoms(ExcludedSum):
        out.add(s.index)
    return out


def _fresh(base: sp.Symbol, taken: set) -> sp.Symbol:
    name = base.name
    while True:
        name += "'"
        s = sp.Symbol(name, integer=True, positive=True)
        if s not in taken:
            return s


def _rename_bound(value: sp.Expr, avoid: set, ranges: Mapping[sp.Symbol, sp.Expr] | None = None) -> sp.Expr:
    """Rename each summation index of ``value`` that is also in ``avoid`` (a free index of the
    context), so a bound d never captures the d of the variable W_kd: to another letter of the
    same range where ``ranges`` offers one (k -> j), else with a prime (d -> d')."""
    clash = _bound(value) & avoid
    if not clash:
        return value
    taken = set(avoid) | _bound(value) | {s for s in value.free_symbols}
    mapping = {}
    for s in sorted(clash, key=str):
        limit = (ranges or {}).get(s)
        same = [t for t in (ranges or {}) if limit is not None and ranges[t] == limit and t not in taken]
        mapping[s] = same[0] if same else _fresh(s, taken)
        taken.add(mapping[s])
    return _rename_sums(value, mapping)


def hygienic(definitions: tuple[Definition, ...], free: set, ranges: Mapping[sp.Symbol, sp.Expr]) -> tuple[Definition, ...]:
    """The definitions with every summation index that is also a free index of the derivation
    (the k and d of --wrt W_kd) renamed, so no letter means two things in one formula."""
    # Verification writes a scalar definition (E) into claims whose free indices are fixed by
    # substitution; an indexed one is written out entry by entry, so it keeps its letters.
    return tuple(
        Definition(d.key, d.symbol, _rename_bound(d.value, set(free) | set(d.symbol.free_symbols), ranges)) if not isinstance(d.symbol, sp.Indexed) else d
        for d in definitions
    )


def _rename_sums(e: sp.Basic, mapping: dict) -> sp.Basic:
    if isinstance(e, sp.Sum):
        body = _rename_sums(e.function, mapping)
        limits = []
        for idx, lo, hi in e.limits:
            new = mapping.get(idx, idx)
            if new != idx:
                body = substitute(body, {idx: new})
            limits.append((new, lo, hi))
        return sp.Sum(body, *limits)
    if not e.args or isinstance(e, (sp.Indexed, sp.Tuple)):
        return e
    args = [_rename_sums(a, mapping) for a in e.args]
    if isinstance(e, (sp.Add, sp.Mul, sp.Pow)):
        return e.func(*args, evaluate=False)
    return e.func(*args)


def unshadow(p: "Planner", e: sp.Basic, enclosing: frozenset = frozenset()) -> sp.Basic:
    """``e`` with every sum over a letter an enclosing sum already binds renamed (a variance's
    sum over m, substituted inside a sum over m): no letter means two things in one formula.
    Unchanged (the same object) where nothing is shadowed."""
    if not e.args or isinstance(e, (sp.Indexed, sp.Tuple)) or not e.has(sp.Sum):
        return e
    if isinstance(e, sp.Sum):
        own = [lim[0] for lim in e.limits]
        clash = [ix for ix in own if ix in enclosing]
        if clash:
            taken = set(enclosing) | _bound(e) | {s for s in e.free_symbols if _is_index(s)}
            mapping = {}
            for ix in clash:
                mapping[ix] = p.fresh(ix, taken)
                taken.add(mapping[ix])
            e = _rename_sums(e, mapping)
            own = [lim[0] for lim in e.limits]
        body = unshadow(p, e.function, enclosing | frozenset(own))
        return e if body is e.function else sp.Sum(body, *e.limits)
    inner = enclosing | ({e.args[1]} if isinstance(e, ExcludedSum) else set())
    args = [unshadow(p, a, frozenset(inner)) for a in e.args]
    if all(a is b for a, b in zip(args, e.args)):
        return e
    return e.func(*args)


def _same_sum(n: sp.Basic, lhs: sp.Basic) -> bool:
    """``n`` is ``lhs`` up to the name of its summation index and the values of its free
    indices (an assumption sum_i y_ni = 1 holds in every row n, so also in row m)."""
    return _instance(n, lhs) is not None


def _instance(n: sp.Basic, lhs: sp.Basic) -> dict | None:
    """The values of ``lhs``'s free indices that make it ``n`` (summation index renamed), if any."""
    if n == lhs:
        return {}
    if not (isinstance(n, sp.Sum) and isinstance(lhs, sp.Sum) and len(n.limits) == len(lhs.limits) == 1 and n.limits[0][1:] == lhs.limits[0][1:]):
        return None
    f = substitute(n.function, {n.limits[0][0]: lhs.limits[0][0]})
    free = sorted((s for s in lhs.function.free_symbols if isinstance(s, sp.Symbol) and s.is_integer and s != lhs.limits[0][0]), key=str)
    candidates = sorted((s for s in f.free_symbols if isinstance(s, sp.Symbol) and s.is_integer), key=str)
    import itertools

    for choice in itertools.product(candidates, repeat=len(free)):
        m = dict(zip(free, choice))
        if substitute(lhs.function, m) == f:
            return m
    return None


def _product(fs: list[sp.Basic]) -> sp.Expr:
    fs = [f for f in fs if f != 1]
    if not fs:
        return sp.Integer(1)
    return fs[0] if len(fs) == 1 else mul(*fs)


def _var(node: sp.Derivative) -> sp.Expr:
    return node.variables[0]


def _deriv(f: sp.Expr, x: sp.Expr) -> sp.Derivative:
    return sp.Derivative(f, x)


def _times_inner(p: Planner, outer: sp.Expr, inner: sp.Expr, x: sp.Expr) -> tuple[sp.Expr, tuple]:
    """f'(u) du/dx and the notes on u: f'(u) alone when u is x itself; f'(u) times the number a
    when u = a x + b with constant a and b (ln(1 - o_i) by o_i: -1 / (1 - o_i), one step, as a
    teacher writes it); else the chain rule's du/dx is left for the next rule."""
    if inner == x:
        return outer, ()
    own = variable_derivative(p, _deriv(inner, x))
    if own is not None and own.new.has(sp.KroneckerDelta):
        return mul(own.new, outer), (("chain", inner), ("delta", own.new))
    slope = _slope(p, inner, x)
    if slope is not None:
        new = outer if slope == 1 else neg(outer) if slope == -1 else mul(slope, outer)
        return new, (("chain", inner), ("slope", slope))
    return mul(outer, _deriv(inner, x)), (("chain", inner),)


def _slope(p: Planner, inner: sp.Expr, x: sp.Expr) -> sp.Expr | None:
    """a, when ``inner`` is a x + b with a number a and constants a, b (the derivative of a linear
    term, which needs no step of its own beside the rule that brings it)."""
    built = linear_derivative(p, _deriv(inner, x))
    return built.new if built is not None and built.new.is_Number and built.new != 0 else None


# --- the derivative rules ---------------------------------------------------------------------------
Rule = Callable[[Planner, sp.Basic], "Built | None"]


def zero_derivative(p: Planner, node: sp.Basic) -> Built | None:
    """d c / dx -> 0 when c does not depend on x."""
    if not isinstance(node, sp.Derivative) or p.depends(node.expr, _var(node)):
        return None
    return Built(sp.Integer(0), notes=(("term", node.expr), ("variable", _var(node))))


def variable_derivative(p: Planner, node: sp.Basic) -> Built | None:
    """d x_j / d x_k -> delta_jk (d x / d x -> 1): an entry of the variable by an entry of it."""
    f, x = node.expr, _var(node)
    if isinstance(f, sp.Indexed) and isinstance(x, sp.Indexed) and f.base == x.base and len(f.indices) == len(x.indices):
        deltas = [sp.KroneckerDelta(a, b) for a, b in zip(f.indices, x.indices) if a != b]
        value = _product(deltas)
        return Built(value, identity=sp.Eq(node, value, evaluate=False), notes=(("term", f), ("variable", x)))
    if f == x:
        return Built(sp.Integer(1), notes=(("term", f), ("variable", x)))
    return None


def definition_rule(p: Planner, node: sp.Basic) -> Built | None:
    """d f / dx -> d (the definition of f) / dx."""
    f = node.expr
    if not p.is_defined(f) or f == _var(node):
        return None
    value = p.definition_at(f, _var(node).free_symbols)
    return Built(_deriv(value, _var(node)), identity=sp.Eq(f, value, evaluate=False), notes=(("term", f), ("value", value)))


def defined_scalar(p: Planner, node: sp.Basic) -> Built | None:
    """The quantity itself (E) is replaced by its definition first."""
    return definition_rule(p, node) if isinstance(node.expr, sp.Symbol) else None


def sum_rule(p: Planner, node: sp.Basic) -> Built | None:
    """d/dx sum_i f_i -> sum_i df_i/dx, and d/dx (a + b) -> da/dx + db/dx."""
    f, x = node.expr, _var(node)
    if isinstance(f, sp.Mul) and len(f.args) == 2 and f.args[0].is_Number and isinstance(f.args[1], sp.Sum):
        inner = sum_rule(p, _deriv(f.args[1], x))
        return inner and Built(mul(f.args[0], inner.new), notes=inner.notes)
    if isinstance(f, sp.Sum):
        body = f.function
        if any(lim[0] in x.free_symbols for lim in f.limits):
            return None  # a bound index equal to the variable's: renamed when defined, never here
        inner = add(*(_deriv(t, x) for t in body.args)) if isinstance(body, sp.Add) else _deriv(body, x)
        return Built(sp.Sum(inner, *f.limits), notes=(("term", f), ("variable", x)))
    if isinstance(f, sp.Add):
        return Built(add(*(_deriv(t, x) for t in f.args)), notes=(("term", f), ("variable", x)))
    return None


def constant_factor(p: Planner, node: sp.Basic) -> Built | None:
    """d/dx (c f) -> c df/dx when c does not depend on x."""
    f, x = node.expr, _var(node)
    if not isinstance(f, sp.Mul):
        return None
    fs = factors_of(f)
    const = [a for a in fs if not p.depends(a, x)]
    rest = [a for a in fs if p.depends(a, x)]
    if not const or not rest:
        return None
    sign = [a for a in const if a == -1]
    shown = [a for a in const if a != -1]
    return Built(
        mul(*const, _deriv(_product(rest), x)),
        notes=(("factor", _product(shown) if shown else sp.Integer(-1)), ("variable", x)),
    )


def chain_rule(p: Planner, node: sp.Basic) -> Built | None:
    """d f(u) / dx -> df/du du/dx when f depends on x only through one defined entry u."""
    f, x = node.expr, _var(node)
    if p.is_defined(x) or p.is_defined(f) or f.has(p.leaf) and _head(x) == p.leaf:
        return None
    if any(h == _head(x) for h in _heads(f)):
        return None
    through = {u for u in f.atoms(sp.Indexed) if p.is_defined(u) and p.depends(u, x)}
    through |= {s for s in f.free_symbols if isinstance(s, sp.Symbol) and p.is_defined(s) and p.depends(s, x)}
    if len(through) != 1:
        return None
    u = through.pop()
    if _bound(f) & u.free_symbols:
        return None
    return Built(mul(_deriv(f, u), _deriv(u, x)), notes=(("term", f), ("through", u), ("variable", x)))


def softmax_jacobian(p: Planner, node: sp.Basic) -> Built | None:
    """d o_i / d v_k -> o_i (delta_ik - o_k) g'(v_k) for o_i := e^{g(v_i)} / sum_j e^{g(v_j)}:
    the softmax Jacobian (a verified result of the catalog, ``derive softmax``), with its cases."""
    f, x = node.expr, _var(node)
    if not (isinstance(f, sp.Indexed) and p.is_defined(f) and isinstance(x, sp.Indexed)):
        return None
    if f.base == _head(p.problem.quantity):
        return None  # the derivation of the Jacobian itself cites no lemma for it
    shape = weighted_softmax_of(p.defined[f.base])
    if shape is None:
        return None
    v, g, batch, weight = shape
    if v != x.base or len(x.indices) != len(f.indices) or weight is not None and p.depends(weight, x):
        return None
    i = f.indices[-1]
    k = x.indices[-1]
    o = f.base
    o_k = o[(*f.indices[:-1], k)]
    u = sp.Dummy("u")
    slope = sp.diff(g(u), u)
    scale = slope.xreplace({u: x})
    batch_deltas = [sp.KroneckerDelta(a, b) for a, b in zip(f.indices[:-1], x.indices[:-1]) if a != b]
    core = mul(f, add(sp.KroneckerDelta(i, k), neg(o_k)))
    compact = _product([*batch_deltas, core, *( [scale] if scale != 1 else [])])
    eq_value = _product([*batch_deltas, mul(o_k, add(sp.Integer(1), neg(o_k))), *([scale] if scale != 1 else [])])
    ne_value = _product([*batch_deltas, neg(mul(f, o_k)), *([scale] if scale != 1 else [])])
    cases = (Case(sp.Eq(i, k, evaluate=False), eq_value), Case(sp.Ne(i, k, evaluate=False), ne_value)) if i != k else ()
    notes = (("term", f), ("variable", x)) + ((("weight", weight.xreplace(dict(zip(p.defined[f.base].symbol.indices, f.indices)))),) if weight is not None else ())
    return Built(compact, identity=sp.Eq(node, compact, evaluate=False), cases=cases, notes=notes, label="jacobian")


def elementwise_jacobian(p: Planner, node: sp.Basic) -> Built | None:
    """d o_i / d v_k -> f'(v_i) delta_ik for o_i := f(v_i): each entry depends on its own entry of
    the variable alone, so the Jacobian is diagonal, f'(v_k) for i = k and 0 for i != k; f' is
    taken by the table's rules and written with the output itself (sigma' = o_i (1 - o_i))."""
    f, x = node.expr, _var(node)
    if not (isinstance(f, sp.Indexed) and p.is_defined(f) and isinstance(x, sp.Indexed)):
        return None
    d = p.defined[f.base]
    if not isinstance(d.symbol, sp.Indexed) or len(d.symbol.indices) != len(x.indices) or _bound(d.value):
        return None
    entry = x.base[d.symbol.indices]
    if {e for e in d.value.atoms(sp.Indexed) if e.base == x.base} != {entry}:
        return None
    if any(p.depends(h, x) for h in _heads(d.value) if h != x.base):
        return None
    table = dict(DERIVATIVE_RULES)
    for name in ELEMENTWISE:
        built = table[name](p, _deriv(d.value, entry))
        if built is not None:
            break
    else:
        return None
    if built.new.has(sp.Derivative):
        return None
    own = dict(zip(d.symbol.indices, f.indices))
    slope = substitute(substitute(built.new, {d.value: d.symbol}), own)
    deltas = [sp.KroneckerDelta(a, b) for a, b in zip(f.indices, x.indices) if a != b]
    compact = _product([*(factors_of(slope) if slope != 1 else []), *deltas]) if deltas else slope
    cases = ()
    if len(deltas) == 1:
        i, k = deltas[0].args if deltas[0].args[0] in f.indices else deltas[0].args[::-1]
        cases = (Case(sp.Eq(i, k, evaluate=False), substitute(slope, {i: k})), Case(sp.Ne(i, k, evaluate=False), sp.Integer(0)))
    notes = (("term", f), ("variable", x), ("entry", substitute(entry, own)), ("slope", slope))
    return Built(compact, identity=sp.Eq(node, compact, evaluate=False), cases=cases, notes=notes, label="jacobian")


def softmax_of(d: Definition) -> tuple[sp.IndexedBase, Callable[[sp.Expr], sp.Expr], tuple] | None:
    """(v, g, batch) when d is o_{..i} := e^{g(v_{..i})} / sum_j e^{g(v_{..j})}, else None."""
    shape = weighted_softmax_of(d)
    return shape[:3] if shape is not None and shape[3] is None else None


def weighted_softmax_of(d: Definition) -> tuple[sp.IndexedBase, Callable[[sp.Expr], sp.Expr], tuple, sp.Indexed | None] | None:
    """(v, g, batch, m_i) when d is o_{..i} := m_i e^{g(v_{..i})} / sum_j m_j e^{g(v_{..j})} (a
    softmax with weights: a mask), (v, g, batch, None) for a plain softmax, else None."""
    if not isinstance(d.symbol, sp.Indexed):
        return None
    num, den = _num_den(d.value)
    if not isinstance(den, sp.Sum) or len(den.limits) != 1:
        return None
    i = d.symbol.indices[-1]
    j = den.limits[0][0]
    if substitute(den.function, {j: i}) != num:
        return None
    weight = None
    if isinstance(num, sp.Mul):
        rest = [a for a in num.args if not isinstance(a, sp.exp)]
        exps = [a for a in num.args if isinstance(a, sp.exp)]
        if len(exps) != 1 or len(rest) != 1 or not isinstance(rest[0], sp.Indexed) or rest[0].indices != d.symbol.indices:
            return None
        weight, num = rest[0], exps[0]
    if not isinstance(num, sp.exp):
        return None
    inner = num.args[0]
    entries = inner.atoms(sp.Indexed)
    if len(entries) != 1:
        return None
    entry = entries.pop()
    if entry.indices != d.symbol.indices:
        return None
    u = sp.Dummy("u")
    template = inner.xreplace({entry: u})
    if template.has(i):
        return None
    if weight is not None and weight.base in (entry.base, _head(d.symbol)):
        return None
    return entry.base, (lambda x, t=template, u=u: t.xreplace({u: x})), tuple(d.symbol.indices[:-1]), weight


def _num_den(e: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    if isinstance(e, sp.Mul):
        num = [a for a in e.args if not (isinstance(a, sp.Pow) and a.exp == -1)]
        den = [a.base for a in e.args if isinstance(a, sp.Pow) and a.exp == -1]
        if len(den) == 1:
            return (_product(num) if num else sp.Integer(1)), den[0]
    return e, sp.Integer(1)


def chain_rule_sum(p: Planner, node: sp.Basic) -> Built | None:
    """d f / dx -> sum_j df/du_j du_j/dx: f is defined through every entry of u (a sum over
    them), and u depends on x: the chain rule sums over every u_j, not only one."""
    f, x = node.expr, _var(node)
    if not (isinstance(f, sp.Indexed) and p.is_defined(f)):
        return None
    d = p.defined[f.base]
    if d.value.has(_head(x)):
        return None
    bases = sorted({h for h in _heads(d.value) if h in p.defined and (h == _head(x) or _head(x) in p.reach(h))}, key=str)
    if len(bases) != 1:
        return None
    u = bases[0]
    if not isinstance(u, sp.IndexedBase):
        return None
    used = [e for e in d.value.atoms(sp.Indexed) if e.base == u]
    if not any(set(e.indices) & _bound(d.value) for e in used):
        return None  # an entry at the same index: the definition is substituted instead
    pattern = p.defined[u].symbol
    taken = set(f.free_symbols) | set(x.free_symbols) | _bound(node)
    fresh = []
    for ix in pattern.indices:
        s = ix if ix not in taken else p.fresh(ix, taken)
        taken.add(s)
        fresh.append(s)
    u_j = u[tuple(fresh)]
    body = mul(_deriv(f, u_j), _deriv(u_j, x))
    limits = [(s, 1, p.problem.ranges.get(ix, _limit_of(p, ix))) for s, ix in zip(fresh, pattern.indices)]
    new = body
    for lim in reversed(limits):
        new = sp.Sum(new, lim)
    return Built(new, identity=sp.Eq(node, new, evaluate=False), notes=(("term", f), ("through", u_j), ("variable", x)))


def _limit_of(p: Planner, ix: sp.Symbol) -> sp.Expr:
    for s, hi in p.problem.ranges.items():
        if s.name == ix.name.rstrip("'"):
            return hi
    raise PlanError(f"index {ix} has no range")


def _citable(p: Planner, quantity: sp.Basic) -> tuple[str, sp.Expr, sp.Expr] | None:
    """(name, variable, general form) of a result of RESULTS about ``quantity`` whose definitions
    are this problem's down to the result's variable (what that variable is defined from does
    not matter to it), where this problem's variable is another one. The quantity may have
    another name (C, the cross-entropy part of E = C + ...)."""
    if not isinstance(quantity, sp.Symbol) or quantity not in p.defined:
        return None
    for name, definitions, variable, general in p.problem.citable():
        if not isinstance(definitions[0].symbol, sp.Symbol) or _head(variable) == _head(p.wrt):
            continue
        named = {definitions[0].symbol: quantity}
        own = {_head(d.symbol.xreplace(named)): Definition(d.key, d.symbol.xreplace(named), d.value.xreplace(named)) for d in definitions}
        reached = {quantity} | _reach_avoiding(p, quantity, _head(variable))
        same = True
        for h in reached:
            theirs, ours = own.get(h), p.defined.get(h)
            if h == _head(variable):
                same = ours is not None and theirs is None
            elif (theirs is None) != (ours is None) or (theirs is not None and (theirs.symbol != ours.symbol or _canonical(theirs.value) != _canonical(ours.value))):
                same = False
            if not same:
                break
        if same:
            return name, variable, general
    return None


def derived_result(p: Planner, node: sp.Basic) -> Built | None:
    """dE/du_m -> its value by a result derived (and verified) on its own: the general form of a
    catalog entry of RESULTS (dE/dz_k = o_k sum_i y_i - y_k, at any index m), or of a result
    for one example at an example n of a batch (:func:`_per_example`)."""
    if not isinstance(node, sp.Derivative):
        return None
    batched = _per_example(p, node)
    if batched is not None:
        return batched
    cited = _citable(p, node.expr)
    x = _var(node)
    if cited is None or not isinstance(x, sp.Indexed) or x.base != _head(cited[1]):
        return None
    _, variable, general = cited
    value = general
    mapping = {a: b for a, b in zip(variable.indices, x.indices) if a != b}
    if mapping:
        value = substitute(_rename_bound(general, set(x.free_symbols)), mapping)
    return Built(value, identity=sp.Eq(node, value, evaluate=False), notes=(("term", node),))


def _per_example(p: Planner, node: sp.Basic) -> Built | None:
    """dE_n/dW_kd -> the result for one example written with the quantities of example n: the
    error of example n (a defined E_n, or its value inside the sum over n) is a citable result's
    quantity with every per-example name carrying n in front (o_i is o_ni, y_i is y_ni), and the
    variable is shared by the examples (a layer's weights). What is per example and what is
    shared is read from the names' number of indices, here and in the result's definitions;
    every definition the error reaches must be the result's, so written."""
    x = _var(node)
    if not isinstance(x, (sp.Indexed, sp.Symbol)) or _head(x) in p.defined:
        return None
    f = node.expr
    quantity = f
    if isinstance(f, sp.Indexed) and f.base in p.defined and len(f.indices) == 1:
        d = p.defined[f.base]
        f = substitute(d.value, {d.symbol.indices[0]: quantity.indices[0]})
    candidates = sorted((s_ for s_ in f.free_symbols if _is_index(s_) and s_ not in x.free_symbols), key=str)
    if not candidates:
        return None
    ranks = p.ranks
    for name, definitions, variable, general in p.problem.citable():
        if _head(variable) != _head(x) or not isinstance(definitions[0].symbol, sp.Symbol):
            continue
        theirs = _ranks(definitions)
        if any(h not in ranks or ranks[h] - r not in (0, 1) for h, r in theirs.items()):
            continue
        batch = {h for h, r in theirs.items() if ranks[h] == r + 1}
        if _head(variable) in batch or not batch:
            continue
        for n in candidates:
            if n in _bound(general) or any(n in d.value.free_symbols for d in definitions):
                continue

            def at_n(e: sp.Basic, n=n) -> sp.Basic:
                return e.replace(lambda q: isinstance(q, sp.Indexed) and q.base in batch, lambda q: q.base[(n, *q.indices)])

            if _canonical(at_n(definitions[0].value)) != _canonical(f):
                continue
            own = {_head(d.symbol): d for d in definitions[1:]}
            reached = set(_heads(f))
            for h in list(reached):
                reached |= set(p.reach(h))
            same = True
            for h in reached - {_head(x)}:
                ours, mine = p.defined.get(h), own.get(h)
                if (ours is None) != (mine is None):
                    same = False
                elif ours is not None:
                    symbol = at_n(mine.symbol)
                    if not isinstance(ours.symbol, sp.Indexed) or len(ours.symbol.indices) != len(symbol.indices):
                        same = False
                    else:
                        value = substitute(ours.value, dict(zip(ours.symbol.indices, symbol.indices)))
                        same = _canonical(value) == _canonical(at_n(mine.value))
                if not same:
                    break
            if not same:
                continue
            value = at_n(_rename_bound(general, set(x.free_symbols) | {n}))
            mapping = {a: b for a, b in zip(getattr(variable, "indices", ()), getattr(x, "indices", ())) if a != b}
            if mapping:
                value = substitute(value, mapping)
            return Built(value, identity=sp.Eq(node, value, evaluate=False), notes=(("term", node), ("example", n)))
    return None


def _ranks(definitions: Iterable[Definition]) -> dict[sp.Basic, int]:
    """Each indexed name of the definitions -> its number of indices."""
    out: dict[sp.Basic, int] = {}
    for d in definitions:
        for e in (d.symbol, d.value):
            for q in e.atoms(sp.Indexed):
                out.setdefault(q.base, len(q.indices))
    return out


def through_result(p: Planner, node: sp.Basic) -> Built | None:
    """dE/dx -> sum_i dE/du_i du_i/dx where a cited result gives dE/du_i and x reaches E only
    through u: the chain rule through every entry of u, the result's variable (every logit z_i,
    for a weight of the layer before a softmax, or of a hidden layer before that one)."""
    if not isinstance(node, sp.Derivative):
        return None
    cited = _citable(p, node.expr)
    x = _var(node)
    if cited is None:
        return None
    u = _head(cited[1])
    if not isinstance(u, sp.IndexedBase) or u not in p.defined or not (_head(x) in _heads(p.defined[u].value) or _head(x) in p.reach(u)):
        return None
    if _head(x) in _reach_avoiding(p, node.expr, u):
        return None
    pattern = p.defined[u].symbol
    taken = set(x.free_symbols) | _bound(node)
    fresh = []
    for ix in pattern.indices:
        s_ = ix if ix not in taken else p.fresh(ix, taken)
        taken.add(s_)
        fresh.append(s_)
    u_i = u[tuple(fresh)]
    new = mul(_deriv(node.expr, u_i), _deriv(u_i, x))
    for s_, ix in reversed(list(zip(fresh, pattern.indices))):
        new = sp.Sum(new, (s_, 1, p.problem.ranges.get(ix, _limit_of(p, ix))))
    return Built(new, notes=(("term", node.expr), ("through", u_i), ("variable", x)))


def _reach_avoiding(p: Planner, quantity: sp.Basic, u: sp.Basic) -> set:
    """The heads ``quantity`` depends on along paths that do not pass through ``u``."""
    out, todo = set(), [quantity]
    while todo:
        d = p.defined.get(todo.pop())
        for h in _heads(d.value) if d is not None else ():
            if h != u and h not in out:
                out.add(h)
                todo.append(h)
    return out


def scaled_logit(p: Planner, node: sp.Basic) -> Built | None:
    """d f / d x_k -> c d f / d u_k where f depends on x only through u, a multiple of x entry by
    entry (u_m := c x_m, c = 1/T for a temperature): only u_k holds x_k, and du_k/dx_k = c."""
    if not isinstance(node, sp.Derivative):
        return None
    f, x = node.expr, _var(node)
    if not (isinstance(f, sp.Indexed) and p.is_defined(f) and isinstance(x, sp.Indexed) and len(x.indices) == 1):
        return None
    value = p.defined[f.base].value
    if value.has(x.base):
        return None
    bases = {h for h in _heads(value) if h in p.defined and (h == x.base or x.base in p.reach(h))}
    if len(bases) != 1:
        return None
    u = bases.pop()
    d = p.defined[u]
    if not isinstance(d.symbol, sp.Indexed) or len(d.symbol.indices) != 1 or _bound(d.value):
        return None
    entry = x.base[d.symbol.indices[0]]
    if d.value.atoms(sp.Indexed) != {entry} or any(h in p.defined for h in _heads(d.value)):
        return None
    c = sp.diff(d.value, entry)
    if c == 0 or c.has(x.base) or sp.expand(d.value - c * entry) != 0:
        return None
    u_k = u[x.indices]
    return Built(mul(c, _deriv(f, u_k)), identity=sp.Eq(_deriv(u_k, x), c, evaluate=False), notes=(("term", f), ("through", u_k), ("variable", x), ("slope", c)), label="jacobian")


def layer_derivative(p: Planner, node: sp.Basic) -> Built | None:
    """d z_i / d p -> delta_ik c for a layer linear in its parameters (z_i := sum_m W_im x_m +
    b_i): the parameter W_kd or b_k stands in the unit i = k only, multiplied by c (x_d, or 1)."""
    if not isinstance(node, sp.Derivative):
        return None
    f, x = node.expr, _var(node)
    if not (isinstance(f, sp.Indexed) and p.is_defined(f) and isinstance(x, sp.Indexed) and len(f.indices) == 1):
        return None
    d = p.defined[f.base]
    if not isinstance(d.symbol, sp.Indexed) or any(p.depends(h, x) for h in _heads(d.value) if h != x.base):
        return None
    try:
        value = rules.layer_entry(d, x, f.indices[0])
    except RuleError:
        return None
    if value.has(x.base):
        return None
    return Built(value, identity=sp.Eq(node, value, evaluate=False), cases=rules.layer_cases(value), notes=(("term", f), ("variable", x)), label="jacobian")


def linear_derivative(p: Planner, node: sp.Basic) -> Built | None:
    """d (a x + b) / dx -> a: an expression linear in the variable, with constant a and b."""
    f, x = node.expr, _var(node)
    if isinstance(f, (sp.Sum,)) or f.atoms(sp.Sum):
        return None
    same = {e for e in f.atoms(sp.Indexed) if e.base == _head(x)} if isinstance(x, sp.Indexed) else {x} & f.free_symbols
    if same != {x}:
        return None
    if any(p.depends(h, x) for h in _heads(f) if h != _head(x)):
        return None
    s = sp.Dummy("s")
    g = f.xreplace({x: s})
    if any(a.has(s) for a in g.atoms(sp.Function)):
        return None
    slope = sp.diff(g, s)
    if slope.has(s) or not isinstance(f, (sp.Add, sp.Mul)):
        return None
    return Built(slope, identity=sp.Eq(node, slope, evaluate=False), notes=(("term", f), ("variable", x), ("slope", slope)))


def product_rule(p: Planner, node: sp.Basic) -> Built | None:
    """d (u v) / dx -> du/dx v + u dv/dx."""
    f, x = node.expr, _var(node)
    if not isinstance(f, sp.Mul):
        return None
    fs = factors_of(f)
    if len(fs) < 2 or not all(p.depends(a, x) for a in fs):
        return None
    terms = []
    for n, a in enumerate(fs):
        rest = fs[:n] + fs[n + 1 :]
        terms.append(mul(*rest[:n], _deriv(a, x), *rest[n:]) if rest else _deriv(a, x))
    return Built(add(*terms), notes=(("term", f), ("variable", x)))


def quotient_rule(p: Planner, node: sp.Basic) -> Built | None:
    """d (u / v) / dx -> (du/dx v - u dv/dx) / v^2 when both u and v depend on x."""
    f, x = node.expr, _var(node)
    if not isinstance(f, sp.Mul):
        return None
    u, v = _num_den(f)
    if v == 1 or not p.depends(u, x) or not p.depends(v, x):
        return None
    new = mul(add(mul(_deriv(u, x), v), neg(mul(u, _deriv(v, x)))), sp.Pow(v, -2, evaluate=False))
    return Built(new, notes=(("numerator", u), ("denominator", v), ("variable", x)))


def power_rule(p: Planner, node: sp.Basic) -> Built | None:
    """d u^n / dx -> n u^(n-1) du/dx for an exponent n that does not depend on x."""
    f, x = node.expr, _var(node)
    if not isinstance(f, sp.Pow) or p.depends(f.exp, x):
        return None
    b, n = f.args
    lower = n - 1 if n.is_Number else add(n, sp.Integer(-1))
    power = sp.Integer(1) if lower == 0 else b if lower == 1 else sp.Pow(b, lower, evaluate=False)
    outer = _product([n, power]) if n != 1 else sp.Integer(1)
    u = sp.Symbol("u")
    new, chain = _times_inner(p, outer, b, x)
    return Built(new, identity=sp.Eq(sp.Derivative(u**n, u), n * u ** (n - 1), evaluate=False), notes=(("term", f), ("base", b), ("exponent", n), ("variable", x)) + chain)


def _elementary(kind: type, outer: Callable[[sp.Expr, sp.Expr], sp.Expr], identity: Callable[[sp.Symbol], sp.Expr]) -> Rule:
    def rule(p: Planner, node: sp.Basic) -> Built | None:
        f, x = node.expr, _var(node)
        if not isinstance(f, kind):
            return None
        u = f.args[0]
        s = sp.Symbol("u", positive=True)
        new, chain = _times_inner(p, outer(f, u), u, x)
        # By an entry of the variable, the step's own instance says more than the rule (the
        # Kronecker delta is the point): d e^{z_i}/d z_k = delta_ik e^{z_i}.
        stated = sp.Eq(node, new, evaluate=False) if dict(chain).get("delta") is not None else sp.Eq(sp.Derivative(kind(s), s), identity(s), evaluate=False)
        return Built(
            new,
            identity=stated,
            notes=(("term", f), ("variable", x)) + chain,
        )

    rule.__doc__ = f"d {kind.__name__}(u) / dx -> {kind.__name__}'(u) du/dx"
    return rule


def log_product(p: Planner, node: sp.Basic) -> Built | None:
    """d ln(a b / c) / dx -> d (ln a + ln b - ln c) / dx: the log of a product is a sum of logs."""
    f, x = node.expr, _var(node)
    if not (isinstance(f, sp.log) and isinstance(f.args[0], sp.Mul)):
        return None
    parts = []
    for a in factors_of(f.args[0]):
        if isinstance(a, sp.Pow) and a.exp == -1:
            parts.append(neg(sp.log(a.base)))
        elif a.is_Number and a.is_negative:
            return None
        else:
            parts.append(sp.log(a))
    new = add(*parts)
    return Built(_deriv(new, x), identity=sp.Eq(f, new, evaluate=False), notes=(("term", f),))


log_derivative = _elementary(sp.log, lambda f, u: sp.Pow(u, -1, evaluate=False), lambda s: 1 / s)
exp_derivative = _elementary(sp.exp, lambda f, u: f, lambda s: sp.exp(s))
sigmoid_derivative = _elementary(fn.sigmoid, lambda f, u: mul(f, add(sp.Integer(1), neg(f))), lambda s: fn.sigmoid(s) * (1 - fn.sigmoid(s)))
tanh_derivative = _elementary(fn.tanh, lambda f, u: add(sp.Integer(1), neg(sp.Pow(f, 2, evaluate=False))), lambda s: 1 - fn.tanh(s) ** 2)
softplus_derivative = _elementary(fn.softplus, lambda f, u: fn.sigmoid(u), lambda s: fn.sigmoid(s))
erf_derivative = _elementary(sp.erf, lambda f, u: mul(2 / sp.sqrt(sp.pi), sp.exp(neg(sp.Pow(u, 2, evaluate=False)))), lambda s: 2 / sp.sqrt(sp.pi) * sp.exp(-(s**2)))


DERIVATIVE_RULES: tuple[tuple[str, Rule], ...] = (
    ("zero_derivative", zero_derivative),
    ("derived_result", derived_result),
    ("chain_rule_sum", through_result),
    ("variable_derivative", variable_derivative),
    ("linear_derivative", linear_derivative),
    ("definition", defined_scalar),
    ("sum_rule", sum_rule),
    ("constant_factor", constant_factor),
    ("log_product", log_product),
    ("chain_rule", chain_rule),
    ("softmax_jacobian", softmax_jacobian),
    ("elementwise_jacobian", elementwise_jacobian),
    ("layer_derivative", layer_derivative),
    ("scaled_logit", scaled_logit),
    ("chain_rule_sum", chain_rule_sum),
    ("definition", definition_rule),
    ("quotient_rule", quotient_rule),
    ("product_rule", product_rule),
    ("power_rule", power_rule),
    ("log_derivative", log_derivative),
    ("exp_derivative", exp_derivative),
    ("sigmoid_derivative", sigmoid_derivative),
    ("tanh_derivative", tanh_derivative),
    ("softplus_derivative", softplus_derivative),
    ("erf_derivative", erf_derivative),
)
"""The derivative rules in the order they are tried: the first whose condition holds is taken."""

ELEMENTWISE = ("variable_derivative", "linear_derivative", "exp_derivative", "sigmoid_derivative", "tanh_derivative", "softplus_derivative", "erf_derivative", "log_derivative", "power_rule")
"""The rules of the table that give f'(v_i) of an elementwise definition o_i := f(v_i) in one step."""


# --- the algebra rules -------------------------------------------------------------------------------
def outputs(p: Planner, node: sp.Basic) -> Built | None:
    """f(v_i) -> o_i where o_i := f(v_i) is defined: the derivative of an elementwise function,
    written with its own output (sigma(z_i) (1 - sigma(z_i)) is o_i (1 - o_i))."""
    if isinstance(node, sp.Mul) and not node.has(sp.Derivative):
        return _quotient_back(p, node)
    if isinstance(node, sp.Sum) and not node.has(sp.Derivative):
        return _sum_back(p, node)
    if not isinstance(node, sp.Function) or isinstance(node, sp.Derivative) or node.has(sp.Derivative):
        return None
    for d in p.problem.definitions:
        if not isinstance(d.symbol, sp.Indexed) or not isinstance(d.value, sp.Function) or type(d.value) is not type(node):
            continue
        mapping = _match_indices(d.value, node, d.symbol.indices)
        if mapping is not None:
            out = d.symbol.xreplace(mapping)
            return Built(out, identity=sp.Eq(d.value, d.symbol, evaluate=False), notes=(("term", node), ("name", out)))
    return None


def _sum_back(p: Planner, node: sp.Sum) -> Built | None:
    """sum_j a_j V_jc -> o_c where o_c := sum_j a_j V_jc is defined and the quantity uses it (the
    output of attention, written with its own name where the result holds it)."""
    return _defined_sum(p, node, used=True)


def _defined_sum(p: Planner, node: sp.Sum, used: bool) -> Built | None:
    """``node`` written as the name whose definition is that sum: among the names the quantity
    uses (``outputs``), or among those it does not (``named``: the backpropagated error)."""
    reached = p.reach(_head(p.problem.quantity))
    for d in p.problem.definitions[1:]:
        if not isinstance(d.symbol, sp.Indexed) or not isinstance(d.value, sp.Sum) or (d.symbol.base in reached) != used:
            continue
        m = _match_indices(evaluated(d.value), evaluated(node), d.symbol.indices)
        if m is not None:
            name = d.symbol.xreplace(m)
            return Built(name, identity=sp.Eq(node, name, evaluate=False), notes=(("term", node), ("name", name), ("value", d.value.xreplace(m))))
    return None


def _quotient_back(p: Planner, node: sp.Mul) -> Built | None:
    """u_m / v -> o_m in a product, where o_i := u_i / v is defined (e^{z_m} / sum_j e^{z_j} is
    the softmax output o_m)."""
    for d in p.problem.definitions:
        if _num_den(d.value)[1] == 1:
            continue
        found = rules.read_back_at(node, d)
        if found is not None:
            index, _ = found
            out = d.symbol.xreplace({d.symbol.indices[0]: index})
            return Built(rules.read_back(node, d), identity=sp.Eq(d.value, d.symbol, evaluate=False), notes=(("term", substitute(d.value, {d.symbol.indices[0]: index})), ("name", out)))
    return None


def split_fraction(p: Planner, node: sp.Basic) -> Built | None:
    """(a v - b c) / v^2 -> a / v - (b / v)(c / v): what the quotient rule left, as fractions
    over v (that a definition may name)."""
    return Built(rules.fraction_split(node)) if rules.fraction_parts(node) is not None else None


def _match_indices(pattern: sp.Expr, e: sp.Expr, indices: tuple) -> dict | None:
    """The values of ``indices`` that make ``pattern`` equal to ``e``, if any."""
    candidates = sorted({s for s in e.free_symbols if isinstance(s, sp.Symbol) and s.is_integer}, key=str)
    import itertools

    target = _canonical(e)
    for choice in itertools.product(candidates, repeat=len(indices)):
        m = dict(zip(indices, choice))
        if _canonical(substitute(pattern, m)) == target:
            return m
    return None


def _canonical(e: sp.Basic) -> sp.Basic:
    """``e`` with its summation indices renamed by position, so sums that differ only in the
    name of their index compare equal."""
    counter = iter(range(10**6))

    def walk(n: sp.Basic) -> sp.Basic:
        if isinstance(n, sp.Sum):
            body, limits = n.function, []
            for idx, lo, hi in n.limits:
                new = sp.Symbol(f"_s{next(counter)}", integer=True, positive=True)
                body = body.xreplace({idx: new})
                limits.append((new, lo, hi))
            return sp.Sum(walk(body), *limits)
        if not n.args or isinstance(n, (sp.Indexed, sp.Tuple)):
            return n
        return n.func(*[walk(a) for a in n.args])

    return walk(e)


def simplify_terms(p: Planner, node: sp.Basic) -> Built | None:
    """Evaluate a product whose factors cancel or combine (y_i / o_i * o_i -> y_i)."""
    if not isinstance(node, sp.Mul) or (len(node.args) == 2 and node.args[0].is_Number and isinstance(node.args[1], sp.Add)):
        return None
    if node.has(sp.Derivative):
        return None
    new = evaluated(node)
    # Worth a step where factors cancel or combine, or where a sign inside a factor comes to the
    # front of its term ((-o_i o_k)(o_i - y_i) -> -o_i o_k (o_i - y_i)), ready to leave a sum.
    signed = any(isinstance(a, sp.Mul) and a.args[0] == -1 for a in node.args)
    if new == node or (_size(new) >= _size(node) and not signed):
        return None
    return Built(new, notes=(("product", node),))


def _product_to_evaluate(n: sp.Basic) -> bool:
    """A product that evaluating changes (not a number times a bracket, kept whole)."""
    if not isinstance(n, sp.Mul) or n.has(sp.Derivative) or (len(n.args) == 2 and n.args[0].is_Number and isinstance(n.args[1], sp.Add)):
        return False
    return evaluated(n) != n


def _size(e: sp.Basic) -> int:
    return sp.count_ops(e, visual=False) + len(e.atoms())


def split_sum(p: Planner, node: sp.Basic) -> Built | None:
    """sum_i f_i J_ik -> sum_{i != k} f_i J_ik|_{i != k} + f_k J_kk: the term i = k taken out of the
    sum, each case of the Jacobian put where it applies (when that leaves simple terms)."""
    if not isinstance(node, sp.Sum) or len(node.limits) != 1:
        return None
    i = node.limits[0][0]
    for step in reversed(p.steps):
        if step.rule != "softmax_jacobian" or not step.cases:
            continue
        term = step.identity.rhs
        eq, ne = step.cases
        a, k = eq.condition.args
        if a != i:
            term = substitute(term, {a: i})
            eq = Case(sp.Eq(i, k, evaluate=False), substitute(eq.value, {a: i}))
            ne = Case(sp.Ne(i, k, evaluate=False), substitute(ne.value, {a: i}))
        if k == i or k in _bound(node.function) or not node.function.has(term) or node.function.has(ExcludedSum):
            continue  # (a k summed inside the term is no single index to split at)
        # A factor the chain rule brought beside the Jacobian (1/T by z_k through z_k / T) is
        # part of the derivative by the variable: each case is put in with it.
        scaled = [m for m in sp.preorder_traversal(node.function) if isinstance(m, sp.Mul) and len(m.args) == 2 and term in m.args and not m.args[0 if m.args[1] == term else 1].has(i)]
        if scaled:
            c = scaled[0].args[0] if scaled[0].args[1] == term else scaled[0].args[1]
            term = scaled[0]
            eq, ne = (Case(case.condition, mul(c, case.value)) for case in (eq, ne))
        others = substitute(node.function, {term: ne.value})
        if not _monomial(evaluated(others), keep=_is_error):
            return None  # the cases leave brackets: sifting reads better
        _, lo, hi = node.limits[0]
        own = substitute(substitute(node.function, {term: eq.value}), {i: k})
        new = add(ExcludedSum(others, i, lo, hi, k), own)
        inner = []
        for part, case in ((0, ne), (1, eq)):
            inner.append(((part,), "terms_ne" if case is ne else "term_eq"))
            for q in find(new.args[part], lambda e, v=case.value: e == v):
                inner.append(((part, *q), "jacobian_ne" if case is ne else "jacobian_eq"))
        return Built(new, cases=(eq, ne), notes=(("index", i), ("at", k)), inner=tuple(inner))
    return None


def _monomial(e: sp.Expr, keep: Callable[[sp.Basic], bool] = lambda a: False) -> bool:
    """No bracket in ``e`` (but those ``keep`` accepts, which stay whole)."""
    return not any(isinstance(a, sp.Add) and not keep(a) for a in sp.preorder_traversal(e))


def _is_error(e: sp.Basic) -> bool:
    """A bracket of entries alone, o_i - y_i (an error, a difference): it is read as one
    quantity, so it stays whole where brackets are multiplied out."""
    if not isinstance(e, sp.Add) or len(e.args) < 2:
        return False
    return all(isinstance(t, sp.Indexed) or (isinstance(t, sp.Mul) and len(t.args) == 2 and t.args[0] == -1 and isinstance(t.args[1], sp.Indexed)) for t in e.args)


def distribute(p: Planner, node: sp.Basic) -> Built | None:
    """sum_i c_i (delta_ik - g_i) -> sum_i c_i delta_ik - sum_i c_i g_i: the bracket that holds a
    Kronecker delta of the summation index is multiplied out, one sum per term."""
    if not isinstance(node, sp.Sum):
        return None
    bound = {lim[0] for lim in node.limits}
    fs = factors_of(node.function)
    if any(isinstance(f, sp.KroneckerDelta) and bound & set(f.args) for f in fs):
        return None  # the delta is a factor already: sifting takes the sum as it is
    for n, f in enumerate(fs):
        if isinstance(f, sp.Add) and any(bound & set(d.args) for t in f.args for d in t.atoms(sp.KroneckerDelta)):
            return _split_over(node, fs, n)
    return None


def _split_over(node: sp.Sum, fs: list, n: int) -> Built:
    """The sum with its n-th factor (a bracket) multiplied out: one sum per term of the bracket."""
    rest = fs[:n] + fs[n + 1 :]
    sums = []
    for t in fs[n].args:
        sign = t.could_extract_minus_sign()
        body = _product([*rest[:n], -t if sign else t, *rest[n:]])
        s = sp.Sum(body, *node.limits)
        sums.append(neg(s) if sign else s)
    return Built(add(*sums), notes=(("index", node.limits[0][0]),))


def expose(p: Planner, node: sp.Basic, leaf: sp.Expr) -> Built | None:
    """sum_i y_i (a_i - c) -> sum_i y_i a_i - sum_i y_i c: a bracket with a term free of i is
    multiplied out, so that an assumption about sum_i y_i can be used."""
    if not isinstance(node, sp.Sum) or len(node.limits) != 1:
        return None
    i = node.limits[0][0]
    fs = factors_of(node.function)
    if not any(f.has(leaf.base) for f in fs if not isinstance(f, sp.Add)):
        return None
    if not any(isinstance(f, sp.Indexed) and f.base == leaf.base and f.indices[-1] == i for f in fs):
        return None  # the sum runs over another index than the leaf's own (a batch's n)
    for n, f in enumerate(fs):
        if isinstance(f, sp.Add) and any(not t.has(i) for t in f.args):
            return _split_over(node, fs, n)
    return None


def nest(p: Planner, node: sp.Basic, leaf: sp.Expr) -> Built | None:
    """sum_{n,i} c_n y_ni -> sum_n c_n sum_i y_ni: a double sum taken apart where the leaf's own
    index runs innermost, the factors free of it outside, so that an assumption about
    sum_i y_ni can be used (a batch: o_nk x_nd does not depend on i)."""
    if not isinstance(node, sp.Sum) or len(node.limits) < 2:
        return None
    entries = [x for x in node.function.atoms(sp.Indexed) if x.base == leaf.base]
    if not entries:
        return None
    limits = {lim[0]: lim for lim in node.limits}
    own = entries[0].indices[-1]
    if own not in limits or any(x.indices[-1] != own for x in entries):
        return None
    fs = factors_of(node.function)
    const = [f for f in fs if not f.has(own)]
    rest = [f for f in fs if f.has(own)]
    if not const or not rest:
        return None
    outer = [lim for lim in node.limits if lim[0] != own]
    new = sp.Sum(mul(*const, sp.Sum(_product(rest), limits[own])), *outer)
    return Built(new, notes=(("factor", _product(const)), ("index", own)))


def combine_sums(p: Planner, node: sp.Basic) -> Built | None:
    """c sum_j f_j - c sum_i g_i -> c sum_i (f_i - g_i): sums over the same range, with the same
    factor in front, become one."""
    if not isinstance(node, sp.Add):
        return None
    groups: dict[tuple, list] = {}
    for t in node.args:
        fs = factors_of(t)
        sums = [f for f in fs if isinstance(f, sp.Sum) and len(f.limits) == 1]
        if len(sums) != 1:
            continue
        rest = list(fs)
        rest.remove(sums[0])
        number = sp.Mul(*[f for f in rest if f.is_Number])
        front = sp.Mul(*[f for f in rest if not f.is_Number])
        groups.setdefault((front, sums[0].limits[0][1:]), []).append((t, number, sums[0]))
    for (front, (lo, hi)), members in groups.items():
        if len(members) < 2:
            continue
        i = min((x.limits[0][0] for _, _, x in members), key=str)
        body = []
        for _, c, s in members:
            f = substitute(s.function, {s.limits[0][0]: i}) if s.limits[0][0] != i else s.function
            body.append(f if c == 1 else neg(f) if c == -1 else mul(c, f))
        combined = sp.Sum(sp.factor_terms(sp.Add(*body)), (i, lo, hi))
        combined = combined if front == 1 else mul(front, combined)
        used = {t for t, _, _ in members}
        others = [t for t in node.args if t not in used]
        return Built(add(*others, combined) if others else combined, notes=(("index", i),))
    return None


def sifting(p: Planner, node: sp.Basic) -> Built | None:
    """sum_j delta_jk f_j -> f_k: the Kronecker delta keeps the one term with j = k. The delta may
    sit inside a factor of the summand (a Jacobian o_j (1 - o_j) delta_jk), and a summand that is
    a sum of terms, each with the same delta, collapses term by term.

    In a sum with several limits the other index may be one of them: sum_n sum_n' delta_nn' f_n'
    is sum_n f_n when n runs outside n' and over the same range (every n is a value of n'); an
    n bound inside the sum over n' is not a value there, and that sum sifts over n instead."""
    if not isinstance(node, sp.Sum):
        return None
    bound = [lim[0] for lim in node.limits]
    terms = node.function.args if isinstance(node.function, sp.Add) else (node.function,)
    for n, (j, lo, hi) in enumerate(node.limits):
        shared = set.intersection(*({f for f in factors_of(t) if isinstance(f, sp.KroneckerDelta) and j in f.args} for t in terms))
        for d in sorted(shared, key=sp.default_sort_key):
            other = d.args[1] if d.args[0] == j else d.args[0]
            if other in bound and (bound.index(other) < n or node.limits[bound.index(other)][1:] != (lo, hi)):
                continue
            kept = add(*(_drop(t, d) for t in terms)) if len(terms) > 1 else _drop(terms[0], d)
            value = substitute(kept, {j: other})
            others = node.limits[:n] + node.limits[n + 1 :]
            if others:
                value = sp.Sum(value, *others)
            f = sp.IndexedBase("f")
            identity = sp.Eq(sp.Sum(mul(sp.KroneckerDelta(j, other), f[j]), (j, lo, hi)), f[other], evaluate=False)
            return Built(value, identity=identity, notes=(("index", j), ("at", other)))
    return None


def _drop(t: sp.Basic, d: sp.KroneckerDelta) -> sp.Basic:
    """The term ``t`` without its factor ``d`` (nested products keep their shape)."""
    if t == d:
        return sp.Integer(1)
    if not isinstance(t, sp.Mul):
        return t
    rest = [_drop(a, d) if a.has(d) else a for a in t.args]
    rest = [a for a in rest if a != 1]
    return mul(*rest) if len(rest) > 1 else rest[0] if rest else sp.Integer(1)


def factor_out(p: Planner, node: sp.Basic) -> Built | None:
    """sum_i c f_i -> c sum_i f_i when c does not depend on the summation index i."""
    if not isinstance(node, (sp.Sum, ExcludedSum)) or not isinstance(node.function, sp.Mul):
        return None
    bound = {node.index} if isinstance(node, ExcludedSum) else {lim[0] for lim in node.limits}
    idx = min(bound, key=str)
    fs = factors_of(node.function)
    const = [f for f in fs if not f.has(*bound)]
    rest = [f for f in fs if f.has(*bound)]
    if not const or not rest:
        return None
    inner = node.func(_product(rest), *node.args[1:])
    sign = [c for c in const if c == -1]
    const = [c for c in const if c != -1]
    new = mul(*sign, *const, inner)
    marks = tuple(((n,), "independent") for n, a in enumerate(new.args[:-1]) if a != -1)
    return Built(new, inner=marks, notes=(("factor", _product(const) if const else sp.Integer(-1)), ("index", idx)))


def constant_sum(p: Planner, node: sp.Basic) -> Built | None:
    """sum_{i=1}^{n} c -> n c when c does not depend on i."""
    if not isinstance(node, sp.Sum) or len(node.limits) != 1 or node.function.has(node.limits[0][0]):
        return None
    _, lo, hi = node.limits[0]
    count = hi - lo + 1
    return Built(evaluated(mul(count, node.function)) if node.function != 1 else count, notes=(("count", count),))


def complement_sum(p: Planner, node: sp.Basic) -> Built | None:
    """sum_{i != k} f_i -> sum_i f_i - f_k."""
    if not isinstance(node, ExcludedSum):
        return None
    f, idx, lo, hi, skip = node.args
    new = add(sp.Sum(f, (idx, lo, hi)), neg(substitute(f, {idx: skip})))
    return Built(new, identity=sp.Eq(node, new, evaluate=False), notes=(("index", idx), ("at", skip)))


def mean_deviation(p: Planner, node: sp.Basic) -> Built | None:
    """sum_j (a_j - mu) -> 0 where mu := 1/N sum_j a_j over the same range: the deviations from
    a mean sum to zero (N mu - N mu)."""
    if not isinstance(node, sp.Sum) or len(node.limits) != 1 or node.has(sp.Derivative):
        return None
    j, lo, hi = node.limits[0]
    for d in p.problem.definitions:
        if isinstance(d.symbol, sp.Indexed) or not isinstance(d.value, sp.Mul):
            continue
        factors = [f for f in d.value.args if isinstance(f, sp.Sum)]
        if len(factors) != 1 or len(factors[0].limits) != 1 or factors[0].limits[0][1:] != (lo, hi):
            continue
        total = factors[0]
        if d.value * hi != total:  # mu := (1/N) sum_j a_j: N mu is the sum itself
            continue
        term = substitute(total.function, {total.limits[0][0]: j})
        if sp.expand(node.function - (term - d.symbol)) == 0:
            return Built(sp.Integer(0), identity=sp.Eq(node, 0, evaluate=False), notes=(("mean", d.symbol), ("value", d.value), ("sum", node)))
    return None


def defined_names(p: Planner, node: sp.Basic) -> Built | None:
    """x_m - mu -> u_m sqrt(v + epsilon) where u_m := (x_m - mu) / sqrt(v + epsilon): a bracket
    that is the varying part of a definition is written with the defined name (the normalised
    inputs of a batch), so the result reads in the names the definitions give."""
    if not isinstance(node, sp.Add) or node.has(sp.Derivative):
        return None
    for d in p.problem.definitions:
        if not isinstance(d.symbol, sp.Indexed) or not isinstance(d.value, sp.Mul):
            continue
        cores = [f for f in d.value.args if isinstance(f, sp.Add) and f.has(*d.symbol.indices)]
        if len(cores) != 1:
            continue
        rest = sp.Mul(*[f for f in d.value.args if f is not cores[0]])
        if rest.has(*d.symbol.indices) or rest == 1:
            continue
        for sign in (1, -1):
            m = _match_indices(sign * cores[0], node, d.symbol.indices)
            if m is not None:
                name = d.symbol.xreplace(m)
                new = sign * name / rest
                return Built(new, identity=sp.Eq(node, new, evaluate=False), notes=(("term", node), ("name", name), ("value", d.value.xreplace(m))))
    return None


def named(p: Planner, node: sp.Basic) -> Built | None:
    """sum_i (o_i - y_i) W_im -> delta_m where delta_m := sum_i (o_i - y_i) W_im is defined and
    the quantity does not use it: a name the definitions give the reader (the backpropagated
    error of a hidden layer), written once the result holds what it names."""
    if not isinstance(node, sp.Sum) or node.has(sp.Derivative):
        return None
    return _defined_sum(p, node, used=False)


ALGEBRA_RULES: tuple[tuple[str, Rule], ...] = (
    ("outputs", outputs),
    ("split_sum", split_sum),
    ("sifting", sifting),
    ("split_fraction", split_fraction),
    ("algebra", simplify_terms),
    ("factor_out", factor_out),
    ("distribute", distribute),
    ("constant_sum", constant_sum),
    ("complement_sum", complement_sum),
    ("mean_deviation", mean_deviation),
    ("defined_names", defined_names),
)
"""The tidying rules, tried in this order after the derivatives are gone; each runs until it no
longer applies, then the next; the user's assumptions after all of them."""


@dataclass(frozen=True)
class Plan:
    """The steps, and the general form: the result before any assumption was used."""

    steps: tuple[Step, ...]
    general: sp.Expr


def plan(problem: Problem) -> Plan:
    """The named steps from d(quantity)/d(variable) to its value."""
    planner = Planner(problem)
    steps = planner.plan()
    return Plan(steps, planner.general)
