"""attention: one query over H positions with a mask, from its spec file through the planner;
gradients by the query q, the keys k and the values v, each verified; the mask's precondition;
the mask's public name (the letter m of the definitions is mask on the command line and in JSON)."""

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
    assert [p.name for p in example.parts] == ["by k_jd", "by v_jd"]
    assert example.check().passed
    assert sp.sstr(example.parts[-1].result.rhs) == "a[j]*g[d]"


def test_the_worked_example_masks_a_position(example):
    ex = json.loads(derive.render(example, "json"))["example"]
    assert ex["values"]["mask"] == [1, 0, 1]
    assert ex["defined"]["a"][1] == 0 and sum(ex["defined"]["a"]) == pytest.approx(1)
    assert len(set(ex["values"]["g"])) == len(ex["values"]["g"]) and set(ex["values"]["g"]) != {1}
    keys = [tuple(row) for row in ex["values"]["k"]]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("mask, message", [("0,0,0", "attends to no position"), ("1,2,0", "ones and zeros"), ("1,x,0", "ones and zeros")])
def test_a_bad_mask_is_refused(mask, message):
    """By its public name and by its letter; the one-line error names the mask."""
    with pytest.raises(UsageError, match=message):
        derive.derivation("attention", classes=3, let=[f"mask={mask}"])
    for name in ("mask", "m"):
        result = CliRunner().invoke(app, ["attention", "--classes", "3", "--let", f"{name}={mask}", "-o", "-"])
        assert result.exit_code == 2 and message in result.output and "mask" in result.output and len(result.output.strip().splitlines()) == 1


def test_the_document_states_the_precondition(example):
    md = derive.render(example, "md")
    assert "At least one position must be attended" in md and "gradients by its key and by its value are $`0`$" in md


def test_the_gradients_are_written_with_the_weights(example):
    """dL/dq_d and dL/dk_jd read as implementations write them: the weights a_j (through the
    masked softmax's Jacobian, a_j (delta_ij - a_i)) and the outputs o_c, no exponentials."""
    by_q, by_k = example.result.rhs, example.parts[0].result.rhs
    base = {str(x.base): x.base for x in by_q.atoms(sp.Indexed)}
    ix = {str(s): s for s in by_q.free_symbols | {x for x in sp.preorder_traversal(by_q) if isinstance(x, sp.Symbol)}}
    g, v, a, k = (base[n] for n in "gvak")
    c, j, i, d, H, D = (ix[n] for n in ("c", "j", "i", "d", "H", "D"))
    assert sp.sstr(by_q) == sp.sstr(sp.Sum(g[c] * sp.Sum(v[j, c] * a[j] * (k[j, d] - sp.Sum(a[i] * k[i, d], (i, 1, H))), (j, 1, H)), (c, 1, D)) / sp.sqrt(D))
    assert not by_q.has(sp.exp) and not by_k.has(sp.exp) and "o[c]" in sp.sstr(by_k)
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


def shape(x) -> tuple:
    return (len(x), *shape(x[0])) if isinstance(x, list) else ()


def test_the_json_names_the_inputs_as_the_issue_does(example):
    """example.values holds q, k, v, the upstream gradient g and the mask by its public name;
    example.gradients holds q, k and v, each shaped like its input (first index outer)."""
    ex = json.loads(derive.render(example, "json"))["example"]
    assert sorted(ex["values"]) == ["g", "k", "mask", "q", "v"]
    assert sorted(ex["gradients"]) == ["k", "q", "v"]
    assert {name: shape(g) for name, g in ex["gradients"].items()} == {"q": (2,), "k": (3, 2), "v": (3, 2)}
    assert all(shape(ex["values"][name]) == shape(g) for name, g in ex["gradients"].items())


def test_the_mask_is_given_by_its_name(tmp_path):
    """--let mask=... sets the numbers of m; the letter is still accepted, with the same bytes."""
    out = {}
    for name in ("mask", "m"):
        path = tmp_path / f"{name}.json"
        result = CliRunner().invoke(app, ["attention", "--classes", "3", "--let", f"{name}=0,1,1", "--format", "json", "-o", str(path)])
        assert result.exit_code == 0, result.output
        out[name] = path.read_bytes()
    assert out["mask"] == out["m"]
    ex = json.loads(out["mask"])["example"]
    assert ex["values"]["mask"] == [0, 1, 1] and "m" not in ex["values"]
    assert ex["defined"]["a"][0] == 0 and ex["gradients"]["v"][0] == [0, 0] and ex["gradients"]["k"][0] == [0, 0]
    # The old spellings of the keys and values are gone: K is no name of the entry.
    result = CliRunner().invoke(app, ["attention", "--classes", "3", "--let", "K=1,2;3,4;5,6", "-o", "-"])
    assert result.exit_code == 2 and "--let K: no such given quantity (given: g, k, mask, q, v)" in result.output


def test_an_all_zero_mask_is_refused_without_writing(tmp_path):
    path = tmp_path / "a.json"
    result = CliRunner().invoke(app, ["attention", "--classes", "3", "--let", "mask=0,0,0", "--format", "json", "-o", str(path)])
    assert result.exit_code == 2 and not path.exists()
    assert result.output.strip() == "error: attention: the mask '0,0,0' attends to no position; at least one must be 1, or the softmax has no denominator"
    # Through derive grad --spec there is no mask check of the entry's, but no internal error either.
    result = CliRunner().invoke(app, ["grad", "--spec", "derive/catalog/attention.toml", "--classes", "3", "--let", "mask=0,0,0", "-o", str(path)])
    assert result.exit_code == 2 and "L is not finite at the worked example's numbers" in result.output and not path.exists()


def test_the_notation_list_says_what_the_letter_is(example):
    md = derive.render(example, "md")
    line = next(x for x in md.splitlines() if x.startswith("- $`m_j`$"))
    assert line.endswith("gradients by its key and by its value are $`0`$. The command line and the JSON call it mask.")


def test_no_summation_letter_is_the_name_of_a_quantity(example):
    """The keys are k: the steps by k_jd sum over other letters of the positions' range (i, l),
    never over k, so no k_kp is written."""
    by_k = example.parts[0]
    letters = {str(lim[0]) for s in by_k.steps for x in s.rhs.atoms(sp.Sum) for lim in x.limits}
    assert letters and "k" not in letters and {"i", "l"} <= letters
    assert "k_{k" not in derive.render(example, "md")
