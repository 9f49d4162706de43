"""The command line, in-process (CliRunner) and as a real process (``python -m derive``)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import derive
from derive.cli import app
from derive.derivations import CATALOG
from derive.pdf import tex_available

ROOT = Path(__file__).resolve().parent.parent
NAME = "softmax-ce"
JSON_KEYS = {"name", "classes", "result", "assumptions", "steps", "checks"}
COMMANDS = [*CATALOG, "list"]


def invoke(*args: str) -> Any:
    """Run the command line in-process; stdout and stderr stay apart."""
    return CliRunner().invoke(app, list(args))


def run(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m derive`` as a real process in ``cwd``."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "derive", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        check=False,
        **kwargs,
    )


def assert_one_line_error(stderr: bytes | str) -> None:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text
    assert text.startswith("error: ") and text.endswith("\n") and text.count("\n") == 1, text


# ---------------------------------------------------------------------------------------------
# Commands that must not build anything


def test_list_prints_name_and_description_per_line() -> None:
    result = invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(CATALOG)
    for line, (name, entry) in zip(lines, CATALOG.items()):
        assert line.split(None, 1) == [name, entry.description]


def test_every_catalog_name_is_a_command() -> None:
    assert list(CATALOG) == derive.catalog()
    for name in CATALOG:
        assert invoke(name, "--help").exit_code == 0


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"derive {derive.__version__}\n" == "derive 0.1.0\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"derive {command}" in result.stdout


def test_root_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_no_arguments_prints_help(tmp_path: Path) -> None:
    completed = run(cwd=tmp_path)
    assert completed.returncode == 0
    assert b"Usage:" in completed.stdout


@pytest.mark.parametrize("args", [["--help"], ["list"], ["--version"], [NAME, "--help"], []])
def test_light_commands_do_not_import_sympy(tmp_path: Path, args: list[str]) -> None:
    probe = (
        "import json, sys\n"
        f"sys.argv = ['derive', *{args!r}]\n"
        "from derive.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'mpmath', 'jinja2')"
        " or m in ('derive.render', 'derive.model', 'derive.latex'))\n"
        "sys.stderr.write(json.dumps(heavy))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert json.loads(completed.stderr) == []


# ---------------------------------------------------------------------------------------------
# The shell around the library: what it passes and what it writes (library replaced)


@pytest.fixture
def fake_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Replace ``derive.derivation`` and ``derive.render``; record their calls; cwd = tmp_path."""
    calls: list[dict[str, Any]] = []

    def derivation(name: str, classes: Any = None, logits: Any = None, target: Any = None) -> str:
        calls.append({"name": name, "classes": classes, "logits": logits, "target": target})
        return "built"

    def render(built: Any, format: str = "md", templates: Any = None, notation: Any = None, markdown: Any = None) -> str | bytes:
        calls.append({"format": format, "templates": templates})
        return b"%PDF-fake" if format == "pdf" else f"document in {format}\n"

    monkeypatch.setattr(derive, "derivation", derivation)
    monkeypatch.setattr(derive, "render", render)
    monkeypatch.chdir(tmp_path)
    return calls


def test_numbers_and_templates_are_passed_to_the_library(fake_library: list[dict[str, Any]], tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    result = invoke(NAME, "--classes", "3", "--logits", "2, 1,-0.5", "--target=1,0,0", "--templates", "mine")
    assert result.exit_code == 0, result.stderr
    assert fake_library == [
        {"name": NAME, "classes": 3, "logits": ["2", "1", "-0.5"], "target": ["1", "0", "0"]},
        {"format": "md", "templates": Path("mine")},
    ]
    assert result.stdout == f"output/{NAME}-3.md\n"


@pytest.mark.parametrize(
    ("args", "path", "content"),
    [
        ([], f"output/{NAME}.md", b"document in md\n"),
        (["--classes", "4", "--format", "tex"], f"output/{NAME}-4.tex", b"document in tex\n"),
        (["--format", "pdf"], f"output/{NAME}.pdf", b"%PDF-fake"),
        (["-o", "a/b/doc.json"], "a/b/doc.json", b"document in json\n"),
        (["-o", "doc.TEX"], "doc.TEX", b"document in tex\n"),
        (["-o", "doc.md", "--format", "json"], "doc.md", b"document in json\n"),
    ],
)
def test_output_path_and_format(
    fake_library: list[dict[str, Any]], tmp_path: Path, args: list[str], path: str, content: bytes
) -> None:
    result = invoke(NAME, *args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{path}\n"
    assert (tmp_path / path).read_bytes() == content


def test_dash_writes_to_stdout_and_no_file(fake_library: list[dict[str, Any]], tmp_path: Path) -> None:
    result = invoke(NAME, "-o", "-", "--format", "json")
    assert result.exit_code == 0
    assert result.stdout == "document in json\n"
    assert list(tmp_path.iterdir()) == []


def test_failed_render_writes_nothing(monkeypatch: pytest.MonkeyPatch, fake_library: list[dict[str, Any]], tmp_path: Path) -> None:
    def fail(*args: Any, **kwargs: Any) -> str:
        raise derive.DeriveError("the step 3 check failed")

    monkeypatch.setattr(derive, "render", fail)
    result = invoke(NAME, "--classes", "3")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr)
    assert "the step 3 check failed" in result.stderr
    assert not (tmp_path / "output" / f"{NAME}-3.md").exists()


def test_library_usage_error_exits_2(monkeypatch: pytest.MonkeyPatch, fake_library: list[dict[str, Any]]) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise derive.UsageError("--logits has 2 numbers but --classes is 3")

    monkeypatch.setattr(derive, "derivation", refuse)
    result = invoke(NAME, "--classes", "3", "--logits", "1,2")
    assert result.exit_code == 2
    assert_one_line_error(result.stderr)


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, fake_library: list[dict[str, Any]]) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(derive, "derivation", interrupt)
    result = invoke(NAME)
    assert result.exit_code == 130
    assert_one_line_error(result.stderr)


