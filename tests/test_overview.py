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
    assert [r["name"] for r in rows if not r["options"]] == list(CATALOG)
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
