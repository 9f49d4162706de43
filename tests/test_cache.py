"""The cache of passed symbolic checks: exact keys, stable across processes, never a stale pass."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import sympy as sp

import derive
from derive import cache, verify
from derive.errors import VerificationError
from derive.symbols import y as y_

x, y = sp.symbols("x y")
xr = sp.Symbol("x", real=True)
i, k = sp.symbols("i k", integer=True, positive=True)
z = sp.IndexedBase("z")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (x, xr),  # same name, other assumptions
        (z[i], z[k]),
        (x + y, x * y),
        (x - y, y - x),
        (sp.Rational(1, 2), sp.Float(0.5)),
        (sp.Float("0.1", 15), sp.Float("0.1", 30)),
        (sp.Sum(z[i], (i, 1, x)), sp.Sum(z[i], (i, 0, x))),
        (sp.Eq(x, y, evaluate=False), sp.Eq(y, x, evaluate=False)),
        ((x,), [x]),
        ("1", 1),
        ((x, (y,)), ((x, y),)),
    ],
)
def test_different_values_get_different_text(a, b) -> None:
    assert cache.encode(a) != cache.encode(b)


def test_equal_values_get_the_same_text_however_they_are_shared() -> None:
    shared = sp.exp(z[k]) / sp.Sum(sp.exp(z[i]), (i, 1, x))
    sp.core.cache.clear_cache()  # else SymPy hands back the very same object
    again = sp.exp(sp.IndexedBase("z")[sp.Symbol("k", integer=True, positive=True)]) / sp.Sum(sp.exp(z[i]), (i, 1, x))
    assert shared is not again
    assert cache.encode((shared, shared)) == cache.encode((shared, again))


def test_unknown_objects_are_refused() -> None:
    with pytest.raises(TypeError):
        cache.encode((x, object()))


def test_the_key_is_the_same_in_every_process() -> None:
    """String hashing differs between processes; the key must not."""
    script = "import derive; from derive import cache; d = derive.derivation('softmax-ce'); print(cache.key(d.name, d.subject, [(s.lhs, s.rhs) for s in d.steps]))"
    keys = {
        subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert len(keys) == 1 and len(keys.pop().strip()) == 64


def test_a_passed_check_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    d = derive.derivation("log-softmax")
    first = verify.symbolic_checks(d)

    def must_not_run(_):
        raise AssertionError("the checks ran again")

    monkeypatch.setattr(verify, "_symbolic", must_not_run)
    assert verify.symbolic_checks(d) == first


def test_a_changed_step_is_checked_again_and_fails() -> None:
    """The cached pass of the right derivation must not cover a planted wrong step."""
    d = derive.derivation("log-softmax")
    verify.symbolic_checks(d)
    n = len(d.steps) - 1
    wrong = dataclasses.replace(d.steps[n], rhs=2 * d.steps[n].rhs)
    planted = dataclasses.replace(d, steps=d.steps[:n] + (wrong,))
    with pytest.raises(VerificationError):
        verify.symbolic_checks(planted)


def test_rendering_in_several_formats_checks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from derive import concrete

    runs = []
    original = concrete.checks
    monkeypatch.setattr(concrete, "checks", lambda d: runs.append(d.classes) or original(d))
    d = derive.derivation("softmax-ce", classes=12)
    for fmt in ("md", "tex", "json"):
        derive.render(d, fmt)
    assert runs == [12]
    derive.render(derive.derivation("softmax-ce", classes=12), "md")  # a new derivation is checked anew
    assert runs == [12, 12]


# --- the key covers everything a check reads -------------------------------------------------------
def _warm_then(d: derive.Derivation, planted: derive.Derivation) -> None:
    """Check ``d`` (so its pass is cached), then ``planted``, which must fail as it does cold."""
    verify.symbolic_checks(d)
    with pytest.raises(VerificationError):
        verify.symbolic_checks(planted)


def _with_constraint(d: derive.Derivation, fn) -> derive.Derivation:
    return dataclasses.replace(d, setting=dataclasses.replace(d.setting, constraints={**d.setting.constraints, "normalised": fn}))


def _sums_to(total):
    """A constraint like the spec's: the target sums to ``total`` (the code is the same for every
    total; only the value it closes over differs)."""
    from derive.symbols import y as target

    def fix(n: int) -> dict:
        return {target[n]: total - sp.Add(*(target[m] for m in range(1, n)))}

    return fix


def test_cold_the_plants_below_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a cache each plant of the warm-cache tests fails: they test the cache, not the checks."""
    monkeypatch.setenv("DERIVE_NO_CACHE", "1")
    d = derive.derivation("softmax-ce")
    for planted in (dataclasses.replace(d, assumptions=()), _with_constraint(d, _sums_to(2))):
        with pytest.raises(VerificationError):
            verify.symbolic_checks(planted)


