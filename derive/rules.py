"""The rules: a closed vocabulary, each stated once and applied by one small function.

Every function takes the current expression (the subject's value so far) and returns a
:class:`~derive.model.Step` whose ``lhs`` is that expression and whose ``rhs`` is the rewritten one.
A rule that finds nothing to rewrite raises :class:`~derive.errors.RuleError`: a derivation that
composes rules wrongly fails loudly instead of printing a step that does nothing.

Expressions are kept unevaluated where the reader should see the shape of the textbook
(``y_i / o_i * (-o_i o_k)`` before it cancels); :func:`algebra` and :func:`cancel` evaluate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable

import sympy as sp

from derive.errors import RuleError
from derive.model import Case, Definition, Label, Path, Step
from derive.setting import Setting
from derive.symbols import ExcludedSum

RULES: tuple[str, ...] = (
    "definition",
    "sum_rule",
    "constant_factor",
    "chain_rule",
    "log_derivative",
    "softmax_jacobian",
    "split_sum",
    "algebra",
    "factor_out",
    "complement_sum",
    "expand",
    "cancel",
    "normalisation",
    "scaled_logit",
    "linear_sum",
    "distribute_sign",
    "quotient_rule",
    "exp_derivative",
    "sifting",
    "split_fraction",
    "outputs",
    "common_factor",
    "delta_cases",
    "power_rule",
    "elementwise_jacobian",
    "chain_rule_sum",
    "layer_derivative",
    "derived_result",
    "log_product",
    "sigmoid_derivative",
    "tanh_derivative",
    "softplus_derivative",
    "erf_derivative",
    "product_rule",
    "linear_derivative",
    "variable_derivative",
    "zero_derivative",
    "distribute",
    "constant_sum",
    "assumption",
    "combine_sums",
    "named",
)
"""Every rule id; the templates hold one title and one justification for each."""


class Chain:
    """The steps of a derivation, collected as each rule is applied to the previous result:
    ``e = then(rules.sum_rule(e))`` records the step and returns its rhs."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __call__(self, step: Step) -> sp.Expr:
        self.steps.append(step)
        return step.rhs


# --- building unevaluated expressions ------------------------------------------------------------
def mul(*factors: sp.Basic) -> sp.Expr:
    return sp.Mul(*factors, evaluate=False)


def add(*terms: sp.Basic) -> sp.Expr:
    return sp.Add(*terms, evaluate=False)


def neg(term: sp.Basic) -> sp.Expr:
    return mul(sp.Integer(-1), term)


def rebuild(node: sp.Basic, args: Iterable[sp.Basic]) -> sp.Basic:
    args = tuple(args)
    if args == node.args:
        return node
    if isinstance(node, sp.Add) and sp.Add(*node.args).args == node.args:
        # A sum SymPy keeps in its own order is read as a polynomial (see derive.latex): the
        # rewritten terms keep the places the reader saw them in.
        new = dict(zip(node.args, args))
        return sp.Add(*(new[t] for t in node.as_ordered_terms()), evaluate=False)
    if isinstance(node, (sp.Add, sp.Mul, sp.Pow)):
        return node.func(*args, evaluate=False)
    return node.func(*args)


def rewrite(expr: sp.Basic, match: Callable[[sp.Basic], bool], build: Callable[[sp.Basic], sp.Basic]) -> tuple[sp.Basic, list[Path]]:
    """Replace every outermost sub-term that ``match`` accepts by ``build(term)``, keeping the
    rest of the tree exactly as it is; return the new tree and the paths of the replacements."""
    paths: list[Path] = []

    def walk(node: sp.Basic, path: Path) -> sp.Basic:
        if match(node):
            paths.append(path)
            return build(node)
        if not node.args or isinstance(node, (sp.Indexed, sp.Tuple)):
            return node
        return rebuild(node, (walk(a, path + (n,)) for n, a in enumerate(node.args)))

    return walk(expr, ()), paths


def substitute(expr: sp.Basic, mapping: dict[sp.Basic, sp.Basic]) -> sp.Basic:
    """``xreplace`` that keeps products and sums unevaluated (an index set to k stays visible)."""

    def by(e: sp.Basic) -> bool:
        """A derivative by something the mapping changes (d E / d z_i with i -> k)."""
        return isinstance(e, sp.Derivative) and any(v.has(*mapping) for v in e.variables)

    def hit(e: sp.Basic) -> bool:
        return e in mapping or (isinstance(e, (sp.Indexed, sp.KroneckerDelta)) and e.has(*mapping)) or by(e)

    def build(e: sp.Basic) -> sp.Basic:
        if e in mapping:
            return mapping[e]
        if by(e):
            return sp.Derivative(substitute(e.expr, mapping), *[(v.xreplace(mapping), c) for v, c in e.variable_count])
        return e.xreplace(mapping)

    new, _ = rewrite(expr, hit, build)
    return new


def find(expr: sp.Basic, match: Callable[[sp.Basic], bool]) -> list[Path]:
    """The paths of the outermost sub-terms ``match`` accepts."""
    _, paths = rewrite(expr, match, lambda e: e)
    return paths


def at(expr: sp.Basic, path: Path) -> sp.Basic:
    for n in path:
        expr = expr.args[n]
    return expr


