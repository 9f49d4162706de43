"""attention: one query over H positions with a mask, from its spec file through the planner;
gradients by the query, the keys and the values, each verified; the mask's precondition."""

import json

import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive.cli import app
from derive.errors import UsageError


@pytest.fixture(scope="module")
def example():
    return derive.derivation("attention", classes=3)


def test_three_variables_planned_and_verified(example):
    assert [p.name for p in example.parts] == ["by K_kd", "by V_kd"] or len(example.parts) == 2
    assert example.check().passed
    assert sp.sstr(example.parts[-1].result.rhs) == "a[k]*g[d]"


def test_the_worked_example_masks_a_position(example):
    ex = json.loads(derive.render(example, "json"))["example"]
    assert ex["values"]["m"] == [1, 0, 1]
    assert ex["defined"]["a"][1] == 0 and sum(ex["defined"]["a"]) == pytest.approx(1)
    assert len(set(ex["values"]["g"])) == len(ex["values"]["g"]) and set(ex["values"]["g"]) != {1}
    keys = [tuple(row) for row in ex["values"]["K"]]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("mask, message", [("0,0,0", "attends to no position"), ("1,2,0", "ones and zeros"), ("1,x,0", "ones and zeros")])
def test_a_bad_mask_is_refused(mask, message):
    with pytest.raises(UsageError, match=message):
        derive.derivation("attention", classes=3, let=[f"mask={mask}"])
    result = CliRunner().invoke(app, ["attention", "--classes", "3", "--let", f"mask={mask}", "-o", "-"])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_the_document_states_the_precondition(example):
    md = derive.render(example, "md")
    assert "At least one position must be attended" in md and "gradients by its key and by its value are 0" in md


def test_the_gradients_are_written_with_the_weights(example):
    """dL/dq_d and dL/dK_kd read as implementations write them: the weights a_j (through the
    masked softmax's Jacobian, a_j (delta_ij - a_i)) and the outputs o_c, no exponentials."""
    q, k = example.result.rhs, example.parts[0].result.rhs
    base = {str(x.base): x.base for x in q.atoms(sp.Indexed)}
    ix = {str(s): s for s in q.free_symbols | {x for x in sp.preorder_traversal(q) if isinstance(x, sp.Symbol)}}
    g, V, a, K = (base[n] for n in "gVaK")
    c, j, i, d, H, D = (ix[n] for n in ("c", "j", "i", "d", "H", "D"))
    assert sp.sstr(q) == sp.sstr(sp.Sum(g[c] * sp.Sum(V[j, c] * a[j] * (K[j, d] - sp.Sum(a[i] * K[i, d], (i, 1, H))), (j, 1, H)), (c, 1, D)) / sp.sqrt(D))
    assert not q.has(sp.exp) and not k.has(sp.exp) and "o[c]" in sp.sstr(k)
    jacobians = [s for s in example.steps if s.rule == "softmax_jacobian"]
    assert len(jacobians) == 1 and sp.sstr(jacobians[0].identity.rhs) == sp.sstr(a[j] * (sp.KroneckerDelta(i, j) - a[i]))


def test_a_wrong_masked_jacobian_is_caught(monkeypatch):
    """The weighted softmax's Jacobian is checked like any step: without its - a_i term (the
    diagonal alone) the derivation fails its checks."""
    from derive import planner
    from derive.errors import VerificationError

    real = planner.softmax_jacobian

    def diagonal_only(p, node):
        built = real(p, node)
        if built is None or not dict(built.notes).get("weight"):
            return built
        wrong = built.new.xreplace({a: 0 for a in built.new.atoms(sp.Indexed) if a != node.expr})
        return planner.Built(wrong, identity=sp.Eq(node, wrong, evaluate=False), notes=built.notes, label=built.label)

    monkeypatch.setattr(planner, "softmax_jacobian", diagonal_only)
    monkeypatch.setattr(planner, "DERIVATIVE_RULES", tuple((n, diagonal_only if r is real else r) for n, r in planner.DERIVATIVE_RULES))
    monkeypatch.setenv("DERIVE_NO_CACHE", "1")
    d = derive.grad(spec="derive/catalog/attention.toml", wrt="q_d", classes=3)
    with pytest.raises(VerificationError):
        d.check()
