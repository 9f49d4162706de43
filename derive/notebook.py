"""A derivation in a notebook: what Jupyter (and nbconvert, VS Code, Colab) is offered to show.

- ``text/html``: the HTML document's body, formulas as MathML, with its style sheet scoped to
  the output (a notebook is one page: a rule for ``h2`` or ``table`` would restyle every cell);
- ``text/markdown``: the Markdown document with ``$``/``$$`` math, which notebook front ends
  render (GitHub's ```` ```math ```` fences would be shown as code);
- ``text/latex``: math only, the result(s) as one ``$$ ... $$`` display, for front ends and
  exports (nbconvert's LaTeX and PDF) that take LaTeX;
- ``text/plain``: the steps as a tree.

Nothing here computes: the documents are the renderer's, the formulas the LaTeX printer's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from derive.model import Derivation

SCOPE = "derive-document"
"""The class of the element that holds a derivation's HTML in a notebook."""

_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
_MAIN = re.compile(r"<main(?P<attributes>[^>]*)>(?P<body>.*)</main>", re.S)
_BODY = re.compile(r"<body[^>]*>(?P<body>.*)</body>", re.S)
_RULE = re.compile(r"(?P<selectors>[^{}]+)\{(?P<declarations>[^{}]*)\}")
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_PAGE_SELECTOR = re.compile(r"^(body|main)(?=$|[.:#\[])")


def mimebundle(d: "Derivation", include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> dict[str, str]:
    """The representations of ``d`` for IPython's ``_repr_mimebundle_``, only those asked for."""
    wanted = [m for m in MIMETYPES if (include is None or m in include) and m not in (exclude or ())]
    return {m: MIMETYPES[m](d) for m in wanted}


def html(d: "Derivation") -> str:
    """The HTML document as a fragment for a notebook cell (see :func:`fragment`)."""
    from derive.rendering import render

    return fragment(render(d, "html"))


def markdown(d: "Derivation") -> str:
    from derive.rendering import render

    return render(d, "md", markdown="dollars")


def latex(d: "Derivation") -> str:
    r"""The result as display math: ``$$\frac{\partial E}{\partial z_k} = o_k - y_k$$``; a document
    with further results of other variables (the bias of a dense layer) gets one aligned row
    each. A part that restates a result for a training set has the same left side and is left
    out: the rows would read as two values of one derivative."""
    from derive.latex import latex as tex

    results = [d.result]
    for part in d.parts:
        if all(part.subject != r.lhs for r in results):
            results.append(part.result)
    if len(results) == 1:
        return f"$${tex(d.result.lhs)} = {tex(d.result.rhs)}$$"
    rows = r" \\ ".join(f"{tex(r.lhs)} &= {tex(r.rhs)}" for r in results)
    return rf"$$\begin{{aligned}} {rows} \end{{aligned}}$$"


def plain(d: "Derivation") -> str:
    """The steps as a tree: the definitions, the assumptions, each step's rule and right side,
    the result, then each further part indented (what ``str`` of a derivation gives)."""
    from derive.latex import plain as text

    lines = [f"{d.name}: {text(d.subject)}"]
    for x in d.definitions:
        lines.append(f"  definition {text(x.symbol)} = {text(x.value)}")
    for a in d.assumptions:
        lines.append(f"  assumption {a.key}: {text(a.statement)}")
    for n, s in enumerate(d.steps, 1):
        used = f"  [{', '.join(s.assumptions)}]" if s.assumptions else ""
        lines.append(f"  {n:2}. {s.rule:<17} = {text(s.rhs)}{used}")
        for c in s.cases:
            lines.append(f"        case {text(c.condition)}: {text(c.value)}")
    lines.append(f"  result: {text(d.result.lhs)} = {text(d.result.rhs)}")
    for part in d.parts:
        lines.append("  " + plain(part).replace("\n", "\n  "))
    return "\n".join(lines)


MIMETYPES: dict[str, Callable[["Derivation"], str]] = {
    "text/html": html,
    "text/markdown": markdown,
    "text/latex": latex,
    "text/plain": plain,
}
"""What a notebook is offered, richest first."""


def fragment(page: str) -> str:
    """A whole HTML page as a fragment for a notebook cell: the content of its ``<main>`` (or
    ``<body>``) in a ``<div class="derive-document">``, with the page's style sheet scoped to it.

    A page from user templates without ``<main>`` or ``<body>`` is taken whole.
    """
    style = _STYLE.search(page)
    main = _MAIN.search(page)
    if main is not None:
        classes = re.search(r'class="([^"]*)"', main["attributes"])
        body, extra = main["body"], f" {classes.group(1)}" if classes else ""
    else:
        found = _BODY.search(page)
        body, extra = (found["body"] if found else _STYLE.sub("", page)), ""
    css = f"<style>\n{scoped(style.group(1))}</style>\n" if style else ""
    return f'<div class="{SCOPE}{extra}">\n{css}{body.strip()}\n</div>\n'


def scoped(css: str) -> str:
    """Every rule of a style sheet limited to the derivation's element: ``body`` and ``main``
    become that element, any other selector a descendant of it."""
    out = []
    for rule in _RULE.finditer(_COMMENT.sub("", css)):
        selectors = [_scope(s.strip()) for s in rule["selectors"].split(",")]
        out.append(f"{', '.join(selectors)} {{{rule['declarations']}}}\n")
    return "".join(out)


def _scope(selector: str) -> str:
    if _PAGE_SELECTOR.match(selector):
        return _PAGE_SELECTOR.sub(f".{SCOPE}", selector)
    return f".{SCOPE} {selector}"
