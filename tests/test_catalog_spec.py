"""The catalog as data: each converted entry's steps come from its spec file through the planner.

What the hand-written chains guaranteed stays here as the reference: the same rules, applied by
hand in the order the documents had, give the same steps, labels and cases. Where an identity
differs, the planner states the rule in general (d u^2/du = 2u) where the hand chain wrote it out
for the step; the table says where, and the test checks that the planner's is that rule.
"""

from __future__ import annotations

import pytest
import sympy as sp

from derive import rules
from derive.derivations import dense_softmax_ce, log_softmax, mse_softmax, sigmoid_bce, softmax, softmax_ce, sse_linear
from derive.files import catalog_spec
from derive.symbols import E, i, k, o, z


def softmax_ce_by_hand() -> tuple:
    """softmax-ce's chain as it was composed by hand before the planner."""
    then = rules.Chain()
    at = softmax_ce.SETTING
    e = then(rules.definition(sp.Derivative(E, z[k]), softmax_ce.LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.constant_factor(e, at))
    e = then(rules.chain_rule(e, at))
    e = then(rules.log_derivative(e))
    jacobian = rules.softmax_jacobian(e, at)
    e = then(jacobian)
    e = then(rules.split_sum(e, jacobian.identity.rhs, jacobian.cases))
    e = then(rules.algebra(e))
    e = then(rules.factor_out(e, at))
    e = then(rules.complement_sum(e))
    e = then(rules.expand(e))
    e = then(rules.cancel(e))
    e = then(rules.normalisation(e, softmax_ce.NORMALISED.statement))
    return tuple(then.steps)


def sse_linear_by_hand() -> tuple:
    """sse-linear's chain as it was composed by hand before the planner."""
    then = rules.Chain()
    at = sse_linear.SETTING
    e = then(rules.definition(sse_linear.SUBJECT, sse_linear.LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.chain_rule(e, at))
    e = then(rules.power_rule(e))
    e = then(rules.elementwise_jacobian(e, at, sse_linear.LINEAR, sp.Integer(1)))
    e = then(rules.sifting(e))
    then(rules.algebra(e))
    return tuple(then.steps)


def sigmoid_bce_by_hand() -> tuple:
    """sigmoid-bce's chain as it was composed by hand before the planner."""
    then = rules.Chain()
    at = sigmoid_bce.SETTING
    derivative = rules.mul(o[i], rules.add(sp.Integer(1), rules.neg(o[i])))  # sigma' = o (1 - o)
    e = then(rules.definition(sigmoid_bce.SUBJECT, sigmoid_bce.LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.constant_factor(e, at))
    e = then(rules.chain_rule(e, at))
    e = then(rules.log_derivative(e))
    e = then(rules.elementwise_jacobian(e, at, sigmoid_bce.SIGMOID, derivative))
    e = then(rules.sifting(e))
    e = then(rules.algebra(e))
    e = then(rules.expand(e))
    then(rules.cancel(e))
    return tuple(then.steps)


def log_softmax_by_hand() -> tuple:
    """log-softmax's chain as it was composed by hand before the planner."""
    then = rules.Chain()
    at = log_softmax.SETTING
    e = then(rules.chain_rule(log_softmax.SUBJECT, at))
    e = then(rules.log_derivative(e))
    e = then(rules.softmax_jacobian(e, at))
    e = then(rules.algebra(e))
    then(rules.delta_cases(e, log_softmax.SUBJECT))
    return tuple(then.steps)


def softmax_ce_options_by_hand(temperature: bool, smoothing: bool) -> tuple:
    """softmax-ce's chain with its options as it was composed by hand before the planner."""
    from dataclasses import replace

    from derive.model import Case, Definition, Label

    then = rules.Chain()
    at = softmax_ce.setting(temperature, smoothing)
    e = then(rules.definition(sp.Derivative(E, z[k]), softmax_ce.SMOOTHED_LOSS if smoothing else softmax_ce.LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.constant_factor(e, at))
    e = then(rules.chain_rule(e, at))
    e = then(rules.log_derivative(e))
    if temperature:
        # The chain rule through z~_k = z_k / T gives 1/T; the Jacobian is then the softmax one in z~.
        through = rules.scaled_logit(e, at, softmax_ce.SCALED)
        e = then(through)
        jacobian = rules.softmax_jacobian(e, replace(at, wrt=softmax_ce.scaled[k]))
        e = then(replace(jacobian, labels=tuple(Label(x.path, "scaled_jacobian") for x in jacobian.labels)))
        # By z_k, the Jacobian is 1/T times the one by z~_k: its cases go into the split sum.
        factor = through.identity.rhs
        term = rules.mul(factor, jacobian.identity.rhs)
        cases = tuple(Case(c.condition, rules.mul(factor, c.value)) for c in jacobian.cases)
    else:
        jacobian = rules.softmax_jacobian(e, at)
        e = then(jacobian)
        term, cases = jacobian.identity.rhs, jacobian.cases
    e = then(rules.split_sum(e, term, cases))
    e = then(rules.algebra(e))
    e = then(rules.factor_out(e, at))
    e = then(rules.complement_sum(e))
    e = then(rules.expand(e))
    e = then(rules.cancel(e))
    if smoothing:
        e = then(rules.linear_sum(e, softmax_ce.SMOOTHED))
    e = then(rules.normalisation(e, softmax_ce.NORMALISED.statement))
    if temperature:
        e = then(rules.common_factor(e))
    if smoothing:
        d = softmax_ce.SMOOTHED
        at_k = Definition(d.key, d.symbol.xreplace({i: k}), rules.substitute(d.value, {i: k}))
        e = then(rules.definition(e, at_k))
        e = then(rules.distribute_sign(e))
    return tuple(then.steps)


def softmax_by_hand() -> tuple:
    """softmax's chain as it was composed by hand before the planner."""
    then = rules.Chain()
    e = then(rules.definition(softmax.SUBJECT, softmax_ce.SOFTMAX))
    e = then(rules.quotient_rule(e))
    e = then(rules.sum_rule(e))
    e = then(rules.exp_derivative(e, softmax.SETTING))
    e = then(rules.sifting(e))
    e = then(rules.split_fraction(e))
    e = then(rules.outputs(e, softmax_ce.SOFTMAX))
    e = then(rules.common_factor(e))
    then(rules.delta_cases(e, softmax.SUBJECT))
    return tuple(then.steps)


def mse_softmax_by_hand() -> tuple:
    """mse-softmax's chain as it was composed by hand before the planner."""
    from dataclasses import replace

    then = rules.Chain()
    at = mse_softmax.SETTING
    error = o[k] - sp.IndexedBase("y")[k]  # kept whole while the brackets are multiplied out
    e = then(rules.definition(mse_softmax.SUBJECT, mse_softmax.LOSS))
    e = then(rules.sum_rule(e))
    e = then(rules.chain_rule(e, at))
    e = then(rules.power_rule(e))
    # The 2 of the power rule leaves the sum (a number needs no "no i" underbrace) and cancels the 1/2.
    e = then(replace(rules.factor_out(e, at), labels=()))
    e = then(rules.algebra(e))
    jacobian = rules.softmax_jacobian(e, at)
    e = then(jacobian)
    e = then(rules.split_sum(e, jacobian.identity.rhs, jacobian.cases))
    e = then(rules.algebra(e))
    e = then(rules.factor_out(e, at))
    e = then(rules.complement_sum(e))
    e = then(rules.expand(e, keep=(error,)))
    e = then(rules.cancel(e, keep=(error,)))
    then(rules.common_factor(e))
    return tuple(then.steps)


def dense_by_hand(variable: str) -> tuple:
    """dense-softmax-ce's chain of one parameter as it was composed by hand before the planner:
    through every logit, the layer, the sifting, softmax-ce's general form, the normalisation."""
    dense = dense_softmax_ce
    subject, setting, label = {
        "W_kd": (sp.Derivative(E, dense.W[k, dense.d]), dense.WEIGHTS, "layer_weights"),
        "b_k": (sp.Derivative(E, dense.b[k]), dense.BIAS, "layer_bias"),
    }[variable]
    then = rules.Chain()
    e = then(rules.chain_rule_sum(subject, setting, z[i]))
    e = then(rules.layer_derivative(e, setting, dense.LAYER, label))
    e = then(rules.sifting(e))
    e = then(rules.derived_result(e, softmax_ce.build().general, k))
    then(rules.normalisation(e, softmax_ce.NORMALISED.statement))
    return tuple(then.steps)


u = sp.Symbol("u")
f = sp.IndexedBase("f")

REFERENCES = {
    # name: (the module's steps, the hand chain, rules whose identity the planner states otherwise)
    "softmax-ce": (softmax_ce.steps, softmax_ce_by_hand, {"definition", "chain_rule"}),
    "sse-linear": (sse_linear.steps, sse_linear_by_hand, {"power_rule", "sifting"}),
    "sigmoid-bce": (sigmoid_bce.steps, sigmoid_bce_by_hand, set()),
    "log-softmax": (log_softmax.steps, log_softmax_by_hand, set()),
    "softmax": (softmax.steps, softmax_by_hand, {"sifting"}),
    "mse-softmax": (mse_softmax.steps, mse_softmax_by_hand, {"power_rule"}),
    "softmax-ce --temperature": (lambda: softmax_ce.steps(temperature=True), lambda: softmax_ce_options_by_hand(True, False), set()),
    "softmax-ce --label-smoothing": (lambda: softmax_ce.steps(smoothing=True), lambda: softmax_ce_options_by_hand(False, True), set()),
    "softmax-ce --temperature --label-smoothing": (lambda: softmax_ce.steps(True, True), lambda: softmax_ce_options_by_hand(True, True), set()),
    "dense-softmax-ce": (lambda: dense_softmax_ce.chain("W_kd"), lambda: dense_by_hand("W_kd"), {"sifting"}),
    "dense-softmax-ce bias": (lambda: dense_softmax_ce.chain("b_k"), lambda: dense_by_hand("b_k"), {"sifting"}),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_spec_file_is_shipped(name):
    assert catalog_spec(name.replace(" --", "-").replace("dense-softmax-ce bias", "dense-softmax-ce")).is_file()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_planned_steps_are_the_hand_written_ones(name):
    steps, by_hand, identities = REFERENCES[name]
    planned, reference = steps(), by_hand()
    from derive.latex import latex

    assert [s.rule for s in planned] == [s.rule for s in reference]
    for a, b in zip(planned, reference):
        assert (a.labels, a.cases, a.assumptions) == (b.labels, b.cases, b.assumptions), a.rule
        # The same tree, or, where SymPy stores the terms of a sum in another order, the same
        # formula as printed, each label under the same term.
        marks = {l.path: l.key.replace("_", "") for l in a.labels}
        same = (a.lhs, a.rhs) == (b.lhs, b.rhs) or (latex(a.lhs), latex(a.rhs, marks)) == (latex(b.lhs), latex(b.rhs, marks))
        assert same, a.rule
        same_identity = a.identity == b.identity or (a.identity is not None and b.identity is not None and latex(a.identity) == latex(b.identity))
        assert same_identity or a.rule in identities, a.rule


def test_the_planner_states_the_general_rule_where_the_hand_chain_wrote_it_out():
    """sse-linear: the power rule and the sifting property are cited as rules (the step shows
    their instance), where the hand chain wrote the instance itself."""
    by_rule = {s.rule: s for s in sse_linear.steps()}
    assert by_rule["power_rule"].identity == sp.Eq(sp.Derivative(u**2, u), 2 * u, evaluate=False)
    i = sp.Symbol("i", integer=True, positive=True)
    H = sp.Symbol("H", integer=True, positive=True)
    sifting = by_rule["sifting"].identity
    assert sifting == sp.Eq(sp.Sum(rules.mul(sp.KroneckerDelta(i, k), f[i]), (i, 1, H)), f[k], evaluate=False)


def test_a_written_definition_must_be_the_spec_files():
    """The order of terms a module writes is taken only for the spec's own definition."""
    from derive.derivations.steps import planned
    from derive.errors import DeriveError
    from derive.model import Definition

    swapped = Definition("binary_cross_entropy", E, -sp.Sum(rules.mul(o[i], sp.log(sp.Symbol("y"))), (i, 1, sp.Symbol("H", integer=True, positive=True))))
    with pytest.raises(DeriveError, match="not the spec file's"):
        planned("sigmoid-bce", written=(swapped,))
    with pytest.raises(DeriveError, match="defines no"):
        planned("sigmoid-bce", written=(Definition("other", sp.Symbol("q"), sp.Integer(1)),))
    assert planned("sigmoid-bce", written=(sigmoid_bce.LOSS,))[0].rhs == sp.Derivative(sigmoid_bce.LOSS.value, z[k])


def test_a_result_with_a_delta_of_free_indices_is_stated_by_its_cases():
    """The planner ends a Jacobian's entry (delta_ik - ...) with its two cases, as log-softmax's
    hand chain did; a result without such a delta gets no such step."""
    import derive

    d = derive.grad("l_i = z_i - ln(sum_j exp(z_j))", wrt="z_k")
    last = d.steps[-1]
    assert last.rule == "delta_cases" and last.lhs == last.rhs
    delta = sp.KroneckerDelta(i, k)
    assert [c.condition for c in last.cases] == [sp.Eq(i, k, evaluate=False), sp.Ne(i, k, evaluate=False)]
    assert sp.simplify(last.cases[0].value - last.rhs.subs(delta, 1).subs(k, i)) == 0
    assert sp.simplify(last.cases[1].value - last.rhs.subs(delta, 0)) == 0
    assert not last.cases[1].value.has(sp.KroneckerDelta)
    d.check()
    assert "delta_cases" not in {s.rule for s in softmax_ce.steps()}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_no_planned_step_only_restates_the_one_before(name):
    """A step whose expression is the one before it (a sum SymPy would only reorder) is no step;
    the cases of a delta restate the result on purpose."""
    from derive.latex import latex

    steps = REFERENCES[name][0]()
    assert all(latex(s.lhs) != latex(s.rhs) or s.rule == "delta_cases" for s in steps)


def test_the_softmax_jacobian_is_derived_not_cited_for_itself():
    """The lemma is cited where the softmax is an intermediate (log-softmax), never in the
    derivation of its own Jacobian, which goes by the quotient rule; typed by hand it gets the
    same steps as the catalog entry."""
    import derive

    assert "softmax_jacobian" in {s.rule for s in log_softmax.steps()}
    d = derive.grad("o_i = exp(z_i)/sum_j exp(z_j)", wrt="z_k")
    rules_ = [s.rule for s in d.steps]
    assert "softmax_jacobian" not in rules_
    assert rules_ == [s.rule for s in softmax.steps()]
    assert rules_[:2] == ["definition", "quotient_rule"]
    d.check()


def test_a_result_of_the_catalog_is_cited_where_another_variable_needs_it():
    """A layer before softmax-CE: the planner cites softmax-ce's general form for dE/dz_k once
    the sum over the logits has collapsed; never in softmax-ce itself, and not where the error
    is defined otherwise (weight decay added), where it derives everything."""
    import derive

    cited = [s for s in dense_softmax_ce.chain("W_kd") if s.rule == "derived_result"]
    assert len(cited) == 1 and cited[0].identity.lhs == sp.Derivative(E, z[k])
    assert sp.expand(cited[0].identity.rhs - softmax_ce.build().general.rhs) == 0
    assert "derived_result" not in {s.rule for s in softmax_ce.steps()}
    decay = derive.grad("E = -sum_i y_i*ln(o_i) + lambda/2*sum_k sum_d W_kd^2", "o_i = softmax(z)_i", "z_i = sum_d W_id*x_d + b_i", wrt="W_kd", assume=["sum_i y_i = 1"])
    assert "derived_result" not in {s.rule for s in decay.steps}


def test_the_scaled_logit_is_a_chain_rule_step_of_its_own():
    """Through an intermediate that is a multiple of the variable entry by entry (z_i / T), the
    planner takes the factor in one step, cites the softmax Jacobian by the intermediate, and
    puts the factor into the cases of the split sum; typed as a spec file it verifies."""
    import derive

    d = derive.grad(spec=catalog_spec("softmax-ce-temperature"))
    rules_ = [s.rule for s in d.steps]
    assert rules_ == [s.rule for s in softmax_ce.steps(temperature=True)]
    scaled = d.steps[rules_.index("scaled_logit")]
    T = sp.Symbol("T")
    assert scaled.identity.rhs == 1 / T
    split = d.steps[rules_.index("split_sum")]
    assert all(c.value.has(1 / T) for c in split.cases)
    assert sp.simplify(d.steps[-1].rhs - (o[k] - sp.IndexedBase("y")[k]) / T) == 0
    d.check()


def test_a_smoothed_target_is_summed_by_its_definition_and_written_out_at_the_end():
    """The assumption about sum_i y_i reaches sum_i q_i through q's definition (linear_sum); once
    q is left only at single entries, it is written by its definition, the minus distributed.
    Without the assumption, the general form keeps q and nothing is written out."""
    import derive

    d = derive.grad(spec=catalog_spec("softmax-ce-label-smoothing"))
    rules_ = [s.rule for s in d.steps]
    assert rules_ == [s.rule for s in softmax_ce.steps(smoothing=True)]
    assert rules_[-4:] == ["linear_sum", "normalisation", "definition", "distribute_sign"]
    y_, eps, H = sp.IndexedBase("y"), sp.Symbol("epsilon"), sp.Symbol("H", integer=True, positive=True)
    assert sp.expand(d.steps[-1].rhs - (o[k] - (1 - eps) * y_[k] - eps / H)) == 0
    assert not d.steps[-1].rhs.has(sp.IndexedBase("q"))
    d.check()
    general = derive.grad("E = -sum_i q_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)", "q_i = (1 - epsilon)*y_i + epsilon/H", wrt="z_k")
    assert {"linear_sum", "distribute_sign"}.isdisjoint(s.rule for s in general.steps)
    assert general.steps[-1].rhs.has(sp.IndexedBase("q")) and general.steps[-1].rule != "definition"


def test_a_sum_is_taken_apart_first_only_beside_derivatives_of_its_own_kind():
    """softmax: the quotient rule leaves d e^{z_i}/dz_k and d sum_j e^{z_j}/dz_k; the sum rule
    comes first, so both exponentials are differentiated in one step. A sum of other terms (the
    deviations x_m - mu of a batch norm) waits beside a power rule, in reading order."""
    from derive.planner import _same_kind

    assert [s.rule for s in softmax.steps()][2:4] == ["sum_rule", "exp_derivative"]
    j, m = (sp.Symbol(name, integer=True, positive=True) for name in "jm")
    H = sp.Symbol("H", integer=True, positive=True)
    x, mu, v, eps = sp.IndexedBase("x"), sp.Symbol("mu"), sp.Symbol("v"), sp.Symbol("epsilon")
    assert _same_kind(sp.Derivative(sp.Sum(sp.exp(z[j]), (j, 1, H)), z[k]), sp.Derivative(sp.exp(z[i]), z[k]))
    assert not _same_kind(sp.Derivative(sp.Sum(x[m] - mu, (m, 1, H)), x[k]), sp.Derivative((eps + v) ** sp.Rational(-1, 2), x[k]))
    assert not _same_kind(sp.Derivative(x[m] - mu, x[k]), sp.Derivative(sp.exp(z[i]), z[k]))
