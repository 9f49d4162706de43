"""The derivation the public API returns (``derive.derivation``, ``derive.grad``): the model's
record (:class:`derive.model.Derivation`, plain data) with what a user does with it. It checks
itself (memoised: see :func:`derive.checking.check`), Jupyter shows it (``_repr_mimebundle_``,
see :mod:`derive.notebook`) and ``str`` prints its steps as a tree.

This module sits above the checks and the documents, which take the plain record: data flows one
way, text -> definitions -> steps -> checks -> documents, and the record knows none of them.
"""

from __future__ import annotations

from dataclasses import fields

from derive import checking, model, notebook
from derive.verify import Report


class Derivation(model.Derivation):
    """A :class:`derive.model.Derivation` that checks, shows and prints itself.
    ``dataclasses.replace`` keeps the class, so a changed copy does too."""

    def check(self) -> Report:
        """Verify every step and the result; raise VerificationError on the first failure.

        The passed report is kept on the derivation, which is immutable, so rendering it in
        several formats does the checks (O(H^2) for a concrete H) once.
        """
        return checking.check(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        """Jupyter shows the document: ``text/html`` with MathML, ``text/markdown`` with
        ``$``/``$$`` math, ``text/latex`` the result as display math, ``text/plain`` the tree
        (see :mod:`derive.notebook`)."""
        return notebook.mimebundle(self, include, exclude)

    def __str__(self) -> str:
        return notebook.plain(self)


def public(d: model.Derivation) -> Derivation:
    """The record as the public API returns it."""
    return d if isinstance(d, Derivation) else Derivation(**{f.name: getattr(d, f.name) for f in fields(d)})
