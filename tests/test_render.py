"""Documents: the golden gallery, each format, formulas that GitHub and KaTeX parse, LaTeX that
compiles without overfull lines, reproducible PDFs, template overrides, bounded size for large H."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import derive
from derive.errors import DeriveError, UsageError
from derive.derivations.naming import file_name
from derive.gallery import GALLERY, documents
from mathcheck import check_formulas, markdown_formulas

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "output"
TEMPLATES = ROOT / "templates"


@pytest.fixture(scope="module")
def symbolic():
    return derive.derivation("softmax-ce")


@pytest.fixture(scope="module")
def three():
    return derive.derivation("softmax-ce", classes=3)


def tex_or_skip() -> None:
    if shutil.which("pdflatex") and shutil.which("pdftotext"):
        return
    if os.environ.get("CI"):
        pytest.fail("TeX Live and poppler-utils are missing: ./test.sh installs them")
    pytest.skip("TeX Live is not installed")


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


# --- the gallery ----------------------------------------------------------------------------------
def test_gallery_is_what_the_code_produces(tmp_path):
    """If this fails, regenerate the gallery: python -m derive.gallery"""
    tex_or_skip()
    for name, content in documents():
        committed = (OUTPUT / name).read_bytes()
        if name.endswith(".pdf"):
            assert pdf_text(content, tmp_path) == pdf_text(committed, tmp_path), f"{name} differs: python -m derive.gallery"
        else:
            assert content.encode() == committed, f"{name} differs: python -m derive.gallery"


def test_gallery_lists_every_format():
    names = {p.name for p in OUTPUT.iterdir()}
    for name, classes, *options in GALLERY:
        for fmt in ("md", "tex", "pdf", "json", "html"):
            assert file_name(name, classes, fmt, *options) in names


# --- formats --------------------------------------------------------------------------------------
def test_render_returns_text_and_pdf_bytes(three):
    tex_or_skip()
    for fmt in ("md", "tex", "json"):
        assert isinstance(derive.render(three, fmt), str)
    pdf = derive.render(three, "pdf")
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF")


def test_unknown_format(three):
    with pytest.raises(UsageError, match="unknown format 'docx'"):
        derive.render(three, "docx")


@pytest.mark.parametrize("classes", [None, 3])
def test_json_document(classes):
    d = derive.derivation("softmax-ce", classes=classes)
    doc = json.loads(derive.render(d, "json"))
    assert doc["name"] == "softmax-ce" and doc["classes"] == classes
    assert doc["result"] == r"\frac{\partial E}{\partial z_k} = o_k - y_k"
    assert [s["rule"] for s in doc["steps"]][1:7] == [
        "sum_rule", "constant_factor", "chain_rule", "log_derivative", "softmax_jacobian", "split_sum"
    ]
    assert all(s["title"] and s["latex"] for s in doc["steps"])
    assert doc["assumptions"][0]["key"] == "normalised"
    assert doc["checks"] and all(c["passed"] for c in doc["checks"])
    if classes is None:
        assert "example" not in doc
    else:
        ex = doc["example"]
        assert ex["probabilities"] == pytest.approx([0.2, 0.6, 0.2])
        assert ex["target"] == [1.0, 0.0, 0.0]
        assert ex["loss"] == pytest.approx(1.6094379124341003)
        assert ex["gradient"] == pytest.approx([-0.8, 0.6, 0.2])


def test_markdown_has_every_part(three):
    md = derive.render(three, "md")
    for part in ("## The setting", "**Notation.**", "## Definitions", "## The derivation, step by step",
                 r"\boxed{\frac{\partial E}{\partial z_k} = o_k - y_k}", "## The pitfall", "## Appendix",
                 "## Verification", r"\underbrace", r"\begin{cases}", r"\text{all terms with } i \neq k"):
        assert part in md, part
    for title in ("Sum rule", "Constant factor", "Chain rule", "Derivative of the logarithm", "The softmax Jacobian",
                  "Split the sum", "Normalisation of the target"):
        assert f". {title}.**" in md
    assert "| 2 | 0.6 | 0 | 0 | 0.6 |" in md  # the shortcut says 0 where the gradient is 0.6


DOCUMENTS = [(name, classes) for name in derive.catalog() for classes in (None, 3, 12)]


@pytest.mark.parametrize("name, classes", DOCUMENTS)
def test_every_markdown_formula_parses_in_katex_and_mathjax(name, classes):
    md = derive.render(derive.derivation(name, classes=classes), "md")
    formulas = markdown_formulas(md)
    assert len(formulas) > 40
    assert check_formulas(formulas) == []
    for banned in (r"\operatorname", r"\nobreak", r"\newcommand", r"\cancel"):
        assert banned not in md


def test_formula_check_catches_a_planted_macro(three):
    md = derive.render(three, "md").replace(r"\boxed{", r"\boxedd{", 1)
    assert any("boxedd" in e for e in check_formulas(markdown_formulas(md)))


@pytest.mark.parametrize("name, classes", DOCUMENTS)
def test_latex_compiles_without_overfull_lines(name, classes, tmp_path):
    tex_or_skip()
    tex = derive.render(derive.derivation(name, classes=classes), "tex")
    for banned in (r"\cancel", "{cancel}", "tikz", r"\newcommand"):
        assert banned not in tex
    (tmp_path / "doc.tex").write_text(tex)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180,
    )
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert run.returncode == 0, log[-2000:]
    assert "Overfull" not in log
    assert "Undefined" not in log


def test_pdf_is_byte_reproducible(three, tmp_path):
    tex_or_skip()
    first, second = derive.render(three, "pdf"), derive.render(three, "pdf")
    assert first == second
    text = pdf_text(first, tmp_path)
    assert "The pitfall" in text and "Verification" in text


def test_text_formats_are_deterministic(three):
    for fmt in ("md", "tex", "json"):
        assert derive.render(three, fmt) == derive.render(derive.derivation("softmax-ce", classes=3), fmt)


def test_large_h_stays_bounded():
    sizes = {n: len(derive.render(derive.derivation("softmax-ce", classes=n), "md")) for n in (12, 40)}
    assert abs(sizes[40] - sizes[12]) < 200  # only digits change: the middle is elided
    md = derive.render(derive.derivation("softmax-ce", classes=40), "md")
    assert r"\vdots" in md and r"\ddots" in md and "o_{40}" in md and "o_{20}" not in md


# --- templates --------------------------------------------------------------------------------------
def test_user_template_takes_precedence(three, tmp_path):
    (tmp_path / "document.md.j2").write_text("# ((( doc.title ))) for our course\n((( doc.result )))\n")
    out = derive.render(three, "md", templates=tmp_path)
    assert out.startswith("# The gradient of the cross-entropy error") and "for our course" in out
    # Files the user did not override still come from the package.
    assert "\\documentclass" in derive.render(three, "tex", templates=tmp_path)


def test_user_wording_renames_a_rule(three, tmp_path):
    wording = (TEMPLATES / "wording.toml").read_text().replace('title = "Chain rule"', 'title = "Kettenregel"')
    (tmp_path / "wording.toml").write_text(wording)
    assert "**4. Kettenregel.**" in derive.render(three, "md", templates=tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("((* for x in *))", "document.md.j2"),
        ("((( doc.no_such_field )))", "no_such_field"),
    ],
)
def test_broken_templates_are_reported(three, tmp_path, content, message):
    (tmp_path / "document.md.j2").write_text(content)
    with pytest.raises(DeriveError, match=message):
        derive.render(three, "md", templates=tmp_path)


def test_missing_template_directory(three, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        derive.render(three, "md", templates=tmp_path / "nope")


def test_escape_filters():
    from derive.rendering import md_escape, tex_escape

    assert tex_escape("50% of $x_1 & {y}# ~^\\") == r"50\% of \$x\_1 \& \{y\}\# \~{}\^{}\textbackslash{}"
    assert md_escape("a*b_c|d`e") == r"a\*b\_c\|d\`e"


def test_notebook_display_is_the_rendered_document(three):
    from derive.notebook import fragment

    bundle = three._repr_mimebundle_()
    assert bundle["text/html"] == fragment(derive.render(three, "html"))
    assert bundle["text/markdown"] == derive.render(three, "md", markdown="dollars")
    assert bundle["text/latex"] == r"$$\frac{\partial E}{\partial z_k} = o_k - y_k$$"  # math only, not a LaTeX file
    assert bundle["text/plain"] == str(three) and "sum_rule" in bundle["text/plain"]
