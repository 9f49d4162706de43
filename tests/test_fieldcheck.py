"""The exact check of a claim where it stands (derive.fieldcheck): every step of the catalog is
decided true without writing it out, a planted error is never decided true (the claim is then
written out and is_zero fails it, as before), and the atoms of exp and ln are exact."""

import pytest
import sympy as sp

import derive
from derive import fieldcheck, verify
from derive.derivations import CATALOG
from derive.symbols import H, i, k, o, y, z


def instances(setting):
    for size in verify.SIZES:
        for index in verify.assignments(setting, size):
            yield verify.extents(setting, size), dict(zip(setting.indices, index))


def agree(setting, lhs, rhs, assumptions=(), tag="t"):
    return [fieldcheck.agree(setting, lhs, rhs, sizes, index, assumptions, f"{tag}:{sizes}:{index}") for sizes, index in instances(setting)]


@pytest.mark.parametrize("name", CATALOG)
def test_every_step_of_the_catalog_is_decided_without_writing_it_out(name):
    d = derive.derivation(name)
    # A power with a symbolic exponent of 1 - o_i (focal loss) has the base 0 at one class, where
    # the one softmax output is 1: there the field has no value for it, and the claim is left to
    # writing it out. Everywhere else every step is decided.
    symbolic_power = any(not p.exp.is_Number for df in d.definitions for p in df.value.atoms(sp.Pow))
    for step in d.steps:
        for (sizes, index), decided in zip(instances(d.setting), agree(d.setting, step.lhs, step.rhs, step.assumptions)):
            assert decided or (symbolic_power and sizes[d.setting.classes] == 1), (step.rule, sizes, index)


@pytest.mark.parametrize("name", CATALOG)
def test_a_planted_error_in_any_step_is_never_decided_true(name):
    d = derive.derivation(name)
    out = d.setting.intermediates[0]
    plants = [
        lambda e: -e,  # a flipped sign
        lambda e: e + y[k] * out[k] / 10**9,  # a small extra term
        lambda e: e * (1 + out[k] ** 7),  # a factor that is 1 nowhere
        lambda e: e + sp.log(1 + out[k]) - sp.log(1 + 2 * out[k]) / 2,  # logs that do not cancel
    ]
    for step in d.steps:
        for plant in plants:  # none of them leaves a step's right side as it was
            decided = agree(d.setting, step.lhs, plant(step.rhs), step.assumptions)
            assert not all(decided), step.rule


def test_without_its_assumption_a_normalised_result_is_not_decided_true():
    d = derive.derivation("softmax-ce")
    last = d.steps[-1]
    assert all(agree(d.setting, last.lhs, last.rhs, last.assumptions))
    assert not all(agree(d.setting, last.lhs, last.rhs, ()))


@pytest.mark.parametrize(
    "lhs, rhs, decided",
    [
        (sp.log(sp.Mul(sp.exp(z[k]), sp.exp(2 * z[1]), evaluate=False), evaluate=False), z[k] + 2 * z[1], True),  # ln(a b), ln e^w
        (sp.exp(z[k] - 2 * z[1]), sp.exp(z[k]) / sp.exp(z[1]) ** 2, True),  # e^{a + n b} = e^a (e^b)^n
        (sp.log(o[k]), z[k] - sp.log(sp.Sum(sp.exp(z[i]), (i, 1, H))), True),  # ln of a definition
        (sp.Derivative(sp.log(sp.Sum(sp.exp(z[i]), (i, 1, H))), z[k]), o[k], True),  # an atom's derivative
        (sp.log(1 + sp.exp(z[k])), sp.log(2 + sp.exp(z[k])), False),  # different atoms
        (sp.Pow(sp.exp(z[k] / 2), 2, evaluate=False), sp.exp(z[k]), False),  # true, but e^{z/2} is an atom: undecided
        (sp.Pow(sp.exp(z[k] / 2), 2, evaluate=False), sp.exp(z[k]) + 1, False),
    ],
)
def test_the_rules_for_exp_and_ln(lhs, rhs, decided):
    d = derive.derivation("softmax-ce")
    assert all(agree(d.setting, lhs, rhs)) is decided