def _apply(rule: str, expr: sp.Expr, match, build, **step) -> tuple[Step, list[Path]]:
    new, paths = rewrite(expr, match, build)
    if not paths:
        raise RuleError(f"rule {rule} does not apply to {sp.sstr(expr)}")
    return Step(rule=rule, lhs=expr, rhs=new, **step), paths


def flatten_products(expr: sp.Basic) -> sp.Basic:
    """Merge nested unevaluated products, so y_i * (1/o_i * d) prints as a single fraction."""

    def nested(e: sp.Basic) -> bool:
        return isinstance(e, sp.Mul) and any(isinstance(a, sp.Mul) for a in e.args) and not _is_signed_bracket(e)

    def flat(e: sp.Mul) -> sp.Basic:
        out: list[sp.Basic] = []
        for a in e.args:
            a = flatten_products(a)
            out.extend(a.args if isinstance(a, sp.Mul) and not _is_signed_bracket(a) else [a])
        # A sign from inside goes to the front: (1 - y_i) (-1/(1 - o_i)) reads -(1 - y_i)/(1 - o_i).
        signs = [f for f in out if f == -1]
        out = [f for f in out if f != -1 and f != 1]
        return mul(*([sp.Integer(-1)] if len(signs) % 2 else []), *out)

    new, _ = rewrite(expr, nested, flat)
    return new


def evaluated(expr: sp.Basic) -> sp.Basic:
    """Let SymPy evaluate every sum, product and power, bottom-up (derivatives and sums stay)."""
    if not expr.args or isinstance(expr, (sp.Indexed, sp.Tuple)):
        return expr
    args = [evaluated(a) for a in expr.args]
    return expr.func(*args) if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)) else rebuild(expr, args)


def _is_signed_bracket(e: sp.Basic) -> bool:
    """-(a + b): SymPy would distribute the sign; derivations keep the bracket."""
    return isinstance(e, sp.Mul) and len(e.args) == 2 and e.args[0].is_Number and isinstance(e.args[1], sp.Add)


# --- the rules --------------------------------------------------------------------------------
def definition(expr: sp.Expr, d: Definition) -> Step:
    """f -> its definition: replace a defined symbol by what it stands for."""
    step, _ = _apply("definition", expr, lambda e: e == d.symbol, lambda e: d.value, identity=sp.Eq(d.symbol, d.value, evaluate=False))
    return step


def sum_rule(expr: sp.Expr) -> Step:
    """d/dx (c sum_i f_i) -> c sum_i df_i/dx: the derivative of a sum is the sum of the derivatives.

    A summand that is itself a sum, f_i = a_i + b_i, splits the same way: da_i/dx + db_i/dx.
    """

    def split(e: sp.Basic) -> tuple[sp.Expr, sp.Sum] | None:
        if not isinstance(e, sp.Derivative):
            return None
        inner = e.expr
        if isinstance(inner, sp.Sum):
            return sp.Integer(1), inner
        if isinstance(inner, sp.Mul) and len(inner.args) == 2 and inner.args[0].is_Number and isinstance(inner.args[1], sp.Sum):
            return inner.args[0], inner.args[1]
        return None

    def build(e: sp.Derivative) -> sp.Expr:
        c, s = split(e)
        f = s.function
        inner = add(*(sp.Derivative(t, *e.variables) for t in f.args)) if isinstance(f, sp.Add) else sp.Derivative(f, *e.variables)
        moved = sp.Sum(inner, *s.limits)
        return moved if c == 1 else mul(c, moved)

    step, _ = _apply("sum_rule", expr, lambda e: split(e) is not None, build)
    return step


def constant_factor(expr: sp.Expr, setting: Setting) -> Step:
    """d/dx (c f) -> c df/dx when c does not depend on x."""

    def parts(e: sp.Basic) -> tuple[list, list] | None:
        if not (isinstance(e, sp.Derivative) and isinstance(e.expr, sp.Mul)):
            return None
        const = [f for f in e.expr.args if not setting.depends(f)]
        rest = [f for f in e.expr.args if setting.depends(f)]
        return (const, rest) if const and rest else None

    def build(e: sp.Derivative) -> sp.Expr:
        const, rest = parts(e)
        return mul(*const, sp.Derivative(sp.Mul(*rest), *e.variables))

    step, _ = _apply("constant_factor", expr, lambda e: parts(e) is not None, build)
    return step


def chain_rule(expr: sp.Expr, setting: Setting) -> Step:
    """d f(u)/dx -> df/du * du/dx, where u is an intermediate quantity that depends on x and f
    depends on x only through u (ln o_i, or (o_i - y_i)^2)."""

    def inner(e: sp.Basic) -> sp.Indexed | None:
        if not isinstance(e, sp.Derivative) or isinstance(e.expr, sp.Indexed) or e.expr.has(setting.wrt.base):
            return None
        through = {u for u in e.expr.atoms(sp.Indexed) if u.base in setting.intermediates}
        if len(through) != 1 or any(isinstance(v, sp.Indexed) and v.base in setting.intermediates for v in e.variables):
            return None
        return through.pop()

    def build(e: sp.Derivative) -> sp.Expr:
        u = inner(e)
        return mul(sp.Derivative(e.expr, u), sp.Derivative(u, *e.variables))

    step, _ = _apply("chain_rule", expr, lambda e: inner(e) is not None, build)
    return step


