"""The HTML page: self-contained (no script, nothing to load), every formula MathML, the same
bytes for the same input, and laid out by a real browser: headless Chromium, without network,
draws a page that is not blank and gives every formula a non-zero size."""

from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

import derive
from derive.cli import app
from derive.errors import DeriveError
from derive.mathml import mathml
from mathcheck import markdown_formulas

ROOT = Path(__file__).resolve().parent.parent
PAGES = [(name, classes) for name in derive.catalog() for classes in (None, 3)]
MATHML_CORE = {
    "math", "mrow", "mi", "mn", "mo", "mtext", "mspace", "ms", "mfrac", "msqrt", "mroot", "mstyle",
    "merror", "mpadded", "mphantom", "msub", "msup", "msubsup", "munder", "mover", "munderover",
    "mmultiscripts", "mprescripts", "mtable", "mtr", "mtd", "semantics", "annotation", "annotation-xml",
}
"""MathML Core's elements: what browsers lay out."""
DRAWN_BY_STYLE = {"menclose"}
"""Not in MathML Core: the page's style sheet draws the box of \\boxed."""
LOADING_ELEMENTS = {"script", "link", "img", "iframe", "object", "embed", "audio", "video", "source", "base", "frame"}


@functools.cache
def rendered(name: str, classes: int | None, fmt: str = "html") -> str:
    """Each document once per test run: the symbolic checks of a derivation take seconds."""
    return derive.render(derive.derivation(name, classes=classes), fmt)


@pytest.fixture(scope="module")
def page() -> str:
    return rendered("softmax-ce", 3)


