"""The overview: rows come from the verified derivations, the "output minus target" mark is
decided symbolically, every link points at a gallery document."""

from dataclasses import replace
from pathlib import Path

import pytest
import sympy as sp

import derive
from derive import overview
from derive.derivations import CATALOG
from derive.model import Step
from derive.rendering import environment, wording
from derive.symbols import k, o, y

OUTPUT = Path(__file__).resolve().parent.parent / "output"


@pytest.fixture(scope="module")
def rows():
    return overview.rows(wording(environment()))


def test_every_derivation_has_a_row(rows):
    # Every entry has a row; of those that are spec files, the losses (a layer has no row).
    assert [r["name"] for r in rows if not r["options"]] == [n for n in CATALOG if not CATALOG[n].spec or n in ("focal", "kl-softmax", "tanh-sse", "mlp")]
    for r in rows:
        assert r["activation"] and r["why"], r["name"]
        if r["kind"] == "loss":
            assert r["loss"], r["name"]


def test_the_gradient_is_the_derivations_result(rows):
    from derive.latex import latex

    for r in rows:
        assert r["result"] == latex(derive.derivation(r["name"], **r["options"]).result)


def test_output_minus_target_is_decided_not_declared():
    d = derive.derivation("softmax-ce")
    assert overview.output_minus_target(d)
    doubled = Step("algebra", d.result.rhs, o[k] - 2 * y[k])
    assert not overview.output_minus_target(replace(d, steps=d.steps + (doubled,)))
    swapped = Step("algebra", d.result.rhs, y[k] - o[k])
    assert not overview.output_minus_target(replace(d, steps=d.steps + (swapped,)))
    assert not overview.output_minus_target(derive.derivation("softmax"))


def test_links_point_at_gallery_documents(rows):
    for fmt in ("md", "pdf"):
        for r in overview.document(wording(environment()), fmt)["rows"]:
            assert (OUTPUT / r["link"]).is_file(), r["link"]


def test_cli_writes_the_overview(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "derive", "overview", "-o", "o.md"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "o.md").read_text()
    assert "[softmax + cross-entropy](softmax-ce.md)" in text
    assert text == overview.render("md")


@pytest.mark.parametrize("fmt, pattern", [("md", r"\]\(([^)]+)\)"), ("html", r'href="([^"#]+)"'), ("tex", r"\\href\{([^}]+)\}")])
def test_an_overview_in_a_fresh_folder_has_no_dead_link(tmp_path, monkeypatch, fmt, pattern):
    """The command writes the documents the overview links to beside it, in the same notation."""
    import re

    from typer.testing import CliRunner

    from derive.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["overview", "-o", f"fresh/overview.{fmt}", "--notation", "bishop"])
    assert result.exit_code == 0, result.output
    written = (tmp_path / "fresh" / f"overview.{fmt}").read_text(encoding="utf-8")
    links = re.findall(pattern, written)
    assert len(links) == len(overview.entries()) == 13
    # A LaTeX overview links to the PDFs that its documents' LaTeX compiles to.
    files = [link.removesuffix(".pdf") + ".tex" if fmt == "tex" else link for link in links]
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == sorted(files + [f"overview.{fmt}"])
    printed = result.stdout.splitlines()
    assert printed[0] == f"fresh/overview.{fmt}" and sorted(printed[1:]) == sorted(f"fresh/{f}" for f in files)
    # Written as the command line writes each one, with the overview's notation.
    document = derive.render(derive.derivation("softmax-ce"), fmt, notation="bishop")
    assert (tmp_path / "fresh" / f"softmax-ce.{fmt}").read_text(encoding="utf-8") == document


def test_an_overview_on_standard_output_writes_nothing_else(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from derive.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["overview", "-o", "-"])
    assert result.exit_code == 0 and result.stdout.startswith("# ")
    assert list(tmp_path.iterdir()) == []
