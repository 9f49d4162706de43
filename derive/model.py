"""The derivation model: immutable records that hold SymPy objects and no prose.

Plain data: this module imports no check and no document. What a user does with a derivation
(check it, print it, show it in a notebook) is the public API's (see :mod:`derive.public`).

A :class:`Derivation` is a claim in steps. Each :class:`Step` says ``lhs = rhs`` for the quantity
the derivation differentiates (its ``subject``), under the assumptions the step names. Wording
(rule titles, justifications, labels) lives in the templates and is looked up by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import sympy as sp

if TYPE_CHECKING:  # pragma: no cover
    from derive.setting import Setting
    from derive.worked import Worked

Path = tuple[int, ...]
"""The position of a sub-term: the indices of ``.args`` to follow from the root."""


@dataclass(frozen=True)
class Label:
    """A sub-term of a step's ``rhs`` that the documents mark with an underbrace."""

    path: Path
    key: str


@dataclass(frozen=True)
class Case:
    """One branch of a case split: ``value`` holds where ``condition`` does."""

    condition: sp.Basic
    value: sp.Expr


@dataclass(frozen=True)
class Step:
    """One application of a rule: ``lhs = rhs``, both equal to the derivation's subject."""

    rule: str
    lhs: sp.Expr
    rhs: sp.Expr
    assumptions: tuple[str, ...] = ()
    labels: tuple[Label, ...] = ()
    identity: sp.Eq | None = None
    """The identity the rule used, shown beside the step (e.g. d ln u / du = 1/u)."""
    cases: tuple[Case, ...] = ()
    """A case split. With an ``identity``, the cases are those of its lhs, and verification
    checks each one where its condition holds and that the cases cover every index value."""
    notes: tuple[tuple[str, sp.Basic], ...] = ()
    """The step's own terms by role (the factor that comes out, the variable, the intermediate
    the chain rule goes through), for wording that speaks of this step and no other."""

    @property
    def equation(self) -> sp.Eq:
        return sp.Eq(self.lhs, self.rhs, evaluate=False)


@dataclass(frozen=True)
class Definition:
    """``symbol := value``; ``key`` names its wording in the templates."""

    key: str
    symbol: sp.Expr
    value: sp.Expr


@dataclass(frozen=True)
class Assumption:
    """A named assumption, e.g. ``normalised``: sum_i y_i = 1."""

    key: str
    statement: sp.Basic


@dataclass(frozen=True)
class Claim:
    """An equation the pitfall section states, whether it holds, and in which setting."""

    key: str
    equation: sp.Eq
    holds: bool
    setting: "Setting" = field(repr=False, compare=False)
    assumptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pitfall:
    """The wrong turn a learner takes, the right one, and numbers that tell them apart."""

    claims: tuple[Claim, ...]
    example: "Example"
    shortcut: tuple[sp.Expr, ...]
    """The diagonal-only chain rule, y_j (o_j - 1), at the example."""
    quotient: tuple[sp.Expr, ...]
    """The learner's division (o_j - y_j) / (o_j (1 - o_j)), at the example."""
    direct: tuple[sp.Expr, ...]
    """dE/do_j = -y_j / o_j, at the example."""


@dataclass(frozen=True)
class Comparison:
    """The derived gradient and a tempting formula for it, side by side at one worked example."""

    key: str
    """Names the example's wording."""
    example: "Example"
    """The numbers, with the derived gradient."""
    shortcut: tuple[sp.Expr, ...]
    """The tempting formula at the same numbers."""


@dataclass(frozen=True)
class Counterexample:
    """A tempting formula for the result shown wrong: claims checked for a symbolic H (the
    formula with ``holds=False``), and worked examples where it parts from the derived gradient."""

    claims: tuple[Claim, ...]
    shortcut: sp.Expr
    """The tempting formula, in terms of the outputs, the targets and the index k."""
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class Example:
    """A worked example with exact or high-precision SymPy numbers (classes run 1..H)."""

    logits: tuple[sp.Expr, ...]
    target: tuple[sp.Expr, ...]
    probabilities: tuple[sp.Expr, ...]
    loss: sp.Expr
    gradient: tuple[sp.Expr, ...]
    given: tuple[str, ...] = ()
    """The numbers the user supplied, by name ("logits", "target"); empty when all are ours."""
    extra: tuple[tuple[str, object], ...] = ()
    """A derivation's own numbers, by name (e.g. the smoothed target), for the documents."""
    gradient_sum: sp.Expr | None = None
    """The sum of the gradient's entries, computed to its own digits (0 exactly where it is 0,
    not the sum of the rounded entries); None where it was not computed."""


