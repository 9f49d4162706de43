"""--reduction sum|mean on mlp, and with --weight-decay on dense-softmax-ce and mlp: the penalty
lambda/2 sum W^2 is added once to the reduced loss, not once per example; the sifting of a
batch's Kronecker delta delta_nn' in a sum with several limits; the backpropagated error of a
batch written g_nm (delta_nm would read as a Kronecker delta). One built derivation per case,
reused across the tests."""

import json
from dataclasses import replace

import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import planner, worked
from derive.cli import app
from derive.derivations.naming import file_stem
from derive.errors import UsageError, VerificationError
from derive.lang import size_symbol

m, d, k, n, n1, i = (sp.Symbol(s, integer=True, positive=True) for s in ("m", "d", "k", "n", "n'", "i"))
o, y, W, V, h, x, g, C, f = (sp.IndexedBase(s) for s in ("o", "y", "W", "V", "h", "x", "g", "C", "f"))
lam, N, M, H = sp.Symbol("lambda"), size_symbol("N"), size_symbol("M"), size_symbol("H")


@pytest.fixture(scope="module")
def dense_mean():
    return derive.derivation("dense-softmax-ce", classes=3, weight_decay="0.1", reduction="mean")


@pytest.fixture(scope="module")
def mlp_mean():
    return derive.derivation("mlp", classes=3, reduction="mean")


# --- the planner's sifting in a sum with several limits -------------------------------------------
def test_a_delta_of_two_indices_of_one_sum_sifts():
    """sum_n sum_n' delta_nn' f_n' = sum_n f_n: n runs outside n' over the same range."""
    p = planner.Planner(planner.Problem((), W[k, d], (), {n: N, n1: N}))
    built = planner.sifting(p, sp.Sum(sp.KroneckerDelta(n, n1) * f[n1], (n1, 1, N), (n, 1, N)))
    assert built is not None and built.new == sp.Sum(f[n], (n, 1, N)) and dict(built.notes)["index"] == n1
    # Written the other way round (n inside n'), the sum over n sifts to n'.
    built = planner.sifting(p, sp.Sum(sp.KroneckerDelta(n, n1) * f[n], (n, 1, N), (n1, 1, N)))
    assert built is not None and built.new == sp.Sum(f[n1], (n1, 1, N))


def test_a_delta_of_indices_over_other_ranges_does_not_sift():
    """sum_n sum_m delta_mn f_m is not sum_n f_n: n may exceed M."""
    p = planner.Planner(planner.Problem((), W[k, d], (), {n: N, m: M}))
    assert planner.sifting(p, sp.Sum(sp.KroneckerDelta(m, n) * f[m], (m, 1, M), (n, 1, N))) is None


# --- dense-softmax-ce --weight-decay --reduction -------------------------------------------------
def test_the_penalty_is_added_once_to_the_mean(dense_mean):
    assert dense_mean.check().passed  # every step, and the worked example against finite differences
    total = dense_mean.definitions[0].value
    assert sp.expand(total - (sp.Sum(C[n], (n, 1, N)) / N + lam / 2 * sp.Sum(W[i, m] ** 2, (m, 1, size_symbol("D")), (i, 1, H)))) == 0
    assert not any(s.has(lam) for s in total.atoms(sp.Sum) if s.has(n))  # the penalty is outside the sum over n
    assert sp.expand(dense_mean.result.rhs - (lam * W[k, d] + sp.Sum((o[n, k] - y[n, k]) * x[n, d], (n, 1, N)) / N)) == 0
    assert not dense_mean.parts[0].result.rhs.has(lam)  # the bias is not penalised
    assert "with weight decay, averaged over a batch of N examples" in derive.render(dense_mean, "md").splitlines()[0]