def log_derivative(expr: sp.Expr) -> Step:
    """d ln u / du -> 1/u; and d ln g / du -> g'/g for g = a + b u (d ln(1 - u) / du = -1/(1 - u))."""
    u = sp.Symbol("u", positive=True)

    def slope(e: sp.Basic) -> sp.Expr | None:
        """b, when e is d ln(a + b u) / du with constant a and b (b = 1 for ln u itself)."""
        if not (isinstance(e, sp.Derivative) and isinstance(e.expr, sp.log) and len(e.variables) == 1):
            return None
        g, x = e.expr.args[0], e.variables[0]
        if g == x:
            return sp.Integer(1)
        b = sp.diff(g, x) if g.has(x) else sp.Integer(0)
        return b if b.is_Number and b != 0 else None

    def build(e: sp.Derivative) -> sp.Expr:
        g, b = e.expr.args[0], slope(e)
        over = sp.Pow(g, -1, evaluate=False)
        return over if b == 1 else neg(over) if b == -1 else mul(b, over)

    step, _ = _apply(
        "log_derivative",
        expr,
        lambda e: slope(e) is not None,
        build,
        identity=sp.Eq(sp.Derivative(sp.log(u), u), 1 / u, evaluate=False),
    )
    return replace(step, rhs=flatten_products(step.rhs))


def power_rule(expr: sp.Expr) -> Step:
    """d (u - c)^n / du -> n (u - c)^(n-1): the power rule, for a base that is the variable
    shifted by a constant (c = 0 is the plain d u^n / du = n u^(n-1))."""

    def power(e: sp.Basic) -> bool:
        if not (isinstance(e, sp.Derivative) and len(e.variables) == 1 and isinstance(e.expr, sp.Pow)):
            return False
        base, n = e.expr.args
        return n.is_Number and n != 0 and sp.expand(sp.diff(base, e.variables[0])) == 1

    def build(e: sp.Derivative) -> sp.Expr:
        base, n = e.expr.args
        if n == 1:
            return sp.Integer(1)
        return mul(n, base if n == 2 else sp.Pow(base, n - 1, evaluate=False))

    found = find(expr, power)
    if not found:
        raise RuleError(f"rule power_rule does not apply to {sp.sstr(expr)}")
    first = at(expr, found[0])
    step, _ = _apply("power_rule", expr, power, build, identity=sp.Eq(first, build(first), evaluate=False))
    # n (u - c) inside a product joins its factors: 2 (o_i - y_i) d o_i / d z_k, one product.
    made = {build(at(expr, p)) for p in found}
    joined, _ = rewrite(
        step.rhs,
        lambda e: isinstance(e, sp.Mul) and any(a in made for a in e.args),
        lambda e: mul(*(f for a in e.args for f in (a.args if a in made else (a,)))),
    )
    return replace(step, rhs=joined)


def softmax_jacobian(expr: sp.Expr, setting: Setting) -> Step:
    """d o_i / d z_k -> o_i (delta_ik - o_k), that is o_i (1 - o_i) if i = k and -o_i o_k if i != k."""
    z_k = setting.wrt
    k = z_k.indices[0]

    def is_jacobian(e: sp.Basic) -> bool:
        return (
            isinstance(e, sp.Derivative)
            and isinstance(e.expr, sp.Indexed)
            and e.expr.base in setting.intermediates
            and e.variables == (z_k,)
        )

    found = [at(expr, p) for p in find(expr, is_jacobian)]
    if not found:
        raise RuleError(f"rule softmax_jacobian does not apply to {sp.sstr(expr)}")
    o_i = found[0].expr
    o, i = o_i.base, o_i.indices[0]
    compact = mul(o_i, add(sp.KroneckerDelta(i, k), neg(o[k])))
    cases = (
        Case(sp.Eq(i, k, evaluate=False), mul(o[k], add(sp.Integer(1), neg(o[k])))),
        Case(sp.Ne(i, k, evaluate=False), neg(mul(o_i, o[k]))),
    )
    step, paths = _apply(
        "softmax_jacobian", expr, is_jacobian, lambda e: compact,
        identity=sp.Eq(found[0], compact, evaluate=False), cases=cases,
    )
    return replace(step, labels=tuple(Label(p, "jacobian") for p in paths))


def elementwise_jacobian(expr: sp.Expr, setting: Setting, d: Definition, derivative: sp.Expr) -> Step:
    """d o_i / d z_k -> f'(z_i) delta_ik for an elementwise output o_i = f(z_i): f'(z_k) if i = k,
    0 if i != k. The Jacobian is diagonal.

    ``derivative`` is f' written in terms of the output ``d.symbol`` (o_i (1 - o_i) for the
    sigmoid, 1 for the identity); the rule refuses one that is not the derivative of ``d.value``.
    """
    z_k = setting.wrt
    k = z_k.indices[0]
    o_p = d.symbol
    z_p = z_k.base[o_p.indices[0]]
    if {x for x in d.value.atoms(sp.Indexed) if x.base == z_k.base} != {z_p}:
        raise RuleError(f"rule elementwise_jacobian: {sp.sstr(o_p)} = {sp.sstr(d.value)} is not a function of {sp.sstr(z_p)} alone")
    if sp.simplify(sp.diff(d.value, z_p) - derivative.xreplace({o_p: d.value})) != 0:
        raise RuleError(f"rule elementwise_jacobian: {sp.sstr(derivative)} is not the derivative of {sp.sstr(d.value)}")

    def is_jacobian(e: sp.Basic) -> bool:
        return isinstance(e, sp.Derivative) and isinstance(e.expr, sp.Indexed) and e.expr.base == o_p.base and e.variables == (z_k,)

    found = [at(expr, p) for p in find(expr, is_jacobian)]
    if not found:
        raise RuleError(f"rule elementwise_jacobian does not apply to {sp.sstr(expr)}")
    i = found[0].expr.indices[0]
    at_i = substitute(derivative, {o_p.indices[0]: i})
    delta = sp.KroneckerDelta(i, k)
    compact = delta if at_i == 1 else mul(*(at_i.args if isinstance(at_i, sp.Mul) else (at_i,)), delta)
    cases = (
        Case(sp.Eq(i, k, evaluate=False), substitute(derivative, {o_p.indices[0]: k})),
        Case(sp.Ne(i, k, evaluate=False), sp.Integer(0)),
    )
    step, paths = _apply(
        "elementwise_jacobian", expr, is_jacobian, lambda e: compact,
        identity=sp.Eq(found[0], compact, evaluate=False), cases=cases,
    )
    return replace(step, labels=tuple(Label(p, "jacobian") for p in paths))