def test_a_removed_assumption_fails_with_a_warm_cache() -> None:
    """The result o_k - y_k needs sum y = 1; without the assumption the finite differences of the
    loss disagree with it."""
    d = derive.derivation("softmax-ce")
    _warm_then(d, dataclasses.replace(d, assumptions=()))


def test_a_broken_constraint_fails_with_a_warm_cache() -> None:
    d = derive.derivation("softmax-ce")
    _warm_then(d, _with_constraint(d, lambda n: {y_[n]: 2 - sp.Add(*(y_[m] for m in range(1, n)))}))


def test_a_constraint_that_closes_over_another_value_fails_with_a_warm_cache() -> None:
    d = _with_constraint(derive.derivation("softmax-ce"), _sums_to(1))
    _warm_then(d, _with_constraint(d, _sums_to(2)))


def test_a_constraint_that_calls_a_changed_function_fails_with_a_warm_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """dense-softmax-ce's training set imposes its constraint through a module function; the
    lambda's own code stays the same when that function changes."""
    from derive.derivations import dense_softmax_ce

    d = derive.derivation("dense-softmax-ce").parts[1]
    verify.symbolic_checks(d)
    original = dense_softmax_ce.each_normalised
    monkeypatch.setattr(dense_softmax_ce, "each_normalised", lambda size: {k: 2 * v for k, v in original(size).items()})
    with pytest.raises(VerificationError):
        verify.symbolic_checks(d)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: dataclasses.replace(d, assumptions=()),
        lambda d: dataclasses.replace(d, assumptions=(dataclasses.replace(d.assumptions[0], statement=sp.Eq(sp.Symbol("s"), 2)),)),
        lambda d: dataclasses.replace(d, setting=dataclasses.replace(d.setting, intermediates=())),
        lambda d: _with_constraint(d, lambda n: {}),
        lambda d: dataclasses.replace(d, pitfall=dataclasses.replace(d.pitfall, claims=(_claim_in(d.pitfall.claims[0], dataclasses.replace(d.setting, constraints={})),) + d.pitfall.claims[1:])),
        lambda d: dataclasses.replace(d, pitfall=dataclasses.replace(d.pitfall, claims=(_claim_in(d.pitfall.claims[0], dataclasses.replace(d.setting, intermediates=())),) + d.pitfall.claims[1:])),
    ],
    ids=["assumption removed", "assumption restated", "intermediates", "constraint code", "a claim's constraints", "a claim's intermediates"],
)
def test_the_key_changes_with_everything_a_check_reads(change) -> None:
    d = derive.derivation("softmax-ce")
    assert verify.check_key(change(d)) != verify.check_key(d)
    assert verify.check_key(derive.derivation("softmax-ce")) == verify.check_key(d)


def _claim_in(claim, setting):
    return dataclasses.replace(claim, setting=setting)


def test_the_key_of_a_function_is_its_code_and_values() -> None:
    assert cache.code(_sums_to(1)) == cache.code(_sums_to(1))
    assert cache.code(_sums_to(1)) != cache.code(_sums_to(2))
    assert cache.code(lambda n: n + 1) != cache.code(lambda n: n + 2)
    assert cache.code(lambda n: n + 1) == cache.code(lambda n: n + 1)
