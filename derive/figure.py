"""The picture of the network a derivation is about, laid out once and drawn three ways.

:func:`layout` turns a derivation's name and number of classes into plain data: nodes with
positions, sizes and labels, the edges between them, column headings and layer names. The
drawing functions only translate that data:

- :func:`tex`: a LaTeX ``picture`` (the kernel's picture mode plus ``graphicx`` for the slanted
  arrows, so base TeX Live is enough; no TikZ);
- :func:`mermaid`: a Mermaid flowchart for Markdown (GitHub renders ```` ```mermaid ```` fences);
- :func:`svg`: a self-contained SVG string, without external references.

Which picture a derivation gets is a small :class:`Spec` in :data:`FIGURES`, keyed by its name:
the layer's name, whether it is elementwise (each logit feeds its own output) or all-to-all
(every logit feeds every output, as in softmax), and the loss, if any. A name that is not in
:data:`FIGURES` gets no figure. Coordinates are in TeX points, y upwards, the origin at the
bottom left of the picture. Words (headings, layer and loss names, the caption) come from the
``[figure]`` table of ``wording.toml``; a missing key falls back to the key itself. The labels
use the document's notation (``names`` and ``log``: o may be written p or \\hat{y}, ln as log).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

ALL = "all"
"""Every logit feeds every output (softmax): the Jacobian is a full matrix."""
ELEMENTWISE = "elementwise"
"""Each logit feeds its own output only (sigmoid, identity): the Jacobian is diagonal."""


@dataclass(frozen=True)
class Spec:
    """What a derivation's picture shows. Names are keys of the ``[figure]`` wording table."""

    layer: str
    """The layer between logits and outputs: ``"softmax"``, ``"sigmoid"``, ..."""
    mixing: str = ALL
    """:data:`ALL` or :data:`ELEMENTWISE`."""
    log: bool = False
    """Label the outputs with their logarithm, ln o_i."""
    inputs: bool = True
    """Draw the inputs x_1 .. x_D, fully connected to the logits."""
    connection: str | None = None
    """The name written over the input-to-logit connections (``"dense"``), or none."""
    loss: str | None = None
    """The loss comparing outputs with targets (``"cross-entropy"``); None: no targets, no error."""


FIGURES: dict[str, Spec] = {
    "softmax-ce": Spec("softmax", loss="cross-entropy"),
    "softmax": Spec("softmax", inputs=False),
    "log-softmax": Spec("log-softmax", log=True, inputs=False),
    "sigmoid-bce": Spec("sigmoid", mixing=ELEMENTWISE, loss="binary-cross-entropy"),
    "sse-linear": Spec("linear", mixing=ELEMENTWISE, loss="squared-error"),
    "mse-softmax": Spec("softmax", loss="squared-error"),
    "dense-softmax-ce": Spec("softmax", connection="dense", loss="cross-entropy"),
}
"""The picture of each derivation, by name."""

DRAWN = 4
"""Up to this many classes every one is drawn; beyond, the first two, a vertical ellipsis and the last."""

# Sizes in TeX points.
SLOT = 30.0
"""Vertical distance between the centres of neighbouring nodes of a column."""
NODE = 20.0
"""The smallest node: a circle of this diameter (TeX draws circles of 4 pt steps up to 40 pt)."""
GAP_ALL, GAP_ELEMENTWISE, GAP_LOSS = 100.0, 72.0, 62.0
"""Horizontal distances between columns: across an all-to-all layer, an elementwise one, to the error."""
HEADING_SPACE = 8.0
"""The least space between two headings of the row above the nodes."""
HEADING_RISE = 17.0
"""From the top of the highest node to the centre of the headings."""
LABEL_ROOM = 7.0
"""A node is this much wider than its label."""
MARGIN = 2.0
TEXT_SIZE, HEADING_SIZE = 10.0, 9.0
"""Font sizes of the labels and of the headings (LaTeX \\small)."""
ARROW = 5.0
"""Length of an SVG arrowhead (the size of LaTeX's \\vector heads)."""