def test_the_worked_example_of_the_mean(dense_mean):
    ex = json.loads(derive.render(dense_mean, "json"))["example"]
    o_, y_, x_, w_ = ex["defined"]["o"], ex["values"]["y"], ex["values"]["x"], ex["values"]["W"]
    rows = len(x_)
    for a in range(3):
        for b in range(len(w_[0])):
            mean = sum(x_[r][b] * (o_[r][a] - y_[r][a]) for r in range(rows)) / rows
            assert ex["gradients"]["W"][a][b] == pytest.approx(mean + 0.1 * w_[a][b])


@pytest.mark.parametrize("wrong", ["without 1/N", "penalty per example"])
def test_a_wrong_batch_gradient_fails_the_finite_differences(dense_mean, wrong):
    """The sum of the examples' gradients where the mean is asked, or the penalty's gradient
    lambda W taken once per example (N lambda W): the worked example's check fails."""
    given = dict((str(name), value) for name, value in dense_mean.worked.given)["W"]
    count = dict((str(s), v) for s, v in dense_mean.worked.sizes)["N"]
    assert count >= 2 and worked.checks(dense_mean)[0].passed
    decay = sp.Rational(1, 10)
    if wrong == "without 1/N":
        planted = tuple(tuple(count * (g_ - decay * w) + decay * w for g_, w in zip(row, ws)) for row, ws in zip(dense_mean.worked.gradient, given))
    else:
        planted = tuple(tuple(g_ + (count - 1) * decay * w for g_, w in zip(row, ws)) for row, ws in zip(dense_mean.worked.gradient, given))
    assert planted != dense_mean.worked.gradient
    assert not worked.checks(replace(dense_mean, worked=replace(dense_mean.worked, gradient=planted)))[0].passed


def test_the_sum_adds_the_penalty_once_too():
    total = derive.derivation("dense-softmax-ce", weight_decay="0.1", reduction="sum")
    assert total.check().passed
    assert sp.expand(total.result.rhs - (lam * W[k, d] + sp.Sum((o[n, k] - y[n, k]) * x[n, d], (n, 1, N)))) == 0


def test_through_the_batch_a_delta_of_two_examples_sifts(monkeypatch):
    """Without the result for one example to cite, the batch is derived through: C_n reaches
    every o_n'i, and delta_nn' is sifted in the sum over n, n' and i. Verified."""
    from derive import spec as specs

    monkeypatch.setenv("DERIVE_NO_CACHE", "1")
    monkeypatch.setattr(specs, "_with_own", lambda spec: specs.citable)
    d_ = derive.derivation("dense-softmax-ce", weight_decay="0.1", reduction="mean")
    sifted = [s for s in d_.parts[0].steps if s.rule == "sifting" and dict(s.notes).get("index") == n1]
    assert sifted and any(len(x.limits) > 1 for s in sifted for x in s.lhs.atoms(sp.Sum) if x.has(sp.KroneckerDelta(n, n1)))
    assert "derived_result" not in [s.rule for s in d_.steps]
    assert d_.check().passed


def test_a_sifting_that_keeps_the_other_terms_is_caught(monkeypatch):
    """A planted error in the rule: the delta dropped but the sum over n' kept (N times each
    example's term). The steps' checks catch it."""
    from derive import spec as specs

    right = planner.sifting

    def wrong(p, node):
        built = right(p, node)
        if built is None or not isinstance(node, sp.Sum) or len(node.limits) < 2 or dict(built.notes)["index"].name != "n'":
            return built
        kept = [lim for lim in node.limits if lim[0] != dict(built.notes)["index"]]
        return replace(built, new=sp.Sum(built.new.function if isinstance(built.new, sp.Sum) else built.new, *kept) * N)

    monkeypatch.setenv("DERIVE_NO_CACHE", "1")
    monkeypatch.setattr(specs, "_with_own", lambda spec: specs.citable)
    monkeypatch.setattr(planner, "sifting", wrong)
    monkeypatch.setattr(planner, "ALGEBRA_RULES", tuple((name, wrong if rule is right else rule) for name, rule in planner.ALGEBRA_RULES))
    d_ = derive.derivation("dense-softmax-ce", weight_decay="0.1", reduction="mean")
    assert any(s.rule == "sifting" and dict(s.notes).get("index") == n1 for s in d_.parts[0].steps)
    with pytest.raises(VerificationError):
        d_.check()