def split_sum(expr: sp.Expr, term: sp.Expr, cases: tuple[Case, ...]) -> Step:
    """sum_i f_i -> sum_{i != k} f_i + f_k, each part with its case of ``term`` substituted."""
    eq, ne = cases
    i, k = eq.condition.args

    def is_split_sum(e: sp.Basic) -> bool:
        return isinstance(e, sp.Sum) and e.limits[0][0] == i and e.function.has(term)

    def build(e: sp.Sum) -> sp.Expr:
        _, lo, hi = e.limits[0]
        others = ExcludedSum(substitute(e.function, {term: ne.value}), i, lo, hi, k)
        own = substitute(substitute(e.function, {term: eq.value}), {i: k})
        return add(others, own)

    step, paths = _apply("split_sum", expr, is_split_sum, build)
    labels: list[Label] = []
    for p in paths:
        for part, case in ((0, ne), (1, eq)):
            labels.append(Label(p + (part,), "terms_ne" if case is ne else "term_eq"))
            piece = at(step.rhs, p + (part,))
            for q in find(piece, lambda e, v=case.value: e == v):
                labels.append(Label(p + (part,) + q, "jacobian_ne" if case is ne else "jacobian_eq"))
    return replace(step, labels=tuple(labels), cases=cases)


def algebra(expr: sp.Expr) -> Step:
    """Evaluate every product: factors cancel (y_i / o_i * (-o_i o_k) -> -y_i o_k); brackets stay."""

    def is_product(e: sp.Basic) -> bool:
        return isinstance(e, sp.Mul) and not _is_signed_bracket(e)

    step, _ = _apply("algebra", expr, is_product, evaluated)
    if step.rhs == expr:
        raise RuleError(f"rule algebra changes nothing in {sp.sstr(expr)}")
    return step


def factor_out(expr: sp.Expr, setting: Setting) -> Step:
    """sum_i c f_i -> c sum_i f_i when c does not depend on the summation index i."""

    def parts(e: sp.Basic) -> tuple[list, list] | None:
        if not isinstance(e, (sp.Sum, ExcludedSum)) or not isinstance(e.function, sp.Mul):
            return None
        idx = e.index if isinstance(e, ExcludedSum) else e.limits[0][0]
        const = [f for f in e.function.args if not f.has(idx)]
        rest = [f for f in e.function.args if f.has(idx)]
        return (const, rest) if const and rest else None

    def build(e: sp.Basic) -> sp.Expr:
        const, rest = parts(e)
        inner = e.func(sp.Mul(*rest), *e.args[1:])
        sign = [c for c in const if c == -1]
        const = [c for c in const if c != -1]
        return mul(*sign, *const, inner)

    step, paths = _apply("factor_out", expr, lambda e: parts(e) is not None, build)
    labels = []
    for p in paths:
        node = at(step.rhs, p)
        for n, a in enumerate(node.args[:-1]):
            if a != -1:
                labels.append(Label(p + (n,), "independent"))
    return replace(step, labels=tuple(labels))


def complement_sum(expr: sp.Expr) -> Step:
    """sum_{i != k} f_i -> sum_i f_i - f_k: a sum that skips one term is the full sum less that term."""

    def build(e: ExcludedSum) -> sp.Expr:
        f, idx, lo, hi, skip = e.args
        return add(sp.Sum(f, (idx, lo, hi)), neg(f.xreplace({idx: skip})))

    found = find(expr, lambda e: isinstance(e, ExcludedSum))
    if not found:
        raise RuleError(f"rule complement_sum does not apply to {sp.sstr(expr)}")
    first = at(expr, found[0])
    step, _ = _apply(
        "complement_sum", expr, lambda e: isinstance(e, ExcludedSum), build,
        identity=sp.Eq(first, build(first), evaluate=False),
    )
    return step


def _monomials(e: sp.Basic, keep: tuple[sp.Basic, ...] = ()) -> list[sp.Expr]:
    """Distribute products over sums, keeping every term (nothing is collected yet); a sum in
    ``keep`` stays one factor."""
    if e in keep:
        return [e]
    if isinstance(e, sp.Add):
        return [t for a in e.args for t in _monomials(a, keep)]
    if isinstance(e, sp.Mul):
        terms = [sp.Integer(1)]
        for a in e.args:
            terms = [_times(t, u) for t in terms for u in _monomials(a, keep)]
        return terms
    return [e]


