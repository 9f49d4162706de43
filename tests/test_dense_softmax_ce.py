"""dense-softmax-ce: a dense layer z = W x + b before softmax and cross-entropy, dE/dW_kd =
x_d (o_k - y_k) and dE/db_k = o_k - y_k, with the sum over a training set. The rule sequences of
the three chains, every step verified (for H = 1..6 with D = 1, 2 beside it), the reused
softmax-ce result checked like any step, planted errors caught (steps, cases, index ranges, the
concrete gradient entries, the example's numbers), the worked example against finite
differences, bad input, and the documents."""

import json
import random
from dataclasses import replace

import mpmath
import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import concrete, rules, verify
from derive.cli import app
from derive.concrete import layer_example_check
from derive.derivations import dense_softmax_ce as dense
from derive.derivations import softmax_ce
from derive.errors import UsageError, VerificationError
from derive.model import Case
from derive.symbols import H, i, k, o, y
from mathcheck import check_formulas, markdown_formulas

NAME = "dense-softmax-ce"
W, x, b, d, n, N = dense.W, dense.x, dense.b, dense.d, dense.n, dense.N
CHAIN = ["chain_rule_sum", "layer_derivative", "sifting", "derived_result", "normalisation"]
TRAINING = ["definition", "sum_rule", "derived_result", "normalisation"]


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation(NAME)


@pytest.fixture(scope="module")
def report(symbolic):
    return symbolic.check()


@pytest.fixture(scope="module")
def chains(symbolic):
    """Each chain (the weights, the bias, the training set) with its written-out claims, shared by
    the planted-error tests."""
    return {p.name: (p, verify.Instances(p.setting)) for p in (symbolic,) + symbolic.parts}


def _catches(chain, n, rhs):
    part, cases = chain
    step = replace(part.steps[n], rhs=rhs)
    return verify._exact(cases, step, n + 1), verify._numeric(cases, step, n + 1)


# --- the derivation -------------------------------------------------------------------------------
def test_catalog_and_rule_sequences(symbolic):
    from derive.derivations import CATALOG

    assert NAME in derive.catalog()
    assert CATALOG[NAME].description == "A dense layer before softmax-CE: dE/dW_kd = (o_k - y_k) x_d, dE/db_k = o_k - y_k"
    assert CATALOG[NAME].options == ("inputs", "let", "weight_decay", "reduction")
    bias, training = symbolic.parts
    assert [s.rule for s in symbolic.steps] == CHAIN and [s.rule for s in bias.steps] == CHAIN
    assert [s.rule for s in training.steps] == TRAINING
    assert set(CHAIN + TRAINING) <= set(rules.RULES)


def test_results(symbolic):
    bias, training = symbolic.parts
    assert symbolic.subject == sp.Derivative(dense.E, W[k, d])
    assert sp.expand(symbolic.result.rhs - (o[k] - y[k]) * x[d]) == 0
    assert sp.expand(symbolic.general.rhs.doit() - (o[k] * sp.Sum(y[i], (i, 1, H)) - y[k]) * x[d]) == 0
    assert sp.expand(bias.result.rhs - (o[k] - y[k])) == 0
    assert sp.expand(bias.general.rhs - (o[k] * sp.Sum(y[i], (i, 1, H)) - y[k])) == 0
    expected = sp.Sum((o[n, k] - y[n, k]) * x[n, d], (n, 1, N))
    assert sp.expand(training.result.rhs.function - expected.function) == 0 and training.result.rhs.limits == expected.limits
    assert [a.key for a in symbolic.assumptions] == ["normalised"]


def test_the_layer_derivative_and_its_cases(symbolic):
    weights, bias = symbolic.steps[1], symbolic.parts[0].steps[1]
    assert weights.identity == sp.Eq(sp.Derivative(dense.z[i], W[k, d]), rules.mul(sp.KroneckerDelta(i, k), x[d]), evaluate=False)
    assert {type(c.condition): c.value for c in weights.cases} == {sp.Eq: x[d], sp.Ne: 0}
    assert {type(c.condition): c.value for c in bias.cases} == {sp.Eq: 1, sp.Ne: 0}
    assert symbolic.steps[2].rhs == rules.mul(sp.Derivative(dense.E, dense.z[k]), x[d])