def test_a_batch_cites_the_cross_entropy_of_one_example(dense_mean):
    """With the result for one example, the batch cites dC_n/dW_kd at every example; the
    penalty's gradient lambda W_kd is taken once, beside the sum."""
    (cited,) = [s for s in dense_mean.steps if s.rule == "derived_result"]
    assert sp.sstr(cited.identity.lhs) == "Derivative(C[n], W[k, d])" and not cited.identity.rhs.has(lam)


# --- mlp --reduction ---------------------------------------------------------------------------
def test_mlp_over_a_batch_names_its_error_g(mlp_mean):
    assert mlp_mean.check().passed
    assert sp.expand(mlp_mean.result.rhs - sp.Sum(g[n, m] * h[n, m] * (1 - h[n, m]) * x[n, d], (n, 1, N)) / N) == 0
    by = {p.name: p.result.rhs for p in mlp_mean.parts}
    assert sp.expand(by["by c_m"] - sp.Sum(g[n, m] * h[n, m] * (1 - h[n, m]), (n, 1, N)) / N) == 0
    assert sp.expand(by["by W_km"] - sp.Sum(h[n, m] * (o[n, k] - y[n, k]), (n, 1, N)) / N) == 0
    assert mlp_mean.steps[-1].rule == "named" and mlp_mean.parts[0].steps[-1].rule == "named"
    # The result for one example is cited at every example, its error written g as the batch's.
    assert [s.rule for s in mlp_mean.steps] == ["definition", "constant_factor", "sum_rule", "derived_result", "normalisation", "named"]
    (named,) = [df for df in mlp_mean.definitions if getattr(df.symbol, "base", None) == g]
    assert named.symbol == g[n, m]
    md = derive.render(mlp_mean, "md")
    assert "averaged over a batch of N examples" in md.splitlines()[0]
    assert "g_{nm}" in md and "\\delta_{nm}" not in md and "over a batch it has two indices" in md
    # g first in the product, as delta_m in the document of one example.
    assert "\\sum_{n=1}^{N} g_{nm} h_{nm} x_{nd} \\left(1 - h_{nm}\\right)" in md


def test_mlp_over_a_batch_in_every_format(mlp_mean):
    ex = json.loads(derive.render(mlp_mean, "json"))["example"]
    hs, gs, xs = ex["defined"]["h"], ex["defined"]["g"], ex["values"]["x"]
    rows = len(xs)
    for a in range(2):
        for b in range(3):
            mean = sum(gs[r][a] * hs[r][a] * (1 - hs[r][a]) * xs[r][b] for r in range(rows)) / rows
            assert ex["gradients"]["V"][a][b] == pytest.approx(mean)
    assert "g_{nm}" in derive.render(mlp_mean, "tex")
    assert "backpropagated error of example" in derive.render(mlp_mean, "html")
    assert "def test_" in derive.render(mlp_mean, "py")


def test_a_wrong_batch_error_is_caught(mlp_mean):
    """The batch's named error with the wrong sign of (o - y): the checks catch it."""
    wrong = tuple(replace(df, value=-df.value) if getattr(df.symbol, "base", None) == g else df for df in mlp_mean.definitions)
    planted = replace(mlp_mean, definitions=wrong, setting=replace(mlp_mean.setting, definitions=wrong), parts=(), worked=None)
    with pytest.raises(VerificationError):
        planted.check()