def _times(t: sp.Expr, u: sp.Expr) -> sp.Expr:
    """t u, except that SymPy may not distribute a number over a kept sum."""
    p = sp.Mul(t, u)
    return sp.Mul(t, u, evaluate=False) if isinstance(p, sp.Add) else p


def expand(expr: sp.Expr, keep: tuple[sp.Basic, ...] = ()) -> Step:
    """Multiply out every bracket (but the sums in ``keep``, which stay whole); terms that cancel
    are gathered and marked."""
    terms = _monomials(expr, keep)
    pair = next(
        ((a, b) for a in range(len(terms)) for b in range(a + 1, len(terms)) if sp.Add(terms[a], terms[b]) == 0),
        None,
    )
    if pair is None:
        rhs = add(*terms)
        labels: tuple[Label, ...] = ()
    else:
        a, b = pair
        plus, minus = sorted((terms[a], terms[b]), key=lambda t: t.could_extract_minus_sign())
        rest = [t for n, t in enumerate(terms) if n not in pair]
        rhs = add(*rest, add(plus, minus))
        labels = (Label((len(rest),), "cancel"),)
    if rhs == expr:
        raise RuleError(f"rule expand changes nothing in {sp.sstr(expr)}")
    return Step(rule="expand", lhs=expr, rhs=rhs, labels=labels)


def cancel(expr: sp.Expr, keep: tuple[sp.Basic, ...] = ()) -> Step:
    """a + b - b -> a: collect the terms (the sums in ``keep`` stay whole, as in :func:`expand`)."""
    new = sp.Add(*_monomials(expr, keep))
    if new == expr:
        raise RuleError(f"rule cancel changes nothing in {sp.sstr(expr)}")
    return Step(rule="cancel", lhs=expr, rhs=new)


def normalisation(expr: sp.Expr, statement: sp.Eq, key: str = "normalised") -> Step:
    """sum_i y_i -> 1, by the assumption that the target sums to one."""
    total, value = statement.args
    step, _ = _apply("normalisation", expr, lambda e: e == total, lambda e: value, assumptions=(key,), identity=statement)
    return replace(step, rhs=evaluated(step.rhs))


def scaled_logit(expr: sp.Expr, setting: Setting, d: Definition) -> Step:
    """d f / d z_k -> c d f / d u_k for scaled variables u_m := c z_m (c = 1/T for a temperature):
    the intermediate f depends on z_k only through u_k, and d u_k / d z_k = c."""
    z_k = setting.wrt
    u_k = d.symbol.xreplace({d.symbol.indices[0]: setting.index})
    value = d.value.xreplace({d.symbol.indices[0]: setting.index})
    c = sp.diff(value, z_k)
    if c == 0 or c.has(z_k.base) or {x for x in value.atoms(sp.Indexed)} != {z_k}:
        raise RuleError(f"rule scaled_logit: {sp.sstr(d.symbol)} = {sp.sstr(d.value)} is not a multiple of {sp.sstr(z_k.base)}")

    def is_scaled(e: sp.Basic) -> bool:
        return (
            isinstance(e, sp.Derivative)
            and e.variables == (z_k,)
            and isinstance(e.expr, sp.Indexed)
            and e.expr.base in setting.intermediates
            and e.expr.base != u_k.base
        )

    step, paths = _apply(
        "scaled_logit", expr, is_scaled, lambda e: mul(c, sp.Derivative(e.expr, u_k)),
        identity=sp.Eq(sp.Derivative(u_k, z_k), c, evaluate=False),
    )
    return replace(step, labels=tuple(Label(p, "jacobian") for p in paths))


def linear_sum(expr: sp.Expr, d: Definition) -> Step:
    """sum_i s_i -> a sum_i f_i + n b for s_i := a f_i + b (a, b independent of i, n terms): the
    sum of a defined quantity, by its definition and the linearity of the sum."""
    pattern = d.symbol.indices[0]

    def is_sum(e: sp.Basic) -> bool:
        return isinstance(e, sp.Sum) and isinstance(e.function, sp.Indexed) and e.function == d.symbol.xreplace({pattern: e.limits[0][0]})

    def build(e: sp.Sum) -> sp.Expr:
        idx, lo, hi = e.limits[0]
        terms = []
        for t in d.value.args if isinstance(d.value, sp.Add) else (d.value,):
            t = substitute(t, {pattern: idx})
            if not t.has(idx):
                terms.append(evaluated(mul(hi - lo + 1, t)))
                continue
            const = [f for f in factors_of(t) if not f.has(idx)]
            rest = [f for f in factors_of(t) if f.has(idx)]
            inner = sp.Sum(mul(*rest) if len(rest) > 1 else rest[0], (idx, lo, hi))
            terms.append(mul(*const, inner) if const else inner)
        return add(*terms) if len(terms) > 1 else terms[0]

    found = find(expr, is_sum)
    if not found:
        raise RuleError(f"rule linear_sum does not apply to {sp.sstr(expr)}")
    first = at(expr, found[0])
    step, _ = _apply("linear_sum", expr, is_sum, build, identity=sp.Eq(first, build(first), evaluate=False))
    return step