def test_the_reused_result_is_that_of_softmax_ce(symbolic):
    """The step that substitutes dE/dz_k cites the general form softmax-ce reaches; it needs no
    assumption, and the normalisation comes after it, as in softmax-ce."""
    cited = softmax_ce.build().general
    step = symbolic.steps[3]
    assert step.identity == cited and step.assumptions == ()
    assert symbolic.steps[4].assumptions == ("normalised",)
    cited_at_n, normalised = symbolic.parts[1].steps[2:]
    assert cited_at_n.assumptions == () and normalised.assumptions == ("normalised",)
    assert cited_at_n.identity.lhs == sp.Derivative(-sp.Sum(y[n, i] * sp.log(o[n, i]), (i, 1, H)), W[k, d])
    assert sp.expand(cited_at_n.identity.rhs.doit() - (o[n, k] * sp.Sum(y[n, i], (i, 1, H)) - y[n, k]) * x[n, d]) == 0


def test_the_training_set_is_planned_citing_the_weights_result_at_every_example(monkeypatch):
    """The part over a training set is the spec file over a batch, planned: the result for one
    example is cited at example n, only where the batch's definitions are those of one example
    with n in front. A planted rule that cites it without the example's index is caught."""
    from derive import planner
    from derive.derivations.steps import planned

    steps = planned(NAME, names={sp.Symbol("D", integer=True, positive=True): dense.D}, wrt="W_kd", reduction="mean")
    assert [s.rule for s in steps] == ["definition", "constant_factor", "sum_rule", "derived_result", "normalisation"]
    assert dict(steps[3].notes)["example"] == n

    real = planner._per_example

    def unindexed(p, node):
        built = real(p, node)
        return None if built is None else replace(built, new=built.new.replace(lambda q: isinstance(q, sp.Indexed) and len(q.indices) == 2 and q.indices[0] == n, lambda q: q.base[q.indices[1]]))

    monkeypatch.setattr(planner, "_per_example", unindexed)
    wrong = planned(NAME, names={sp.Symbol("D", integer=True, positive=True): dense.D}, wrt="W_kd", reduction="sum")
    training = dense.training_set()
    broken = replace(training, steps=wrong)
    cases = verify.Instances(training.setting)
    assert not verify._exact(cases, broken.steps[2], 3).passed


def test_a_batch_of_another_layer_does_not_cite_the_result():
    """The batch's layer without its bias is not the layer of the result: no citation, the
    planner derives the batch's gradient through every logit."""
    import tomllib

    from derive import spec as specs
    from derive.planner import plan

    one = specs.problem(specs.from_mapping(tomllib.loads('definitions = ["E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)", "z_i = sum_m W_im*x_m + b_i"]\nwrt = "W_kd"\nrange = { m = "1..D" }\n'), "one"))
    other = specs.from_mapping(tomllib.loads('definitions = ["E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)", "z_i = sum_m W_im*x_m"]\nwrt = "W_kd"\nrange = { m = "1..D" }\nshared = ["W"]\n'), "other")
    batch = replace(specs.problem(replace(other, reduction="sum")), citable=lambda: (("one", one.definitions, one.wrt, plan(one).general),))
    assert "derived_result" not in [s.rule for s in plan(batch).steps]