# --- the data ---------------------------------------------------------------------------------------
_LETTER_WIDTH = {"x": 5.7, "z": 4.65, "o": 4.85, "y": 4.9, "E": 7.4}


@dataclass(frozen=True)
class Label:
    """A math label ``function symbol_index`` in LaTeX: x_1, z_H, \\ln o_2, E, \\hat{y}_1."""

    symbol: str
    index: str | None = None
    function: str | None = None
    """A LaTeX operator: ``\\ln`` or ``\\log``."""

    def tex(self) -> str:
        head = f"{self.function} " if self.function else ""
        return head + self.symbol + (f"_{{{self.index}}}" if self.index else "")

    def text(self) -> tuple[str, str, str]:
        """Plain text (function, symbol, index) for the Mermaid and SVG forms: \\hat{y} is ŷ."""
        return (self.function or "").lstrip("\\"), plain(self.symbol), plain(self.index or "")

    def width(self) -> float:
        """An estimate of the width in points at 10 pt (Computer Modern: an italic letter 4.7 to
        7.4 pt, a roman letter of a function name 4.2 pt and a thin space, an index digit 4 pt)."""
        function, symbol, index = self.text()
        w = sum(_LETTER_WIDTH.get(c, 6.0) for c in symbol if not unicodedata.combining(c))
        if function:
            w += 4.2 * len(function) + 1.7
        return w + sum(4.05 if c.isdigit() else 6.5 for c in index if not unicodedata.combining(c))


def plain(tex: str) -> str:
    """A name as text: ``\\hat{y}`` -> ``ŷ``, ``\\alpha`` -> ``α``, ``K`` -> ``K``."""
    hat = tex.startswith(r"\hat{") and tex.endswith("}")
    base = tex[5:-1] if hat else tex
    if base.startswith("\\") and base[1:].isalpha():
        word = base[1:].removeprefix("var")
        kind = "CAPITAL" if word[0].isupper() else "SMALL"
        try:
            base = unicodedata.lookup(f"GREEK {kind} LETTER {word.upper().replace('LAMBDA', 'LAMDA')}")
        except KeyError:
            base = word
    return unicodedata.normalize("NFC", base + "\u0302") if hat else base


@dataclass(frozen=True)
class Node:
    id: str
    column: str
    x: float
    y: float
    size: float
    """Diameter of a circle, side of a square, height of an ellipsis."""
    shape: str
    """``"circle"`` (a unit), ``"square"`` (given data: a target) or ``"dots"`` (elided nodes)."""
    label: Label | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str
    """``"inputs"``, ``"all"``, ``"elementwise"``, ``"loss"`` (output to error) or ``"target"``."""


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    kind: str
    """``"heading"`` over a column or ``"layer"`` over the connections between two columns."""

    def width(self) -> float:
        return 5.0 * len(self.text)


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    nodes: tuple[str, ...]
    layer: str | None = None
    """The name of the layer that feeds this column, if it has one."""


@dataclass(frozen=True)
class Layout:
    name: str
    spec: Spec
    classes: int | None
    width: float
    height: float
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    texts: tuple[Text, ...]
    columns: tuple[Column, ...]
    links: tuple[tuple[str, str, str], ...]
    """Which columns feed which, and how: (source column, target column, edge kind)."""
    caption: str
    """Sentences in the wording's inline math, \\( ... \\); the renderer converts them per format."""

    def node(self, id: str) -> Node:
        return next(n for n in self.nodes if n.id == id)


def indices(count: int | None, letter: str) -> list[str | None]:
    """The indices drawn for ``count`` units (None: symbolic, called ``letter``); None is the ellipsis."""
    if count is None:
        return ["1", "2", None, letter]
    if count <= DRAWN:
        return [str(m) for m in range(1, count + 1)]
    return ["1", "2", None, str(count)]


class _Words:
    def __init__(self, words: Mapping[str, Any] | None):
        self.words = dict(words or {})

    def __call__(self, key: str) -> str:
        value = self.words.get(key)
        return str(value) if value is not None else key.replace("-", " ")

    def sentence(self, key: str, **values: Any) -> str:
        value = self.words.get(key)
        return str(value) % values if value else ""


