"""What a document shows beyond the steps, checked against the derivation before it is written.

:mod:`derive.verify` checks the steps, the result and a concrete H's entries; a document also shows
numbers and marks that are not steps. Each is checked here against the derivation's own
definitions, claims and result, evaluated anew (never taken from the code that computed it):

- the underbraces: each label names its sub-term (a derivative the rule replaced, the terms of a
  sum with one index left out or that one term, a factor free of the summation index, a sum that
  is 0), checked at random points for several H;
- the pitfall's table: the outputs from the definition at the example's logits, the true
  gradient from the result, each other column from the claims it shows, and what the sentence
  under it says of them (the classic example, the shortcut right for the target class only);
- a worked example's outputs (probabilities), from the definitions at its logits;
- the error written out for a concrete H: the definition with its sum written out;
- the sum of a worked example's gradient: central differences of the error along every logit
  at once.

Each check can fail, and the tests plant an error in each place (tests/test_shown.py).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator, Mapping

import mpmath
import sympy as sp

from derive.model import Derivation, Example, JacobianExample, LayerExample, Step
from derive.equality import plain, same
from derive.numeric import Evaluator, at_random
from derive.setting import Setting, expand_sums
from derive.symbols import ExcludedSum
from derive.verify import Check, extents

DIGITS = 50
"""Working digits of the numeric checks here."""
CLOSE = mpmath.mpf(10) ** -25
"""Relative agreement of a shown number (stored with 30 digits) and its value."""
SIZES = (2, 3, 5)
"""The class counts a label is checked at, each at POINTS random points."""
POINTS = 2


def checks(d: Derivation, concrete: bool = False) -> Iterator[Check]:
    """The checks of what ``d``'s documents show beyond the steps: those of the symbolic
    document (the labels, the pitfall), or with ``concrete`` those of the appendix for a
    concrete H (after its own checks)."""
    if not concrete:
        if any(s.labels for x in (d, *d.parts) for s in x.steps):
            yield labels(d)
        if d.pitfall is not None:
            yield pitfall(d)
    elif d.concrete is not None:
        if d.concrete.loss is not None:
            yield written_error(d)
        yield outputs(d)
        if isinstance(d.concrete.example, Example):
            yield gradient_sum(d)


# --- the underbraces -------------------------------------------------------------------------------
def labels(d: Derivation) -> Check:
    """Each label of each step names the sub-term it stands under (see :data:`MEANINGS`)."""
    what = "the labels under the sub-terms"
    method = f"each labelled sub-term against what its label names, mpmath at random points for H = {', '.join(map(str, SIZES))}"
    for x in (d, *d.parts):
        for n, step in enumerate(x.steps, 1):
            names = named(x.steps, n - 1, x.setting)
            for label in step.labels:
                meaning = MEANINGS.get(label.key, _derivative)
                problem = meaning(x.setting, step, label.path)
                if problem is None and label.path in names:
                    # The derivative the document prints as the label (see named).
                    derivative, condition = names[label.path]
                    problem = _differs(x.setting, _at(step.rhs, label.path), derivative, sp.sstr(derivative), condition)
                if problem is not None:
                    where = f"{x.name}: " if x is not d else ""
                    return Check(what, method, False, f"{where}step {n} ({step.rule}), label {label.key!r} at {list(label.path)}: {problem}")
    return Check(what, method, True)


def _at(e: sp.Basic, path) -> sp.Basic:
    for n in path:
        e = e.args[n]
    return e


def _split(step: Step, path) -> tuple[sp.Sum, sp.Symbol, sp.Symbol] | None:
    """The sum a split step took apart where ``path`` points into its two parts, its index, and
    the index value it took out."""
    whole = _at(step.lhs, path)
    if not (isinstance(whole, sp.Sum) and step.cases):
        return None
    index, at = step.cases[0].condition.args
    return whole, index, at


def _terms_ne(setting: Setting, step: Step, path) -> str | None:
    split = _split(step, path[:-1])
    if split is None:
        return "it does not stand under a part of a split sum"
    whole, index, at = split
    _, lo, hi = whole.limits[0]
    return _differs(setting, _at(step.rhs, path), ExcludedSum(whole.function, index, lo, hi, at), "the terms of the sum with the index left out")


def _term_eq(setting: Setting, step: Step, path) -> str | None:
    split = _split(step, path[:-1])
    if split is None:
        return "it does not stand under a part of a split sum"
    whole, index, at = split
    return _differs(setting, _at(step.rhs, path), whole.function.xreplace({index: at}), "the term of the sum at the index taken out")


def _case(setting: Setting, step: Step, path, taken_out: bool) -> str | None:
    """A case of the Jacobian put into a part of a split sum: the term the sum had at the same
    place, where the case's condition holds."""
    for cut in range(len(path) - 1, 0, -1):
        split = _split(step, path[: cut - 1])
        if split is not None and path[cut - 1] in (0, 1):
            break
    else:
        return "it does not stand inside a part of a split sum"
    whole, index, at = split
    inner = path[cut:] if path[cut - 1] == 0 else (0, *path[cut:])
    try:
        named = _at(whole, inner)
    except IndexError:
        return "the sum has no term at that place"
    condition = sp.Eq(index, at) if taken_out else sp.Ne(index, at)
    if taken_out:
        named = named.xreplace({index: at})
    return _differs(setting, _at(step.rhs, path), named, f"the term it replaced where {index} {'=' if taken_out else '!='} {at}", condition)


