"""A derivation in a notebook: a real kernel runs a notebook (nbclient), nbconvert exports it to
HTML, and headless Chromium shows the formulas as MathML; the Markdown with dollar math parses
as MkDocs, MyST, pandoc and Jupyter read it, and KaTeX parses every formula."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

import derive
from derive.notebook import SCOPE, fragment, scoped
from mathcheck import check_formulas, markdown_formulas
from test_html import chromium

DOCUMENTS = [(name, classes) for name in derive.catalog() for classes in (None, 3)]
BOXED_RESULT = "∂E∂zk=ok−yk"
"""The text of the boxed result of softmax-ce as MathML: \\frac{\\partial E}{\\partial z_k} = o_k - y_k."""
CHROMIUM_TIMEOUT = 60
KERNEL_TIMEOUT = 120

MEASURE = """<script>
(function () {
  const math = [...document.querySelectorAll("math")];
  const out = document.createElement("pre");
  out.id = "derive-measured";
  out.textContent = JSON.stringify({
    formulas: math.length,
    laidOut: math.filter((m) => { const b = m.getBoundingClientRect(); return b.width > 1 && b.height > 1; }).length,
    boxed: [...document.querySelectorAll("math menclose[notation=box]")].map((e) => e.textContent.replace(/\\s+/g, "")),
  });
  document.body.append(out);
})();
</script>
"""
"""Counts the formulas Chromium laid out and reads the boxed ones, for --dump-dom."""


def dollar_formulas(md_text: str) -> list[tuple[str, bool]]:
    """The formulas of Markdown with dollar math, read as strictly as pandoc does: no space inside
    the dollars, no digit right after the closing one, ``$$`` only as a block."""
    parser = MarkdownIt("commonmark").enable("table").use(dollarmath_plugin, allow_space=False, allow_digits=False, double_inline=False)
    formulas = []
    for token in parser.parse(md_text):
        if token.type == "math_block":
            formulas.append((token.content.strip(), True))
        elif token.type == "inline":
            formulas += [(child.content.strip(), False) for child in token.children or [] if child.type == "math_inline"]
    return formulas


# --- the representations ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle() -> dict[str, str]:
    return derive.derivation("softmax-ce", classes=3)._repr_mimebundle_()


def test_the_bundle_offers_html_markdown_latex_and_text(bundle):
    assert list(bundle) == ["text/html", "text/markdown", "text/latex", "text/plain"]
    html = bundle["text/html"]
    assert html.startswith(f'<div class="{SCOPE}">') and html.rstrip().endswith("</div>")
    assert not re.search(r"<!DOCTYPE|<html|<head|<body|<main", html, re.I)
    assert html.count('<math display="block">') > 20 and '<menclose notation="box">' in html
    assert "```math" not in bundle["text/markdown"] and "$`" not in bundle["text/markdown"]
    assert bundle["text/latex"] == r"$$\frac{\partial E}{\partial z_k} = o_k - y_k$$"
    assert bundle["text/plain"].startswith("softmax-ce: Derivative(E, z[k])")


def test_the_bundle_gives_what_is_asked_for():
    d = derive.derivation("softmax", classes=3)
    assert list(d._repr_mimebundle_(include=["text/latex", "text/plain"])) == ["text/latex", "text/plain"]
    assert list(d._repr_mimebundle_(exclude=["text/html"])) == ["text/markdown", "text/latex", "text/plain"]


def test_latex_has_a_row_for_each_variable_of_a_layer():
    latex = derive.derivation("dense-softmax-ce")._repr_mimebundle_(include=["text/latex"])["text/latex"]
    assert latex == (r"$$\begin{aligned} \frac{\partial E}{\partial W_{kd}} &= x_d \left(o_k - y_k\right) \\ "
                     r"\frac{\partial E}{\partial b_k} &= o_k - y_k \end{aligned}$$")


def _unscoped(css: str) -> list[str]:
    """Selectors of a style sheet that reach beyond the derivation's element."""
    selectors = [s.strip() for rule in re.findall(r"([^{}]+)\{[^{}]*\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S)) for s in rule.split(",")]
    return [s for s in selectors if not s.startswith(f".{SCOPE}")]


def test_the_style_sheet_stays_inside_the_output(bundle):
    css = re.search(r"<style>(.*?)</style>", bundle["text/html"], re.S).group(1)
    assert css.count("{") > 20 and not _unscoped(css)
    # The page's own style sheet restyles the whole notebook: the check sees it.
    page = re.search(r"<style>(.*?)</style>", derive.render(derive.derivation("softmax-ce", classes=3), "html"), re.S).group(1)
    assert {"body", "h2", "table"} <= set(_unscoped(page))


def test_scoping_rules():
    assert scoped("body, main { margin: 0; }\nmain.wide { x: y; }\n/* a, b */ h2 > a:hover { c: d; }") == (
        f".{SCOPE}, .{SCOPE} {{ margin: 0; }}\n.{SCOPE}.wide {{ x: y; }}\n.{SCOPE} h2 > a:hover {{ c: d; }}\n"
    )
    assert fragment('<html><body><main class="wide"><p>x</p></main></body></html>') == f'<div class="{SCOPE} wide">\n<p>x</p>\n</div>\n'
    assert fragment("<p>no page</p>") == f'<div class="{SCOPE}">\n<p>no page</p>\n</div>\n'


# --- Markdown with dollar math --------------------------------------------------------------------------
@pytest.mark.parametrize("name, classes", DOCUMENTS)
def test_dollar_markdown_has_the_formulas_of_the_github_markdown(name, classes):
    d = derive.derivation(name, classes=classes)
    github = derive.render(d, "md")
    dollars = derive.render(d, "md", markdown="dollars")
    assert "```math" not in dollars and "$`" not in dollars
    assert dollar_formulas(dollars) == markdown_formulas(github)
    # The prose is the same: only the math's delimiters differ.
    assert _without_delimiters(dollars, ("$$", "$")) == _without_delimiters(github, ("```math", "$`", "`$"))


def _without_delimiters(md_text: str, delimiters: tuple[str, ...]) -> str:
    text = md_text.replace("\\$", "\0")
    for delimiter in (*delimiters, "```"):
        text = text.replace(delimiter, "")
    return text


def test_github_markdown_is_not_read_as_dollar_math():
    """The comparison above can fail: GitHub's forms are not dollar math."""
    github = derive.render(derive.derivation("softmax-ce", classes=3), "md")
    assert dollar_formulas(github) != markdown_formulas(github)


def test_dollars_keep_other_code_fences():
    from derive.markdown import math_syntax

    text = "a $`x_1`$ b\n\n```math\n\\frac{a}{b}\n```\n\n```mermaid\nA $`not math`$\n```\n\n  ```math\n  y\n  ```\n"
    assert math_syntax(text, "dollars") == "a $x_1$ b\n\n$$\n\\frac{a}{b}\n$$\n\n```mermaid\nA $`not math`$\n```\n\n  $$\n  y\n  $$\n"
    assert math_syntax(text, None) == math_syntax(text, "github") == text


def test_markdown_syntax_errors():
    d = derive.derivation("softmax-ce", classes=3)
    with pytest.raises(derive.UsageError, match="unknown Markdown math syntax 'katex'; choose one of github, dollars"):
        derive.render(d, "md", markdown="katex")
    with pytest.raises(derive.UsageError, match="applies to the md format, not html"):
        derive.render(d, "html", markdown="dollars")


def test_command_line_writes_dollars(tmp_path):
    from typer.testing import CliRunner

    from derive.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["softmax", "--classes", "3", "--markdown", "dollars", "-o", "-"])
    assert result.exit_code == 0 and "\n$$\n" in result.stdout and "```math" not in result.stdout
    result = runner.invoke(app, ["softmax", "--markdown", "gfm", "-o", str(tmp_path / "x.md")])
    assert result.exit_code == 2 and "unknown Markdown math syntax 'gfm'" in result.output
    assert not (tmp_path / "x.md").exists()


# --- a real notebook ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """A notebook that builds softmax-ce for three classes and shows it, run by a python3 kernel."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    derive.derivation("softmax-ce", classes=3).check()  # the kernel finds the checks in the shared cache
    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import derive\nd = derive.derivation('softmax-ce', classes=3)\nd")]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=KERNEL_TIMEOUT, resources={"metadata": {"path": str(folder)}}).execute()
    return nb, folder


def browse(html: str, folder: Path) -> dict:
    """Open ``html`` in headless Chromium without network; what MEASURE read from the laid-out page."""
    page = folder / "page.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"))
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={folder / 'profile'}", "--no-first-run",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1000,1400", "--dump-dom", page.as_uri(),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        dom, err = process.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        dom, err = b"", f"no answer within {CHROMIUM_TIMEOUT} s".encode()
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    found = re.search(r'<pre id="derive-measured">(.*?)</pre>', dom.decode(errors="replace"), re.S)
    assert found, f"Chromium failed: {err.decode(errors='replace')[-2000:]}"
    import html as markup

    return json.loads(markup.unescape(found.group(1)))