# ---------------------------------------------------------------------------------------------
# The real thing: python -m derive with the engine


def test_default_output_path_is_created_in_cwd_and_printed(tmp_path: Path) -> None:
    completed = run(NAME, "--classes", "3", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.decode() == f"output/{NAME}-3.md\n"
    document = (tmp_path / "output" / f"{NAME}-3.md").read_text(encoding="utf-8")
    assert document.strip()
    assert completed.stderr == b""


def test_symbolic_default_output_path(tmp_path: Path) -> None:
    completed = run(NAME, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.decode() == f"output/{NAME}.md\n"
    assert (tmp_path / "output" / f"{NAME}.md").is_file()


def test_stdout_output_matches_the_file(tmp_path: Path) -> None:
    to_file = run(NAME, "--classes", "3", "-o", "doc.md", cwd=tmp_path)
    to_stdout = run(NAME, "--classes", "3", "-o", "-", cwd=tmp_path)
    assert to_file.returncode == to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == (tmp_path / "doc.md").read_bytes()


def test_format_follows_the_extension(tmp_path: Path) -> None:
    completed = run(NAME, "--classes", "3", "-o", "doc.tex", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.decode() == "doc.tex\n"
    assert r"\documentclass" in (tmp_path / "doc.tex").read_text(encoding="utf-8")
    completed = run(NAME, "--classes", "3", "-o", "doc.json", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert JSON_KEYS <= set(json.loads((tmp_path / "doc.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize("classes", [None, 3])
def test_json_format(tmp_path: Path, classes: int | None) -> None:
    args = [] if classes is None else ["--classes", str(classes)]
    completed = run(NAME, *args, "--format", "json", "-o", "-", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert JSON_KEYS <= set(document)
    assert document["name"] == NAME
    assert document["classes"] == classes


def test_worked_example(tmp_path: Path) -> None:
    completed = run(
        NAME, "--classes", "3", "--logits", "2,1,0.1", "--target", "1,0,0", "--format", "json", "-o", "-", cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert JSON_KEYS <= set(json.loads(completed.stdout))


def test_pdf(tmp_path: Path) -> None:
    if not tex_available():
        if os.environ.get("CI"):
            pytest.fail("pdflatex is not installed: run ./test.sh")
        pytest.skip("pdflatex is not installed: run ./test.sh")
    completed = run(NAME, "--classes", "3", "-o", "ce.pdf", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "ce.pdf").read_bytes().startswith(b"%PDF")
    piped = run(NAME, "--classes", "3", "--format", "pdf", "-o", "-", cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (tmp_path / "ce.pdf").read_bytes()


def test_pdf_to_a_terminal_is_refused(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        completed = run(NAME, "--format", "pdf", "-o", "-", cwd=tmp_path, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert completed.returncode == 2
    assert_one_line_error(completed.stderr)
    assert b"terminal" in completed.stderr


USAGE_ERRORS = [
    [NAME, "--format", "docx"],
    [NAME, "--classes", "0"],
    [NAME, "--classes", "abc"],
    [NAME, "--classes", "-3"],
    [NAME, "-o", "notes.txt"],
    [NAME, "--templates", "no-such-dir"],
    [NAME, "--classes", "3", "--logits", "1,2"],
    [NAME, "--classes", "3", "--logits", "1,x,2"],
    [NAME, "--bogus"],
    ["no-such-derivation"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    completed = run(*args, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == b""
    assert_one_line_error(completed.stderr)
    assert not (tmp_path / "output").exists()


SUGGESTIONS = [
    ("mse", "no such command 'mse'; did you mean 'mse-softmax'? (see 'derive --help')"),
    ("sigmoid", "no such command 'sigmoid'; did you mean 'sigmoid-bce'? (see 'derive --help')"),
    ("softmax-cee", "no such command 'softmax-cee'; did you mean 'softmax-ce'? (see 'derive --help')"),
    ("dense", "no such command 'dense'; did you mean 'dense-softmax-ce'? (see 'derive --help')"),
    ("SSE", "no such command 'SSE'; did you mean 'sse-linear' or 'tanh-sse'? (see 'derive --help')"),
    ("overveiw", "no such command 'overveiw'; did you mean 'overview'? (see 'derive --help')"),
    ("gradient-of-everything", "no such command 'gradient-of-everything' (see 'derive --help')"),
]


@pytest.mark.parametrize("name, message", SUGGESTIONS)
def test_an_unknown_command_names_what_it_may_mean(name: str, message: str) -> None:
    result = invoke(name, "--classes", "3")
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def test_an_unknown_derivation_in_python_names_what_it_may_mean() -> None:
    with pytest.raises(derive.UsageError, match=r"^unknown derivation 'mse'; did you mean 'mse-softmax'\?$"):
        derive.derivation("mse")
    with pytest.raises(derive.UsageError, match=r"did you mean 'softmax-ce', 'sigmoid-bce' or 'dense-softmax-ce'\?$"):
        derive.derivation("ce")