def _independent(setting: Setting, step: Step, path) -> str | None:
    product = _at(step.rhs, path[:-1]) if path else None
    total = product.args[-1] if isinstance(product, sp.Mul) and product.args else None
    if not isinstance(total, (sp.Sum, ExcludedSum)):
        return "it is not a factor in front of a sum"
    index = total.index if isinstance(total, ExcludedSum) else total.limits[0][0]
    if _at(step.rhs, path).has(index):
        return f"it depends on the summation index {index}"
    return None


def _cancel(setting: Setting, step: Step, path) -> str | None:
    return _differs(setting, _at(step.rhs, path), sp.Integer(0), "0")


def _derivative(setting: Setting, step: Step, path) -> str | None:
    """A label that names a derivative: the rule put its value where the derivative stood."""
    try:
        named = _at(step.lhs, path)
    except IndexError:
        named = None
    if not isinstance(named, sp.Derivative):
        return "it names nothing known: no derivative stood at that place before the step"
    return _differs(setting, _at(step.rhs, path), named, sp.sstr(named))


def named(steps: "tuple[Step, ...]", n: int, setting: Setting) -> dict[tuple, tuple[sp.Expr, sp.Basic | None]]:
    """What each label of ``steps[n]`` names where that is a derivative, with the condition it
    holds under: the derivative the step replaced at the label's place, or for a case of the
    Jacobian put into a split sum, the Jacobian of the outputs by the variable (do_i/dz_k where
    i != k, do_k/dz_k). The documents print these labels from them, so that a label says what
    stands under it in the derivation's own names."""
    step = steps[n]
    jacobian = next((s.identity.lhs for s in reversed(steps[: n + 1]) if s.identity is not None and s.cases and isinstance(s.identity.lhs, sp.Derivative)), None)
    out: dict[tuple, tuple[sp.Expr, sp.Basic | None]] = {}
    for label in step.labels:
        if label.key in ("jacobian_ne", "jacobian_eq") and jacobian is not None and step.cases:
            index, at = step.cases[0].condition.args
            derivative = sp.Derivative(jacobian.expr, setting.wrt)
            out[label.path] = (derivative.xreplace({index: at}), None) if label.key == "jacobian_eq" else (derivative, sp.Ne(index, at, evaluate=False))
            continue
        try:
            here = _at(step.lhs, label.path)
        except IndexError:
            continue
        if isinstance(here, sp.Derivative):
            out[label.path] = (here, None)
    return out


MEANINGS: dict[str, Callable[[Setting, Step, tuple], str | None]] = {
    "terms_ne": _terms_ne,
    "term_eq": _term_eq,
    "jacobian_ne": lambda s, step, p: _case(s, step, p, False),
    "jacobian_eq": lambda s, step, p: _case(s, step, p, True),
    "independent": _independent,
    "cancel": _cancel,
}
"""What each label says of its sub-term; any other label names the derivative the step replaced
at its place (the Jacobian, the derivative of a dense layer)."""