def test_every_step_verifies(symbolic, report):
    assert report.passed
    whats = [c.what for c in report.checks]
    for prefix, part in (("", symbolic), ("bias: ", symbolic.parts[0]), ("training-set: ", symbolic.parts[1])):
        for m, step in enumerate(part.steps, 1):
            assert whats.count(f"{prefix}step {m} ({step.rule})") == 3  # exact, numeric and at larger H
        assert f"{prefix}the result" in whats
    assert "step 2 (layer_derivative): the cases" in whats and "bias: step 2 (layer_derivative): the cases" in whats
    methods = {c.what: c.method for c in report.checks if c.method.startswith("exact")}
    assert "with D = 1, 2 in turn beside H, every d, k" in methods["step 4 (derived_result)"]
    assert "with D and N = 1, 2 in turn beside H" in methods["training-set: step 3 (derived_result)"]
    assert "every i, k" in methods["bias: step 2 (layer_derivative): the cases"]


def test_the_further_limits_take_several_values():
    values = [verify.extents(dense.EXAMPLES, h) for h in verify.SIZES]
    assert {int(v[dense.D]) for v in values} == {1, 2} and {int(v[N]) for v in values} == {1, 2}
    assert all(v[dense.D] != v[N] for v in values)
    assert list(verify.assignments(dense.WEIGHTS, 3)) == [(c, r) for c in (1, 2) for r in (1, 2, 3)]


# --- planted errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("chain, n", [("dense-softmax-ce", 0), ("dense-softmax-ce", 1), ("dense-softmax-ce", 3), ("dense-softmax-ce", 4), ("bias", 2), ("training-set", 2)])
def test_flipped_sign_is_caught(chains, chain, n):
    part, _ = chains[chain]
    exact, numeric = _catches(chains[chain], n, -part.steps[n].rhs)
    assert not exact.passed and "lhs - rhs" in exact.detail and "k = " in exact.detail
    assert not numeric.passed


def test_the_wrong_input_is_caught(chains):
    """x_k for x_d: a weight multiplies its own input."""
    part, _ = chains[NAME]
    exact, numeric = _catches(chains[NAME], 2, part.steps[2].rhs.xreplace({x[d]: x[k]}))
    assert not exact.passed and not numeric.passed


def test_a_sum_over_the_wrong_range_is_caught(chains):
    """The chain rule through D logits instead of H: the further limit D differs from H."""
    part, _ = chains[NAME]
    s = part.steps[0].rhs
    exact, _ = _catches(chains[NAME], 0, sp.Sum(s.function, (i, 1, dense.D)))
    assert not exact.passed and "D = " in exact.detail


def test_the_normalised_result_without_its_assumption_is_caught(chains):
    """Citing o_k - y_k where only the general form holds: wrong for a target that does not sum to one."""
    part, _ = chains[NAME]
    exact, _ = _catches(chains[NAME], 3, rules.mul(rules.add(o[k], rules.neg(y[k])), x[d]))
    assert not exact.passed


@pytest.mark.parametrize("chain", [NAME, "bias"])
def test_dropped_or_wrong_case_is_caught(symbolic, chain):
    part = symbolic if chain == NAME else symbolic.parts[0]
    step = part.steps[1]
    eq, ne = step.cases
    for kept in step.cases:
        check = verify._cases(part.setting, replace(step, cases=(kept,)), 2)
        assert not check.passed and "no case covers" in check.detail
    for cases in ((Case(eq.condition, eq.value + 1), ne), (eq, Case(ne.condition, sp.Integer(1)))):
        check = verify._cases(part.setting, replace(step, cases=cases), 2)
        assert not check.passed and "is wrong" in check.detail


def test_check_raises_on_a_planted_error_in_a_part(symbolic):
    bias, training = symbolic.parts
    steps = list(bias.steps)
    steps[1] = replace(steps[1], cases=steps[1].cases[:1])
    broken = replace(symbolic, parts=(replace(bias, steps=tuple(steps)), training))
    with pytest.raises(VerificationError, match=r"bias: step 2 \(layer_derivative\): the cases failed"):
        broken.check()


