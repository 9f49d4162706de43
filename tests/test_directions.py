"""The checks of a concrete H along random directions (derive.directions): the claimed
Jacobian-vector product from a rule matrix is the product of the matrix written out, and a
single wrong entry among a million, planted anywhere, is caught and named."""

import random
from dataclasses import replace

import pytest
import sympy as sp

import derive
from derive import concrete, directions
from derive.concrete import checks
from derive.model import RuleMatrix, RuleVector
from derive.symbols import i, k, o, y

P = directions.P


def written_out_product(matrix: RuleMatrix, v, leaves):
    """J v with every entry evaluated on its own: the H^2 way the direction check replaces."""
    n = matrix.size
    out = []
    for r in range(n):
        total = 0
        for c in range(n):
            entry = matrix.rule(r, c).xreplace({matrix.row: sp.Integer(r + 1), matrix.col: sp.Integer(c + 1)})
            total += directions.vector(entry, None, leaves, n) * v[c]
        out.append(total % P)
    return out


@pytest.mark.parametrize(
    "diagonal, off",
    [
        (o[i] * (1 - o[i]), -o[i] * o[k]),  # softmax
        (1 - o[i], -o[k]),  # log-softmax
        (o[i] * (1 - o[i]), sp.Integer(0)),  # sigmoid
        (sp.Integer(1), sp.Integer(0)),  # identity
        (o[i] ** 2 / y[i], (o[i] - 3 * y[k]) * (o[k] + y[i]) / 7 + 2),  # separable after expanding
        (o[i], 1 / (o[i] + o[k])),  # not separable: summed row by row
    ],
)
def test_the_rule_product_is_the_written_out_product(diagonal, off):
    rng = random.Random(7)
    n = 6
    leaves = {o: [rng.randrange(1, P) for _ in range(n)], y: [rng.randrange(1, P) for _ in range(n)]}
    matrix = RuleMatrix(n, i, k, diagonal, off, exceptions=(((1, 4), o[2] * 5),))
    v = directions.direction(rng, n)
    assert directions.product(matrix, v, leaves) == written_out_product(matrix, v, leaves)


def test_vectors_with_sums_are_evaluated_whole():
    rng = random.Random(3)
    n = 5
    leaves = {o: [rng.randrange(1, P) for _ in range(n)], y: [rng.randrange(1, P) for _ in range(n)]}
    mse = o[k] * ((o[k] - y[k]) - sp.Sum(o[i] * (o[i] - y[i]), (i, 1, n)))
    values = directions.entries(RuleVector(n, k, mse), leaves, n)
    one_by_one = [directions.vector(mse.xreplace({k: m}).doit(), None, leaves, n) for m in range(1, n + 1)]
    assert values == one_by_one


def test_locate_finds_the_one_entry_that_differs():
    rng = random.Random(1)
    n = 1000
    wrong = 617
    d = [0] * n
    d[wrong] = 12345
    v = directions.direction(rng, n)
    assert directions.locate(lambda u: directions.dot(d, u) != 0, v) == wrong


# --- planted errors among many entries ------------------------------------------------------------
# A wrong entry makes the difference D = J - J_true a nonzero matrix. At the random point its
# entries are nonzero unless the point is a root (degree / P, below 1e-15), and then a random
# direction misses a nonzero row with probability 1 / P: two directions at each of two points
# leave a chance below 1e-30 that the entry below passes. The check then names it.
@pytest.mark.parametrize("at", [(0, 0), (616, 3), (999, 998), (500, 500)])
def test_a_single_wrong_jacobian_entry_among_a_million_is_caught(at):
    d = derive.derivation("softmax-ce", classes=1000)
    jac = d.concrete.jacobian
    usual = jac.diagonal if at[0] == at[1] else jac.off
    wrong = replace(d.concrete, jacobian=replace(jac, exceptions=((at, usual + o[1] * y[2]),)))
    failed = checks(replace(d, concrete=wrong))
    assert failed[0].passed and not failed[1].passed
    assert f"entry ({at[0] + 1}, {at[1] + 1}) differs" in failed[1].detail
    # Right everywhere else, and a wrong entry that is right at one point only is no escape.
    assert all(c.passed for c in checks(d))


def test_a_single_wrong_gradient_entry_among_many_is_caught():
    d = derive.derivation("softmax-ce", classes=5000)
    gradient = list(d.concrete.gradient[:])
    gradient[3210] = gradient[3210] + o[7] - o[8]
    failed = checks(replace(d, concrete=replace(d.concrete, gradient=tuple(gradient))))
    assert not failed[0].passed and "entry 3211 differs" in failed[0].detail


def test_a_wrong_jacobian_entry_of_a_generic_derivation_is_caught():
    d = derive.derivation("mse-softmax", classes=300)
    jac = d.concrete.jacobian
    wrong = replace(d.concrete, jacobian=replace(jac, exceptions=(((41, 250), jac.off * 2),)))
    failed = concrete.checks(replace(d, concrete=wrong))
    assert failed[0].passed and not failed[1].passed and "entry (42, 251) differs" in failed[1].detail
    gradient = list(d.concrete.gradient[:])
    gradient[99] = -gradient[99]
    failed = concrete.checks(replace(d, concrete=replace(d.concrete, gradient=tuple(gradient))))
    assert not failed[0].passed and "entry 100 differs" in failed[0].detail


def test_a_shown_entry_is_checked_as_it_is_shown():
    """A vector's rule is checked for every entry at once, and each entry a document shows is
    checked as it is written (a writer that gets one wrong is caught)."""
    d = derive.derivation("mse-softmax", classes=50)
    g = d.concrete.gradient
    wrong = RuleVector(g.size, g.index, g.formula, lambda m: g.entry(m) + (o[1] if m == 49 else 0))
    failed = concrete.checks(replace(d, concrete=replace(d.concrete, gradient=wrong)))
    assert not failed[0].passed and "entry 49 differs" in failed[0].detail


# --- the worked examples of many classes ---------------------------------------------------------
def test_a_large_example_is_checked_along_directions_and_a_wrong_entry_fails():
    n = concrete.EVERY_ENTRY + 1000
    ex = derive.derivation("softmax-ce", classes=n).concrete.example
    check = concrete.softmax_ce_example_check(ex)
    assert check.passed and "random directions" in check.method
    for m in (0, 2500, n - 1):
        gradient = list(ex.gradient)
        gradient[m] = gradient[m] + sp.Rational(1, 10**15)
        assert not concrete.softmax_ce_example_check(replace(ex, gradient=tuple(gradient))).passed


@pytest.mark.parametrize("name", ["softmax", "log-softmax"])
def test_a_large_jacobian_example_holds_vectors_and_its_shown_entries_are_checked(name):
    n = concrete.MATRIX_MOST + 50
    d = derive.derivation(name, classes=n)
    ex = d.concrete.example
    assert isinstance(ex.jacobian, concrete.LazyJacobian)
    assert concrete.jacobian_example_check(ex, name).passed
    wrong = concrete.LazyJacobian(ex.jacobian.function, ex.jacobian.p[:-1] + (ex.jacobian.p[-1] * (1 + sp.Rational(1, 10**12)),), ex.jacobian.q)
    bad = concrete.jacobian_example_check(replace(ex, jacobian=wrong), name)
    assert not bad.passed and f"output {n}" in bad.detail
    from derive.rendering import _jacobian_example

    data = _jacobian_example(d)["json"]  # what the JSON document's "example" holds
    assert set(data) == {"logits", "probabilities"} and len(data["probabilities"]) == n