def _differs(setting: Setting, term: sp.Expr, named: sp.Expr, what: str, condition: sp.Basic | None = None) -> str | None:
    """None when ``term`` equals ``named`` at random points (where ``condition`` holds), else why not."""
    rng = random.Random(f"derive-labels:{sp.srepr(term)}")
    free = sorted(_free_indices(term) | _free_indices(named) | (condition.free_symbols if condition is not None else set()), key=str)
    for size in SIZES:
        sizes = {s: int(v) for s, v in extents(setting, size).items()}
        for _ in range(POINTS):
            for _ in range(50):
                index = {x: rng.randint(1, int(sizes.get(limit(setting, x), size))) for x in free}
                if condition is None or bool(condition.xreplace({x: sp.Integer(v) for x, v in index.items()})):
                    break
            else:
                continue
            try:
                with mpmath.workdps(DIGITS):
                    a, b = at_random(setting, (term, named), sizes, index, (), rng)
            except (TypeError, KeyError, ValueError, ZeroDivisionError) as error:
                return f"it cannot be evaluated ({error})"
            if abs(a - b) > mpmath.mpf(10) ** -(DIGITS - 10) * max(1, abs(a), abs(b)):
                at = ", ".join(f"{x} = {v}" for x, v in index.items())
                return f"it is {mpmath.nstr(a, 10)}, but {what} is {mpmath.nstr(b, 10)} (H = {size}{', ' + at if at else ''})"
    return None


def limit(setting: Setting, index: sp.Symbol) -> sp.Expr:
    """The upper limit of an index; one renamed apart (n', beside n) runs where n does."""
    if index not in setting.ranges and index.name.endswith("'"):
        for other in setting.ranges:
            if other.name == index.name.rstrip("'"):
                return setting.ranges[other]
    return setting.limit(index)


def _free_indices(e: sp.Basic) -> set[sp.Symbol]:
    bound = {lim[0] for s in e.atoms(sp.Sum) for lim in s.limits} | {s.index for s in e.atoms(ExcludedSum)}
    return {x for x in e.atoms(sp.Symbol) if x.is_integer and x not in bound and x.name.islower()}


# --- numbers at a worked example ---------------------------------------------------------------------
def example_values(d: Derivation) -> tuple[Evaluator, int]:
    """An evaluator of the derivation's expressions at its worked example: every definition, and
    the example's given numbers (logits, targets, a layer's inputs and parameters, a temperature)."""
    c = d.concrete
    ex = c.example
    n = c.classes
    s = d.setting
    sizes: dict[sp.Symbol, int] = {s.classes: n}
    values: dict[sp.Basic, object] = {}
    for symbol, value in c.parameters:
        if symbol.is_integer:
            sizes[symbol] = int(value)
        else:
            values[symbol] = _mp(value)
    y = sp.IndexedBase("y")
    if isinstance(ex, LayerExample):
        x = sp.IndexedBase("x")
        layer = d.setting.wrt.base
        bias = d.parts[0].setting.wrt.base if d.parts else sp.IndexedBase("b")
        values[x] = {(m + 1,): _mp(v) for m, v in enumerate(ex.x)}
        values[layer] = {(r + 1, m + 1): _mp(v) for r, row in enumerate(ex.W) for m, v in enumerate(row)}
        values[bias] = {(r + 1,): _mp(v) for r, v in enumerate(ex.b)}
        values[y] = {(m + 1,): _mp(v) for m, v in enumerate(ex.target)}
    else:
        values[s.wrt.base] = {(m + 1,): _mp(v) for m, v in enumerate(ex.logits)}
        if isinstance(ex, Example):
            values[y] = {(m + 1,): _mp(v) for m, v in enumerate(ex.target)}
    return Evaluator(s.definitions, sizes, values), n


EVERY = 4096
"""Up to this many classes every output of a worked example is checked; beyond, those a document
shows (the first three and the last two) and SAMPLED drawn at random, and the gradient's sum
against the sum of its entries (each checked by the concrete checks)."""
SAMPLED = 16


def _classes_checked(n: int, seed: str) -> list[int]:
    """The classes (1-based) whose numbers are checked: every one up to EVERY, beyond a sample."""
    if n <= EVERY:
        return list(range(1, n + 1))
    rng = random.Random(seed)
    return sorted({1, 2, 3, n - 1, n} | {rng.randint(1, n) for _ in range(SAMPLED)})


def outputs(d: Derivation) -> Check:
    """The outputs a worked example shows, from the definitions at its numbers."""
    ex = d.concrete.example
    n = d.concrete.classes
    what = "the worked example's outputs"
    which = "each output" if n <= EVERY else f"the outputs shown and {SAMPLED} drawn at random"
    method = f"{which} from its definition at the example's numbers (mpmath, {DIGITS} digits)"
    with mpmath.workdps(DIGITS):
        evaluator, n = example_values(d)
        output = d.setting.intermediates[0]
        for m in _classes_checked(n, f"derive-outputs:{d.name}:{n}"):
            value = evaluator.value(output[m])
            shown = _mp(ex.probabilities[m - 1])
            if not _close(shown, value):
                return Check(what, method, False, f"output {m} is shown as {mpmath.nstr(shown, 12)}, but its definition gives {mpmath.nstr(value, 12)}")
    return Check(what, method, True)