@pytest.mark.parametrize("part", [0, 1])
def test_wrong_result_fails_finite_differences(symbolic, part):
    p = (symbolic,) + symbolic.parts
    chain = p[part * 2]  # the weights and the training set
    wrong = replace(chain.steps[-1], rhs=chain.steps[-1].rhs + x[d] * o[k] ** 2 if part == 0 else chain.steps[-1].rhs * 2)
    broken = replace(chain, steps=chain.steps[:-1] + (wrong,))
    assert not verify._finite_differences(broken, verify.Instances(chain.setting)).passed


def test_rules_refuse_what_they_do_not_fit(symbolic):
    from derive.errors import RuleError

    with pytest.raises(RuleError, match="layer_derivative"):
        rules.layer_derivative(sp.Derivative(dense.E, W[k, d]), dense.WEIGHTS, dense.LAYER)
    with pytest.raises(RuleError, match="derived_result"):
        rules.derived_result(x[d], softmax_ce.build().general, k)
    with pytest.raises(RuleError, match="chain_rule_sum"):
        rules.chain_rule_sum(sp.Derivative(dense.E, b[k]), dense.WEIGHTS, dense.z[i])


# --- a concrete H and D ---------------------------------------------------------------------------
def test_our_example_for_three_classes():
    d3 = derive.derivation(NAME, classes=3)
    ex = d3.concrete.example
    # Weights that differ in every row and are never 0; biases that give the classic logits.
    assert ex.x == (1, 2) and ex.W == ((1, 3), (-1, 1), (-3, -1)) and ex.b == (-7, sp.log(3) - 1, 5)
    assert ex.logits == (0, sp.log(3), 0) and ex.given == ()
    assert [float(p) for p in ex.probabilities] == pytest.approx([0.2, 0.6, 0.2], abs=1e-25)
    assert [float(v) for row in ex.gradient_W for v in row] == pytest.approx([-0.8, -1.6, 0.6, 1.2, 0.2, 0.4], abs=1e-25)
    assert [float(v) for v in ex.gradient_b] == pytest.approx([-0.8, 0.6, 0.2], abs=1e-25)
    assert float(ex.loss) == pytest.approx(float(sp.log(5)), abs=1e-25)
    assert d3.concrete.parameters == ((dense.D, 2),) and d3.concrete.assumptions == ("normalised",)
    assert len(d3.concrete.by) == len(d3.concrete.gradient) == 3 * 2 + 3
    whats = [c.what for c in d3.check().checks]
    assert {"the gradient for H = 3, D = 2", "the worked example"} <= set(whats)


def _loss(weights, inputs, bias, target):
    zs = [mpmath.fsum(w * v for w, v in zip(row, inputs)) + c for row, c in zip(weights, bias)]
    top = max(zs)
    lse = top + mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in zs))
    return mpmath.fsum(t * (lse - v) for t, v in zip(target, zs))


def _random_case(seed):
    rng = random.Random(seed)
    classes, inputs = rng.randint(2, 6), rng.randint(1, 4)
    target = [f"{rng.uniform(0, 1):.4f}" for _ in range(classes)]  # need not sum to one
    return classes, inputs, target


@pytest.mark.parametrize("classes, inputs, target", [(3, None, None), (4, "3", ["0", "0.5", "0.5", "0"]), (1, "1", None), *(_random_case(seed) for seed in range(3))])
def test_examples_agree_with_finite_differences(classes, inputs, target):
    """Every entry of dE/dW and dE/db against central differences of the loss computed here."""
    dd = derive.derivation(NAME, classes=classes, inputs=inputs, target=target)
    ex = dd.concrete.example
    with mpmath.workdps(60):
        num = lambda v: mpmath.mpf(str(sp.N(v, 60)))
        ws = [[num(v) for v in row] for row in ex.W]
        xs, bs, ts = [num(v) for v in ex.x], [num(v) for v in ex.b], [num(v) for v in ex.target]
        assert abs(_loss(ws, xs, bs, ts) - num(ex.loss)) < 1e-20
        h = mpmath.mpf("1e-20")
        for r in range(classes):
            for c in range(len(xs)):
                up, down = [list(row) for row in ws], [list(row) for row in ws]
                up[r][c] += h
                down[r][c] -= h
                numeric = (_loss(up, xs, bs, ts) - _loss(down, xs, bs, ts)) / (2 * h)
                assert abs(numeric - num(ex.gradient_W[r][c])) < 1e-9, (r, c)
            up, down = list(bs), list(bs)
            up[r] += h
            down[r] -= h
            numeric = (_loss(ws, xs, up, ts) - _loss(ws, xs, down, ts)) / (2 * h)
            assert abs(numeric - num(ex.gradient_b[r])) < 1e-9, r
    dd.check()


