"""Reliability: bad input, broken TeX, interruptions and reproducibility, end to end.

Every case asserts the exit code, the message, that no traceback is printed, and that nothing
(no partial document, no ``.NAME.*.tmp`` file) is left at the output path. A representative
subset runs ``python -m derive`` as a real process; the rest run in-process with CliRunner.

The timeout of a hanging TeX build at the API level is
``tests/test_files_pdf.py::test_timeout_stops_the_build_and_leaves_no_tex_running``; here the same
loop goes through the command line, and a real Ctrl-C (SIGINT) stops a hanging build.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

import derive
import derive.pdf
from derive.cli import app
from derive.pdf import MISSING_TOOLS_MESSAGE, tex_available
from processes import build_directories, running_processes_in

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
NAME = "softmax-ce"
OLD_PDF = b"%PDF-1.5\n% the document from before\n%%EOF\n"
OLD_MD = "# the document from before\n"


# ---------------------------------------------------------------------------------------------
# Helpers


def invoke(*args: str) -> Any:
    """Run the command line in-process; stdout and stderr stay apart."""
    return CliRunner().invoke(app, list(args))


def process_environment(**extra: str) -> dict[str, str]:
    """The test environment (DERIVE_CACHE_DIR from conftest included), with ROOT importable."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, **extra}


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m derive`` as a real process in ``cwd``."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "derive", *args],
        cwd=cwd,
        env=env or process_environment(),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        check=False,
        **kwargs,
    )


def error_line(stderr: bytes | str) -> str:
    """The single ``error: ...`` line on stderr, without a traceback; return its message."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    assert text.startswith("error: ") and text.endswith("\n") and text.count("\n") == 1, text
    return text[len("error: ") : -1]


def temporary_files(path: Path) -> list[Path]:
    """Temporary files of an atomic write of ``path`` (``.NAME.*.tmp``) left in its directory."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def assert_nothing_at(path: Path) -> None:
    assert not path.exists() and not path.is_symlink(), f"{path} was written"
    assert temporary_files(path) == []


def assert_untouched(path: Path, content: bytes) -> None:
    assert path.read_bytes() == content
    assert temporary_files(path) == []


def course_templates(directory: Path, after_begin_document: str) -> Path:
    """A --templates directory: the packaged document.tex.j2 with LaTeX inserted after \\begin{document}."""
    source = (TEMPLATES / "document.tex.j2").read_text(encoding="utf-8")
    assert source.count("\\begin{document}") == 1
    directory.mkdir()
    (directory / "document.tex.j2").write_text(
        source.replace("\\begin{document}", "\\begin{document}\n" + after_begin_document), encoding="utf-8"
    )
    return directory


@pytest.fixture
def tex() -> None:
    """Skip without TeX on a developer's machine; in CI (where test.sh installs it) fail."""
    if not tex_available():
        reason = "pdflatex is not installed: run ./test.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in ``tmp_path`` and make it the system temporary directory (for PDF builds)."""
    monkeypatch.chdir(tmp_path)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written

