"""Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k, for a symbolic number of classes H.

The planner derives the steps from derive/catalog/softmax-ce.toml, in the order of reasoning of
the classic derivation: sum rule, constant factor, chain rule, derivative of the log, the softmax
Jacobian with its two cases, splitting the sum at i = k, the algebra, and only at the end the
assumption that the target sums to one.

Two options change the setting, and each adds steps to the same chain (planned from
softmax-ce-temperature.toml, softmax-ce-label-smoothing.toml, or both options' file):

- ``temperature`` T: the outputs are the softmax of the scaled logits z~_i = z_i / T. The chain
  rule through z~_k brings the factor dz~_k / dz_k = 1 / T, the softmax Jacobian is taken with
  respect to z~, and the result is (o_k - y_k) / T. T stays a symbol in the steps; its value is
  used by the worked example.
- ``label_smoothing`` eps: the error is taken against y'_i = (1 - eps) y_i + eps / H. The steps
  run with y' in place of y; the sum of y' follows from its definition, (1 - eps) sum_i y_i + eps,
  which the normalisation of y makes 1; the result o_k - y'_k is then written out in y.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Sequence

import mpmath
import sympy as sp

from derive import concrete, rules
from derive.derivations.naming import option_text
from derive.errors import UsageError
from derive.model import Assumption, Claim, Concrete, Definition, Derivation, Example, Label, Pitfall, RuleMatrix, Step
from derive.setting import Setting
from derive.symbols import E, H, i, j, k, o, y, z

SOFTMAX = Definition("softmax", o[i], sp.exp(z[i]) / sp.Sum(sp.exp(z[j]), (j, 1, H)))
LOSS = Definition("cross_entropy", E, -sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)))
NORMALISED = Assumption("normalised", sp.Eq(sp.Sum(y[i], (i, 1, H)), 1, evaluate=False))

SETTING = Setting(wrt=z[k], definitions=(LOSS, SOFTMAX))

# --- the options --------------------------------------------------------------------------------
T = sp.Symbol("T", positive=True)
"""The temperature."""
EPSILON = sp.Symbol("epsilon", nonnegative=True)
"""The label smoothing."""
scaled = sp.IndexedBase(r"\tilde{z}")
"""The scaled logits z_i / T."""
smoothed = sp.IndexedBase("y'")
"""The smoothed target."""

SCALED = Definition("scaled_logits", scaled[i], z[i] / T)
TEMPERED = Definition("tempered_softmax", o[i], sp.exp(scaled[i]) / sp.Sum(sp.exp(scaled[j]), (j, 1, H)))
SMOOTHED = Definition(
    "smoothed_target",
    smoothed[i],
    rules.add(rules.mul(rules.add(sp.Integer(1), rules.neg(EPSILON)), y[i]), rules.mul(EPSILON, sp.Pow(H, -1))),
)
SMOOTHED_LOSS = Definition("smoothed_cross_entropy", E, -sp.Sum(smoothed[i] * sp.log(o[i]), (i, 1, H)))
OPTIONS = ("temperature", "label_smoothing")
"""The options, in the order the documents name them."""


def setting(temperature: bool = False, smoothing: bool = False) -> Setting:
    """The setting of softmax-ce with the given options (each definition once, symbols first)."""
    if not (temperature or smoothing):
        return SETTING
    definitions = (SMOOTHED_LOSS if smoothing else LOSS, TEMPERED if temperature else SOFTMAX)
    definitions += (SCALED,) * temperature + (SMOOTHED,) * smoothing
    return Setting(wrt=z[k], definitions=definitions, intermediates=(o, scaled) if temperature else (o,))


def steps(temperature: bool = False, smoothing: bool = False) -> tuple[Step, ...]:
    """The steps, planned from the catalog's spec file: derive/catalog/softmax-ce.toml without
    options, softmax-ce-temperature.toml, softmax-ce-label-smoothing.toml or both options'
    softmax-ce-temperature-label-smoothing.toml with them."""
    if not (temperature or smoothing):
        return planned()
    return optioned(temperature, smoothing)


def planned() -> tuple[Step, ...]:
    """softmax-ce's steps as the planner derives them from the catalog's spec file."""
    from derive.derivations.steps import planned as from_spec

    return from_spec("softmax-ce")


def optioned(temperature: bool, smoothing: bool) -> tuple[Step, ...]:
    """softmax-ce's steps with its options, as the planner derives them from the spec file of
    the options given. The spec's scaled logit s_i is written z~_i here and its smoothed target
    q_i is y'_i, whose definition keeps the order of terms of SMOOTHED; the Jacobian the plan
    cites with a temperature is the softmax one by z~, its underbrace says so."""
    from derive.derivations.steps import planned as from_spec

    s_, q = sp.IndexedBase("s"), sp.IndexedBase("q")
    names = {s_: scaled, q: smoothed, sp.Symbol("T"): T, sp.Symbol("epsilon"): EPSILON}
    spelled = {smoothed: q, EPSILON: sp.Symbol("epsilon")}
    written = (Definition(SMOOTHED.key, q[i], rules.substitute(SMOOTHED.value, spelled)),) if smoothing else ()
    name = "softmax-ce" + "-temperature" * temperature + "-label-smoothing" * smoothing
    return tuple(
        replace(s, labels=tuple(Label(x.path, "scaled_jacobian") for x in s.labels)) if temperature and s.rule == "softmax_jacobian" else s
        for s in from_spec(name, written=written, names=names)
    )


def appendix(ex: Example, all_steps: Sequence[Step], general: sp.Expr, loss: Definition) -> Concrete:
    """The appendix for a concrete H, written from the derivation: the error from its definition
    with the sum written out, the Jacobian from the cases the split sum put in, the gradient from
    the result, or from the general form when the example's target does not sum to one."""
    n = len(ex.logits)
    normal = concrete.normalised(ex.target)
    formula = all_steps[-1].rhs if normal else general
    fixed = {H: sp.Integer(n)}
    return Concrete(
        classes=n,
        loss=concrete.written_out(loss.value, H, n, {}),
        jacobian=jacobian_of(all_steps, n),
        gradient=concrete.gradient_vector(formula, n, fixed),
        example=ex,
        assumptions=(NORMALISED.key,) if normal else (),
    )