def layout(name: str, classes: int | None = None, words: Mapping[str, Any] | None = None,
           names: Mapping[str, str] | None = None, log: str = r"\ln") -> Layout | None:
    """The picture of derivation ``name`` for ``classes`` classes (None: symbolic H), or None.

    ``names`` says how the document writes each symbol (x, z, o, y, E, and the numbers of inputs
    D and of classes H), in LaTeX, when not as itself; ``log`` is its logarithm."""
    spec = FIGURES.get(name)
    if spec is None:
        return None
    word = _Words(words)
    name_of = lambda letter: (names or {}).get(letter, letter)
    nodes: list[Node] = []
    edges: list[Edge] = []
    texts: list[Text] = []
    columns: list[Column] = []
    links: list[tuple[str, str, str]] = []

    def labels(key: str, at: list[str | None], function: str | None = None) -> list[Label | None]:
        return [None if m is None else Label(name_of(key), m if m.isdigit() else name_of(m), function) for m in at]

    def column(key: str, title: str, x: float, at: list[str | None], shape: str = "circle",
               layer: str | None = None, function: str | None = None) -> list[Node]:
        """Nodes ``key``_m for m in ``at`` (None: the ellipsis), with ids in the internal letters."""
        drawn = labels(key, at, function)
        size = _size(drawn)
        made = []
        for m, (index, label) in enumerate(zip(at, drawn)):
            y = ((len(at) - 1) / 2 - m) * slot
            if label is None:
                made.append(Node(f"n{key}gap", key, x, y, TEXT_SIZE, "dots"))
            else:
                made.append(Node(f"n{key}{index}", key, x, y, size, shape, label))
        nodes.extend(made)
        columns.append(Column(key, title, tuple(n.id for n in made), layer))
        texts.append(Text(x, 0.0, title, "heading"))
        return [n for n in made if n.shape != "dots"]

    def after(gap: float, title: str, layer: str | None = None) -> float:
        """The x of the next column: ``gap`` after the last one, or more if the headings need it."""
        last = texts[-1]
        wide = (last.width() + Text(0, 0, title, "heading").width()) / 2 + HEADING_SPACE
        if layer:
            wide += Text(0, 0, layer, "layer").width() + HEADING_SPACE
            texts.append(Text(last.x + max(gap, wide) / 2, 0.0, layer, "layer"))
        return last.x + max(gap, wide)

    classes_at = indices(classes, "H")
    # Nodes of a column are SLOT apart, or more when wide labels make the nodes bigger.
    function = log if spec.log else None
    widest = _size(labels("o", classes_at, function))
    slot = max(SLOT, widest + 8)
    layer = word(spec.layer)
    connection = word(spec.connection) if spec.inputs and spec.connection else None
    if spec.inputs:
        inputs = column("x", word("inputs"), 0.0, indices(None, "D"))
        x = after(GAP_ALL, word("logits"), connection)
    else:
        x = 0.0
    logits = column("z", word("logits"), x, classes_at, layer=connection)
    if spec.inputs:
        edges += [Edge(a.id, b.id, "inputs") for a in inputs for b in logits]
        links.append(("x", "z", "inputs"))
    x = after(GAP_ALL if spec.mixing == ALL else GAP_ELEMENTWISE, word("outputs"), layer)
    outputs = column("o", word("outputs"), x, classes_at, layer=layer, function=function)
    if spec.mixing == ALL:
        edges += [Edge(a.id, b.id, ALL) for a in logits for b in outputs]
    else:
        edges += [Edge(a.id, b.id, ELEMENTWISE) for a, b in zip(logits, outputs)]
    links.append(("z", "o", spec.mixing))
    if spec.loss:
        loss = word(spec.loss)
        x = after(GAP_LOSS, loss)
        error = Node("nE", "E", x, 0.0, _size([Label(name_of("E"))]), "circle", Label(name_of("E")))
        nodes.append(error)
        columns.append(Column("E", loss, (error.id,)))
        texts.append(Text(x, 0.0, loss, "heading"))
        x = after(GAP_LOSS, word("targets"))
        targets = column("y", word("targets"), x, classes_at, "square")
        edges += [Edge(o.id, error.id, "loss") for o in outputs]
        edges += [Edge(t.id, error.id, "target") for t in targets]
        links += [("o", "E", "loss"), ("y", "E", "target")]

    # Headings in one row above the highest node; then everything moves into the positive quadrant.
    top = max(n.y + n.size / 2 for n in nodes)
    texts = [Text(t.x, top + HEADING_RISE, t.text, t.kind) for t in texts]
    left = min([n.x - n.size / 2 for n in nodes] + [t.x - t.width() / 2 for t in texts]) - MARGIN
    right = max([n.x + n.size / 2 for n in nodes] + [t.x + t.width() / 2 for t in texts]) + MARGIN
    bottom = min(n.y - n.size / 2 for n in nodes) - MARGIN
    ceiling = top + HEADING_RISE + HEADING_SIZE / 2 + MARGIN
    nodes = [Node(n.id, n.column, _r(n.x - left), _r(n.y - bottom), n.size, n.shape, n.label) for n in nodes]
    texts = [Text(_r(t.x - left), _r(t.y - bottom), t.text, t.kind) for t in texts]

    sentences = [word.sentence("caption_inputs")] if spec.inputs else []
    sentences.append(word.sentence(f"caption_{spec.mixing}", layer=word(spec.layer)))
    if spec.loss:
        sentences.append(word.sentence("caption_loss", loss=word(spec.loss)))
    if classes is not None and classes > DRAWN:
        sentences.append(word.sentence("caption_elided", classes=classes))
    return Layout(
        name=name,
        spec=spec,
        classes=classes,
        width=_r(right - left),
        height=_r(ceiling - bottom),
        nodes=tuple(nodes),
        edges=tuple(edges),
        texts=tuple(texts),
        columns=tuple(columns),
        links=tuple(links),
        caption=" ".join(s for s in sentences if s),
    )


