"""The picture of the network: one layout, drawn as a LaTeX picture, a Mermaid flowchart and an
SVG. Each form is checked by a small checker that is itself shown to catch a planted fault."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

import derive
from derive import figure
from derive.figure import ALL, ELEMENTWISE, FIGURES, layout
from derive.rendering import environment, tex_escape, wording

CLASSES = (None, 1, 2, 3, 4, 5, 12, 1000)
TEXT_WIDTH = 472.0
"""The text width of the documents in points (A4 with 2.2 cm margins)."""


@pytest.fixture(scope="module")
def words():
    return wording(environment())["figure"]


def forms(name, classes, words):
    return figure.figure(name, classes, words, escape=tex_escape)


# --- the layout -------------------------------------------------------------------------------------
def drawn(fig, column):
    """The labels of a column, top to bottom; None for the ellipsis."""
    nodes = sorted((n for n in fig.nodes if n.column == column), key=lambda n: -n.y)
    return [None if n.shape == "dots" else n.label.tex() for n in nodes]


def test_three_classes_draw_three_outputs(words):
    fig = layout("softmax-ce", 3, words)
    assert drawn(fig, "o") == ["o_{1}", "o_{2}", "o_{3}"]
    assert drawn(fig, "z") == ["z_{1}", "z_{2}", "z_{3}"]
    assert drawn(fig, "y") == ["y_{1}", "y_{2}", "y_{3}"]
    assert drawn(fig, "x") == ["x_{1}", "x_{2}", None, "x_{D}"]


def test_many_classes_are_elided(words):
    fig = layout("softmax-ce", 12, words)
    assert drawn(fig, "o") == ["o_{1}", "o_{2}", None, "o_{12}"]
    assert drawn(fig, "y") == ["y_{1}", "y_{2}", None, "y_{12}"]
    assert "12 classes" in fig.caption
    assert drawn(layout("softmax-ce", None, words), "o") == ["o_{1}", "o_{2}", None, "o_{H}"]
    assert drawn(layout("softmax-ce", 4, words), "o") == ["o_{1}", "o_{2}", "o_{3}", "o_{4}"]


@pytest.mark.parametrize("classes, outputs", [(3, ["1", "2", "3"]), (12, ["1", "2", "12"]), (None, ["1", "2", "H"])])
def test_every_form_draws_the_same_outputs(words, classes, outputs):
    f = forms("softmax-ce", classes, words)
    assert re.findall(r"\$o_\{(\w+)\}\$", f["tex"]) == outputs
    assert re.findall(r'"o<sub>(\w+)</sub>"', f["mermaid"]) == outputs
    svg_outputs = re.findall(r'<tspan font-style="italic">o</tspan><tspan[^>]*>(\w+)</tspan>', f["svg"])
    assert svg_outputs == outputs
    gaps = 0 if classes == 3 else 1
    assert f["tex"].count(r"\vdots") == 1 + 3 * gaps  # the inputs always have one
    assert f["mermaid"].count('["⋮"]') == 1 + 3 * gaps


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_spec_decides_the_picture(words, name):
    spec = FIGURES[name]
    fig = layout(name, 3, words)
    between = [e for e in fig.edges if e.kind in (ALL, ELEMENTWISE)]
    assert len(between) == (9 if spec.mixing == ALL else 3)
    if spec.mixing == ELEMENTWISE:  # each logit feeds its own output, drawn straight across
        assert all(fig.node(e.source).y == fig.node(e.target).y for e in between)
    assert ("nE" in {n.id for n in fig.nodes}) == (spec.loss is not None)
    assert ("y" in {n.column for n in fig.nodes}) == (spec.loss is not None)
    assert ("x" in {n.column for n in fig.nodes}) == spec.inputs
    assert len([e for e in fig.edges if e.kind == "inputs"]) == (9 if spec.inputs else 0)
    assert all(l.startswith(r"\ln ") == spec.log for l in drawn(fig, "o"))


def test_catalog_pictures(words):
    full, jacobian, log = (layout(n, None, words) for n in ("softmax-ce", "softmax", "log-softmax"))
    assert [c.key for c in full.columns] == ["x", "z", "o", "E", "y"]
    assert [c.key for c in jacobian.columns] == [c.key for c in log.columns] == ["z", "o"]
    assert drawn(log, "o") == [r"\ln o_{1}", r"\ln o_{2}", None, r"\ln o_{H}"]
    assert "error" not in jacobian.caption and "every logit to every output" in jacobian.caption


def test_unknown_derivations_have_no_figure(words):
    assert layout("no-such-derivation", 3, words) is None
    assert figure.figure("no-such-derivation", 3, words) is None


def test_missing_words_fall_back_to_their_keys():
    fig = layout("sigmoid-bce", 3, {})
    assert {t.text for t in fig.texts} >= {"inputs", "logits", "sigmoid", "outputs", "binary cross entropy", "targets"}
    assert fig.caption == ""


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.parametrize("classes", CLASSES)
def test_geometry(words, name, classes):
    """Nothing overlaps, everything is inside the picture, edges end on the outlines."""
    fig = layout(name, classes, words)
    assert 0 < fig.width <= TEXT_WIDTH and 0 < fig.height < 300
    for n in fig.nodes:
        assert n.size / 2 <= n.x <= fig.width - n.size / 2 and n.size / 2 <= n.y <= fig.height - n.size / 2
        if n.label is not None and n.size < 40:
            assert n.label.width() <= n.size - figure.LABEL_ROOM, n  # the label fits its node
    for a in fig.nodes:
        for b in fig.nodes:
            if a.id < b.id:
                reach = (a.size + b.size) / 2 * (math.sqrt(2) if "square" in (a.shape, b.shape) else 1)
                assert math.dist((a.x, a.y), (b.x, b.y)) >= min(reach + 2, (a.size + b.size) / 2 + 8), (a, b)
    row = sorted(fig.texts, key=lambda t: t.x)
    assert len({t.y for t in row}) == 1 and row[0].y > max(n.y + n.size / 2 for n in fig.nodes)
    for left, right in zip(row, row[1:]):
        assert left.x + left.width() / 2 < right.x - right.width() / 2, (left, right)
    for e in fig.edges:
        start, end = figure.endpoints(fig, e)
        for point, node in ((start, fig.node(e.source)), (end, fig.node(e.target))):
            if node.shape == "circle":
                assert math.dist(point, (node.x, node.y)) == pytest.approx(node.size / 2)
            else:
                assert max(abs(point[0] - node.x), abs(point[1] - node.y)) == pytest.approx(node.size / 2)


def test_geometry_check_catches_overlapping_headings(words):
    fig = layout("sigmoid-bce", 3, words)
    squeezed = [replace(t, x=t.x * 0.6) for t in fig.texts]
    row = sorted(squeezed, key=lambda t: t.x)
    assert any(l.x + l.width() / 2 >= r.x - r.width() / 2 for l, r in zip(row, row[1:]))


# --- LaTeX --------------------------------------------------------------------------------------------
PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage[a4paper,margin=2.2cm]{geometry}
\usepackage{amsmath,amssymb}
\usepackage{graphicx}
\begin{document}
"""


