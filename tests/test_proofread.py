"""The printer is verified: every formula of every document in the gallery (Markdown, LaTeX, HTML,
JSON) and of documents of derive grad reads back with the language (derive.lang.parse_document)
to what the checks saw (derive.proofread.Proofreader); planted printer errors are caught, in the
files and before a document is written."""

from __future__ import annotations

import html as html_module
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest
import sympy as sp

import derive
from derive import proofread, rendering
from derive.errors import DeriveError
from derive.derivations.naming import file_name
from derive.gallery import GALLERY
from derive.latex import _DISPATCH, _Printer
from mathcheck import markdown_formulas

OUTPUT = Path(__file__).resolve().parent.parent / "output"
FORMATS = ("md", "tex", "json", "html")


# --- the formulas of a document, by format ---------------------------------------------------------
def tex_formulas(text: str) -> list[str]:
    """The math of a LaTeX document: display \\[ ... \\] and align*, inline \\( ... \\) and $...$."""
    body = text[text.index(r"\begin{document}") :]
    # A long formula sits in a box scaled to the line (rendering.fit): the formula is its content.
    body = re.sub(r"\\sbox0\{\$\\displaystyle (.*?)\$\}\\ifdim\\wd0>\\linewidth\\resizebox\{\\linewidth\}\{!\}\{\\usebox0\}\\else\\usebox0\\fi", lambda m: m.group(1), body, flags=re.S)
    found = [m.group(1) for m in re.finditer(r"\\\[(.*?)\\\]", body, re.S)]
    found += [m.group(1).replace("&=", "=") for m in re.finditer(r"\\begin\{align\*\}(.*?)\\end\{align\*\}", body, re.S)]
    found += [m.group(1) for m in re.finditer(r"\\\((.+?)\\\)", body, re.S)]
    found += [m.group(1) for m in re.finditer(r"(?<![\\$])\$([^$]+)\$", body)]
    # A displayed formula that ends its sentence carries the full stop (\,.): punctuation, not math.
    return [f.strip().removesuffix(r"\,.").rstrip() for f in found if f.strip()]


def json_formulas(data: object) -> list[str]:
    """Every LaTeX string of a JSON document (its formulas), the example's numbers left out."""
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("latex", "subject", "result", "general", "shortcut") and isinstance(value, str):
                out.append(value)
            elif key not in ("example", "checks", "notation", "options", "title", "name", "rule", "key", "assumptions_used"):
                out += json_formulas(value)
    elif isinstance(data, list):
        for value in data:
            out += json_formulas(value)
    return out


def json_results(d, data: dict) -> list[str]:
    """The fields of a JSON document that hold one expression each, against the expression each
    was printed from (the general form alone is a formula that relates nothing)."""
    out = []
    for key, expected in (("subject", d.subject), ("general", d.general.rhs if d.general is not None else None)):
        if expected is not None:
            (statement,) = proofread.read(data[key]).statements
            if not proofread.same(statement.sides[0], expected):
                out.append(f"{key}: {data[key]!r} is not {expected}")
    return out


def formulas(fmt: str, text: str) -> list[str]:
    if fmt == "md":
        return [tex for tex, _ in markdown_formulas(text)]
    if fmt == "tex":
        return tex_formulas(text)
    if fmt == "json":
        return json_formulas(json.loads(text))
    raise ValueError(fmt)


# --- the derivation each document came from -----------------------------------------------------------
@lru_cache(maxsize=None)
def derivation(name: str, classes: int | None, options: tuple):
    d = derive.derivation(name, classes=classes, **dict(options))
    d.check()
    return d


def wording_formulas(d, fmt: str) -> set[str]:
    """The formulas of the wording the document shows, as it wrote them (derive.proofread reads
    those as facts)."""
    with rendering._noting(rendering._PROSE) as (texts,):
        unchecked_render(d, fmt)
    return {m for t in texts for m in proofread.INLINE.findall(t)}