def test_a_target_that_does_not_sum_to_one_gets_the_general_forms():
    dd = derive.derivation(NAME, classes=3, target=["1", "1", "0"])
    assert dd.concrete.assumptions == ()
    assert [float(v) for v in dd.concrete.example.gradient_b] == pytest.approx([-0.6, 0.2, 0.4], abs=1e-25)
    dd.check()
    assert "does not sum to one, so the gradients are the general forms" in derive.render(dd, "md")


def test_planted_concrete_errors_are_caught():
    dd = derive.derivation(NAME, classes=4, inputs="3")
    c = dd.concrete
    assert [x_.passed for x_ in concrete.checks(dd)] == [True, True]
    wrong = replace(c, gradient=c.gradient[:5] + (c.gradient[5] + o[1] * x[1],) + c.gradient[6:])
    failed = concrete.checks(replace(dd, concrete=wrong))
    assert [x_.passed for x_ in failed] == [False, True] and "W2_3" in failed[0].detail
    swapped = replace(c, gradient=(c.gradient[1],) + c.gradient[1:])  # dE/dW_11 claimed to be dE/dW_12
    assert not concrete.checks(replace(dd, concrete=swapped))[0].passed
    bias = replace(c, gradient=c.gradient[:-1] + (-c.gradient[-1],))
    assert not concrete.checks(replace(dd, concrete=bias))[0].passed
    with pytest.raises(VerificationError, match="gradient for H = 4, D = 3"):
        replace(dd, concrete=wrong).check()


@pytest.mark.parametrize(
    "plant, message",
    [
        (lambda ex: replace(ex, gradient_W=ex.gradient_W[:1] + ((ex.gradient_W[1][0] + sp.Float("1e-15"),) + ex.gradient_W[1][1:],) + ex.gradient_W[2:]), "dE/dW_2,1"),
        (lambda ex: replace(ex, gradient_b=ex.gradient_b[:2] + (-ex.gradient_b[2],) + ex.gradient_b[3:]), "dE/db_3"),
        (lambda ex: replace(ex, loss=ex.loss * (1 + sp.Float("1e-12"))), "loss"),
        (lambda ex: replace(ex, logits=(ex.logits[0] + 1,) + ex.logits[1:]), "logit 1"),
        (lambda ex: replace(ex, probabilities=ex.probabilities[::-1]), "output 2"),
        # With weights that differ from row to row, inputs in the wrong order or two rows of W
        # mixed up change the logits (with every weight 1, as the example once was, they did not).
        (lambda ex: replace(ex, x=ex.x[::-1]), "logit 1"),
        (lambda ex: replace(ex, W=(ex.W[1], ex.W[0]) + ex.W[2:]), "logit 1"),
        (lambda ex: replace(ex, W=tuple(row[::-1] for row in ex.W)), "logit 1"),
    ],
)
def test_wrong_example_numbers_are_caught(plant, message):
    ex = derive.derivation(NAME, classes=4, inputs="3").concrete.example
    assert layer_example_check(ex).passed
    bad = layer_example_check(plant(ex))
    assert not bad.passed and message in bad.detail


def test_reverse_mode_agrees_with_forward_mode():
    """The reverse-mode pass that checks a layer's entries gives what the forward mode gives."""
    a, b_, c = sp.symbols("a b c")
    e = sp.log(sp.exp(a * c) + b_**2) + c**3 / a * sp.exp(b_)
    names = sorted(e.free_symbols, key=str)
    field = concrete.Field(random.Random(1), names, {})
    derivatives, _ = concrete.gradient(field, e, names, {})
    for v in names:
        field.differentiate_by(v)
        assert derivatives[v] == field(e).d


