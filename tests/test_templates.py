"""Templates a course can own: ``derive templates DIR`` writes a starting point, wording files are
merged over the packaged ones key by key (an unknown key is an error naming it and the file), and
a template written with Jinja's default delimiters gets a warning naming the file and line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import derive
from derive.cli import app
from derive.files import templates_dir
from derive.rendering import TemplateWarning

PACKAGED = templates_dir()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def symbolic() -> derive.Derivation:
    return derive.derivation("softmax-ce")


@pytest.fixture(scope="module")
def packaged_md(symbolic: derive.Derivation) -> str:
    return derive.render(symbolic, "md")


def packaged_files() -> list[Path]:
    return sorted(p.relative_to(PACKAGED) for p in PACKAGED.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


# --- derive templates DIR -------------------------------------------------------------------------
def test_templates_writes_every_packaged_file(tmp_path: Path, symbolic: derive.Derivation, packaged_md: str) -> None:
    course = tmp_path / "course"
    result = invoke("templates", str(course))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{course}\n"
    written = sorted(p.relative_to(course) for p in course.rglob("*") if p.is_file())
    assert written == packaged_files() and Path("wording.toml") in written and Path("derivations/softmax-ce.toml") in written
    for name in written:
        assert (course / name).read_bytes() == (PACKAGED / name).read_bytes(), name
    # A starting point: as it is, it gives the packaged document, and no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert derive.render(symbolic, "md", templates=course) == packaged_md


def test_templates_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    course = tmp_path / "course"
    course.mkdir()
    (course / "wording.toml").write_text("# mine\n")
    (course / "notes.txt").write_text("keep me\n")
    result = invoke("templates", str(course))
    assert result.exit_code == 2
    assert result.stderr == f"error: {course} is not empty: choose a new directory, or add --force to replace the files of the same name in it\n"
    assert (course / "wording.toml").read_text() == "# mine\n" and sorted(p.name for p in course.iterdir()) == ["notes.txt", "wording.toml"]
    forced = invoke("templates", str(course), "--force")
    assert forced.exit_code == 0, forced.output
    assert (course / "wording.toml").read_bytes() == (PACKAGED / "wording.toml").read_bytes()
    assert (course / "notes.txt").read_text() == "keep me\n"


def test_templates_into_a_file_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "course").write_text("a file")
    result = invoke("templates", str(tmp_path / "course"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write templates into ") and result.stderr.count("\n") == 1


# --- wording merged key by key ------------------------------------------------------------------
def write(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def test_a_partial_wording_file_rewords_one_key(tmp_path: Path, symbolic: derive.Derivation, packaged_md: str) -> None:
    write(tmp_path, "wording.toml", '[rule.sum_rule]\ntitle = "Linearity"\n')
    md = derive.render(symbolic, "md", templates=tmp_path)
    assert "**2. Linearity.**" in md and "Sum rule" not in md
    assert md == packaged_md.replace("**2. Sum rule.**", "**2. Linearity.**").replace("step 2 (Sum rule)", "step 2 (Linearity)")


def test_a_partial_derivation_file_rewords_its_keys(tmp_path: Path, symbolic: derive.Derivation, packaged_md: str) -> None:
    write(tmp_path, "derivations/softmax-ce.toml", '[derivation.softmax-ce]\ntitle = "Softmax and cross-entropy"\n'
          '[derivation.softmax-ce.rule.cancel]\nwhy = "What cancels drops out."\n')
    md = derive.render(symbolic, "md", templates=tmp_path)
    assert md.startswith("# Softmax and cross-entropy\n")
    assert "Cancel.** What cancels drops out." in md
    packaged_summary = packaged_md.split("\n\n")[1]
    assert packaged_summary in md  # the keys the file does not set keep the packaged wording


def test_a_command_line_run_with_partial_wording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two cases that were internal errors (KeyError: 'softmax', KeyError: 'summary')."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "course", "wording.toml", '[definition]\nsoftmax = "Softmax, as in the lecture."\n')
    write(tmp_path / "course", "derivations/softmax-ce.toml", '[derivation.softmax-ce]\ntitle = "Lecture 4"\n')
    result = invoke("softmax-ce", "--classes", "3", "--templates", "course", "-o", "doc.md")
    assert result.exit_code == 0, result.output
    document = (tmp_path / "doc.md").read_text(encoding="utf-8")
    assert document.startswith("# Lecture 4, for H = 3\n") and "Softmax, as in the lecture." in document


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("wording.toml", '[rule.sum_rul]\ntitle = "x"\n', "wording.toml: unknown key 'rule.sum_rul'"),
        ("wording.toml", '[section]\nsetings = "x"\n', "wording.toml: unknown key 'section.setings'"),
        ("derivations/softmax-ce.toml", '[derivation.softmax-ce]\nsumary = "x"\n', "softmax-ce.toml: unknown key 'derivation.softmax-ce.sumary'"),
        ("derivations/softmax-ce.toml", '[derivation.softmax-ce.rule.no_such_rule]\nwhy = "x"\n', "unknown key 'derivation.softmax-ce.rule.no_such_rule'"),
        ("derivations/softmax-ce.toml", '[derivation.softmax-cee]\ntitle = "x"\n', "unknown key 'derivation.softmax-cee'"),
        ("wording.toml", "[rule]\nsum_rule = \"x\"\n", "wording.toml: rule.sum_rule is a table in the packaged wording, not a text"),
        ("wording.toml", "[rule.sum_rule]\nwhy = 3\n", "wording.toml: rule.sum_rule.why must be a text"),
        ("wording.toml", "[rule.sum_rule\n", "wording.toml: "),
    ],
)
def test_a_wording_mistake_names_the_key_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "course", name, text)
    result = invoke("softmax-ce", "--templates", "course", "-o", "doc.md")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: course/{name}: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr
    assert not (tmp_path / "doc.md").exists()


def test_a_derivation_may_reword_a_shared_section(tmp_path: Path) -> None:
    write(tmp_path, "derivations/softmax-ce.toml", '[derivation.softmax-ce.section]\nresult = "What we get"\n')
    md = derive.render(derive.derivation("softmax-ce"), "md", templates=tmp_path)
    assert "## What we get" in md


# --- Jinja's default delimiters -------------------------------------------------------------------
def test_default_delimiters_get_a_warning_with_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "course", "document.md.j2", "# {{ doc.title }}\n\n((( doc.summary )))\n{% if doc.pitfall %}pitfall{% endif %}\n")
    result = invoke("softmax-ce", "--templates", "course", "-o", "doc.md")
    assert result.exit_code == 0, result.output
    warnings_ = result.stderr.splitlines()
    assert [w.split(": '")[0] for w in warnings_] == [
        "warning: course/document.md.j2, line 1",
        "warning: course/document.md.j2, line 4",
        "warning: course/document.md.j2, line 4",
    ]
    assert "'{{ doc.title }}' is copied into the document as it is" in warnings_[0] and "((( ... )))" in warnings_[0]
    # The document is still written, with the text as it was.
    assert (tmp_path / "doc.md").read_text(encoding="utf-8").startswith("# {{ doc.title }}\n\nFor a softmax")
    assert result.stdout == "doc.md\n"


def test_latex_braces_are_not_taken_for_delimiters(tmp_path: Path, symbolic: derive.Derivation) -> None:
    packaged = (PACKAGED / "document.tex.j2").read_text(encoding="utf-8")
    write(tmp_path, "document.tex.j2", packaged.replace("\\begin{document}", "\\newcommand{\\course}{{\\bfseries Lecture 4}}%\n\\def\\x{%\n}\n\\begin{document}", 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tex = derive.render(symbolic, "tex", templates=tmp_path)
    assert "{{\\bfseries Lecture 4}}" in tex


def test_the_library_warns_with_its_own_category(tmp_path: Path, symbolic: derive.Derivation) -> None:
    write(tmp_path, "document.md.j2", "{{ doc.title }}\n")
    with pytest.warns(TemplateWarning, match=r"document\.md\.j2, line 1: '\{\{ doc\.title \}\}'"):
        assert derive.render(symbolic, "md", templates=tmp_path) == "{{ doc.title }}\n"


# --- the README documents what a template gets --------------------------------------------------
def test_the_readme_names_every_key_of_doc() -> None:
    from derive import overview
    from derive.rendering import document, environment, wording

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Your own templates"):readme.index("## Notation")]
    words = wording(environment())
    d = derive.derivation("softmax-ce")  # every derivation's doc has the same keys
    keys = set(document(d, d.check(), words, "md"))
    missing = sorted(k for k in keys if f"`doc.{k}`" not in section)
    assert missing == [], missing
    overview_keys = set(overview.document(words, "md")) - {"format", "rows"}
    assert sorted(k for k in overview_keys if f"`doc.{k}`" not in section) == []
    for delimiter in ("`((( doc.title )))`", "`((* if doc.pitfall *))`", "`((= note =))`"):
        assert delimiter in section