def compile_pictures(pictures, tmp_path) -> list[str]:
    """Compile the pictures, each centred on the page like in a document; return the problems."""
    if not shutil.which("pdflatex"):
        if os.environ.get("CI"):
            pytest.fail("TeX Live is missing: ./test.sh installs it")
        pytest.skip("TeX Live is not installed")
    body = "\n".join(rf"\begin{{center}}{p}\end{{center}}" for p in pictures)
    (tmp_path / "fig.tex").write_text(PREAMBLE + body + "\n\\end{document}\n")
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "fig.tex"],
        cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )
    log = (tmp_path / "fig.log").read_text(errors="replace")
    problems = [] if run.returncode == 0 else ["pdflatex failed: " + log[-1000:]]
    problems += [line for line in log.splitlines() if "Overfull" in line or "size unavailable" in line]
    problems += [line for line in log.splitlines() if line.startswith("!")]
    return problems


def test_latex_pictures_compile_without_overfull(words, tmp_path):
    pictures = [forms(name, classes, words)["tex"] for name in sorted(FIGURES) for classes in (None, 3, 12, 1000)]
    for tex in pictures:
        assert r"\begin{picture}" in tex and "tikz" not in tex.lower() and r"\newcommand" not in tex
    assert compile_pictures(pictures, tmp_path) == []