def test_large_layers_stay_quick_and_bounded():
    dd = derive.derivation(NAME, classes=64)
    assert len(dd.concrete.by) == 64 * 3
    md = derive.render(dd, "md")
    assert r"\vdots" in md and "z_{64}" in md and "z_{10}" not in md
    with pytest.raises(UsageError, match="at most 4096 weights"):
        derive.derivation(NAME, classes=512, inputs="64")


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": 3, "logits": ["1", "2", "3"]}, "takes no --logits: the logits are z = W x \\+ b"),
        ({"logits": ["1", "2"]}, "takes no --logits"),
        ({"inputs": "3"}, "^--inputs needs --classes"),  # not a word of --target, which was not given
        ({"target": ["1", "0", "0"]}, "^--target needs --classes"),
        ({"target": ["1", "0", "0"], "inputs": "3"}, "^--target and --inputs need --classes"),
        ({"let": ["x=1,2"]}, "^--let needs --classes"),
        ({"classes": 3, "let": ["y=1,0,0"]}, "takes --let for x, W and b \\(the target is --target\\)"),
        ({"classes": 3, "let": ["x=1,2", "x=3,4"]}, "--let x is given twice"),
        ({"classes": 3, "let": ["W=1,2;3,4"]}, "--let W needs 3 rows, one per class"),
        ({"classes": 3, "let": ["W=1,2;3;5,6"]}, "every row needs the same number of entries"),
        ({"classes": 3, "let": ["x=1,2,3", "W=1,2;3,4;5,6"]}, "--let W has 2 columns, but --let x makes 3 inputs"),
        ({"classes": 3, "inputs": "3", "let": ["x=1,2"]}, "--let x has 2 numbers, but --inputs makes 3 inputs"),
        ({"classes": 3, "let": ["b=1,2"]}, "--let b needs 3 numbers, one per class"),
        ({"classes": 3, "let": ["x=1;2"]}, "only W has rows"),
        ({"classes": 3, "let": ["x"]}, "--let must look like NAME=VALUES"),
        ({"classes": 3, "let": ["x=1,nan"]}, "not a finite number"),
        ({"classes": 3, "let": ["W=1;2;x"]}, "--let W row 3: 'x' is not a number"),
        ({"classes": 3, "inputs": "abc"}, "--inputs must be a whole number"),
        ({"classes": 3, "inputs": "2.5"}, "--inputs must be a whole number"),
        ({"classes": 3, "inputs": "0"}, "between 1 and 64"),
        ({"classes": 3, "inputs": "65"}, "between 1 and 64"),
        ({"classes": 3, "inputs": True}, "whole number"),
        ({"classes": 0}, "at least 1"),
        ({"classes": 3, "target": ["1", "0"]}, "needs 3 numbers"),
        ({"classes": 3, "target": ["1", "-1", "1"]}, "must not be negative"),
        ({"classes": 3, "temperature": "2"}, "takes no --temperature"),
    ],
)
def test_bad_input_raises_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        derive.derivation(NAME, **kwargs)