BAD_INPUT: dict[str, tuple[list[str], list[str]]] = {
    # id: (arguments after the command name, regular expressions the message must match)
    "classes-0": (["--classes", "0"], ["'--classes'", "the number of classes must be at least 1, not 0"]),
    "classes-negative": (["--classes", "-3"], ["'--classes'", "the number of classes must be at least 1, not -3"]),
    "classes-abc": (["--classes", "abc"], ["'--classes'", "the number of classes must be a whole number, not 'abc'"]),
    "classes-2.5": (["--classes", "2.5"], ["'--classes'", r"the number of classes must be a whole number, not '2\.5'"]),
    "classes-10000000": (["--classes", "10000000"], [r"at most 1000000 classes", "10000000"]),
    "format-docx": (["--format", "docx"], ["--format", "'docx' is not one of", "'md'", "'pdf'"]),
    "extension-unknown": (["-o", "notes.txt"], ["cannot tell the format of 'notes.txt'", "--format"]),
    "logits-too-few": (["--classes", "3", "--logits", "1,2"], [r"--logits needs 3 numbers, one per class, but got 2"]),
    "logits-too-many": (["--classes", "3", "--logits", "1,2,3,4"], [r"--logits needs 3 numbers, one per class, but got 4"]),
    "logits-not-a-number": (["--classes", "3", "--logits", "1,x,2"], [r"--logits: 'x' is not a number"]),
    "logits-nan": (["--classes", "3", "--logits", "1,nan,2"], [r"--logits: 'nan' is not a finite number"]),
    "logits-inf": (["--classes", "3", "--logits", "1,inf,2"], [r"--logits: 'inf' is not a finite number"]),
    "logits-minus-inf": (["--classes", "3", "--logits", "-inf,0,2"], [r"--logits: '-inf' is not a finite number"]),
    "logits-tiny-exponent": (["--classes", "3", "--logits", "1e-99999999,0,2"], [r"--logits: '1e-99999999' is too close to 0"]),
    "logits-without-classes": (["--logits", "1,2,3"], [r"--logits needs --classes"]),
    "target-too-few": (["--classes", "3", "--target", "1,0"], [r"--target needs 3 numbers, one per class, but got 2"]),
    "target-not-a-number": (["--classes", "3", "--target", "1,a,0"], [r"--target: 'a' is not a number"]),
    "target-negative": (["--classes", "3", "--target", "1,-0.5,0.5"], [r"--target entries must not be negative"]),
    "target-all-zero": (["--classes", "3", "--target", "0,0,0"], [r"--target must not be all zeros"]),
    "templates-missing": (["--templates", "no-such-dir"], ["--templates", "'no-such-dir' does not exist"]),
}
# A real process for these; the rest in-process.
BAD_INPUT_AS_A_PROCESS = ["classes-abc", "classes-10000000", "format-docx", "logits-nan", "target-negative"]