def test_latex_check_catches_a_picture_too_wide(words, tmp_path):
    fig = layout("softmax-ce", 3, words)
    wide = replace(fig, width=TEXT_WIDTH + 60)
    problems = compile_pictures([figure.tex(wide)], tmp_path)
    assert any("Overfull" in p for p in problems)


def test_latex_check_catches_an_unavailable_circle(words, tmp_path):
    fig = layout("softmax", 3, words)
    huge = replace(fig, nodes=tuple(replace(n, size=60) if n.shape == "circle" else n for n in fig.nodes))
    assert any("size unavailable" in p for p in compile_pictures([figure.tex(huge)], tmp_path))


def test_circle_sizes_are_ones_latex_draws(words):
    """The picture mode draws open circles of 4 pt steps up to 40 pt: edges end on the drawn circle."""
    for name in FIGURES:
        for classes in CLASSES:
            for n in layout(name, classes, words).nodes:
                if n.shape == "circle":
                    assert n.size % 4 == 0 and 16 <= n.size <= 40


# --- Mermaid ------------------------------------------------------------------------------------------
ID = r"[A-Za-z][A-Za-z0-9_]*"
LABEL = r'"((?:[^"<>]|<sub>|</sub>)*)"'
DECLARATION = re.compile(rf"^  ({ID})(?:\(\({LABEL}\)\)|\[{LABEL}\])$")
CHAIN = re.compile(rf"^  ({ID}(?: (?:-->|---|~~~) {ID})+)$")
CLASS_DEF = re.compile(r"^  classDef [a-z]+ [a-z-]+:[#a-z0-9]+(?:,[a-z-]+:[#a-z0-9]+)*$")
CLASS = re.compile(rf"^  class ({ID}(?:,{ID})*) [a-z]+$")


def mermaid_problems(text: str) -> list[str]:
    """What would make the flowchart fail to parse or lose a node, as far as a line check can tell."""
    lines = text.split("\n")
    problems = [] if lines[0] == "flowchart LR" else [f"first line {lines[0]!r}"]
    declared: dict[str, str] = {}
    used: list[str] = []
    linked: set[str] = set()
    for line in lines[1:]:
        if m := DECLARATION.match(line):
            id, label = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
            if id in declared:
                problems.append(f"{id} declared twice")
            declared[id] = label
            if label.count("<sub>") != label.count("</sub>"):
                problems.append(f"unbalanced <sub> in {line!r}")
        elif m := CHAIN.match(line):
            ids = re.findall(ID, re.sub(r"-->|---|~~~", " ", m.group(1)))
            used += ids
            linked.update(ids)
        elif m := CLASS.match(line):
            used += m.group(1).split(",")
        elif not CLASS_DEF.match(line):
            problems.append(f"not a declaration, link or class: {line!r}")
    for id in list(declared) + used:
        if id.lower() == "end" or id[0] in "ox":  # 'end' closes a block; A-->oB is a circle edge
            problems.append(f"identifier {id!r} confuses the parser")
    problems += [f"{id} is used but not declared" for id in dict.fromkeys(used) if id not in declared]
    problems += [f"{id} is declared but in no link" for id in declared if id not in linked]
    return problems


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.parametrize("classes", (None, 3, 12))
def test_mermaid_is_well_formed(words, name, classes):
    assert mermaid_problems(forms(name, classes, words)["mermaid"]) == []


