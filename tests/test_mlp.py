"""mlp: one sigmoid hidden layer before softmax and cross-entropy, from its spec file through the
planner; the gradients by V, c, W and b, the backpropagated error named and checked; weight
decay on mlp and dense-softmax-ce. One built derivation per case, reused across the tests."""

import json
from dataclasses import replace

import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive import planner
from derive.cli import app
from derive.errors import UsageError, VerificationError
from derive.model import Definition

m, d, k = (sp.Symbol(s, integer=True, positive=True) for s in "mdk")
o, y, W, V, h, x, delta = (sp.IndexedBase(s) for s in ("o", "y", "W", "V", "h", "x", "delta"))
lam = sp.Symbol("lambda")


@pytest.fixture(scope="module")
def example():
    return derive.derivation("mlp", classes=3)


@pytest.fixture(scope="module")
def decayed():
    return derive.derivation("mlp", classes=3, weight_decay="0.1")


def test_four_gradients_planned_and_verified(example):
    assert [p.name for p in example.parts] == ["by c_m", "by W_km", "by b_k"]
    assert example.check().passed  # every step, and the worked example against finite differences
    assert sp.expand(example.result.rhs - delta[m] * h[m] * (1 - h[m]) * x[d]) == 0
    assert sp.expand(example.parts[0].result.rhs - delta[m] * h[m] * (1 - h[m])) == 0
    assert sp.expand(example.parts[1].result.rhs - h[m] * (o[k] - y[k])) == 0
    # The hidden layer's gradient cites the logits' gradient of softmax-ce, then names the error.
    rules = [s.rule for s in example.steps]
    assert rules[0] == "chain_rule_sum" and "derived_result" in rules and rules[-1] == "named"
    assert "softmax_jacobian" not in rules


def test_the_worked_example(example):
    ex = json.loads(derive.render(example, "json"))["example"]
    assert set(ex["values"]) == {"V", "c", "W", "b", "x", "y"}
    assert set(ex["gradients"]) == {"V", "c", "W", "b"}
    shapes = {"V": (2, 3), "c": (2,), "W": (3, 2), "b": (3,)}
    for name, shape in shapes.items():
        g = ex["gradients"][name]
        assert (len(g), len(g[0])) == shape if len(shape) == 2 else len(g) == shape[0]
        flat = [v for row in ex["values"][name] for v in row] if len(shape) == 2 else ex["values"][name]
        assert len(set(flat)) == len(flat)  # distinct, so a transposed or swapped entry shows
    # First index outer: dE/dV_md = delta_m h_m (1 - h_m) x_d, entry by entry.
    hs, ds, xs = ex["defined"]["h"], ex["defined"]["delta"], ex["values"]["x"]
    for a in range(2):
        assert 0.1 < hs[a] < 0.9  # no saturated hidden unit
        for b in range(3):
            assert ex["gradients"]["V"][a][b] == pytest.approx(ds[a] * hs[a] * (1 - hs[a]) * xs[b])


def test_a_wrong_definition_of_the_named_error_is_caught(example):
    wrong = tuple(replace(df, value=df.value.xreplace({y: o})) if df.symbol.base == delta else df for df in example.definitions if hasattr(df.symbol, "base"))
    wrong = (example.definitions[0], *wrong)
    assert any(df.symbol.base == delta for df in wrong if hasattr(df.symbol, "base"))
    planted = replace(example, definitions=wrong, setting=replace(example.setting, definitions=wrong), parts=(), worked=None)
    with pytest.raises(VerificationError):
        planted.check()


def test_a_wrong_name_is_caught(monkeypatch):
    right = planner.named

    def wrong(p, node):
        built = right(p, node)
        return built and replace(built, new=2 * built.new)

    monkeypatch.setattr(planner, "named", wrong)
    d_ = derive.grad(
        "E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i)/sum_j exp(z_j)", "z_i = sum_m W_im*h_m + b_i",
        "h_m = sigmoid(sum_d V_md*x_d + c_m)", "delta_m = sum_i (o_i - y_i)*W_im", wrt="c_m", assume=["sum_i y_i = 1"],
    )
    assert d_.steps[-1].rule == "named"
    with pytest.raises(VerificationError):
        d_.check()


def test_weight_decay_adds_lambda_times_the_weight(decayed, example):
    assert decayed.check().passed
    assert sp.expand(decayed.result.rhs - (delta[m] * h[m] * (1 - h[m]) * x[d] + lam * V[m, d])) == 0
    by = {p.name: p.result.rhs for p in decayed.parts}
    assert sp.expand(by["by W_km"] - (h[m] * (o[k] - y[k]) + lam * W[k, m])) == 0
    assert not by["by c_m"].has(lam) and not by["by b_k"].has(lam)  # the biases are not penalised
    ex = json.loads(derive.render(decayed, "json"))["example"]
    plain = json.loads(derive.render(example, "json"))["example"]
    assert ex["values"]["lambda"] == 0.1
    for name in ("V", "W"):
        for got, was, w in zip(sum(ex["gradients"][name], []), sum(plain["gradients"][name], []), sum(ex["values"][name], [])):
            assert got == pytest.approx(was + 0.1 * w)
    md = derive.render(decayed, "md")
    assert "not penalised" in md and "twice the decay" in md


def test_dense_softmax_ce_with_weight_decay():
    d_ = derive.derivation("dense-softmax-ce", classes=3, weight_decay=0.5)
    assert d_.check().passed
    xs = sp.IndexedBase("x")
    assert sp.expand(d_.result.rhs - (xs[d] * (o[k] - y[k]) + lam * W[k, d])) == 0
    ex = json.loads(derive.render(d_, "json"))["example"]
    assert ex["values"]["lambda"] == 0.5
    o_, y_, x_, w_ = ex["defined"]["o"], ex["values"]["y"], ex["values"]["x"], ex["values"]["W"]
    for a in range(3):
        for b in range(2):
            assert ex["gradients"]["W"][a][b] == pytest.approx(x_[b] * (o_[a] - y_[a]) + 0.5 * w_[a][b])
    # A gradient with 2 lambda W (the penalty without its 1/2) fails the finite differences.
    from derive import worked

    twice = tuple(tuple(sp.Float(g + 0.5 * w, 30) for g, w in zip(row, ws)) for row, ws in zip(d_.worked.gradient, d_.worked.given[0][1]))
    assert str(d_.worked.given[0][0]) == "W" and worked.checks(d_)[0].passed
    assert not worked.checks(replace(d_, worked=replace(d_.worked, gradient=twice)))[0].passed
    # Without the option nothing changes.
    assert derive.derivation("dense-softmax-ce").result.rhs == derive.derivation("dense-softmax-ce", weight_decay=None).result.rhs


@pytest.mark.parametrize("value", ["-0.1", "abc", "nan", "inf"])
def test_a_bad_weight_decay_is_refused(value, tmp_path):
    with pytest.raises(UsageError, match="--weight-decay takes a number LAMBDA >= 0"):
        derive.derivation("mlp", weight_decay=value)
    out = tmp_path / "out.md"
    result = CliRunner().invoke(app, ["dense-softmax-ce", f"--weight-decay={value}", "--classes", "3", "-o", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_the_option_is_in_the_file_name():
    from derive.derivations.naming import file_stem

    assert file_stem("mlp", 3, {"weight_decay": 0.1}) == "mlp-3-weight-decay0.1"
    assert file_stem("dense-softmax-ce", 3, {"inputs": 2, "weight_decay": "1e-4"}) == "dense-softmax-ce-3-inputs2-weight-decay0.0001"