def distribute_sign(expr: sp.Expr) -> Step:
    """a - (b + c) -> a - b - c: a minus sign in front of a bracket goes to every term inside."""

    def is_sum_with_bracket(e: sp.Basic) -> bool:
        return isinstance(e, sp.Add) and any(_is_signed_bracket(t) and t.args[0] == -1 for t in e.args)

    def build(e: sp.Add) -> sp.Expr:
        out = []
        for t in e.args:
            if _is_signed_bracket(t) and t.args[0] == -1:
                out.extend(neg(u) for u in t.args[1].args)
            else:
                out.append(t)
        return add(*out)

    step, _ = _apply("distribute_sign", expr, is_sum_with_bracket, build)
    return step


def quotient_rule(expr: sp.Expr) -> Step:
    """d/dx (u / v) -> (du/dx v - u dv/dx) / v^2."""

    def parts(e: sp.Basic) -> tuple[sp.Expr, sp.Expr] | None:
        if not (isinstance(e, sp.Derivative) and isinstance(e.expr, sp.Mul) and len(e.expr.args) == 2):
            return None
        u, v = e.expr.args
        if isinstance(u, sp.Pow) and u.exp == -1:
            u, v = v, u
        return (u, v.base) if isinstance(v, sp.Pow) and v.exp == -1 else None

    def build(e: sp.Derivative) -> sp.Expr:
        u, v = parts(e)
        x = e.variables
        return mul(add(mul(sp.Derivative(u, *x), v), neg(mul(u, sp.Derivative(v, *x)))), sp.Pow(v, -2, evaluate=False))

    step, _ = _apply("quotient_rule", expr, lambda e: parts(e) is not None, build)
    return step


def exp_derivative(expr: sp.Expr, setting: Setting) -> Step:
    """d e^{z_j} / d z_k -> delta_jk e^{z_j}: an exponential of one variable, by any variable."""
    z_k = setting.wrt

    def is_exp_derivative(e: sp.Basic) -> bool:
        return (
            isinstance(e, sp.Derivative)
            and isinstance(e.expr, sp.exp)
            and isinstance(e.expr.args[0], sp.Indexed)
            and e.expr.args[0].base == z_k.base
            and e.variables == (z_k,)
        )

    def build(e: sp.Derivative) -> sp.Expr:
        return mul(sp.KroneckerDelta(e.expr.args[0].indices[0], z_k.indices[0]), e.expr)

    found = find(expr, is_exp_derivative)
    if not found:
        raise RuleError(f"rule exp_derivative does not apply to {sp.sstr(expr)}")
    first = at(expr, found[0])
    step, _ = _apply("exp_derivative", expr, is_exp_derivative, build, identity=sp.Eq(first, build(first), evaluate=False))
    return replace(step, rhs=flatten_products(step.rhs))


def sifting(expr: sp.Expr) -> Step:
    """sum_j delta_jk f_j -> f_k: the Kronecker delta picks the one term with j = k.

    The delta may sit inside a factor of the summand (a Jacobian o_j (1 - o_j) delta_jk), and a
    summand that is a sum of such terms, each with the same delta, collapses term by term.
    """

    def delta(e: sp.Basic) -> sp.KroneckerDelta | None:
        if not isinstance(e, sp.Sum):
            return None
        j = e.limits[0][0]
        terms = e.function.args if isinstance(e.function, sp.Add) else (e.function,)
        found = [{f for f in factors_of(t) if isinstance(f, sp.KroneckerDelta) and j in f.args} for t in terms]
        shared = set.intersection(*found)
        return min(shared, key=sp.default_sort_key) if shared else None

    def drop(t: sp.Basic, d: sp.KroneckerDelta) -> sp.Basic:
        """The term without its factor d (nested products keep their shape)."""
        if t == d:
            return sp.Integer(1)
        if not isinstance(t, sp.Mul):
            return t
        rest = [drop(a, d) if a.has(d) else a for a in t.args]
        rest = [a for a in rest if a != 1]
        return mul(*rest) if len(rest) > 1 else rest[0] if rest else sp.Integer(1)

    def build(e: sp.Sum) -> sp.Expr:
        d = delta(e)
        j = e.limits[0][0]
        other = d.args[1] if d.args[0] == j else d.args[0]
        f = e.function
        kept = add(*(drop(t, d) for t in f.args)) if isinstance(f, sp.Add) else drop(f, d)
        return substitute(kept, {j: other})

    found = find(expr, lambda e: delta(e) is not None)
    if not found:
        raise RuleError(f"rule sifting does not apply to {sp.sstr(expr)}")
    first = at(expr, found[0])
    identity = sp.Eq(first, build(first), evaluate=False)
    if isinstance(first.function, sp.Add):
        # Written out, the identity would repeat the step: state the property itself.
        j, lo, hi = first.limits[0]
        f, d = sp.IndexedBase("f"), delta(first)
        identity = sp.Eq(sp.Sum(mul(d, f[j]), (j, lo, hi)), f[d.args[1] if d.args[0] == j else d.args[0]], evaluate=False)
    step, _ = _apply("sifting", expr, lambda e: delta(e) is not None, build, identity=identity)
    return step


def fraction_parts(e: sp.Basic) -> tuple[sp.Expr, sp.Expr, sp.Expr, sp.Expr] | None:
    """(a, b, c, v) when ``e`` is (a v - b c) / v^2, else None."""
    if not (isinstance(e, sp.Mul) and len(e.args) == 2):
        return None
    top, bottom = e.args
    if not (isinstance(bottom, sp.Pow) and bottom.exp == -2 and isinstance(top, sp.Add) and len(top.args) == 2):
        return None
    v = bottom.base
    first, second = (factors_of(t) for t in top.args)
    if len(first) < 2 or first[-1] != v or len(second) != 3 or second[0] != -1:
        return None
    return mul(*first[:-1]), second[1], second[2], v