def jacobian_of(all_steps: Sequence[Step], n: int, parameters: dict | None = None) -> RuleMatrix:
    """The n x n Jacobian of the outputs by the logits, from the cases the split sum put in (its
    step is checked: each case where its condition holds); ``parameters`` (a temperature) become
    their values."""
    return cases_matrix(next(s for s in all_steps if s.rule == "split_sum"), n, parameters)


def cases_matrix(step: Step, n: int, parameters: dict | None = None) -> RuleMatrix:
    """The n x n matrix of a step's two cases, i = k on the diagonal and i != k elsewhere (the
    step's checks verify each case where its condition holds)."""
    same, other = (c.value.xreplace(parameters).doit() if parameters else c.value for c in step.cases)
    return RuleMatrix(n, i, k, same, other)


def pitfall() -> Pitfall:
    """Why dividing by do_k/dz_k fails: every o_i depends on z_k, so the chain rule sums over i.

    The counterexample uses the seed's numbers, O = (0.2, 0.6, 0.2) and y = (1, 0, 0).
    """
    at_k = replace(SETTING, wrt=z[k], index=k)
    dE_do = sp.Derivative(E, o[k])
    do_dz = sp.Derivative(o[k], z[k])
    full = sp.Sum(sp.Derivative(E, o[i]) * sp.Derivative(o[i], z[k]), (i, 1, H))
    # Linear outputs with half the sum of squares: the seed comment's regression case.
    linear = Setting(
        wrt=z[k],
        index=k,
        definitions=(
            Definition("squared_error", E, sp.Rational(1, 2) * sp.Sum((o[i] - y[i]) ** 2, (i, 1, H))),
            Definition("linear", o[i], z[i]),
        ),
    )
    claims = (
        Claim("output_gradient", sp.Eq(dE_do, -y[k] / o[k], evaluate=False), True, at_k),
        Claim("softmax_diagonal", sp.Eq(do_dz, o[k] * (1 - o[k]), evaluate=False), True, at_k),
        Claim("shortcut", sp.Eq(sp.Derivative(E, z[k]), rules.mul(dE_do, do_dz), evaluate=False), False, at_k, ("normalised",)),
        Claim("shortcut_value", sp.Eq(rules.mul(dE_do, do_dz), rules.mul(-y[k] / o[k], o[k] * (1 - o[k])), evaluate=False), True, at_k),
        Claim("shortcut_result", sp.Eq(rules.mul(-y[k] / o[k], o[k] * (1 - o[k])), y[k] * (o[k] - 1), evaluate=False), True, at_k),
        Claim("full_chain", sp.Eq(sp.Derivative(E, z[k]), full, evaluate=False), True, at_k),
        Claim("full_value", sp.Eq(full, o[k] - y[k], evaluate=False), True, at_k, ("normalised",)),
        Claim("regression", sp.Eq(sp.Derivative(E, z[k]), rules.mul(dE_do, do_dz), evaluate=False), True, linear),
        Claim("regression_value", sp.Eq(rules.mul(dE_do, do_dz), o[k] - y[k], evaluate=False), True, linear),
    )
    ex = concrete.example(3)
    return Pitfall(
        claims=claims,
        example=ex,
        shortcut=tuple(t * (p - 1) for p, t in zip(ex.probabilities, ex.target)),
        quotient=tuple((p - t) / (p * (1 - p)) for p, t in zip(ex.probabilities, ex.target)),
        direct=tuple(-t / p for p, t in zip(ex.probabilities, ex.target)),
    )