def test_mermaid_node_and_edge_counts(words):
    text = forms("softmax-ce", None, words)["mermaid"]
    circles = re.findall(rf"^  ({ID})\(\(", text, re.M)
    boxes = re.findall(rf'^  ({ID})\["(?!⋮)', text, re.M)
    assert len(circles) == 3 + 3 + 3 + 1  # x, z, o, E
    assert len(boxes) == 3 + 5  # the targets, the headings
    assert text.count('["⋮"]') == 4
    assert len(re.findall(r" --> ", text)) == 9 + 9 + 3  # inputs, softmax, outputs to the error
    assert len(re.findall(r" --- ", text)) == 3  # the targets
    assert 'hE["cross-entropy"]' in text and 'ho["outputs (softmax)"]' in text
    jacobian = forms("softmax", 3, words)["mermaid"]
    assert len(re.findall(rf"^  ({ID})\(\(", jacobian, re.M)) == 6 and len(re.findall(" --> ", jacobian)) == 9


@pytest.mark.parametrize(
    "fault, message",
    [
        (lambda t: t.replace("  nz1 --> no1\n", "  nz1 --> no1\n  nz1 --> nq7\n"), "nq7 is used but not declared"),
        (lambda t: t.replace('no2(("o<sub>2</sub>"))', "no2((o<sub>2</sub>))"), "not a declaration"),
        (lambda t: t.replace('"o<sub>2</sub>"', '"o "2""'), "not a declaration"),
        (lambda t: t.replace("<sub>2</sub>", "<sub>2"), "unbalanced"),
        (lambda t: t.replace("flowchart LR", "flowchart"), "first line"),
        (lambda t: t.replace("nz1", "oz1"), "confuses the parser"),
        (lambda t: t.replace("  nz2 --> no1\n", "  nz2 -> no1\n"), "not a declaration"),
    ],
)
def test_mermaid_check_catches_planted_faults(words, fault, message):
    text = forms("softmax-ce", 3, words)["mermaid"]
    faulty = fault(text)
    assert faulty != text
    assert any(message in p for p in mermaid_problems(faulty))


def test_mermaid_escapes_label_text():
    assert figure.mermaid_text('a "b" <c> & #d') == "a #quot;b#quot; #lt;c#gt; #amp; #35;d"
    fig = layout("softmax-ce", 3, {"targets": 'the "true" <class>'})
    assert mermaid_problems(figure.mermaid(fig)) == []


# --- SVG ----------------------------------------------------------------------------------------------
SVG_NS = "{http://www.w3.org/2000/svg}"
FORBIDDEN = {"image", "use", "script", "foreignObject", "style", "a", "feImage"}