class _Page(HTMLParser):
    """The tags and attributes of a page, its text outside formulas, and each formula's markup."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.prose: list[str] = []
        self.depth = 0  # inside <math> when > 0
        self.feed(text)
        self.close()
        self.formulas = re.findall(r"<math\b.*?</math>", text, re.S)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.depth += tag == "math"

    def handle_endtag(self, tag):
        self.depth -= tag == "math"

    def handle_data(self, data):
        if self.depth == 0:
            self.prose.append(data)


# --- the page itself -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, classes", PAGES)
def test_page_is_self_contained(name, classes):
    text = rendered(name, classes)
    parsed = _Page(text)
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    assert "<script" not in text.lower()
    assert not [tag for tag, _ in parsed.tags if tag in LOADING_ELEMENTS]
    for tag, attrs in parsed.tags:
        for key in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
            assert attrs.get(key) is None or attrs[key].startswith("#"), (tag, key, attrs[key])
    assert "url(" not in text and "@import" not in text
    # A namespace name is not loaded; any other web address would be.
    assert not re.findall(r"https?://", re.sub(r'xmlns(:\w+)?="[^"]*"', "", text))


@pytest.mark.parametrize("name, classes", PAGES)
def test_every_formula_is_mathml(name, classes):
    text = rendered(name, classes)
    parsed = _Page(text)
    prose = "".join(parsed.prose)
    assert not re.findall(r"\\[A-Za-z]+|\\\(|\\\)|\$", prose), "LaTeX left outside the formulas"
    assert len(parsed.formulas) > 40
    for formula in parsed.formulas:
        tree = ElementTree.fromstring(formula)
        tags = {element.tag for element in tree.iter()}
        assert tags <= MATHML_CORE | DRAWN_BY_STYLE, tags - MATHML_CORE
        assert "\\" not in "".join(tree.itertext()), formula
    # Display math is what the Markdown document shows as display math, one for one.
    md_display = [tex for tex, display in markdown_formulas(rendered(name, classes, "md")) if display]
    assert text.count('<math display="block">') == len(md_display)


def test_the_same_input_gives_the_same_bytes(page):
    again = derive.render(derive.derivation("softmax-ce", classes=3), "html")
    assert again.encode() == page.encode()


def test_page_has_every_part(page):
    for part in ("<h2>The setting</h2>", "<h2>Definitions</h2>", "<h2>The derivation, step by step</h2>",
                 "<h2>Verification</h2>", '<span class="step-title">4. Chain rule.</span>', '<menclose notation="box">',
                 "<mo>⏟</mo>", '<mtd columnalign="left">', "<mtext>all&#x000A0;terms&#x000A0;with&#x000A0;</mtext>", 'id="step-13"',
                 "<table", "<svg"):
        assert part in page, part


def test_overview_page():
    from derive import overview

    text = overview.render("html")
    parsed = _Page(text)
    assert "<script" not in text and len(parsed.formulas) >= len(derive.catalog())
    for formula in parsed.formulas:
        ElementTree.fromstring(formula)
    links = [attrs["href"] for tag, attrs in parsed.tags if tag == "a"]
    assert links and all((ROOT / "output" / link).is_file() for link in links), links


def test_command_line_writes_html(tmp_path):
    result = CliRunner().invoke(app, ["softmax-ce", "--classes", "3", "-o", str(tmp_path / "ce.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ce.html").read_text().startswith("<!DOCTYPE html>")


def test_bad_latex_in_user_wording_is_a_one_line_error(tmp_path):
    wording = (ROOT / "templates" / "wording.toml").read_text()
    assert r"\text{all terms with }" in wording
    (tmp_path / "wording.toml").write_text(wording.replace(r"\text{all terms with }", r"\textt{all terms with }"))
    with pytest.raises(DeriveError, match=r"unknown macro \\textt"):
        derive.render(derive.derivation("softmax-ce", classes=3), "html", templates=tmp_path)
    result = CliRunner().invoke(app, ["softmax-ce", "--format", "html", "-o", "-", "--templates", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "unknown macro" in result.output and "Traceback" not in result.output


# --- the LaTeX to MathML conversion, construct by construct -----------------------------------------
def test_underbrace_with_a_label():
    out = mathml(r"\underbrace{a + b}_{\text{the term } i = k}", block=True)
    assert out.startswith('<math display="block"><mrow><munder><munder><mrow><mi>a</mi><mo>+</mo><mi>b</mi></mrow><mo>⏟</mo></munder>')
    assert "<mtext>the&#x000A0;term&#x000A0;</mtext><mi>i</mi><mo>=</mo><mi>k</mi></mrow></munder>" in out


def test_boxed_cases_and_matrices():
    assert '<menclose notation="box">' in mathml(r"\boxed{x = 1}", block=True)
    cases = mathml(r"f = \begin{cases} a & \text{if } i = k \\ b & \text{if } i \neq k \end{cases}", block=True)
    assert '<mo stretchy="true" fence="true" form="prefix">{</mo><mtable>' in cases
    assert cases.count('<mtd columnalign="left">') == 4 and "<mo>≠</mo>" in cases
    matrix = mathml(r"\begin{pmatrix} a & \cdots \\ \vdots & \ddots \end{pmatrix}")
    assert matrix.count("<mtr>") == 2 and matrix.count("<mtd>") == 4 and "<mo>(</mo>" in matrix and "⋱" in matrix


def test_sums_get_their_limits_under_and_over():
    out = mathml(r"\sum_{\substack{i=1 \\ i \neq k}}^{H} y_i + \left(\sum_{j} x_j\right) + \sum x")
    assert out.count("<munderover><mo>∑</mo>") == 1 and out.count("<munder><mo>∑</mo>") == 1
    assert "<mo>∑</mo><mi>x</mi>" in out  # a bare sum keeps no empty script


def test_tex_spacing():
    assert '<mo>=</mo><mo form="prefix">−</mo>' in mathml(r"a = -b")
    assert '<mrow><mo form="prefix">−</mo>' in mathml(r"-b")
    assert "<mi>a</mi><mo>−</mo><mi>b</mi>" in mathml(r"a - b")
    assert '<mi>y</mi><mo lspace="0.1667em" rspace="0.1667em">ln</mo><mi>o</mi>' in mathml(r"y \ln o")
    assert '<mo lspace="0" rspace="0">/</mo>' in mathml(r"\partial E / \partial z")


def test_text_is_escaped_and_characters_are_literal():
    out = mathml(r"\text{a < b & c} \leq \delta")
    assert "<mtext>a&#x000A0;&lt;&#x000A0;b&#x000A0;&amp;&#x000A0;c</mtext><mo>≤</mo><mi>δ</mi>" in out
    ElementTree.fromstring(out)


@pytest.mark.parametrize("latex, message", [
    (r"\foo{x}", r"unknown macro \\foo"),
    (r"\frac{a", "mfrac"),
    (r"x_", "does not convert"),
    (r"\begin{pmatrix} a", "does not convert"),
])
def test_latex_that_does_not_convert_is_reported(latex, message):
    with pytest.raises(DeriveError, match=message):
        mathml(latex)


# --- in a browser ------------------------------------------------------------------------------------
CHROMIUM_TIMEOUT = 60
WINDOW = (900, 700)
MEASURE = """<script>
(function () {
  const math = [...document.querySelectorAll("math")].map((m, index) => {
    const box = m.getBoundingClientRect();
    const style = getComputedStyle(m);
    return {index, width: box.width, height: box.height, display: style.display, visibility: style.visibility,
            opacity: Number(style.opacity), text: m.textContent.trim().length, source: m.outerHTML.slice(0, 100)};
  });
  const out = document.createElement("pre");
  out.id = "measurements";
  out.textContent = JSON.stringify({math, scrollWidth: document.documentElement.scrollWidth,
                                    clientWidth: document.documentElement.clientWidth});
  document.body.append(out);
})();
</script>
"""
"""Measures every formula once the page is laid out and writes the results into it, for --dump-dom."""


@dataclass
class Shown:
    """What Chromium made of a page: the measurements of MEASURE and the first screen's pixels."""

    measured: dict
    rows: list[bytes]
    pixel_size: int