def test_the_batch_names_of_a_spec_are_checked(tmp_path):
    base = 'definitions = ["E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)", "e_i = o_i - y_i"]\nwrt = "z_k"\nreduction = "mean"\n'
    for names, message in (('{ o = "y" }', "do not use"), ('{ q = "r" }', "rename a defined indexed quantity"), ('{ e = "1" }', "do not use")):
        spec = tmp_path / "s.toml"
        spec.write_text(base + f"batch_names = {names}\n")
        with pytest.raises(UsageError, match=message):
            derive.grad(spec=spec)


def test_the_options_are_in_the_file_name(tmp_path):
    assert file_stem("mlp", 3, {"weight_decay": 0.1, "reduction": "mean"}) == "mlp-3-weight-decay0.1-reductionmean"
    assert file_stem("dense-softmax-ce", None, {"reduction": "sum", "weight_decay": "0.5"}) == "dense-softmax-ce-weight-decay0.5-reductionsum"
    bad = CliRunner().invoke(app, ["mlp", "--reduction", "median", "-o", str(tmp_path / "b.md")])
    assert bad.exit_code == 2 and "takes sum or mean" in bad.output and not (tmp_path / "b.md").exists()


# --- the checks' evaluator: what it may skip ------------------------------------------------------
def test_a_sum_with_a_delta_factor_runs_at_one_value_only_where_that_is_exact():
    from derive.numeric import Scope, delta_partner

    j = sp.Symbol("j", integer=True, positive=True)
    outside = Scope([k])
    assert delta_partner(sp.Sum(sp.KroneckerDelta(j, k) * x[m], (m, 1, M)) * y[j], j, outside) == k
    assert delta_partner(sp.Sum(sp.KroneckerDelta(j, k) * x[k], (k, 1, H)), j, outside) is None  # k bound inside
    assert delta_partner((sp.KroneckerDelta(j, k) + 1) * y[j], j, outside) is None  # not a factor
    assert delta_partner(sp.KroneckerDelta(j, m) * y[j], j, outside) is None  # m has no value outside


def test_an_entry_is_tied_to_its_own_example():
    """o_ni depends on z_n'j only at n' = n; h_nm on V_m'd only at m' = m; E on every entry."""
    from derive.numeric import Numbers

    d_ = derive.derivation("mlp", reduction="sum")
    program = Numbers(d_.setting.definitions, (H, M, N, size_symbol("D")))
    z = sp.IndexedBase("z")
    assert program._ties(o, z) == {(0, 0)}
    assert program._ties(h, V) == {(1, 0)}
    assert program._ties(o, V) == frozenset()  # through h_nm' summed over m'
    assert program._ties(sp.Symbol("E"), W) == frozenset()


def test_a_factor_free_of_the_sums_indices_comes_out_once():
    from derive.numeric import hoisted

    j = sp.Symbol("j", integer=True, positive=True)
    assert sp.simplify(hoisted(sp.Sum(x[k] * y[j] * f[j, k], (j, 1, H))) - x[k] * sp.Sum(y[j] * f[j, k], (j, 1, H))) == 0
    assert hoisted(sp.Sum(y[j] * f[j, k], (j, 1, H))) is None and hoisted(sp.Sum(y[j] + x[k], (j, 1, H))) is None


def test_a_leading_minus_goes_into_the_bracket_that_starts_with_one():
    """-sum_n (1 - h_n) sum_i W_i (-o_ni + y_ni): the minus goes into (-o + y), not into (1 - h),
    so that the sum reads as the named error sum_i W_i (o_ni - y_ni)."""
    w = sp.IndexedBase("w")
    e = sp.Mul(-1, sp.Sum((1 - h[n]) * sp.Sum(w[i] * (y[n, i] - o[n, i]), (i, 1, H)), (n, 1, N)), evaluate=False)
    flipped = planner._sign_inside(e)
    assert flipped.has(sp.Sum(w[i] * (o[n, i] - y[n, i]), (i, 1, H))) and flipped.has(1 - h[n])
    assert sp.expand((flipped - e).subs({N: 2, H: 2}).doit()) == 0