def svg_problems(text: str) -> list[str]:
    """Malformed XML, or anything that loads or runs something from elsewhere."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        return [f"not well-formed: {error}"]
    problems = [] if root.tag == f"{SVG_NS}svg" else [f"root is {root.tag}"]
    for element in root.iter():
        tag = element.tag.removeprefix(SVG_NS)
        if not element.tag.startswith(SVG_NS):
            problems.append(f"element {element.tag} outside the SVG namespace")
        if tag in FORBIDDEN:
            problems.append(f"<{tag}> element")
        for key, value in element.attrib.items():
            if key.endswith("href") or key.startswith("on"):
                problems.append(f"{key} attribute")
            if "url(" in value or "://" in value or "@import" in value:
                problems.append(f"external reference in {key}={value!r}")
    return problems


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.parametrize("classes", (None, 3, 12))
def test_svg_is_well_formed_and_self_contained(words, name, classes):
    text = forms(name, classes, words)["svg"]
    assert svg_problems(text) == []
    root = ET.fromstring(text)
    fig = layout(name, classes, words)
    assert root.get("viewBox") == f"0 0 {figure._num(fig.width)} {figure._num(fig.height)}"
    polygons = root.findall(f".//{SVG_NS}polygon")
    assert len(polygons) == len(fig.edges)  # one arrowhead per edge
    units = [c for c in root.iter(f"{SVG_NS}circle") if float(c.get("r")) >= 8]
    assert len(units) == len([n for n in fig.nodes if n.shape == "circle"])


@pytest.mark.parametrize(
    "fault, message",
    [
        (lambda t: t.replace("</svg>", '<image href="https://example.org/a.png"/></svg>'), "<image> element"),
        (lambda t: t.replace('<g fill="none"', '<g fill="url(https://example.org/p.svg#p)"'), "external reference"),
        (lambda t: t.replace("</svg>", "<style>@import 'x.css';</style></svg>"), "<style> element"),
        (lambda t: t.replace('role="img"', 'role="img" onload="f()"'), "onload attribute"),
        (lambda t: t.replace("</g>", "", 1), "not well-formed"),
    ],
)
def test_svg_check_catches_planted_faults(words, fault, message):
    text = forms("softmax-ce", 3, words)["svg"]
    faulty = fault(text)
    assert faulty != text
    assert any(message in p for p in svg_problems(faulty))


# --- determinism and the documents ---------------------------------------------------------------------
def test_output_is_deterministic(words):
    first = [forms(n, c, words) for n in sorted(FIGURES) for c in (None, 3, 12)]
    assert first == [forms(n, c, words) for n in sorted(FIGURES) for c in (None, 3, 12)]
    script = (
        "import json; from derive.figure import FIGURES, figure\n"
        "print(json.dumps([figure(n, c, {'softmax': 'softmax'}) for n in sorted(FIGURES) for c in (None, 3, 12)]))"
    )
    outs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env=os.environ | {"PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1 and json.loads(outs.pop())


def test_documents_show_the_figure():
    d = derive.derivation("softmax-ce", classes=3)
    md, tex = derive.render(d, "md"), derive.render(d, "tex")
    setting, notation = md.index("## The setting"), md.index("**Notation.**")
    assert setting < md.index("```mermaid\nflowchart LR\n") < md.index("**The network.**") < notation
    assert tex.index(r"\section*{The setting}") < tex.index(r"\begin{picture}") < tex.index(r"\paragraph{Notation.}")
    assert r"\usepackage{graphicx}" in tex


def test_a_derivation_without_a_picture_renders_without_one(monkeypatch):
    monkeypatch.delitem(FIGURES, "softmax")
    d = derive.derivation("softmax", classes=3)
    assert "```mermaid" not in derive.render(d, "md")
    assert r"\begin{picture}" not in derive.render(d, "tex")


def test_the_figure_writes_the_document_notation():
    d = derive.derivation("softmax-ce", classes=3)
    tex = derive.render(d, "tex", notation="bishop")
    picture = tex[tex.index(r"\begin{picture}"): tex.index(r"\medskip")]
    assert "$a_{1}$" in picture and "$y_{1}$" in picture and "$t_{3}$" in picture and "$z_{" not in picture
    md = derive.render(derive.derivation("log-softmax"), "md", notation="textbook")
    chart = md[md.index("```mermaid"): md.index("```", md.index("```mermaid") + 3)]
    assert '"log ŷ<sub>K</sub>"' in chart and mermaid_problems(chart.split("\n", 1)[1].rstrip("\n")) == []
    fig = layout("log-softmax", None, {}, names={"o": r"\hat{y}", "H": "K"}, log=r"\log")
    assert drawn(fig, "o")[-1] == r"\log \hat{y}_{K}"
    assert "ŷ" in figure.svg(fig) and svg_problems(figure.svg(fig)) == []