@pytest.fixture(scope="module")
def exported(notebook) -> str:
    nbconvert = pytest.importorskip("nbconvert")
    nb, _ = notebook
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    return body


def test_the_kernel_gets_every_representation(notebook):
    nb, _ = notebook
    (output,) = nb.cells[0].outputs
    assert output.output_type == "execute_result"
    assert list(output.data) == ["text/html", "text/markdown", "text/latex", "text/plain"]


def test_the_exported_notebook_shows_mathml_in_chromium(notebook, exported):
    _, folder = notebook
    seen = browse(exported, folder)
    assert seen["formulas"] > 40 and seen["laidOut"] == seen["formulas"], seen
    assert BOXED_RESULT in seen["boxed"], seen["boxed"]
    # The same page without MathML: the check sees that nothing is there.
    planted = browse(exported.replace("<math", "<span").replace("</math>", "</span>"), folder)
    assert planted["formulas"] == 0 and planted["boxed"] == []


def test_the_notebooks_markdown_and_latex_parse_with_katex(notebook):
    nb, _ = notebook
    data = nb.cells[0].outputs[0].data
    formulas = dollar_formulas(data["text/markdown"])
    latex = data["text/latex"]
    assert latex.startswith("$$") and latex.endswith("$$") and "\\documentclass" not in latex
    formulas.append((latex[2:-2], True))
    assert len(formulas) > 100
    assert check_formulas(formulas) == []
    # A formula KaTeX cannot parse is reported.
    assert check_formulas([(r"\frac{a}{", True)])


def test_the_overview_in_dollars():
    from derive import overview

    github = overview.render("md")
    dollars = overview.render("md", markdown="dollars")
    assert "$`" not in dollars and dollar_formulas(dollars) == markdown_formulas(github)
    with pytest.raises(derive.UsageError, match="applies to the md format, not tex"):
        overview.render("tex", markdown="dollars")