def gradient_sum(d: Derivation) -> Check:
    """The sum of the example's gradient, as shown: the derivation's result summed over the
    classes at the example's numbers, computed again with twice the digits until it settles;
    a sum that shrinks as the digits double is 0, and must be shown as 0 exactly. Beyond EVERY
    classes, against the sum of the gradient's entries (each checked by the concrete checks)."""
    from derive.concrete import magnitude

    what = "the sum of the worked example's gradient"
    c = d.concrete
    ex = c.example
    n = c.classes
    shown = ex.gradient_sum if ex.gradient_sum is not None else sum(ex.gradient, sp.Integer(0))
    if n > EVERY:
        method = "against the sum of the gradient's entries (mpmath)"
        with mpmath.workdps(DIGITS):
            converted: dict[int, mpmath.mpf] = {}
            entries = [converted.setdefault(id(g), _mp(g)) for g in ex.gradient]
            total = mpmath.fsum(entries)
            if abs(total - _mp(shown)) > mpmath.mpf(10) ** -20 * max([mpmath.mpf(1), *map(abs, converted.values())]):
                return Check(what, method, False, f"shown as {mpmath.nstr(_mp(shown), 12)}, but the entries sum to {mpmath.nstr(total, 12)}")
        return Check(what, method, True)
    method = "the result summed over the classes at the example's numbers (mpmath, with twice the digits until it settles)"
    formula = d.general.rhs if d.general is not None and "normalised" not in c.assumptions else d.result.rhs
    k = d.setting.index
    digits = DIGITS + 2 * magnitude(ex.logits)
    previous = None
    while True:
        with mpmath.workdps(digits):
            evaluator, _ = example_values(d)
            try:
                value = mpmath.fsum(evaluator.value(formula, {k: m}) for m in range(1, n + 1))
            except ZeroDivisionError:  # an output rounded to 1 at this precision
                value = None
            if value is not None and previous is not None:
                # As in concrete.settled: a sum that shrinks by half the digits when they double
                # is the rounding of an exact 0 (the identity sum_k o_k = 1).
                if value == 0 and previous == 0 or previous != 0 and abs(value) <= mpmath.mpf(10) ** -(digits // 4) * abs(previous):
                    value = mpmath.mpf(0)
                    break
                if abs(value - previous) <= mpmath.mpf(10) ** -(DIGITS + 5) * abs(value):
                    break
        if 2 * digits > 100_000:
            return Check(what, method, False, "the sum does not settle within 100000 digits")
        previous, digits = value, 2 * digits
    with mpmath.workdps(digits):
        if value == 0 and shown != 0:
            return Check(what, method, False, f"shown as {mpmath.nstr(_mp(shown), 12)}, but the sum is 0: it vanishes as the digits double")
        if not _close(_mp(shown), value):
            return Check(what, method, False, f"shown as {mpmath.nstr(_mp(shown), 12)}, but the result sums to {mpmath.nstr(value, 12)}")
    return Check(what, method, True)


def written_error(d: Derivation) -> Check:
    """The error written out for the concrete H is its definition with the sum written out:
    each term (every one up to EVERY classes, beyond those shown and a sample) and what stands
    in front of them."""
    what = "the error written out"
    method = "term by term against the definition of the error with its sum written out for this H"
    c = d.concrete
    n = c.classes
    definition = next(x for x in d.definitions if x.symbol == d.subject.expr)
    value = definition.value.xreplace({d.setting.classes: sp.Integer(n), **dict(c.parameters)})
    loss = c.loss
    if not hasattr(loss, "terms"):  # one expression
        expected = expand_sums(value)
        if not same(loss, expected):
            return Check(what, method, False, f"{plain(loss)} is not {plain(expected)}")
        return Check(what, method, True)
    sums = [a for a in sp.Mul.make_args(value) if isinstance(a, sp.Sum)]
    if len(sums) != 1 or len(sums[0].limits) != 1:
        expected = expand_sums(value)
        return Check(what, method, same(loss.expr, expected), "" if same(loss.expr, expected) else f"{plain(loss.expr)} is not {plain(expected)}")
    total = sums[0]
    front = sp.Mul(*[a for a in sp.Mul.make_args(value) if a is not total])
    if not same(loss.front if loss.front is not None else sp.Integer(1), front):
        return Check(what, method, False, f"{plain(loss.front)} stands in front of the terms, not {plain(front)}")
    if len(loss.terms) != n:
        return Check(what, method, False, f"it has {len(loss.terms)} terms for {n} classes")
    index = total.limits[0][0]
    for m in _classes_checked(n, f"derive-terms:{d.name}:{n}"):
        term, expected = loss.terms[m - 1], total.function.xreplace({index: sp.Integer(m)})
        if not same(term, expected):
            return Check(what, method, False, f"term {m} is {plain(term)}, not {plain(expected)}")
    return Check(what, method, True)


# --- the pitfall ---------------------------------------------------------------------------------
PITFALL_COLUMNS: dict[str, Callable[[Mapping[str, sp.Eq]], sp.Expr]] = {
    "shortcut": lambda c: c["shortcut_result"].rhs,
    "direct": lambda c: c["output_gradient"].rhs,
    "quotient": lambda c: c["full_value"].rhs / c["softmax_diagonal"].rhs,
}
"""Each column of the pitfall's table beside the outputs and the gradient, from the claims it
shows: the shortcut y_k (o_k - 1), dE/do_k = -y_k / o_k, and the true gradient divided by the
diagonal o_k (1 - o_k)."""


def pitfall(d: Derivation) -> Check:
    """The pitfall's numbers: the outputs from the definition at the example's logits, the
    gradient from the derivation's result, every other column from its claims; and what the
    sentence under the table says: the classic example's numbers, a shortcut that is right for
    the target class and 0 for the others, where the true gradient is the output, and a
    division that does not give back dE/do_k."""
    from derive.concrete import classic

    p = d.pitfall
    ex = p.example
    n = len(ex.logits)
    what = "the pitfall's numbers"
    method = f"outputs from the definition at the example's logits, the gradient from the result, each column from its claim (mpmath, {DIGITS} digits); the sentence on them"
    claims = {c.key: c.equation for c in p.claims}
    s = d.setting
    y = sp.IndexedBase("y")
    with mpmath.workdps(DIGITS):
        evaluator = Evaluator(s.definitions, {s.classes: n}, {s.wrt.base: {(m + 1,): _mp(v) for m, v in enumerate(ex.logits)}, y: {(m + 1,): _mp(v) for m, v in enumerate(ex.target)}})
        k = s.index
        columns = {"probabilities": (s.intermediates[0][k], ex.probabilities), "gradient": (d.result.rhs, ex.gradient)}
        columns |= {name: (formula(claims), getattr(p, name)) for name, formula in PITFALL_COLUMNS.items()}
        for name, (formula, shown) in columns.items():
            for m in range(1, n + 1):
                value = evaluator.value(formula, {k: m})
                if not _close(_mp(shown[m - 1]), value):
                    return Check(what, method, False, f"{name} of class {m} is {mpmath.nstr(_mp(shown[m - 1]), 12)}, but its formula gives {mpmath.nstr(value, 12)}")
    if not classic(ex.probabilities) or list(ex.target) != [1] + [0] * (n - 1):
        return Check(what, method, False, "the sentence speaks of the classic example, o = (0.2, 0.6, 0.2) and y = (1, 0, 0), and these are other numbers")
    for m in range(n):
        if ex.target[m] == 1 and p.shortcut[m] != ex.gradient[m]:
            return Check(what, method, False, f"the sentence says the shortcut is right for the target class {m + 1}, and it is not")
        if ex.target[m] == 0 and (p.shortcut[m] != 0 or ex.gradient[m] != ex.probabilities[m]):
            return Check(what, method, False, f"the sentence says the shortcut is 0 where the true gradient is the output, and class {m + 1} is not so")
    if all(q == v for q, v in zip(p.quotient, p.direct)):
        return Check(what, method, False, "the sentence says the division does not give back dE/do_k, and it does")
    return Check(what, method, True)


# --- numbers ------------------------------------------------------------------------------------------
def _mp(v: object) -> mpmath.mpf:
    if isinstance(v, mpmath.mpf):
        return v
    v = sp.sympify(v)
    if v.is_Rational:
        return mpmath.mpf(v.p) / v.q
    if isinstance(v, sp.Float):
        return mpmath.mpf(v._mpf_)
    return mpmath.mpf(sp.N(v, mpmath.mp.dps + 10))


def _close(shown: mpmath.mpf, value: mpmath.mpf) -> bool:
    return abs(shown - value) <= CLOSE * max(abs(value), abs(shown)) or (shown == 0 and abs(value) <= CLOSE)