def _size(labels: list[Label | None]) -> float:
    """The diameter that fits the widest label with some room: NODE, or the next multiple of
    4 pt (at most 40)."""
    widest = max((l.width() for l in labels if l is not None), default=0.0)
    size = NODE
    while size < 40 and widest > size - LABEL_ROOM:
        size += 4
    return size


def _r(v: float) -> float:
    """Two decimals: the same input gives the same bytes."""
    return round(v + 0.0, 2) + 0.0


def endpoints(fig: Layout, edge: Edge) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where an edge leaves its source and meets its target: on their outlines, towards each other."""
    a, b = fig.node(edge.source), fig.node(edge.target)
    dx, dy = b.x - a.x, b.y - a.y
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    ta, tb = _reach(a, ux, uy), _reach(b, ux, uy)
    return (a.x + ta * ux, a.y + ta * uy), (b.x - tb * ux, b.y - tb * uy)


def _reach(n: Node, ux: float, uy: float) -> float:
    """Distance from a node's centre to its outline in direction (ux, uy)."""
    if n.shape == "square":
        return n.size / 2 / max(abs(ux), abs(uy))
    return n.size / 2


def _num(v: float) -> str:
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --- LaTeX ------------------------------------------------------------------------------------------
def tex(fig: Layout, escape=lambda s: s) -> str:
    """A ``picture``: circles and boxes of the kernel's picture mode, arrows as horizontal
    ``\\vector``s turned by ``\\rotatebox`` (graphicx), which gives them any slope."""
    out = [r"{\setlength{\unitlength}{1pt}%", rf"\begin{{picture}}({_num(fig.width)},{_num(fig.height)})"]
    for e in fig.edges:
        (x1, y1), (x2, y2) = endpoints(fig, e)
        angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
        length = math.hypot(x2 - x1, y2 - y1)
        arrow = rf"\begin{{picture}}(0,0)\vector(1,0){{{_num(length)}}}\end{{picture}}"
        if abs(angle) < 0.005:
            out.append(rf"\put({_num(x1)},{_num(y1)}){{{arrow}}}")
        else:
            out.append(rf"\put({_num(x1)},{_num(y1)}){{\rotatebox{{{angle:.3f}}}{{{arrow}}}}}")
    for n in fig.nodes:
        at = rf"\put({_num(n.x)},{_num(n.y)})"
        if n.shape == "dots":
            out.append(rf"{at}{{\makebox(0,0){{$\vdots$}}}}")
        elif n.shape == "square":
            half = n.size / 2
            out.append(rf"\put({_num(n.x - half)},{_num(n.y - half)}){{\framebox({_num(n.size)},{_num(n.size)}){{${n.label.tex()}$}}}}")
        else:
            out.append(rf"{at}{{\circle{{{_num(n.size)}}}}}")
            out.append(rf"{at}{{\makebox(0,0){{${n.label.tex()}$}}}}")
    for t in fig.texts:
        style = r"\small" if t.kind == "heading" else r"\small\itshape"
        out.append(rf"\put({_num(t.x)},{_num(t.y)}){{\makebox(0,0){{{style} {escape(t.text)}}}}}")
    out.append(r"\end{picture}}")
    return "\n".join(out)


