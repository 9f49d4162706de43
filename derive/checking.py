"""Every check of a derivation, in order: the steps for a symbolic H (:mod:`derive.verify`), what
the documents show beyond them (:mod:`derive.shown`), the worked example of a planned derivation
(:mod:`derive.worked`) and the appendix for a concrete H (:mod:`derive.concrete`).

This module sits above all of them: they know nothing of one another's checks, and the documents
and the public API come after it.
"""

from __future__ import annotations

from dataclasses import replace

from derive import concrete, shown, worked
from derive.model import Derivation
from derive.verify import Report, passing, symbolic_checks


def check(d: Derivation) -> Report:
    """Verify a derivation and its further parts; raise VerificationError on the first failed check.

    The passed report is kept on the derivation, which is immutable, so rendering it in several
    formats does the checks (O(H^2) for a concrete H) once.
    """
    report = d.__dict__.get("_report")
    if report is None:
        report = _check(d)
        object.__setattr__(d, "_report", report)  # a memo, not a field: equality ignores it
    return report


def _check(d: Derivation) -> Report:
    checks = symbolic_checks(d)
    for part in d.parts:
        checks.extend(replace(c, what=f"{part.name}: {c.what}") for c in symbolic_checks(part))
    # What the documents show beyond the steps: the labels, the pitfall's table; and after the
    # checks of a concrete H, its example's outputs, the error written out, the gradient's sum.
    checks.extend(passing(d, shown.checks(d)))
    for x in (d, *d.parts):
        if x.worked is not None:
            checks.extend(passing(d, (replace(c, what=f"{x.name}: {c.what}") if x is not d else c for c in worked.checks(x))))
    if d.concrete is not None:
        checks.extend(passing(d, concrete.checks(d)))
    checks.extend(passing(d, shown.checks(d, concrete=True)))
    return Report(d.name, tuple(checks))
