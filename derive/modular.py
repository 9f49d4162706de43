"""Identity testing in exact arithmetic modulo a prime: a rational function is evaluated at
random points of the field with P elements instead of being multiplied out.

A nonzero rational function of degree d in its numerator vanishes at a random point with
probability at most d / P (Schwartz-Zippel); with P = 2^61 - 1 and POINTS points the chance that
a wrong claim passes is below (d / P)^POINTS, about 10^-30 for the degrees met here. Multiplying
out the same expressions with SymPy costs seconds to minutes at H = 6.
"""

from __future__ import annotations

import random

import sympy as sp

P = 2**61 - 1
"""A Mersenne prime: the field of the checks."""
POINTS = 2
"""Random points per claim; a difference that vanishes at all of them is taken to be zero."""


class Impure(Exception):
    """The expression holds something other than a rational function of its symbols."""


def value(e: sp.Basic, env: dict, memo: dict) -> int:
    """``e`` modulo P at the point ``env`` (symbol -> residue); ZeroDivisionError where a
    denominator vanishes there; Impure for a term that is not rational in the symbols."""
    if e in memo:
        return memo[e]
    if e.is_Integer:
        out = int(e) % P
    elif e.is_Rational:
        out = int(e.p) * _inverse(int(e.q)) % P
    elif isinstance(e, sp.Symbol):
        out = env[e]
    elif isinstance(e, sp.Add):
        out = sum(value(a, env, memo) for a in e.args) % P
    elif isinstance(e, sp.Mul):
        out = 1
        for a in e.args:
            out = out * value(a, env, memo) % P
    elif isinstance(e, sp.Pow) and e.exp.is_Integer:
        b = value(e.base, env, memo)
        n = int(e.exp)
        out = pow(b, n, P) if n >= 0 else pow(_inverse(b), -n, P)
    elif "opaque" in env:
        # Any other term (e^u of a u that is not a sum of monomials, a root) stands for an
        # independent unknown: if the claim vanishes with these free, it vanishes with the
        # terms' true values too. The converse can fail, so a nonzero value is not a verdict.
        env["opaque"].add(e)
        out = env["draw"](e)
    else:
        raise Impure(type(e).__name__)
    memo[e] = out
    return out


def _inverse(x: int) -> int:
    if x % P == 0:
        raise ZeroDivisionError
    return pow(x, P - 2, P)


def vanishes(e: sp.Expr, seed: str) -> bool | None:
    """Whether the rational function ``e`` is zero: True when it vanishes at POINTS random
    points, False at the first point where it does not, None when ``e`` is not a rational
    function of its symbols (the caller decides another way)."""
    rng = random.Random(seed)
    symbols = sorted(e.free_symbols, key=sp.default_sort_key)
    tried = 0
    found = 0
    while found < POINTS:
        tried += 1
        if tried > 10 * POINTS:
            return None  # a denominator vanishes everywhere we look: not a function here
        env: dict = {s: rng.randrange(1, P) for s in symbols}
        drawn: dict = {}
        env["opaque"] = set()
        env["draw"] = lambda atom: drawn.setdefault(atom, rng.randrange(1, P))
        try:
            v = value(e, env, {})
        except ZeroDivisionError:
            continue
        if v != 0:
            return None if env["opaque"] else False
        found += 1
    return True
