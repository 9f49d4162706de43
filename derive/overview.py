"""The overview: every activation and loss pair of the catalog in one table, with its gradient,
whether it is "output minus target", and why.

Nothing in the table is typed in by hand: each row builds its derivation, verifies it, and
takes the result from it; whether the result is output minus target is decided by comparing it
with o_k - y_k symbolically. The wording (the pair's names, the reason) comes from each
derivation's ``overview`` entry in ``templates/derivations/NAME.toml``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import sympy as sp

from derive.derivations.entries import CATALOG
from derive.errors import UsageError
from derive.latex import latex
from derive.model import Derivation
from derive.rendering import FORMATS

TEMPLATE = "overview.{}.j2"

VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("softmax-ce", {"temperature": 2}),
    ("softmax-ce", {"label_smoothing": 0.1}),
)
"""Rows beyond one per catalog entry: a derivation with options, e.g. a temperature."""


def entries() -> list[tuple[str, dict[str, Any]]]:
    """(name, options) of every row: one per derivation and variant, in catalog order; an entry
    that is a spec file has a row where it says how (a loss: its [overview] table)."""
    return [(name, options) for name in CATALOG if _listed(name) for options in [{}] + [o for n, o in VARIANTS if n == name]]


def _listed(name: str) -> bool:
    return not CATALOG[name].spec or bool(_spec_words(name).get("overview"))


def _spec_words(name: str) -> dict[str, Any]:
    """The wording a spec file gives its entry: the title and the overview row."""
    from derive.derivations.from_spec import spec

    s = spec(name)
    return {"title": s.title or name, "overview": dict(s.overview)}


@lru_cache(maxsize=None)
def _built(name: str, options: tuple[tuple[str, Any], ...]) -> Derivation:
    """A row's derivation, built once: the overview's table and the documents it links to are of
    the same derivation, whose checks (kept on it) then run once."""
    import derive

    return derive.derivation(name, **dict(options))


def rows(words: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per derivation (and variant), in catalog order."""
    out = []
    for name, options in entries():
        d = _built(name, tuple(sorted(options.items())))
        report = d.check()
        about = words["derivation"][name] if not CATALOG[name].spec else _spec_words(name)
        row = about.get("overview", {})
        if options:
            # A variant's row has its own wording: [derivation.NAME.overview.OPTION].
            row = row[" ".join(sorted(options))]
        # The sentence on the pair states facts about this derivation: they are checked against it.
        from derive import proofread
        from derive.latex import printing_notation

        proofread.facts(proofread.WordingFacts(d, [row.get("why", "")], printing_notation()))
        out.append(
            {
                "name": name,
                "options": options,
                "title": about["title"],
                "activation": row.get("activation", ""),
                "loss": row.get("loss", ""),
                "why": row.get("why", ""),
                "result": latex(d.result),
                "kind": "loss" if _is_loss(d) else "jacobian",
                "output_minus_target": output_minus_target(d),
                "checks": len(report.checks),
            }
        )
    return out


def _is_loss(d: Derivation) -> bool:
    return isinstance(d.subject, sp.Derivative) and not isinstance(d.subject.expr, sp.Indexed) and d.subject.expr.is_Symbol


def output_minus_target(d: Derivation) -> bool:
    """Whether the result is exactly o_k - t_k for the derivative's index k and a target t."""
    rhs = d.result.rhs
    k = d.setting.index
    outputs = d.setting.intermediates[0]
    targets = {x.base for x in rhs.atoms(sp.Indexed) if x.base != outputs and x.base != d.setting.wrt.base}
    return any(sp.expand(rhs - (outputs[k] - t[k])) == 0 for t in targets)


def document(words: dict[str, Any], fmt: str) -> dict[str, Any]:
    from derive.rendering import prose

    about = words["overview"]
    table = rows(words)
    for r in table:
        r["why"] = prose(r["why"], fmt)
        r["link"] = _link(r, fmt)
        r["link_target"] = f"({r['link']})"
    return {
        "format": fmt,
        "title": about["title"],
        "intro": prose(about["intro"], fmt),
        "canonical": prose(about["canonical"], fmt),
        "jacobians_intro": prose(about["jacobians_intro"], fmt),
        "words": about,
        "losses": [r for r in table if r["kind"] == "loss"],
        "jacobians": [r for r in table if r["kind"] == "jacobian"],
        "rows": table,
    }