def fraction_split(e: sp.Mul) -> sp.Expr:
    """(a v - b c) / v^2 -> a / v - (b / v)(c / v)."""
    a, b, c, v = fraction_parts(e)
    over = lambda x: mul(*(x.args if isinstance(x, sp.Mul) else (x,)), sp.Pow(v, -1, evaluate=False))
    return add(over(a), neg(mul(over(b), over(c))))


def split_fraction(expr: sp.Expr) -> Step:
    """(a v - b c) / v^2 -> a / v - (b / v)(c / v): one fraction over v^2 as fractions over v."""
    step, _ = _apply("split_fraction", expr, lambda e: fraction_parts(e) is not None, fraction_split)
    return step


def read_back_at(e: sp.Basic, d: Definition) -> tuple[sp.Basic, list] | None:
    """(m, the factors of d's value at m) when the product ``e`` holds every factor of the
    value of d at an index m (e^{z_m} and 1 / sum_j e^{z_j} of o_m's), else None."""
    if not isinstance(e, sp.Mul) or not isinstance(d.symbol, sp.Indexed) or len(d.symbol.indices) != 1:
        return None
    pattern = d.symbol.indices[0]
    value = d.value if isinstance(d.value, sp.Mul) else sp.Mul(d.value)
    for index in sorted({x.indices[0] for x in e.atoms(sp.Indexed) if len(x.indices) == 1}, key=sp.default_sort_key):
        wanted = [f.xreplace({pattern: index}) for f in value.args]
        if all(f in e.args for f in wanted):
            return index, wanted
    return None


def read_back(e: sp.Mul, d: Definition) -> sp.Expr:
    """The product ``e`` with d's value at m replaced by d's symbol at m, where it stood."""
    index, wanted = read_back_at(e, d)
    first = min(e.args.index(f) for f in wanted)
    rest = [f for f in e.args if f not in wanted]
    out = d.symbol.xreplace({d.symbol.indices[0]: index})
    kept = rest[:first] + [out] + rest[first:]
    return mul(*kept) if len(kept) > 1 else out


def outputs(expr: sp.Expr, d: Definition) -> Step:
    """e^{z_m} / sum_j e^{z_j} -> o_m: a definition read backwards, wherever its value appears."""
    step, _ = _apply("outputs", expr, lambda e: read_back_at(e, d) is not None, lambda e: read_back(e, d), identity=sp.Eq(d.value, d.symbol, evaluate=False))
    return step


def factors_of(term: sp.Basic) -> list[sp.Basic]:
    """The factors of a product, nested products flattened; a term that is no product is its own factor."""
    if isinstance(term, sp.Mul):
        return [f for a in term.args for f in factors_of(a)]
    return [term]


def common_factor(expr: sp.Expr) -> Step:
    """a x - x b -> x (a - b): a factor every term shares comes out in front."""

    def shared(e: sp.Basic) -> sp.Basic | None:
        if not isinstance(e, sp.Add):
            return None
        terms = [factors_of(t) for t in e.args]
        return next((f for f in terms[0] if not f.is_Number and all(f in t for t in terms[1:])), None)

    def build(e: sp.Add) -> sp.Expr:
        x = shared(e)
        rest = []
        for t in e.args:
            fs = factors_of(t)
            fs.remove(x)
            sign = [f for f in fs if f == -1]
            fs = [f for f in fs if f != -1]
            body = mul(*fs) if len(fs) > 1 else (fs[0] if fs else sp.Integer(1))
            rest.append(neg(body) if len(sign) % 2 else body)
        return mul(x, add(*rest))

    step, _ = _apply("common_factor", expr, lambda e: shared(e) is not None, build)
    return step


def delta_cases(expr: sp.Expr, subject: sp.Expr) -> Step:
    """f(delta_ik) -> f(1) if i = k, f(0) if i != k: the Kronecker delta, case by case.

    The expression is unchanged; the step states its two cases (written with i for i = k).
    """
    deltas = sorted(expr.atoms(sp.KroneckerDelta), key=sp.default_sort_key)
    if not deltas:
        raise RuleError(f"rule delta_cases does not apply to {sp.sstr(expr)}")
    d = deltas[0]
    i, k = d.args
    cases = (
        Case(sp.Eq(i, k, evaluate=False), evaluated(substitute(expr, {d: sp.Integer(1)}).xreplace({k: i}))),
        Case(sp.Ne(i, k, evaluate=False), evaluated(substitute(expr, {d: sp.Integer(0)}))),
    )
    return Step(rule="delta_cases", lhs=expr, rhs=expr, identity=sp.Eq(subject, expr, evaluate=False), cases=cases)


def chain_rule_sum(expr: sp.Expr, setting: Setting, through: sp.Indexed) -> Step:
    """d f / dx -> sum_i df/du_i du_i/dx: the chain rule in several variables, where f depends on
    x through every u_i (the error on a weight of a layer, through every logit z_i)."""
    i = through.indices[0]

    def applies(e: sp.Basic) -> bool:
        return isinstance(e, sp.Derivative) and e.variables == (setting.wrt,) and not e.expr.has(through.base)

    def build(e: sp.Derivative) -> sp.Expr:
        return sp.Sum(mul(sp.Derivative(e.expr, through), sp.Derivative(through, *e.variables)), (i, 1, setting.limit(i)))

    step, _ = _apply("chain_rule_sum", expr, applies, build)
    return step