@dataclass(frozen=True)
class JacobianExample:
    """A worked example of a Jacobian: row i is output i, column k is logit k (classes run 1..H)."""

    logits: tuple[sp.Expr, ...]
    probabilities: tuple[sp.Expr, ...]
    jacobian: tuple[tuple[sp.Expr, ...], ...]
    """Every entry for a small H; beyond ``derive.concrete.MATRIX_MOST`` classes, rows whose
    entries are computed from the probabilities when asked for (a document shows a few)."""
    given: tuple[str, ...] = ()
    """The numbers the user supplied, by name ("logits", "target"); empty when all are ours."""


@dataclass(frozen=True)
class LayerExample:
    """A worked example of a dense layer before a loss, z = W x + b: the inputs x_1..x_D, the
    weights W (row k feeds logit k), the biases b, the target, and the gradient with respect to
    every parameter. The names are those of the formulas and of the JSON ``example``."""

    x: tuple[sp.Expr, ...]
    W: tuple[tuple[sp.Expr, ...], ...]
    """Row k, column d: W_kd."""
    b: tuple[sp.Expr, ...]
    logits: tuple[sp.Expr, ...]
    probabilities: tuple[sp.Expr, ...]
    target: tuple[sp.Expr, ...]
    loss: sp.Expr
    gradient_W: tuple[tuple[sp.Expr, ...], ...]
    """Row k, column d: dE/dW_kd."""
    gradient_b: tuple[sp.Expr, ...]
    given: tuple[str, ...] = ()
    """The numbers the user supplied, by name ("x", "W", "b", "target"); empty when all are ours."""


@dataclass(frozen=True)
class RuleVector:
    """A vector of ``size`` entries given by its rule: ``formula`` in ``index`` (1-based in the
    formula, 0-based in ``v[m]`` like a tuple). Entries are built when asked for, so a vector of
    100,000 classes costs nothing until a document shows a few of them; the checks evaluate the
    formula for every entry at once (see :mod:`derive.directions`). ``write`` builds entry m
    (1-based) when the plain substitution would not keep its shape."""

    size: int
    index: sp.Symbol
    formula: sp.Expr
    write: Callable[[int], sp.Expr] | None = field(default=None, compare=False, repr=False)

    def entry(self, m: int) -> sp.Expr:
        return self.write(m) if self.write is not None else self.formula.xreplace({self.index: sp.Integer(m)})

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, at: "int | slice") -> "sp.Expr | tuple[sp.Expr, ...]":
        if isinstance(at, slice):
            return tuple(self.entry(m + 1) for m in range(*at.indices(self.size)))
        m = at + self.size if at < 0 else at
        if not 0 <= m < self.size:
            raise IndexError(at)
        return self.entry(m + 1)

    def __iter__(self) -> Iterator[sp.Expr]:
        return (self.entry(m) for m in range(1, self.size + 1))


@dataclass(frozen=True)
class WrittenOut:
    """A quantity written out term by term for a concrete H: ``front`` times the sum of
    ``terms`` (``front`` is None where nothing stands in front). The terms are built when asked
    for; ``expr`` is the whole expression, unevaluated, for a size small enough to build it."""

    front: sp.Expr | None
    terms: "RuleVector | tuple[sp.Expr, ...]"

    @property
    def expr(self) -> sp.Expr:
        inner = sp.Add(*self.terms, evaluate=False) if len(self.terms) > 1 else self.terms[0]
        return inner if self.front is None else sp.Mul(self.front, inner, evaluate=False)


