"""General H: every step is also checked numerically at H = 40 and at an H drawn for each run, so a
step that is right only for the sizes written out exactly (H = 1..6) is caught."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import sympy as sp

import derive
from derive import verify
from derive.errors import VerificationError
from derive.symbols import H, i, k, o, y


def elementary(n: int) -> sp.Expr:
    """The n-th elementary symmetric polynomial of y_1..y_H, written with Newton's identities in
    the power sums: identically 0 for H < n, and not for H >= n."""
    p = {m: sp.Sum(y[i] ** m, (i, 1, H)) for m in range(1, n + 1)}
    e = {0: sp.Integer(1)}
    for m in range(1, n + 1):
        e[m] = sp.Rational(1, m) * sp.Add(*[(-1) ** (r - 1) * e[m - r] * p[r] for r in range(1, m + 1)])
    return e[n]


def vanishing(upto: int) -> sp.Expr:
    """(H - 1)(H - 2)...(H - upto): 0 for H = 1..upto."""
    return sp.Mul(*[H - m for m in range(1, upto + 1)])


def with_last_step(d: derive.Derivation, rhs: sp.Expr) -> derive.Derivation:
    return replace(d, steps=d.steps[:-1] + (replace(d.steps[-1], rhs=rhs),))


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERIVE_NO_CACHE", "1")


def small_and_large(setting, step, n):
    """The exact, the small numeric and the general-H check of one step."""
    cases = verify.Instances(setting)
    return (
        verify._exact(cases, step, n),
        verify._numeric(cases, step, n),
        verify._general(setting, step.lhs, step.rhs, step.assumptions, f"step {n} ({step.rule})", str(n)),
    )


def test_a_term_that_vanishes_for_small_h_passes_the_small_checks_and_fails_at_h_40():
    """The issue's example: e_7 of the targets is 0 for H <= 6, so the exact and small numeric
    checks pass the planted step; the check at H = 40 does not."""
    d = derive.derivation("softmax-ce")
    last = d.steps[-1]
    exact, numeric, general = small_and_large(d.setting, replace(last, rhs=last.rhs + elementary(7)), len(d.steps))
    assert exact.passed and numeric.passed
    assert not general.passed and general.detail.startswith("lhs = ") and general.detail.endswith(tuple(f"at H = 40, k = {m}" for m in range(1, 41)))


@pytest.mark.parametrize(
    ("name", "plant"),
    [
        ("softmax-ce", lambda e: e + vanishing(6) * y[k]),
        ("softmax", lambda e: e + vanishing(6) * o[i] * o[k]),  # a Jacobian: every i, k
        ("log-softmax", lambda e: e * (1 + vanishing(6))),
        ("sigmoid-bce", lambda e: e + vanishing(6) / H),
        ("sse-linear", lambda e: e - vanishing(6) * o[k] ** 2),
        ("mse-softmax", lambda e: e + vanishing(6) * o[k] * y[k]),
    ],
)
def test_steps_right_only_for_small_h_are_caught(name, plant):
    d = derive.derivation(name)
    last = d.steps[-1]
    exact, numeric, general = small_and_large(d.setting, replace(last, rhs=plant(last.rhs)), len(d.steps))
    assert exact.passed and numeric.passed
    assert not general.passed and "at H = 40" in general.detail


def test_check_stops_at_a_step_right_only_for_small_h():
    d = derive.derivation("softmax")
    planted = with_last_step(d, d.steps[-1].rhs + vanishing(6) * o[i])
    with pytest.raises(VerificationError, match=rf"step {len(d.steps)} \(delta_cases\) failed \(also at H = 40 .*, else mpmath\): lhs = .* at H = 40, i = \d+, k = \d+$"):
        planted.check()


def test_a_layer_step_right_only_for_few_inputs_is_caught():
    """The inputs D of a layer are written out for D = 1, 2 only; at the large sizes D is 3 and
    more, so a term that vanishes for D <= 2 is caught."""
    from derive.derivations.dense_softmax_ce import D

    d = derive.derivation("dense-softmax-ce")
    last = d.steps[-1]
    exact, numeric, general = small_and_large(d.setting, replace(last, rhs=last.rhs + (D - 1) * (D - 2) * y[k]), len(d.steps))
    assert exact.passed and numeric.passed
    assert not general.passed and "at H = 40, D = 3" in general.detail


def test_a_pitfall_claim_right_only_for_small_h_is_caught():
    d = derive.derivation("softmax-ce")
    claim = next(c for c in d.pitfall.claims if c.key == "full_value")
    lhs, rhs = claim.equation.args
    planted = replace(claim, equation=sp.Eq(lhs, rhs + vanishing(6), evaluate=False))
    exact, general = verify._claim_checks(planted, {})
    assert exact.passed and exact.method.startswith("exact")
    assert not general.passed and general.what == "pitfall: full_value holds" and "at H = 40" in general.detail


def test_the_drawn_size_catches_what_h_40_misses_and_the_message_repeats_it(monkeypatch):
    """A term that vanishes for H <= 40 passes at H = 40; a run that draws a larger H fails, and
    its message names the size and the seed that draws it again."""
    seed = next(s for s in range(1000) if random.Random(f"{s}:sizes").randint(*verify.DRAWN) > verify.LARGE)
    monkeypatch.setenv(verify.SEED_VARIABLE, str(seed))
    monkeypatch.setattr(verify, "_RUN_SEED", None)
    size = verify.large_sizes(derive.derivation("softmax").setting)[1][0][H]
    assert size > verify.LARGE
    d = derive.derivation("softmax")
    planted = with_last_step(d, d.steps[-1].rhs + vanishing(verify.LARGE) * o[i])
    with pytest.raises(VerificationError, match=rf"at H = {size}, i = \d+, k = \d+ \(drawn for this run: DERIVE_CHECK_SEED={seed} draws it again\)"):
        planted.check()


def test_the_run_seed_comes_from_the_environment_or_is_drawn(monkeypatch):
    monkeypatch.setattr(verify, "_RUN_SEED", None)
    monkeypatch.setenv(verify.SEED_VARIABLE, "4711")
    assert verify.run_seed() == 4711
    setting = derive.derivation("dense-softmax-ce").parts[1].setting
    (fixed, drawn_fixed), (drawn, was_drawn) = verify.large_sizes(setting)
    assert not drawn_fixed and was_drawn
    assert fixed[setting.classes] == verify.LARGE and verify.DRAWN[0] <= drawn[setting.classes] <= verify.DRAWN[1]
    further = [v for s, v in {**fixed, **drawn}.items() if s != setting.classes]
    assert further and all(2 < v <= verify.OTHER_MOST for v in further)
    monkeypatch.setattr(verify, "_RUN_SEED", None)
    monkeypatch.delenv(verify.SEED_VARIABLE)
    assert 0 <= verify.run_seed() < 10**6


def test_a_claim_the_evaluator_cannot_evaluate_fails_instead_of_passing_or_crashing():
    """binomial(H, 7) is 0 for H <= 6; the numeric evaluator has no rule for it, and the check at
    larger H then fails and says why."""
    d = derive.derivation("softmax")
    last = d.steps[-1]
    exact, numeric, general = small_and_large(d.setting, replace(last, rhs=last.rhs + sp.binomial(H, 7) * o[i]), len(d.steps))
    assert exact.passed and numeric.passed
    assert not general.passed and general.detail.startswith("cannot be evaluated at H = 40") and "binomial" in general.detail


def test_the_method_says_what_the_check_establishes():
    report = derive.derivation("softmax").check()
    general = [c for c in report.checks if "H = 40" in c.method]
    assert len(general) == len(derive.derivation("softmax").steps)
    assert all(f"an H drawn from {verify.DRAWN[0]}..{verify.DRAWN[1]} for each run" in c.method for c in general)


def test_the_documents_and_the_readme_say_what_the_checks_establish():
    """The sentence that says what the checks prove and what they only test names the sizes the
    checker uses, and says evidence, not proof, for every H."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = tomllib.loads((root / "templates" / "wording.toml").read_text(encoding="utf-8"))["section"]["verification_text"]
    readme = (root / "README.md").read_text(encoding="utf-8")
    sizes = rf"H = {verify.SIZES[0]}, \dots, {verify.SIZES[-1]}"
    drawn = f"{verify.DRAWN[0]} to {verify.DRAWN[1]}"
    for words in (text, readme):
        assert sizes in words and f"H = {verify.LARGE}" in words and drawn in words
        assert "evidence" in words and "not a proof" in words