@pytest.mark.parametrize("args", [["--classes", "3", "--logits", "1,2,3"], ["--classes", "3", "--inputs", "x"], ["--inputs", "2"], ["--classes", "3", "--let", "W=1"]])
def test_command_line_bad_input_is_one_line_exit_2(args, tmp_path):
    out = tmp_path / "out.md"
    result = CliRunner().invoke(app, [NAME, *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert not out.exists()


# --- documents ------------------------------------------------------------------------------------
def test_command_line_renders_every_text_format(tmp_path):
    for fmt in ("md", "tex", "json", "html"):
        path = tmp_path / f"out.{fmt}"
        result = CliRunner().invoke(app, [NAME, "--classes", "3", "-o", str(path)])
        assert result.exit_code == 0, result.output
        assert path.stat().st_size > 0
    md = (tmp_path / "out.md").read_text()
    assert "## The bias" in md and "## Over a training set" in md and "## Appendix: the case of $`H = 3, D = 2`$" in md
    assert r"\boxed{\frac{\partial E}{\partial b_k} = o_k - y_k}" in md
    assert r"\boxed{\frac{\partial E}{\partial W_{kd}} = \sum_{n=1}^{N} x_{nd} \left(o_{nk} - y_{nk}\right)}" in md
    assert r"\frac{\partial z_i}{\partial W_{kd}} = \delta_{ik} x_d = \begin{cases} x_d & \text{if } i = k \\ 0 & \text{if } i \neq k \end{cases}" in md
    assert r"Using $`\frac{\partial E}{\partial z_k} = o_k \sum_{i=1}^{H} y_i - y_k`$." in md
    assert "| 1 | $`0`$ | $`0.2`$ | $`1`$ | $`-0.8`$ |" in md
    assert r"\begin{pmatrix} -0.8 & -1.6 \\ 0.6 & 1.2 \\ 0.2 & 0.4 \end{pmatrix}" in md
    tex = (tmp_path / "out.tex").read_text()
    assert r"\section*{The bias}" in tex and r"\section*{Over a training set}" in tex
    html = (tmp_path / "out.html").read_text()
    assert "<h2>The bias</h2>" in html and "<h2>Over a training set</h2>" in html
    listed = CliRunner().invoke(app, ["list"]).output
    assert NAME in listed and "dE/db_k = o_k - y_k" in listed


def test_json_example_keys_and_parts():
    doc = json.loads(derive.render(derive.derivation(NAME, classes=3, inputs="3"), "json"))
    assert doc["name"] == NAME and doc["classes"] == 3 and doc["options"] == {"inputs": 3.0}
    ex = doc["example"]
    assert {"x", "W", "b", "target", "loss", "gradient_W", "gradient_b"} <= set(ex) <= {"x", "W", "b", "target", "loss", "gradient_W", "gradient_b", "logits", "probabilities"}
    assert ex["x"] == [1, 2, 3] and ex["W"] == [[1, 3, 5], [-1, 1, 3], [-3, -1, 1]] and ex["target"] == [1, 0, 0]
    assert [v for row in ex["gradient_W"] for v in row] == pytest.approx([-0.8, -1.6, -2.4, 0.6, 1.2, 1.8, 0.2, 0.4, 0.6])
    assert ex["gradient_b"] == pytest.approx([-0.8, 0.6, 0.2]) and ex["loss"] == pytest.approx(1.6094379124341003)
    assert [p["name"] for p in doc["parts"]] == ["bias", "training-set"]
    assert [s["rule"] for s in doc["parts"][0]["steps"]] == CHAIN and doc["parts"][0]["result"] == r"\frac{\partial E}{\partial b_k} = o_k - y_k"
    assert [s["rule"] for s in doc["steps"]] == CHAIN and all(c["passed"] for c in doc["checks"])
    symbolic = json.loads(derive.render(derive.derivation(NAME), "json"))
    assert "example" not in symbolic and "parts" in symbolic
    assert "parts" not in json.loads(derive.render(derive.derivation("softmax-ce"), "json"))


def test_each_step_has_its_own_words():
    md = derive.render(derive.derivation(NAME), "md")
    assert "only $`z_k`$ depends on $`W_{kd}`$" in md  # the sifting, in this derivation's words
    assert "holds the bias $`b_k`$ only when $`i = k`$" in md
    assert "the result of the softmax-ce derivation" in md
    assert r"In a sum over $`j`$" not in md


@pytest.mark.parametrize("classes, inputs", [(None, None), (3, None), (12, "12")])
def test_every_markdown_formula_parses(classes, inputs):
    md = derive.render(derive.derivation(NAME, classes=classes, inputs=inputs), "md")
    assert check_formulas(markdown_formulas(md)) == []


def test_pdf_builds(pdflatex):
    pdf = derive.render(derive.derivation(NAME, classes=3), "pdf")
    assert pdf.startswith(b"%PDF")


# --- the example's numbers: --let ---------------------------------------------------------------
@pytest.mark.parametrize("classes, inputs", [(1, 1), (2, 2), (3, 2), (3, 3), (7, 4), (12, 2)])
def test_our_weights_make_a_good_test(classes, inputs):
    """No weight is 0, no two rows and no two columns are alike, a square W is not symmetric, and
    the biases give the logits of the softmax-ce example."""
    ex = derive.derivation(NAME, classes=classes, inputs=str(inputs)).concrete.example
    assert all(w != 0 for row in ex.W for w in row)
    assert len(set(ex.W)) == classes and len(set(zip(*ex.W))) == inputs
    if classes == inputs > 1:
        assert ex.W != tuple(zip(*ex.W))
    assert ex.logits == tuple(sp.log(3) if r == 2 else 0 for r in range(1, classes + 1))


def test_let_gives_the_example_its_numbers():
    dd = derive.derivation(NAME, classes=3, let=["x=0.5,-1", "W=1,2;3,4;5,6", "b=0,0.5,-1"], target=["0", "1", "0"])
    ex = dd.concrete.example
    assert ex.x == (sp.Rational(1, 2), -1) and ex.W == ((1, 2), (3, 4), (5, 6)) and ex.b == (0, sp.Rational(1, 2), -1)
    assert ex.logits == (sp.Rational(-3, 2), -2, sp.Rational(-9, 2))  # W x + b
    assert ex.given == ("x", "W", "b", "target")
    # The same numbers as a mapping, nested for W; what is not given is ours.
    same = derive.derivation(NAME, classes=3, let={"x": [0.5, -1], "W": [[1, 2], [3, 4], [5, 6]], "b": ["0", "0.5", "-1"]}, target=["0", "1", "0"])
    assert same.concrete.example == ex
    partial = derive.derivation(NAME, classes=3, let=["W=1,2;3,4;5,6"]).concrete.example
    assert partial.x == (1, 2) and partial.logits == (0, sp.log(3), 0) and partial.given == ("W",)
    # D follows x when --inputs is not given.
    wide = derive.derivation(NAME, classes=2, let=["x=1,2,3,4"])
    assert wide.concrete.parameters == ((dense.D, 4),) and len(wide.concrete.example.W[0]) == 4
    dd.check()
    wide.check()


def test_let_on_the_command_line_and_the_same_names_in_json_and_python(tmp_path):
    out = tmp_path / "doc.json"
    result = CliRunner().invoke(app, [NAME, "--classes", "3", "--let", "x=1,2", "--let", "W=1,2;3,4;5,6", "--let", "b=0,0,0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    example = json.loads(out.read_text())["example"]
    ex = derive.derivation(NAME, classes=3, let=["x=1,2", "W=1,2;3,4;5,6", "b=0,0,0"]).concrete.example
    flat = lambda v: [float(e) for row in v for e in (row if isinstance(row, (list, tuple)) else [row])] if isinstance(v, (list, tuple)) else [float(v)]
    for name in ("x", "W", "b", "gradient_W", "gradient_b", "logits", "probabilities", "target", "loss"):
        assert flat(example[name]) == pytest.approx(flat(getattr(ex, name)), abs=1e-15), name
    assert example["W"] == [[1, 2], [3, 4], [5, 6]] and example["logits"] == [5, 11, 17]
    md = derive.render(derive.derivation(NAME, classes=3, let=["W=1,2;3,4;5,6"]), "md")
    assert "The inputs are ours, $`x_d = d`$. The weights $`W`$ are as given. The biases are ours" in md
    assert "The target is class 1." in md
    assert "--let" in CliRunner().invoke(app, [NAME, "--help"]).output