def chromium() -> str:
    """Debian's Chromium; skipped on a developer's machine without it, a failure in CI."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: ./test.sh installs it (apt-get install chromium)")
    pytest.skip("Chromium is not installed")


def show(text: str, directory: Path) -> Shown:
    """Open ``text`` with MEASURE in headless Chromium, without network, in one run: dump the
    laid-out page and take a screenshot of the first screen."""
    page, shot = directory / "page.html", directory / "screen.png"
    page.write_text(text.replace("</body>", MEASURE + "</body>"))
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={directory / 'profile'}", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", f"--screenshot={shot}", page.as_uri(),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               cwd=directory, start_new_session=True)
    try:
        dom, err = process.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        dom, err = b"", f"no answer within {CHROMIUM_TIMEOUT} s".encode()
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its helpers, if any outlive it
        except ProcessLookupError:
            pass
        process.wait()
    found = re.search(r'<pre id="measurements">(.*?)</pre>', dom.decode(errors="replace"), re.S)
    assert found and shot.exists(), f"Chromium failed: {err.decode(errors='replace')[-2000:]}"
    width, height, size, rows = decode_png(shot.read_bytes())
    assert (width, height) == WINDOW
    return Shown(json.loads(html.unescape(found.group(1))), rows, size)


def math_problems(measured: dict) -> dict[int, list[str]]:
    """Formulas the browser did not lay out as visible MathML of some size: index -> what is wrong."""
    problems: dict[int, list[str]] = {}
    for m in measured["math"]:
        wrong = []
        if "math" not in m["display"]:
            wrong.append(f"display {m['display']!r}")
        if m["width"] < 1 or m["height"] < 1:
            wrong.append(f"{m['width']:.1f} x {m['height']:.1f} px")
        if m["visibility"] != "visible" or m["opacity"] == 0:
            wrong.append("invisible")
        if m["text"] == 0:
            wrong.append("empty")
        if wrong:
            problems[m["index"]] = wrong + [m["source"]]
    return problems


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and rows of an 8-bit RGB or RGBA PNG without interlacing."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "only 8-bit RGB(A) without interlacing"
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * size
    rows, previous = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], raw[start + 1 : start + 1 + stride]
        if kind == 2 and not any(row):  # up, nothing new: the most common row of a page
            row = previous
        elif kind != 0:
            row = _unfilter(kind, bytearray(row), previous, size)
        rows.append(bytes(row))
        previous = rows[-1]
    return width, height, size, rows


def _unfilter(kind: int, row: bytearray, previous: bytes, size: int) -> bytearray:
    """Undo one PNG filter (sub, up, average, Paeth) on one row."""
    for x in range(len(row)):
        left = row[x - size] if x >= size else 0
        up = previous[x]
        if kind == 1:
            row[x] = (row[x] + left) & 255
        elif kind == 2:
            row[x] = (row[x] + up) & 255
        elif kind == 3:
            row[x] = (row[x] + (left + up) // 2) & 255
        else:
            corner = previous[x - size] if x >= size else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            row[x] = (row[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
    return row


def ink(rows: list[bytes], size: int) -> tuple[float, int]:
    """The share of pixels that are not white, and the number of distinct colours."""
    inked, colours = 0, {b"\xff\xff\xff"}
    for row in rows:
        if row.count(255) == len(row):
            continue
        pixels = [row[i : i + 3] for i in range(0, len(row), size)]
        inked += len(pixels) - pixels.count(b"\xff\xff\xff")
        colours.update(pixels)
    return inked / (len(rows) * len(rows[0]) // size), len(colours)


def blank(rows: list[bytes], size: int) -> bool:
    """A screenshot with (almost) nothing drawn: under 1% of the pixels, or a handful of colours."""
    share, colours = ink(rows, size)
    return share < 0.01 or colours < 8


@pytest.fixture(scope="module")
def shown(page, tmp_path_factory) -> Shown:
    return show(page, tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def planted(page, tmp_path_factory) -> Shown:
    """The page with one formula left out of the layout, one transparent, one emptied, and the whole
    page transparent (which leaves each formula's own opacity alone): each must be caught."""
    text = page.replace('<math display="block">', '<math display="block" style="display: none">', 1)
    text = text.replace("<math>", '<math style="opacity: 0">', 1)
    text = re.sub(r"<math>.*?</math>", "<math></math>", text, count=1, flags=re.S)
    text = text.replace("</style>", "body { opacity: 0; }\n</style>", 1)
    return show(text, tmp_path_factory.mktemp("chromium-planted"))


def test_every_formula_is_laid_out_in_chromium(page, shown):
    assert len(shown.measured["math"]) == page.count("<math")
    assert math_problems(shown.measured) == {}
    # Wide formulas scroll inside their own box; the page itself fits the window.
    assert shown.measured["scrollWidth"] <= shown.measured["clientWidth"]


def test_chromium_draws_the_page(shown):
    share, colours = ink(shown.rows, shown.pixel_size)
    assert not blank(shown.rows, shown.pixel_size), (share, colours)
    assert 0.02 < share < 0.5, share  # text on a white page, not a wash of colour


def test_hidden_empty_and_blank_pages_are_caught(planted):
    problems = math_problems(planted.measured)
    assert sorted(wrong[:-1] for wrong in problems.values()) == [
        ["0.0 x 0.0 px", "empty"], ["display 'none'", "0.0 x 0.0 px"], ["invisible"]
    ], problems  # the three planted formulas, and only they
    assert blank(planted.rows, planted.pixel_size)
