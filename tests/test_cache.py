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