@dataclass(frozen=True)
class RuleMatrix:
    """An H x H matrix given by its rule: ``diagonal`` where the row index ``row`` equals the
    column index ``col``, ``off`` elsewhere, except the entries listed in ``exceptions``
    (0-based (r, c) and their formula). Entries are built when asked for (1-based indices in
    the formulas, 0-based in ``m[r, c]`` like a SymPy matrix), so a large H costs nothing twice."""

    size: int
    row: sp.Symbol
    col: sp.Symbol
    diagonal: sp.Expr
    off: sp.Expr
    exceptions: tuple[tuple[tuple[int, int], sp.Expr], ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def rule(self, r: int, c: int) -> sp.Expr:
        """The formula of entry (r, c), still in terms of the index symbols."""
        for at, formula in self.exceptions:
            if at == (r, c):
                return formula
        return self.diagonal if r == c else self.off

    def __getitem__(self, rc: tuple[int, int]) -> sp.Expr:
        r, c = rc
        return self.rule(r, c).xreplace({self.row: sp.Integer(r + 1), self.col: sp.Integer(c + 1)})

    def as_matrix(self) -> sp.ImmutableMatrix:
        return sp.ImmutableMatrix(self.size, self.size, lambda r, c: self[r, c])


@dataclass(frozen=True)
class Concrete:
    """The derivation instantiated for a concrete number of classes."""

    classes: int
    loss: WrittenOut | None
    """E written out term by term (None for a Jacobian derivation, which has no loss)."""
    jacobian: RuleMatrix
    """Row i is output i, column k is logit z_k, in terms of the outputs o_1..o_H."""
    gradient: RuleVector | tuple[sp.Expr, ...] | None
    example: Example | JacobianExample | LayerExample
    of: str | None = "softmax"
    """The function whose Jacobian ``jacobian`` is: a key of ``derive.concrete.JACOBIANS``, whose
    hand-written checks apply; None for the checks from the definitions (see :mod:`derive.concrete`)."""
    parameters: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()
    """Symbols fixed to numbers in this instance (a temperature)."""
    assumptions: tuple[str, ...] = ()
    """The assumptions the gradient formula relies on (none when the target is not normalised)."""
    by: tuple[sp.Indexed, ...] = ()
    """The variables of the entries of ``gradient``, one each (W_11, ..., b_H for a layer); empty
    when the gradient is with respect to the logits z_1..z_H."""


@dataclass(frozen=True)
class Derivation:
    """A named derivation: definitions, assumptions, steps and the result they reach."""

    name: str
    subject: sp.Expr
    definitions: tuple[Definition, ...]
    assumptions: tuple[Assumption, ...]
    steps: tuple[Step, ...]
    setting: "Setting" = field(repr=False, compare=False)
    general: sp.Eq | None = None
    """The result before the assumptions that specialise it (e.g. o_k sum y - y_k)."""
    pitfall: Pitfall | None = None
    concrete: Concrete | None = None
    options: tuple[tuple[str, sp.Expr], ...] = ()
    """The derivation's own options as built (("temperature", 2),): the documents state their
    values, and their names select the wording of this variant (see ``rendering.own_wording``)."""
    counterexample: Counterexample | None = None
    """A tempting formula that the result is not, shown wrong by claims and numbers."""
    words: tuple[tuple[str, str], ...] = ()
    """A spec's own wording: ("title", ...), ("describe NAME", ...) for a name's role and
    ("public NAME", ...) for the name its numbers go by on the command line and in the JSON."""
    worked: "Worked | None" = None
    """The worked example of a planned derivation for a concrete size (see :mod:`derive.worked`)."""
    parts: tuple["Derivation", ...] = ()
    """Further results of the same document, each a chain of steps from its own subject (the
    gradient of a layer's bias beside that of its weights), verified like the main chain and
    shown after its result. A part shares the document's definitions; its own (beyond those)
    are listed in its ``definitions``."""

    @property
    def classes(self) -> int | None:
        if self.worked is not None:
            return dict((str(s), n) for s, n in self.worked.sizes).get("H")
        return self.concrete.classes if self.concrete else None

    @property
    def result(self) -> sp.Eq:
        """The final equation: subject = the last step's rhs."""
        return sp.Eq(self.subject, self.steps[-1].rhs, evaluate=False)
