"""A dense layer before softmax and cross-entropy: dE/dW_kd = (o_k - y_k) x_d, dE/db_k = o_k - y_k,
for a symbolic number of classes H and of inputs D.

The planner derives the weights' and the bias' steps from derive/catalog/dense-softmax-ce.toml:
the chain rule through every logit z_i, the derivative of the layer (z_i holds W_kd only when
i = k), the sifting property of the Kronecker delta, then the gradient with respect to the
logits, cited from the softmax-ce derivation, and the normalisation of the target. Over a
training set the error and its gradient are sums over the examples, a third chain composed here
(see training_set).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import sympy as sp

from derive import concrete, rules
from derive.derivations.steps import planned
from derive.derivations.softmax_ce import LOSS, NORMALISED, SOFTMAX
from derive.concrete import numbers
from derive.errors import UsageError
from derive.model import Assumption, Definition, Derivation, Step
from derive.setting import Setting
from derive.symbols import E, H, i, j, k, o, y, z

W, x, b = sp.IndexedBase("W"), sp.IndexedBase("x"), sp.IndexedBase("b")
D, N = (sp.Symbol(name, integer=True, positive=True) for name in "DN")
d, m, n = (sp.Symbol(name, integer=True, positive=True) for name in "dmn")
"""d: the input of the weight we differentiate by; m: a summation index over the inputs; n: a
training example."""

MAX_INPUTS = 64
MAX_WEIGHTS = 4096
"""H D at most: every weight's gradient entry is checked exactly, and the example's by finite
differences."""
DEFAULT_INPUTS = 2
"""The worked example's number of inputs when --inputs is not given."""

LAYER = Definition("dense", z[i], rules.add(sp.Sum(rules.mul(W[i, m], x[m]), (m, 1, D)), b[i]))
INPUTS = {d: D, m: D}
WEIGHTS = Setting(wrt=W[k, d], definitions=(LOSS, SOFTMAX, LAYER), intermediates=(o, z), outer=(d,), ranges=INPUTS)
BIAS = Setting(wrt=b[k], definitions=(LOSS, SOFTMAX, LAYER), intermediates=(o, z), ranges=INPUTS)


LABELS = {"W_kd": "layer_weights", "b_k": "layer_bias"}
"""The underbrace of each parameter's layer derivative, by the variable of the spec file."""


def chain(variable: str) -> tuple[Step, ...]:
    """One parameter's gradient, planned from the catalog's spec file
    (derive/catalog/dense-softmax-ce.toml): through every logit, the layer, the sifting, the
    logits' gradient cited from softmax-ce, the normalisation of the target."""
    steps = planned("dense-softmax-ce", names={sp.Symbol("D", integer=True, positive=True): D}, wrt=variable)
    return tuple(replace(s, labels=tuple(replace(l, key=LABELS[variable]) if l.key == "jacobian" else l for l in s.labels)) for s in steps)


# --- over a training set: E = sum_n E_n, every quantity of example n carries the index n ----------
TOTAL = Definition(
    "training_set", E, sp.Sum(-sp.Sum(y[n, i] * sp.log(o[n, i]), (i, 1, H)), (n, 1, N)),
)
EXAMPLES = Setting(
    wrt=W[k, d],
    definitions=(
        TOTAL,
        Definition("softmax", o[n, i], sp.exp(z[n, i]) / sp.Sum(sp.exp(z[n, j]), (j, 1, H))),
        Definition("dense", z[n, i], rules.add(sp.Sum(rules.mul(W[i, m], x[n, m]), (m, 1, D)), b[i])),
    ),
    intermediates=(o, z),
    constraints={"normalised": lambda size: each_normalised(size)},
    outer=(d,),
    ranges={**INPUTS, n: N},
)
EACH_NORMALISED = Assumption("normalised", sp.Eq(sp.Sum(y[n, i], (i, 1, H)), 1, evaluate=False))