def layer_entry(layer: Definition, p: sp.Indexed, i: sp.Basic) -> sp.Expr:
    """d z_i / d p for a layer linear in its parameters (z_i = sum_m W_im x_m + b_i): read off the
    definition term by term, a parameter entry P_{i m} meets P_{k d} where i = k (a Kronecker
    delta) and, for a summation index m, picks the term m = d. RuleError where the layer is not
    such a layer in p."""
    unit = layer.symbol.indices[0]
    value = layer.value.xreplace({unit: i})
    out = []
    for term in sp.Add.make_args(value):
        summed = term.limits[0][0] if isinstance(term, sp.Sum) else None
        factors = factors_of(term.function if summed is not None else term)
        hits = [f for f in factors if isinstance(f, sp.Indexed) and f.base == p.base]
        if not hits:
            if term.has(p.base):
                raise RuleError(f"rule layer_derivative: {sp.sstr(term)} is not a product with {p.base} as a factor")
            continue
        if len(hits) > 1 or any(f.has(p.base) for f in factors if f is not hits[0]):
            raise RuleError(f"rule layer_derivative: {sp.sstr(term)} is not linear in {p.base}")
        deltas, picked = [], {}
        for a, b in zip(hits[0].indices, p.indices):
            if a == summed:
                picked[a] = b
            elif a != b:
                deltas.append(sp.KroneckerDelta(a, b))
        if summed is not None and summed not in picked:
            raise RuleError(f"rule layer_derivative: the sum over {summed} in {sp.sstr(term)} does not pick one term")
        rest = [f.xreplace(picked) for f in factors if f is not hits[0]]
        out.append(mul(*deltas, *rest) if len(deltas) + len(rest) > 1 else (deltas + rest)[0])
    if len(out) != 1:
        raise RuleError(f"rule layer_derivative: {p} must appear in exactly one term of {sp.sstr(layer.value)}")
    return out[0]


def layer_cases(value: sp.Expr) -> tuple[Case, ...]:
    """The two cases of a layer's derivative with one Kronecker delta (none without one)."""
    deltas = sorted(value.atoms(sp.KroneckerDelta), key=sp.default_sort_key)
    if len(deltas) != 1:
        return ()
    d = deltas[0]
    return (
        Case(sp.Eq(*d.args, evaluate=False), evaluated(substitute(value, {d: sp.Integer(1)}))),
        Case(sp.Ne(*d.args, evaluate=False), evaluated(substitute(value, {d: sp.Integer(0)}))),
    )


def layer_derivative(expr: sp.Expr, setting: Setting, layer: Definition, label: str = "layer") -> Step:
    """d z_i / d p -> delta_ik c: a layer linear in its parameters (z_i = sum_m W_im x_m + b_i)
    holds the parameter p = W_kd or b_k in the unit i = k only, multiplied by c (x_d, or 1).

    The derivative is read off the definition term by term: a parameter entry P_{i m} meets
    P_{k d} where i = k (a Kronecker delta) and, for a summation index m, picks the term m = d.
    """
    p = setting.wrt
    derivative = lambda i: layer_entry(layer, p, i)

    def applies(e: sp.Basic) -> bool:
        return isinstance(e, sp.Derivative) and isinstance(e.expr, sp.Indexed) and e.expr.base == layer.symbol.base and e.variables == (p,)

    found = [at(expr, q) for q in find(expr, applies)]
    if not found:
        raise RuleError(f"rule layer_derivative does not apply to {sp.sstr(expr)}")
    first = found[0]
    value = derivative(first.expr.indices[0])
    cases = layer_cases(value)
    step, paths = _apply(
        "layer_derivative", expr, applies, lambda e: derivative(e.expr.indices[0]),
        identity=sp.Eq(first, value, evaluate=False), cases=cases,
    )
    return replace(step, labels=tuple(Label(q, label) for q in paths))


def derived_result(expr: sp.Expr, result: sp.Eq, index: sp.Symbol, assumptions: tuple[str, ...] = ()) -> Step:
    """f_m -> its value, by a result derived (and verified) on its own: ``result`` states it for
    the index ``index`` (dE/dz_k = o_k sum_i y_i - y_k); it applies at any index m."""
    pattern, value = result.args

    def where(e: sp.Basic) -> sp.Basic | None:
        """The index at which ``e`` is the result's left-hand side."""
        if type(e) is not type(pattern):
            return None
        candidates = [index] + sorted((s for s in e.free_symbols if isinstance(s, sp.Symbol) and s.is_integer and s != index), key=str)
        return next((c for c in candidates if pattern.xreplace({index: c}) == e), None)

    def build(e: sp.Basic) -> sp.Expr:
        m = where(e)
        return value if m == index else substitute(value, {index: m})

    found = [at(expr, q) for q in find(expr, lambda e: where(e) is not None)]
    if not found:
        raise RuleError(f"rule derived_result does not apply to {sp.sstr(expr)}")
    step, _ = _apply(
        "derived_result", expr, lambda e: where(e) is not None, build,
        identity=sp.Eq(found[0], build(found[0]), evaluate=False), assumptions=assumptions,
    )
    return step