def check_bad_input(code: int, stdout: bytes | str, stderr: bytes | str, patterns: list[str], cwd: Path) -> None:
    assert code == 2, stderr
    assert not stdout
    message = error_line(stderr)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert_nothing_at(cwd / "doc.md")
    assert not (cwd / "output").exists()


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_in_process(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args, patterns = BAD_INPUT[case]
    output = [] if "-o" in args else ["-o", "doc.md"]
    result = invoke(NAME, *args, *output)
    check_bad_input(result.exit_code, result.stdout, result.stderr, patterns, tmp_path)


@pytest.mark.parametrize("case", BAD_INPUT_AS_A_PROCESS)
def test_bad_input_as_a_process(case: str, tmp_path: Path) -> None:
    args, patterns = BAD_INPUT[case]
    completed = run(NAME, *args, "-o", "doc.md", cwd=tmp_path)
    check_bad_input(completed.returncode, completed.stdout, completed.stderr, patterns, tmp_path)


def test_unknown_derivation_suggests_the_close_name(tmp_path: Path) -> None:
    completed = run("softmax-cee", "--classes", "3", "-o", "doc.md", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == b""
    message = error_line(completed.stderr)
    assert "'softmax-cee'" in message
    assert re.search(r"[Dd]id you mean '?softmax-ce'?", message), message
    assert_nothing_at(tmp_path / "doc.md")


def test_unknown_derivation_without_a_close_name_points_to_the_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("gradient-of-everything")
    assert result.exit_code == 2
    message = error_line(result.stderr)
    assert "'gradient-of-everything'" in message and "--help" in message


def test_a_target_that_does_not_sum_to_one_is_accepted_with_the_general_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(NAME, "--classes", "3", "--target", "0.5,0.2,0.1", "-o", "doc.md")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == "doc.md\n"
    document = (tmp_path / "doc.md").read_text(encoding="utf-8")
    assert "does not sum to one" in document
    assert temporary_files(tmp_path / "doc.md") == []
    normalised = invoke(NAME, "--classes", "3", "--target", "0.5,0.3,0.2", "-o", "-")
    assert normalised.exit_code == 0, normalised.stderr
    assert "does not sum to one" not in normalised.stdout


# ---------------------------------------------------------------------------------------------
# Output paths that cannot be written


@pytest.mark.parametrize("output", ["blocker/doc.md", "blocker/sub/doc.md"])
def test_parent_that_is_a_file_in_process(output: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_bytes(b"a file")
    result = invoke(NAME, "-o", output)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert error_line(result.stderr) == f"cannot write {output}: blocker is not a directory"
    assert (tmp_path / "blocker").read_bytes() == b"a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_parent_that_is_a_file_as_a_process(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"a file")
    completed = run(NAME, "--classes", "3", "-o", "blocker/doc.md", cwd=tmp_path)
    assert completed.returncode == 1
    assert completed.stdout == b""
    assert error_line(completed.stderr) == "cannot write blocker/doc.md: blocker is not a directory"
    assert (tmp_path / "blocker").read_bytes() == b"a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_output_that_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "doc.md").mkdir()
    result = invoke(NAME, "-o", "doc.md")
    assert result.exit_code == 1
    assert error_line(result.stderr) == "cannot write doc.md: it is a directory"
    assert list((tmp_path / "doc.md").iterdir()) == []
    assert temporary_files(tmp_path / "doc.md") == []


def _writes_are_refused(directory: Path) -> bool:
    try:
        (directory / "probe").write_bytes(b"")
    except OSError:
        return True
    (directory / "probe").unlink()
    return False


@pytest.fixture
def unwritable(tmp_path: Path) -> Any:
    """A directory this process cannot write in: a chmod 0o500 directory, or under /proc for root."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        if _writes_are_refused(directory):
            yield directory
        elif Path("/proc/self").is_dir():
            # Root ignores the mode bits; the kernel refuses new files in /proc whoever asks.
            yield Path("/proc")
        else:
            pytest.skip("running with privileges that ignore the mode bits and no /proc to write in instead")
    finally:
        directory.chmod(0o700)


@pytest.mark.parametrize("below", ["doc.md", "new/doc.md"], ids=["in-it", "in-a-new-subdirectory"])
def test_output_in_an_unwritable_directory(below: str, unwritable: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Under /proc only the write itself is refused: skip the checks and typesetting before it.
    monkeypatch.setattr(derive, "render", lambda *args, **kwargs: "a whole document\n")
    target = unwritable / below
    result = invoke(NAME, "--classes", "3", "-o", str(target))
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    message = error_line(result.stderr)
    assert message.startswith("cannot ") and str(unwritable) in message, message
    assert_nothing_at(target)
    assert not target.parent.exists() or target.parent == unwritable


def test_unwritable_directory_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without write permission the command stops before building (root passes os.access, so it is simulated)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "read-only").mkdir()
    built: list[str] = []
    monkeypatch.setattr(derive, "derivation", lambda *args, **kwargs: built.append("built"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path).name != "read-only" and real_access(path, mode, **kw))
    result = invoke(NAME, "--format", "pdf", "-o", "read-only/sub/doc.pdf")
    assert result.exit_code == 1
    assert error_line(result.stderr) == "cannot write read-only/sub/doc.pdf: read-only is not writable"
    assert built == []
    assert list((tmp_path / "read-only").iterdir()) == []


def test_pdf_to_a_terminal_is_refused(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        completed = run(NAME, "--classes", "3", "--format", "pdf", "-o", "-", cwd=tmp_path, stdout=follower)
        os.set_blocking(leader, False)
        try:
            written = os.read(leader, 65536)
        except (BlockingIOError, OSError):
            written = b""
    finally:
        os.close(follower)
        os.close(leader)
    assert completed.returncode == 2
    assert error_line(completed.stderr) == "refusing to write a PDF to a terminal: redirect stdout or use -o FILE"
    assert b"%PDF" not in written and written == b""
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Broken course templates: exit 1, the template and the problem named


def user_templates(directory: Path, name: str, line: str) -> Path:
    """A --templates directory with the packaged ``name`` plus one extra ``line``."""
    directory.mkdir()
    (directory / name).write_text((TEMPLATES / name).read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    return directory


TEMPLATE_ERRORS = {
    # id: (template, the added line, regular expressions the message must match)
    "syntax-error": ("document.md.j2", "((* if *))", [r"^template document\.md\.j2, line \d+: ", "Expected an expression"]),
    "undefined-field": ("document.md.j2", "((( doc.no_such_field )))", [r"^template document\.md\.j2, line \d+: ", "no_such_field"]),
    "undefined-variable": ("document.md.j2", "((( no_such_variable )))", [r"^template document\.md\.j2, line \d+: ", "'no_such_variable' is undefined"]),
}


@pytest.mark.parametrize("case", list(TEMPLATE_ERRORS))
def test_broken_template(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name, line, patterns = TEMPLATE_ERRORS[case]
    user_templates(tmp_path / "course", name, line)
    (tmp_path / "doc.md").write_text(OLD_MD)
    result = invoke(NAME, "--classes", "3", "--templates", "course", "-o", "doc.md")
    assert result.exit_code == 1
    assert result.stdout == ""
    message = error_line(result.stderr)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert_untouched(tmp_path / "doc.md", OLD_MD.encode())


def test_broken_template_as_a_process(tmp_path: Path) -> None:
    user_templates(tmp_path / "course", "document.md.j2", "((* if *))")
    completed = run(NAME, "--templates", "course", "-o", "doc.md", cwd=tmp_path)
    assert completed.returncode == 1
    assert completed.stdout == b""
    assert re.match(r"template document\.md\.j2, line \d+: Expected an expression", error_line(completed.stderr))
    assert_nothing_at(tmp_path / "doc.md")


@pytest.mark.parametrize("line", ["((* for x in *))", "((( no_such_variable )))"], ids=["syntax-error", "undefined-variable"])
def test_error_in_an_included_template_names_that_template(line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    user_templates(tmp_path / "course", "appendix.md.j2", line)
    result = invoke(NAME, "--classes", "3", "--templates", "course", "-o", "doc.md")
    assert result.exit_code == 1
    message = error_line(result.stderr)
    assert_nothing_at(tmp_path / "doc.md")
    assert "appendix.md.j2" in message, message


# ---------------------------------------------------------------------------------------------
# TeX: missing, failing, hanging, and shell escape


def test_no_tex_engine(tmp_path: Path) -> None:
    """PATH holds python and nothing else: no pdflatex."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    environment = process_environment(PATH=str(bin_dir))
    completed = subprocess.run(
        [str(bin_dir / "python"), "-c", "import shutil; print(shutil.which('pdflatex'))"],
        env=environment,
        capture_output=True,
        check=True,
    )
    assert completed.stdout == b"None\n"
    # The venv's python by its own path: a symlink elsewhere would lose the venv's packages.
    completed = run(NAME, "--classes", "3", "--format", "pdf", "-o", "doc.pdf", cwd=work, env=environment)
    assert completed.returncode == 1
    assert completed.stdout == b""
    message = error_line(completed.stderr)
    assert message == MISSING_TOOLS_MESSAGE
    for needed in ("pdflatex", "texlive-latex-base", "texlive-latex-recommended", "--format tex", "--format md"):
        assert needed in message
    assert_nothing_at(work / "doc.pdf")
    assert list(work.iterdir()) == []


def test_no_tex_engine_is_reported_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    built: list[str] = []
    monkeypatch.setattr(derive, "derivation", lambda *args, **kwargs: built.append("built"))
    monkeypatch.setattr(derive.pdf.shutil, "which", lambda *args, **kwargs: None)
    result = invoke(NAME, "--classes", "3", "-o", "doc.pdf")
    assert result.exit_code == 1
    assert error_line(result.stderr) == MISSING_TOOLS_MESSAGE
    assert built == []
    assert_nothing_at(tmp_path / "doc.pdf")


def test_latex_error_in_a_course_template_keeps_the_old_pdf(tex: None, tmp_path: Path) -> None:
    course_templates(tmp_path / "course", r"\undefinedmacro")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    (tmp_path / "doc.pdf").write_bytes(OLD_PDF)
    completed = run(
        NAME, "--classes", "3", "--templates", "course", "-o", "doc.pdf",
        cwd=tmp_path, env=process_environment(TMPDIR=str(private_tmp)),
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stdout == b""
    message = error_line(completed.stderr)
    assert re.match(r"LaTeX failed: line \d+: Undefined control sequence\. near: .*\\undefinedmacro", message), message
    log = private_tmp / "derive-last-error.log"
    assert f"full log: {log}" in message
    assert "Undefined control sequence" in log.read_text(errors="replace")
    assert_untouched(tmp_path / "doc.pdf", OLD_PDF)
    assert build_directories(private_tmp) == []


def test_latex_error_writes_no_pdf(tex: None, in_tmp: Path) -> None:
    course_templates(in_tmp / "course", r"\undefinedmacro")
    result = invoke(NAME, "--classes", "3", "--templates", "course", "-o", "new.pdf")
    assert result.exit_code == 1
    assert "LaTeX failed: line " in error_line(result.stderr)
    assert_nothing_at(in_tmp / "new.pdf")
    assert build_directories(in_tmp / "tmp") == []


def test_hanging_tex_is_stopped_through_the_command_line(tex: None, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line has no timeout option: shorten the build's own timeout to 3 seconds."""
    course_templates(in_tmp / "course", r"\def\x{\x}\x")
    (in_tmp / "doc.pdf").write_bytes(OLD_PDF)
    build_pdf = derive.pdf.build_pdf
    monkeypatch.setattr(derive.pdf, "build_pdf", lambda tex, timeout=120: build_pdf(tex, timeout=3))
    result = invoke(NAME, "--classes", "3", "--templates", "course", "-o", "doc.pdf")
    assert result.exit_code == 1
    assert error_line(result.stderr) == "the PDF build did not finish within 3 seconds and was stopped"
    assert_untouched(in_tmp / "doc.pdf", OLD_PDF)
    assert running_processes_in(in_tmp / "tmp") == []
    assert build_directories(in_tmp / "tmp") == []


@pytest.fixture
def build_listing(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the files of each PDF build directory, and its log, when its passes have finished
    (early or from scratch, every build ends in ``_complete``)."""
    seen: dict[str, Any] = {"files": [], "log": ""}
    complete: Callable[..., bytes] = derive.pdf._complete

    def recording(workdir: Path, *args: Any) -> bytes:
        try:
            return complete(workdir, *args)
        finally:
            seen["files"] += [p.name for p in workdir.rglob("*")]
            log = workdir / "doc.log"
            seen["log"] += log.read_text(errors="replace") if log.is_file() else ""

    monkeypatch.setattr(derive.pdf, "_complete", recording)
    return seen


# Fails the build if shell escape is on, restricted (the usual default) or not.
SHELL_ESCAPE_IS_OFF = r"\ifnum\pdfshellescape>0 \errmessage{shell escape is on}\fi"


@pytest.mark.parametrize("environment", [{}, {"shell_escape": "t"}], ids=["default", "shell_escape=t in the environment"])
def test_shell_escape_stays_off(
    environment: dict[str, str], tex: None, in_tmp: Path, build_listing: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)  # kpathsea reads texmf.cnf settings from the environment
    course_templates(in_tmp / "course", r"\immediate\write18{touch PWNED}" + "\n" + SHELL_ESCAPE_IS_OFF)
    result = invoke(NAME, "--classes", "3", "--templates", "course", "-o", "doc.pdf")
    assert result.exit_code == 0, result.stderr
    assert (in_tmp / "doc.pdf").read_bytes().startswith(b"%PDF")
    assert "runsystem(touch PWNED)...disabled" in build_listing["log"]
    assert build_listing["files"] and "PWNED" not in build_listing["files"]
    assert [p for p in in_tmp.rglob("PWNED*")] == []
    assert build_directories(in_tmp / "tmp") == []


def test_piped_input_is_not_run(tex: None, in_tmp: Path, build_listing: dict[str, Any]) -> None:
    r"""\input|"command" is shell escape too: TeX looks for a file of that name and fails."""
    course_templates(in_tmp / "course", r'\input|"touch PWNED"')
    result = invoke(NAME, "--classes", "3", "--templates", "course", "-o", "doc.pdf")
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith("LaTeX failed: line ")
    assert "PWNED" not in build_listing["files"]
    assert [p for p in in_tmp.rglob("PWNED*")] == []
    assert_nothing_at(in_tmp / "doc.pdf")


# ---------------------------------------------------------------------------------------------
# Nothing lost: interruptions leave the old document and no temporary files


def test_interrupted_render_keeps_the_old_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "doc.md").write_text(OLD_MD)

    def interrupt(*args: Any, **kwargs: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(derive, "render", interrupt)
    result = invoke(NAME, "--classes", "3", "-o", "doc.md")
    assert result.exit_code == 130
    assert result.stdout == ""
    assert error_line(result.stderr) == "interrupted"
    assert_untouched(tmp_path / "doc.md", OLD_MD.encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md"]


def test_interrupted_write_keeps_the_old_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between writing the temporary file and renaming it over the document."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "doc.md").write_text(OLD_MD)
    replace = os.replace

    def interrupt_on_the_document(source: Any, destination: Any, **kwargs: Any) -> None:
        if Path(destination).name == "doc.md":
            raise KeyboardInterrupt
        replace(source, destination, **kwargs)

    monkeypatch.setattr(os, "replace", interrupt_on_the_document)
    result = invoke(NAME, "--classes", "3", "-o", "doc.md")
    assert result.exit_code == 130
    assert error_line(result.stderr) == "interrupted"
    assert_untouched(tmp_path / "doc.md", OLD_MD.encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md"]


def test_interrupted_pdf_build_removes_the_build_directory(tex: None, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "doc.pdf").write_bytes(OLD_PDF)
    directories: list[Path] = []

    wait_for_pdflatex: Callable[..., int] = derive.pdf._wait

    def interrupt(process: subprocess.Popen[bytes], deadline: float, timeout: float) -> int:
        """Ctrl-C while pdflatex runs: its first wait is interrupted."""
        workdir = Path(os.readlink(f"/proc/{process.pid}/cwd"))
        directories.append(workdir)
        assert (workdir / "doc.tex").is_file()
        real = process.wait
        interrupted: list[bool] = []

        def wait(timeout: float | None = None) -> int:
            if not interrupted:
                interrupted.append(True)
                raise KeyboardInterrupt
            return real(timeout)

        process.wait = wait  # type: ignore[method-assign]
        return wait_for_pdflatex(process, deadline, timeout)

    monkeypatch.setattr(derive.pdf, "_wait", interrupt)
    result = invoke(NAME, "--classes", "3", "-o", "doc.pdf")
    assert result.exit_code == 130
    assert error_line(result.stderr) == "interrupted"
    assert len(directories) == 1 and not directories[0].exists()
    assert build_directories(in_tmp / "tmp") == []
    assert_untouched(in_tmp / "doc.pdf", OLD_PDF)


def test_ctrl_c_during_a_hanging_pdf_build(tex: None, tmp_path: Path) -> None:
    """A real SIGINT to ``python -m derive`` while pdflatex loops: exit 130, nothing left behind."""
    course_templates(tmp_path / "course", r"\def\x{\x}\x")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    (tmp_path / "doc.pdf").write_bytes(OLD_PDF)
    process = subprocess.Popen(
        [sys.executable, "-m", "derive", NAME, "--classes", "3", "--templates", "course", "-o", "doc.pdf"],
        cwd=tmp_path,
        env=process_environment(TMPDIR=str(private_tmp)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(private_tmp.glob("derive-pdf-*/doc.log")):  # pdflatex has started
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the PDF build did not start"
            time.sleep(0.05)
        assert running_processes_in(private_tmp) != []
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert stdout == b""
    assert error_line(stderr) == "interrupted"
    assert_untouched(tmp_path / "doc.pdf", OLD_PDF)
    assert running_processes_in(private_tmp) == []
    assert build_directories(private_tmp) == []


# ---------------------------------------------------------------------------------------------
# Reproducible: the same bytes whatever the hash seed; build directories removed on success


def test_documents_are_byte_identical_across_runs(tmp_path: Path) -> None:
    """md, tex, json and pdf from two processes each, with PYTHONHASHSEED 1 and 12345, all at once."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    formats = ("md", "tex", "json", "pdf") if tex_available() else ("md", "tex", "json")
    processes = {}
    for seed in ("1", "12345"):
        for fmt in formats:
            name = f"{fmt}-{seed}.{fmt}"
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "derive", NAME, "--classes", "3", "-o", name],
                cwd=tmp_path,
                env=process_environment(PYTHONHASHSEED=seed, TMPDIR=str(private_tmp)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert stdout.decode() == f"{name}\n" and stderr == b""
    for fmt in formats:
        first = (tmp_path / f"{fmt}-1.{fmt}").read_bytes()
        assert first, fmt
        assert (tmp_path / f"{fmt}-12345.{fmt}").read_bytes() == first, f"{fmt} differs between runs"
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == []
    assert list(private_tmp.iterdir()) == []  # no build directory, no kept log
    if "pdf" not in formats:
        reason = "pdflatex is not installed (run ./test.sh): the PDF was not compared"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