def unchecked_render(d, fmt: str) -> str:
    """The document as the printer writes it, with the render-time reading off: what a printer
    error would have put in the file."""
    originals = proofread.rendered, proofread.facts
    try:
        proofread.rendered = proofread.facts = lambda *args, **kwargs: None
        return derive.render(d, fmt)
    finally:
        proofread.rendered, proofread.facts = originals


def problems(d, fmt: str, text: str) -> list[str]:
    """What is wrong with the formulas of one document: each formula that does not read back to
    what the checks saw, with the reason."""
    reader = proofread.Proofreader(d, prose=wording_formulas(d, fmt))
    found = html_formulas(d, text) if fmt == "html" else formulas(fmt, text)
    assert found, f"no formula found in the {fmt} document"
    out = json_results(d, json.loads(text)) if fmt == "json" else []
    for tex in found:
        problem = reader.formula(tex)
        if problem is not None:
            out.append(f"{tex!r}: {problem}")
    return out


def html_formulas(d, text: str) -> list[str]:
    """HTML shows MathML, which derive.mathml writes from LaTeX: the LaTeX of each formula of the
    page, found by writing the page again and noting what became which MathML. A formula of the
    page that no LaTeX of it became is reported as such."""
    import derive.mathml as mathml_module

    made: dict[str, str] = {}
    convert = mathml_module.mathml

    def noting(latex: str, block: bool = False) -> str:
        out = convert(latex, block)
        made[out] = latex
        return out

    mathml_module.mathml = noting
    try:
        unchecked_render(d, "html")
    finally:
        mathml_module.mathml = convert
    return [made.get(m, f"\\text{{MathML of no formula: {html_module.unescape(m)[:80]}}}") for m in re.findall(r"<math\b.*?</math>", text, re.S)]


GALLERY_DOCUMENTS = [
    (name, classes, tuple(sorted((more[0] if more else {}).items())), fmt)
    for name, classes, *more in GALLERY
    for fmt in FORMATS
]


@pytest.mark.parametrize(("name", "classes", "options", "fmt"), GALLERY_DOCUMENTS, ids=lambda x: str(x))
def test_every_formula_of_the_gallery_reads_back_to_what_the_checks_saw(name, classes, options, fmt):
    text = (OUTPUT / file_name(name, classes, fmt, dict(options))).read_text(encoding="utf-8")
    assert problems(derivation(name, classes, options), fmt, text) == []


@pytest.mark.parametrize("fmt", ["md", "tex", "json"])
def test_every_formula_of_the_overview_reads_back_to_a_result_of_its_rows(fmt):
    """The overview sets the results of its rows side by side: each formula must be one of them
    (a row's checks saw it), and each of its sentences' facts must hold for a row."""
    from derive import overview

    text = (OUTPUT / f"overview.{fmt}").read_text(encoding="utf-8")
    readers = []
    for name, options in overview.entries():
        d = derivation(name, None, tuple(sorted(options.items())))
        readers.append(proofread.Proofreader(d, prose=()))
    found = formulas(fmt, text) if fmt != "json" else [row["result"] for row in json.loads(text)["rows"]]
    assert found
    wrong = [tex for tex in found if all(r.formula(tex) is not None for r in readers) and all(proofread.fact(r.d, tex) is not None for r in readers)]
    assert wrong == []


GRAD = {
    "softmax-ce": (("E = -sum_i y_i*ln(o_i)", "o_i = softmax(z)_i"), "z_k", ("sum_i y_i = 1",)),
    "batch": (("E = -1/N*sum_n sum_i y_ni*ln(o_ni)", "o_ni = exp(z_ni)/sum_j exp(z_nj)"), "z_nk", ("sum_i y_ni = 1",)),
    "focal": (("E = -sum_i y_i*(1 - o_i)^gamma*ln(o_i)", "o_i = softmax(z)_i"), "z_k", ()),
}


@pytest.mark.parametrize("spec", sorted(GRAD))
@pytest.mark.parametrize("classes", [None, 3])
def test_every_formula_of_a_planned_derivation_reads_back(spec, classes):
    definitions, wrt, assume = GRAD[spec]
    d = derive.grad(*definitions, wrt=wrt, assume=list(assume), classes=classes)
    for fmt in FORMATS:
        assert problems(d, fmt, derive.render(d, fmt)) == [], fmt