# --- Mermaid ----------------------------------------------------------------------------------------
_MERMAID_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


def mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: its special characters as Mermaid entity codes."""
    return "".join(_MERMAID_ENTITIES.get(c, c) for c in text)


def _mermaid_label(label: Label) -> str:
    function, symbol, index = label.text()
    head = f"{function} " if function else ""
    sub = f"<sub>{mermaid_text(index)}</sub>" if index else ""
    return mermaid_text(head + symbol) + sub


def mermaid(fig: Layout) -> str:
    """A ``flowchart LR``: units as circles, targets as boxes, every label
    quoted, the headings as unframed nodes above their columns.

    Mermaid places the nodes itself, so two things hold the picture's order: each ellipsis and
    heading is linked (invisibly, ``~~~``) like the nodes of its column, which keeps the ellipsis
    between the second and the last node and the heading on top; and the targets are joined to
    the error by plain lines drawn from the error, so that they stand to its right.
    """
    out = ["flowchart LR"]
    for c in fig.columns:
        title = f"{c.title} ({c.layer})" if c.layer else c.title
        out.append(f'  h{c.key}["{mermaid_text(title)}"]')
    for id in (id for c in fig.columns for id in c.nodes):
        n = fig.node(id)
        if n.shape == "dots":
            out.append(f'  {n.id}["⋮"]')
        elif n.shape == "square":
            out.append(f'  {n.id}["{_mermaid_label(n.label)}"]')
        else:
            out.append(f'  {n.id}(("{_mermaid_label(n.label)}"))')
    out.append("  " + " ~~~ ".join(f"h{c.key}" for c in fig.columns))
    column = {c.key: c.nodes for c in fig.columns}
    for source, target, kind in fig.links:
        pairs = zip(column[source], column[target]) if kind == ELEMENTWISE else (
            (a, b) for a in column[source] for b in column[target])
        for a, b in pairs:
            hidden = "dots" in (fig.node(a).shape, fig.node(b).shape)
            if kind == "target":
                out.append(f"  {b} {'~~~' if hidden else '---'} {a}")
            else:
                out.append(f"  {a} {'~~~' if hidden else '-->'} {b}")
    plain = [f"h{c.key}" for c in fig.columns] + [n.id for n in fig.nodes if n.shape == "dots"]
    out.append("  classDef plain fill:none,stroke:none")
    out.append(f"  class {','.join(plain)} plain")
    return "\n".join(out)


# --- SVG --------------------------------------------------------------------------------------------
SVG_SCALE = 4 / 3
"""CSS pixels per point: the SVG shows at the size of the printed figure."""
_FONT = "'Latin Modern Roman','CMU Serif','Times New Roman',Times,serif"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _svg_label(label: Label) -> str:
    function, symbol, index = label.text()
    parts = []
    if function:
        parts.append(f"<tspan>{_xml(function)}</tspan>")
    gap = ' dx="1.7"' if function else ""  # a thin space, as TeX puts after \ln
    upright = lambda text: text.isdigit() or unicodedata.name(text[0], "").startswith("GREEK CAPITAL")
    italic = lambda text: "" if upright(text) else ' font-style="italic"'
    parts.append(f"<tspan{gap}{italic(symbol)}>{_xml(symbol)}</tspan>")
    if index:
        parts.append(f'<tspan dy="2.6" font-size="7"{italic(index)}>{_xml(index)}</tspan>')
    return "".join(parts)


def svg(fig: Layout, title: str = "") -> str:
    """An inline SVG: strokes and text in ``currentColor``, arrowheads as polygons (no markers,
    ids or links), so it can sit anywhere in an HTML page and follows the page's text colour."""
    h = fig.height
    Y = lambda y: h - y  # SVG's y grows downwards
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(fig.width)} {_num(h)}" '
        f'width="{_num(fig.width * SVG_SCALE)}" height="{_num(h * SVG_SCALE)}" role="img" '
        f'font-family="{_FONT}" font-size="{_num(TEXT_SIZE)}">'
    ]
    if title:
        out.append(f"<title>{_xml(title)}</title>")
    out.append('<g fill="none" stroke="currentColor" stroke-width="0.6">')
    for e in fig.edges:
        (x1, y1), (x2, y2) = endpoints(fig, e)
        length = math.hypot(x2 - x1, y2 - y1)
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        bx, by = x2 - ARROW * ux, y2 - ARROW * uy  # the base of the arrowhead
        out.append(f'<line x1="{_num(x1)}" y1="{_num(Y(y1))}" x2="{_num(bx)}" y2="{_num(Y(by))}"/>')
    for n in fig.nodes:
        if n.shape == "circle":
            out.append(f'<circle cx="{_num(n.x)}" cy="{_num(Y(n.y))}" r="{_num(n.size / 2)}"/>')
        elif n.shape == "square":
            half = n.size / 2
            out.append(f'<rect x="{_num(n.x - half)}" y="{_num(Y(n.y + half))}" width="{_num(n.size)}" height="{_num(n.size)}"/>')
    out.append("</g>")
    out.append('<g fill="currentColor" stroke="none">')
    for e in fig.edges:
        (x1, y1), (x2, y2) = endpoints(fig, e)
        length = math.hypot(x2 - x1, y2 - y1)
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        bx, by = x2 - ARROW * ux, y2 - ARROW * uy
        w = ARROW * 0.36
        points = [(x2, y2), (bx - w * uy, by + w * ux), (bx + w * uy, by - w * ux)]
        out.append('<polygon points="' + " ".join(f"{_num(px)},{_num(Y(py))}" for px, py in points) + '"/>')
    for n in fig.nodes:
        if n.shape == "dots":
            for d in (-3.5, 0.0, 3.5):
                out.append(f'<circle cx="{_num(n.x)}" cy="{_num(Y(n.y + d))}" r="0.75"/>')
        else:
            out.append(f'<text x="{_num(n.x)}" y="{_num(Y(n.y) + 3.2)}" text-anchor="middle">{_svg_label(n.label)}</text>')
    for t in fig.texts:
        style = ' font-style="italic"' if t.kind == "layer" else ""
        out.append(f'<text x="{_num(t.x)}" y="{_num(Y(t.y) + 3)}" text-anchor="middle" font-size="{_num(HEADING_SIZE)}"{style}>'
                   f"{_xml(t.text)}</text>")
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


# --- all forms --------------------------------------------------------------------------------------
def figure(name: str, classes: int | None = None, words: Mapping[str, Any] | None = None,
           escape=lambda s: s, names: Mapping[str, str] | None = None, log: str = r"\ln") -> dict[str, str] | None:
    """The figure of derivation ``name`` in every form: ``tex``, ``mermaid``, ``svg``, and its
    ``title`` and ``caption`` (wording with \\( ... \\) math); None when it has none.
    ``escape`` makes a heading safe for LaTeX; ``names`` and ``log`` as for :func:`layout`."""
    fig = layout(name, classes, words, names, log)
    if fig is None:
        return None
    title = str((words or {}).get("title", ""))
    return {
        "tex": tex(fig, escape),
        "mermaid": mermaid(fig),
        "svg": svg(fig, title),
        "title": title,
        "caption": fig.caption,
    }
