"""The documents' LaTeX formulas as MathML, for the HTML page (browsers render MathML Core).

Why latex2mathml and not SymPy's MathML printer: what a document shows is LaTeX, not SymPy
expressions. The steps carry underbraces with labels from ``wording.toml``, the Jacobian has
its case split, large matrices are elided with ``\\vdots`` and ``\\ddots``, and the templates
write ``\\boxed``, ``\\overset{?}{=}`` and ``\\qquad`` around the printed parts. SymPy's printer
sees none of that, so converting the strings of :mod:`derive.latex` keeps one source for every
format, and a formula reads the same in Markdown, LaTeX, PDF and HTML.

latex2mathml converts every construct the documents use. What it does not do as TeX does is
mended here: the limits of a sum (:func:`prepare`), the spacing of signs, ``\\ln``, slashes and
dots (:func:`tex_spacing`), ``<`` and ``&`` in ``\\text``, and input it would quietly accept
half-parsed. ``\\boxed`` becomes ``<menclose notation="box">`` and a case split a table with
left-aligned columns; MathML Core leaves both to CSS, so the page's style sheet draws them.
latex2mathml is imported on first use, so the other formats do not pay for it.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

from derive.errors import DeriveError

_NAMESPACE = ' xmlns="http://www.w3.org/1998/Math/MathML"'
_CHARACTER = re.compile(r"&#x([0-9A-Fa-f]+);")
_KEEP_ESCAPED = {"&", "<", ">", "\u00a0"}
_TEXT = re.compile(r"(<mtext>)(.*?)(</mtext>)", re.S)
_UNKNOWN = re.compile(r">(\\[A-Za-z]+)<")
_ARITY = {"mfrac": 2, "msub": 2, "msup": 2, "msubsup": 3, "munder": 2, "mover": 2, "munderover": 3, "mroot": 2}
"""Elements with a fixed number of parts: latex2mathml writes ``\\frac{a`` as a one-part fraction."""

_SUM = re.compile(r"\\sum(?=\s*[_^])")
_OPERATOR_NAME = re.compile(r"(<mrow>)?<mi>(ln|log|exp)</mi>(</mrow>)?")
_UNARY_MINUS = re.compile(r'(<mrow>|<mtd[^>]*>|<mo>[^<)\]}|]*</mo>|<mo [^>]*form="prefix"[^>]*>[^<]*</mo>)<mo>−</mo>')
_ORDINARY = re.compile(r"<mo>([/∂…⋯⋮⋱])</mo>")
THIN_SPACE = "0.1667em"


def mathml(latex: str, block: bool = False) -> str:
    """One formula as a ``<math>`` element, ``display="block"`` for display math.

    Raises:
        DeriveError: the formula is not LaTeX that latex2mathml understands (an unknown macro or
            a missing brace in a label of a user's wording, say), with the formula in the message.
    """
    from latex2mathml.converter import convert

    source = latex.strip()
    try:
        out = convert(prepare(source), display="block" if block else "inline")
    except Exception as error:  # a third-party parser fed with user wording: any failure is theirs
        raise DeriveError(f"formula {source!r} does not convert to MathML: {str(error) or type(error).__name__}") from error
    unknown = _UNKNOWN.search(out)
    if unknown:  # latex2mathml keeps a macro it does not know as the text of an element
        raise DeriveError(f"formula {source!r} does not convert to MathML: unknown macro {unknown.group(1)}")
    out = tex_spacing(_characters(_escape_text(out))).replace(_NAMESPACE, "").replace(' display="inline"', "")
    try:
        problem = _malformed(ElementTree.fromstring(out))
    except ElementTree.ParseError as error:
        problem = str(error)
    if problem:
        raise DeriveError(f"formula {source!r} does not convert to MathML: {problem}")
    return out


def prepare(latex: str) -> str:
    r"""The LaTeX that latex2mathml needs to give what TeX gives.

    ``\sum`` with limits gets ``\limits``: latex2mathml writes side scripts (``msubsup``) for a
    sum inside brackets even in display math. With ``munderover`` the browser does what TeX
    does: limits below and above in display math, beside the sign inline and in fractions
    (``movablelimits``). A bare ``\sum`` keeps none: latex2mathml would write an empty script.
    """
    return _SUM.sub(r"\\sum\\limits", latex)


def tex_spacing(out: str) -> str:
    r"""TeX's spacing for symbols that latex2mathml writes as ``<mo>`` with an operator's spaces.

    - A minus that starts a row or follows an operator is a sign: ``-\sum``, ``= -o_i o_k``.
    - ``\ln`` is an operator with a thin space each side (``y_i \ln o_i``), not a word glued
      to its argument (``<mi>ln</mi>`` gives ``lno_i``), and none at either end of a row.
    - A slash, ``\partial`` and the dots take no space of their own: ``\partial E / \partial z_k``,
      ``z_1, \dots, z_H``.
    """
    out = _ORDINARY.sub(r'<mo lspace="0" rspace="0">\1</mo>', out)
    out = _UNARY_MINUS.sub(r'\1<mo form="prefix">−</mo>', out)

    def operator(m: re.Match[str]) -> str:
        start, end = m.group(1) or "", m.group(3) or ""
        left, right = "0" if start else THIN_SPACE, "0" if end else THIN_SPACE
        return f'{start}<mo lspace="{left}" rspace="{right}">{m.group(2)}</mo>{end}'

    return _OPERATOR_NAME.sub(operator, out)


def _malformed(tree: ElementTree.Element) -> str | None:
    """What is wrong with a converted formula, if anything."""
    for element in tree.iter():
        wanted = _ARITY.get(element.tag)
        if wanted is not None and len(element) != wanted:
            return f"<{element.tag}> needs {wanted} parts, not {len(element)}"
    return None


def _escape_text(out: str) -> str:
    r"""latex2mathml unescapes its whole output, so ``\text{a < b}`` would leave a bare ``<``."""

    def escape(m: re.Match[str]) -> str:
        text = m.group(2).replace("&", "&amp;").replace("&amp;#x", "&#x").replace("<", "&lt;").replace(">", "&gt;")
        return m.group(1) + text + m.group(3)

    return _TEXT.sub(escape, out)


def _characters(out: str) -> str:
    """``&#x0003D;`` as ``=``: shorter and readable. ``&``, ``<``, ``>`` stay escaped, and so does the
    no-break space latex2mathml writes for the spaces of ``\\text`` (invisible in the source)."""

    def character(m: re.Match[str]) -> str:
        c = chr(int(m.group(1), 16))
        return m.group(0) if c in _KEEP_ESCAPED else c

    return _CHARACTER.sub(character, out)