@pytest.mark.parametrize("preset", ["textbook", "bishop", "probability"])
def test_a_notation_reads_back_with_its_names_mapped_to_the_internal_ones(preset):
    from derive.notation import resolve

    notation = resolve(preset)
    d = derivation("softmax-ce", 3, ())
    reader = proofread.Proofreader(d, notation)
    text = derive.render(d, "md", notation=preset)
    printed = [tex for tex, display in markdown_formulas(text) if display]
    assert len(printed) > 20
    assert [tex for tex in printed if reader.formula(tex) is not None] == []
    # Read as if it were in the seed notation, the outputs are other letters than the checks'.
    assert any(proofread.Proofreader(d).formula(tex) is not None for tex in printed)


# --- planted printer errors --------------------------------------------------------------------------
@pytest.fixture
def minus_as_plus(monkeypatch):
    """The add printer turns a - into a +."""
    add = _Printer.add

    def planted(self, e, path):
        return add(self, e, path).replace(" - ", " + ")

    monkeypatch.setitem(_DISPATCH, sp.Add, planted)


@pytest.fixture
def labels_swapped(monkeypatch):
    """The printer hangs a label of the split sum under the other part of it: the label of
    path (..., 0) under (..., 1) and the other way round."""
    print_ = _Printer.print

    def planted(self, e, path, parens=False):
        swap = {p[:-1] + (1 - p[-1],): t for p, t in self.labels.items() if p and p[-1] in (0, 1) and "text{" in t}
        if swap and not getattr(self, "swapped", False):
            self.swapped = True
            self.labels = {p: t for p, t in self.labels.items() if p not in {q[:-1] + (1 - q[-1],) for q in swap}} | swap
        return print_(self, e, path, parens)

    monkeypatch.setattr(_Printer, "print", planted)


@pytest.mark.usefixtures("minus_as_plus")
def test_a_minus_printed_as_plus_is_caught_in_the_file_and_before_it_is_written(monkeypatch, tmp_path):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path))
    d = derivation("softmax-ce", 3, ())
    found = problems(d, "md", unchecked_render(d, "md"))
    assert any("o_k + y_k" in p for p in found), found
    with pytest.raises(DeriveError, match="the printer wrote"):
        derive.render(d, "md")


@pytest.mark.usefixtures("labels_swapped")
def test_a_swapped_underbrace_label_is_caught_in_the_file_and_before_it_is_written(monkeypatch, tmp_path):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path))
    d = derivation("softmax-ce", 3, ())
    text = unchecked_render(d, "md")
    step = next(s for s in d.steps if s.rule == "split_sum")
    split = next(tex for tex, _ in markdown_formulas(text) if r"\text{all terms with }" in tex)
    words = rendering.wording(rendering.environment())["label"]
    assert proofread.printed_formula(split.split(" = ", 1)[1], step.rhs, {x.path: words[x.key] for x in step.labels}) is not None
    with pytest.raises(DeriveError, match="the label"):
        derive.render(d, "md")


def test_a_wrong_number_is_caught_in_the_file():
    d = derivation("softmax-ce", 3, ())
    text = (OUTPUT / "softmax-ce-3.md").read_text(encoding="utf-8").replace("$`0.6`$ | $`0`$ | $`0.6`$", "$`0.6`$ | $`0`$ | $`0.7`$")
    assert any("0.7" in p for p in problems(d, "md", text))


def test_a_formula_that_states_a_wrong_equation_is_caught_in_the_file():
    d = derivation("softmax-ce", 3, ())
    text = (OUTPUT / "softmax-ce-3.tex").read_text(encoding="utf-8").replace(r"\boxed{\frac{\partial E}{\partial z_k} = o_k - y_k}", r"\boxed{\frac{\partial E}{\partial z_k} = o_k - 2 y_k}")
    assert any("2 y_k" in p or "2*y" in p for p in problems(d, "tex", text))