def each_normalised(size: int) -> dict[sp.Basic, sp.Expr]:
    """sum_i y_ni = 1 for every example n a check writes out, by solving for the last entry."""
    from derive.verify import OTHER_MOST

    return {y[e, size]: 1 - sum((y[e, c] for c in range(1, size)), sp.Integer(0)) for e in range(1, OTHER_MOST + 1)}


def training_set() -> Derivation:
    """dE/dW_kd for the error summed over a training set, planned from the spec file over a
    batch (``reduction = "sum"``, the layer shared by the examples): the sum rule, then the
    weights' result of this document, for one example, at every example n."""
    steps = planned("dense-softmax-ce", names={sp.Symbol("D", integer=True, positive=True): D}, wrt="W_kd", reduction="sum")
    subject = sp.Derivative(E, W[k, d])
    if steps[0].rhs != sp.Derivative(TOTAL.value, W[k, d]):
        raise AssertionError(f"the training set's error is not the spec file's over a batch: {steps[0].rhs}")
    return Derivation("training-set", subject, (TOTAL,), (EACH_NORMALISED,), steps, EXAMPLES)


# --- the command ---------------------------------------------------------------------------------
def inputs_of(inputs: object) -> int:
    """Validate --inputs: a whole number of inputs 1..MAX_INPUTS."""
    text = str(inputs).strip()
    try:
        count = int(text) if not isinstance(inputs, int) or isinstance(inputs, bool) else inputs
    except ValueError:
        raise UsageError(f"--inputs must be a whole number of inputs, not {text!r}") from None
    if isinstance(count, bool) or not 1 <= count <= MAX_INPUTS:
        raise UsageError(f"--inputs must be between 1 and {MAX_INPUTS}, not {text}")
    return count


LETS = ("x", "W", "b")
"""What --let gives the worked example: the inputs, the weights (rows by ';'), the biases."""


def lets(let: Sequence[str] | Mapping[str, object], classes: int, inputs: int | None) -> tuple[dict[str, tuple], int]:
    """Parse and check --let NAME=VALUES: ``x=1,2``, ``W=1,2;3,4;5,6`` (one row of D numbers per
    class, rows by ';'), ``b=0,1,0`` (one per class); in Python also a mapping of a name to
    numbers (nested for W). Return the values by name and the number of inputs D: --inputs, else
    the length of x, else the columns of W, else DEFAULT_INPUTS."""
    items = list(let.items()) if isinstance(let, Mapping) else [_assignment(text) for text in let or ()]
    values: dict[str, list] = {}
    for name, value in items:
        if name not in LETS:
            hint = " (the target is --target)" if name in ("y", "t", "target") else ""
            raise UsageError(f"--let {name}: dense-softmax-ce takes --let for x, W and b{hint}")
        if name in values:
            raise UsageError(f"--let {name} is given twice")
        if isinstance(value, str):
            rows = [row.split(",") for row in value.split(";")]
        else:
            rows = [list(row) for row in value] if name == "W" else [list(value)]
        if name != "W" and len(rows) > 1:
            raise UsageError(f"--let {name} is one row of numbers separated by commas; only W has rows (by ';')")
        values[name] = rows if name == "W" else rows[0]
    widths = {"x": len(values["x"])} if "x" in values else {}
    if "W" in values:
        if len({len(row) for row in values["W"]}) > 1:
            raise UsageError(f"--let W: every row needs the same number of entries, one per input, not {', '.join(str(len(r)) for r in values['W'])}")
        widths["W"] = len(values["W"][0])
    count = inputs if inputs is not None else next(iter(widths.values()), DEFAULT_INPUTS)
    if not 1 <= count <= MAX_INPUTS:
        raise UsageError(f"--let: at most {MAX_INPUTS} inputs, not {count}")
    for name, width in widths.items():
        if width != count:
            source = "--inputs" if inputs is not None else "--let x"
            raise UsageError(f"--let {name} has {width} {'numbers' if name == 'x' else 'columns'}, but {source} makes {count} inputs")
    if "W" in values and len(values["W"]) != classes:
        raise UsageError(f"--let W needs {classes} rows, one per class (rows by ';'), but got {len(values['W'])}")
    parsed: dict[str, tuple] = {}
    for name, numbers_ in values.items():
        if name == "W":
            parsed[name] = tuple(numbers(row, f"--let W row {r}", count) for r, row in enumerate(numbers_, 1))
        else:
            size = count if name == "x" else classes
            if len(numbers_) != size:
                per = "one per input" if name == "x" else "one per class"
                raise UsageError(f"--let {name} needs {size} numbers, {per}, but got {len(numbers_)}")
            parsed[name] = numbers(numbers_, f"--let {name}", size)
    return parsed, count


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = str(text).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UsageError(f"--let must look like NAME=VALUES, e.g. x=1,2 or W=1,2;3,4;5,6, not {text!r}")
    return name.strip(), value.strip()