def build(
    classes: int | None = None,
    logits: Sequence | None = None,
    target: Sequence | None = None,
    temperature: object = None,
    label_smoothing: object = None,
) -> Derivation:
    if temperature is not None or label_smoothing is not None:
        return _with_options(classes, logits, target, temperature, label_smoothing)
    if classes is None and (logits is not None or target is not None):
        raise UsageError(concrete.needs_classes(logits, target))
    # Bad input fails before any symbolic work.
    example = None
    if classes is not None:
        example = concrete.example(classes, logits, target)
    all_steps = steps()
    general = next(s for s in all_steps if s.rule == "cancel")
    instance = appendix(example, all_steps, general.rhs, LOSS) if example is not None else None
    return Derivation(
        name="softmax-ce",
        subject=sp.Derivative(E, z[k]),
        definitions=(SOFTMAX, LOSS),
        assumptions=(NORMALISED,),
        steps=all_steps,
        setting=SETTING,
        general=sp.Eq(sp.Derivative(E, z[k]), general.rhs, evaluate=False),
        pitfall=pitfall(),
        concrete=instance,
    )


# --- the options ----------------------------------------------------------------------------------
def _option(value: object, option: str, low: sp.Rational, low_included: bool, high: sp.Rational | None = None) -> sp.Rational:
    """An option's value as an exact number within its range (0.1 is 1/10, not the nearest double)."""
    if isinstance(value, sp.Rational):
        number, text = value, option_text(value)
    else:
        text = repr(value) if isinstance(value, float) else str(value).strip()
        try:
            if isinstance(value, bool) or not mpmath.isfinite(mpmath.mpf(text)):
                raise ValueError
            number = sp.Rational(text)
        except (ValueError, TypeError):
            raise UsageError(f"{option} must be a finite number, not {value!r}") from None
    if number < low or (number == low and not low_included) or (high is not None and number >= high):
        bounds = f"{'at least' if low_included else 'greater than'} {low}" + (f" and less than {high}" if high is not None else "")
        raise UsageError(f"{option} must be {bounds}, not {text}")
    return number


def temperature_of(value: object) -> sp.Rational:
    """Validate a temperature: a finite number T > 0 whose reciprocal, the scale of the gradient,
    fits in a double (the JSON document holds doubles)."""
    number = _option(value, "--temperature", sp.Integer(0), False)
    if not sp.Rational(repr(sys.float_info.min)) <= number <= sp.Rational(repr(sys.float_info.max)):
        low, high = sys.float_info.min, sys.float_info.max
        raise UsageError(f"--temperature must be between {low:.3g} and {high:.3g} (T and 1/T must fit in a double), not {option_text(value)}")
    return number


def label_smoothing_of(value: object) -> sp.Rational:
    """Validate a label smoothing: a number with 0 <= eps < 1."""
    return _option(value, "--label-smoothing", sp.Integer(0), True, sp.Integer(1))


def _with_options(classes, logits, target, temperature, label_smoothing) -> Derivation:
    """softmax-ce at a temperature, with label smoothing, or both: T and eps are symbols in the
    steps, and their values are those of the worked example."""
    values = {}
    if temperature is not None:
        values[T] = temperature_of(temperature)
    if label_smoothing is not None:
        values[EPSILON] = label_smoothing_of(label_smoothing)
    given = concrete.inputs(classes, logits, target)  # bad input fails before any symbolic work
    tempered, smoothing = T in values, EPSILON in values
    at = setting(tempered, smoothing)
    all_steps = steps(tempered, smoothing)
    general = next(n for n, s in enumerate(all_steps) if s.rule == "normalisation") - 1
    subject = sp.Derivative(E, z[k])
    options = tuple((key, values[s]) for key, s in zip(OPTIONS, (T, EPSILON)) if s in values)
    concrete_ = None
    if given is not None:
        def written(e: sp.Expr) -> sp.Expr:
            """y' written out in y: the appendix's checks know the outputs and the targets only."""
            return e.xreplace({smoothed[m]: SMOOTHED.value.xreplace({i: m}) for m in (i, k)})

        concrete_ = concrete.loss_instance(
            given,
            at,
            at.definitions[0],
            written(all_steps[-1].rhs),
            jacobian_of(all_steps, given.classes, values),
            general=written(all_steps[general].rhs),
            assumptions=(NORMALISED.key,),
            parameters=values,
            extra=lambda numbers: _extra(numbers, given.classes, options, smoothing),
        )
    return Derivation(
        name="softmax-ce",
        subject=subject,
        definitions=tuple(d for d in (SCALED, TEMPERED, SOFTMAX, SMOOTHED, SMOOTHED_LOSS, LOSS) if d in at.definitions),
        assumptions=(NORMALISED,),
        steps=all_steps,
        setting=at,
        general=sp.Eq(subject, all_steps[general].rhs, evaluate=False),
        concrete=concrete_,
        options=options,
    )


def _extra(numbers: dict, classes: int, options: tuple, smoothing: bool) -> tuple[tuple[str, object], ...]:
    """The worked example's own numbers: the smoothed target, and the values of the options."""
    from derive.verify import evaluate, symbolize

    out: list[tuple[str, object]] = [(key, value) for key, value in options]
    if smoothing:
        target = [evaluate(numbers["intermediates"][symbolize(smoothed[m])], numbers["point"]) for m in range(1, classes + 1)]
        out.append(("smoothed_target", target))
    return tuple(out)