LINKS = {"md": "md", "html": "html", "tex": "pdf", "pdf": "pdf"}
"""The format of the documents an overview links to: its own, and a LaTeX overview's links are
for its PDF. JSON has no links."""
DOCUMENTS = {"md": "md", "html": "html", "tex": "tex", "pdf": "pdf"}
"""The format of the documents written beside an overview: a LaTeX overview gets their LaTeX,
which compiles to the PDFs its links name."""


def _link(row: dict[str, Any], fmt: str) -> str:
    """The file of the row's derivation, beside the overview (in output/ for the gallery)."""
    from derive.derivations.naming import file_name

    return file_name(row["name"], None, LINKS.get(fmt, "pdf"), row["options"])


def linked(
    format: str = "md", templates: Path | str | None = None, notation: Any = None, markdown: str | None = None
) -> Iterator[tuple[str, str | bytes]]:
    """The documents the overview in ``format`` links to, as (file name, content): each row's
    derivation with the same templates, notation and Markdown math syntax, so that an overview
    written to a fresh folder has no dead link. Nothing for JSON."""
    import derive
    from derive.derivations.naming import file_name

    fmt = DOCUMENTS.get(format)
    if fmt is None:
        return
    for name, options in entries():
        d = _built(name, tuple(sorted(options.items())))
        syntax = {"markdown": markdown} if fmt == "md" and markdown is not None else {}
        yield file_name(name, None, fmt, options), derive.render(d, fmt, templates=templates, notation=notation, **syntax)


def render(format: str = "md", templates: Path | str | None = None, notation: Any = None, markdown: str | None = None) -> str | bytes:
    """The overview as md, tex, json or html text, or pdf bytes; ``notation`` and ``markdown`` as
    for :func:`derive.render`."""
    from derive import markdown as flavours
    from derive import notation as naming
    from derive.latex import DEFAULT, printing

    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "py":
        raise UsageError("the overview has no py format: a pytest file checks one derivation (derive NAME --classes N --format py)")
    syntax = flavours.check(markdown)
    if markdown is not None and format != "md":
        raise UsageError(f"the Markdown math syntax applies to the md format, not {format}")
    written = naming.resolve(notation)
    with printing(written):
        document = _render(format, templates, written if written != DEFAULT else None)
    return flavours.math_syntax(document, syntax) if format == "md" else document


def _render(format: str, templates: Path | str | None, notation: Any) -> str | bytes:
    """The overview, every formula the printer wrote for it read back first (derive.proofread)."""
    from derive import proofread
    from derive.latex import printing_notation, recording

    with recording() as printed:
        out = _written(format, templates, notation)
    proofread.rendered([(t, e, labels) for t, e, labels, n in printed], (), printing_notation())
    return out


def _written(format: str, templates: Path | str | None, notation: Any) -> str | bytes:
    from derive import notation as naming
    from derive.rendering import environment, render_template, wording

    env = environment(templates)
    words = wording(env) if notation is None else naming.wording(wording(env), notation)
    if format == "json":
        data = document(words, "json")
        keys = ("name", "options", "title", "activation", "loss", "result", "kind", "output_minus_target")
        written = {"notation": naming.names(notation)} if notation is not None and not naming.is_default(notation) else {}
        return json.dumps({"title": data["title"], **written, "rows": [{k: r[k] for k in keys} for r in data["rows"]]}, indent=2, ensure_ascii=False) + "\n"
    if format == "pdf":
        from derive.pdf import build_pdf

        return build_pdf(render_template(env, TEMPLATE.format("tex"), document(words, "tex")))
    return render_template(env, TEMPLATE.format(format), document(words, format))


__all__ = ["render", "rows", "output_minus_target", "linked"]