def build(
    classes: int | None = None, logits: Sequence | None = None, target: Sequence | None = None, inputs: object = None, let: object = None,
    weight_decay: object = None,
) -> Derivation:
    if logits is not None:
        raise UsageError("dense-softmax-ce takes no --logits: the logits are z = W x + b, computed from the example's inputs and parameters")
    if weight_decay is not None:
        return _weight_decay(classes, target, inputs, let, weight_decay)
    given_options = [name for name, value in (("--target", target), ("--inputs", inputs), ("--let", let)) if value]
    if classes is None and given_options:
        needs = "needs" if len(given_options) == 1 else "need"
        raise UsageError(f"{' and '.join(given_options)} {needs} --classes: the worked example is for a concrete number of classes")
    # Bad input fails before any symbolic work.
    given = concrete.inputs(classes, None, target) if classes is not None else None
    count = inputs_of(inputs) if inputs is not None else DEFAULT_INPUTS
    values: dict[str, tuple] = {}
    if given is not None and let:
        values, count = lets(let, given.classes, count if inputs is not None else None)
    if given is not None and given.classes * count > MAX_WEIGHTS:
        raise UsageError(f"at most {MAX_WEIGHTS} weights: {given.classes} classes and {count} inputs make {given.classes * count} (every entry is checked)")
    steps = chain("W_kd")
    bias_steps = chain("b_k")
    bias = Derivation("bias", sp.Derivative(E, b[k]), (), (NORMALISED,), bias_steps, BIAS, general=_before_last(bias_steps))
    d_ = Derivation(
        name="dense-softmax-ce",
        subject=sp.Derivative(E, W[k, d]),
        definitions=(LAYER, SOFTMAX, LOSS),
        assumptions=(NORMALISED,),
        steps=steps,
        setting=WEIGHTS,
        general=_before_last(steps),
        parts=(bias, training_set()),
    )
    if given is None:
        return d_
    options = (("inputs", sp.Integer(count)),) if inputs is not None else ()
    return replace(d_, concrete=concrete.layer_instance(given, count, d_, bias, x, values), options=options)


def _before_last(steps: tuple[Step, ...]) -> sp.Eq:
    """The result before the normalisation of the target: it holds for any target."""
    return sp.Eq(steps[0].lhs, steps[-1].lhs, evaluate=False)


def _weight_decay(classes: int | None, target: Sequence | None, inputs: object, let: object, decay: object) -> Derivation:
    """With --weight-decay LAMBDA the error is C + lambda/2 sum W^2 (C the cross-entropy):
    derived from its spec file (derive/catalog/dense-softmax-ce-weight-decay.toml) like the
    entries that are spec files, its worked example from the definitions, lambda W included."""
    from derive.derivations import from_spec

    if isinstance(let, Mapping):
        let = [f"{key}={';'.join(','.join(map(str, row)) for row in value) if key == 'W' else ','.join(map(str, value))}" for key, value in let.items()]
    size = [f"D={inputs_of(inputs)}"] if inputs is not None else None
    if classes is None and (target is not None or let or size):
        raise UsageError("--target, --inputs and --let need --classes: the worked example is for a concrete number of classes")
    return from_spec.build("dense-softmax-ce", classes=classes, target=target, let=let, size=size, weight_decay=decay)
