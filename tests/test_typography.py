"""The PDF as a reader sees it: the title at the top of the page with the class count on a line of
its own, no heading left at the foot of a page with its table on the next, nothing that runs into
the margin."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import derive

OUTPUT = Path(__file__).resolve().parent.parent / "output"
TOP_MARGIN = 2.2 / 2.54 * 72  # \geometry{margin=2.2cm}, in PostScript points


def pages(pdf: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return text.split("\f")


def lines(page: str) -> list[str]:
    return [" ".join(line.split()) for line in page.splitlines() if line.strip()]


def test_the_title_starts_at_the_top_margin_with_the_class_count_below(pdflatex: None) -> None:
    pdf = OUTPUT / "softmax-ce-3.pdf"
    first = lines(pages(pdf)[0])
    assert first[:2] == ["The gradient of the cross-entropy error through a softmax layer", "for H = 3"]
    boxes = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    top = float(re.search(r'<word xMin="[\d.]+" yMin="([\d.]+)"', boxes).group(1))
    # \maketitle put its title 43 pt lower, below space for an author and a date there are none of.
    assert top < TOP_MARGIN + 5, top


GALLERY_PDFS = sorted(p.name for p in OUTPUT.glob("*.pdf") if p.name != "overview.pdf")
KEPT_TOGETHER = [
    ("Verification", "the steps form a chain"),  # the heading and the first row of its table
    ("A worked example", "class i"),  # the heading and the head of the example's table
]


@pytest.mark.parametrize("name", GALLERY_PDFS)
def test_no_heading_is_left_at_the_foot_of_a_page(pdflatex: None, name: str) -> None:
    texts = [lines(page) for page in pages(OUTPUT / name)]
    for heading, first_row in KEPT_TOGETHER:
        at = [n for n, page in enumerate(texts) if heading in page]
        if not at:
            continue
        row = [n for n, page in enumerate(texts) if any(line.startswith(first_row) for line in page)]
        if not row:  # a Jacobian's worked example is a matrix, not a table
            continue
        assert row[0] == at[0], f"{name}: '{heading}' on page {at[0] + 1}, its table on page {row[0] + 1}"


WIDE = [
    ("sigmoid-bce", 5, "probability"),  # the binary cross-entropy written out with log, not ln
    ("sigmoid-bce", 9, "textbook"),
    ("softmax-ce", 5, "probability"),
    ("mse-softmax", 5, "bishop"),
    ("dense-softmax-ce", 5, "probability"),
]


@pytest.mark.parametrize("name, classes, notation", WIDE)
def test_nothing_runs_into_the_margin(pdflatex: None, tmp_path: Path, name: str, classes: int, notation: str) -> None:
    (tmp_path / "doc.tex").write_text(derive.render(derive.derivation(name, classes=classes), "tex", notation=notation), encoding="utf-8")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path, capture_output=True, timeout=120, check=True)
    log = (tmp_path / "doc.log").read_text(encoding="latin-1")
    assert re.findall(r"Overfull \\hbox \([\d.]+pt too wide\)", log) == []
