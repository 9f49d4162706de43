"""Atomic file writes and PDF builds: nothing half-written, nothing left running."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from derive.errors import DeriveError, UsageError
from derive.files import write_atomic
from derive.pdf import MISSING_TOOLS_MESSAGE, build_pdf, first_tex_error, tex_available
from processes import build_directories, running_processes_in

# ---------------------------------------------------------------------------------------------
# write_atomic


def leftovers(directory: Path) -> list[str]:
    """Names in ``directory`` other than the files a test put there on purpose."""
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".tmp"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("plain\n", b"plain\n"),
        ("ünïcode ∂E/∂z\n", "ünïcode ∂E/∂z\n".encode("utf-8")),
        ("two\nlines\n", b"two\nlines\n"),
        (b"%PDF-1.5\r\n\x00\xff", b"%PDF-1.5\r\n\x00\xff"),
    ],
)
def test_write_atomic_writes_text_as_utf8_and_bytes_as_they_are(tmp_path: Path, data: str | bytes, expected: bytes) -> None:
    target = tmp_path / "out.md"
    write_atomic(target, data)
    assert target.read_bytes() == expected
    assert leftovers(tmp_path) == []


def test_write_atomic_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.md"
    write_atomic(target, "x")
    assert target.read_text() == "x"


def test_write_atomic_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    target.write_text("old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_the_old_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "out.md"
    target.write_text("old")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(DeriveError, match="No space left on device") as raised:
        write_atomic(target, "new")
    monkeypatch.undo()
    assert str(target) in str(raised.value)
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.md"]


def test_interrupted_write_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.md"
    target.write_text("old")

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.md"]


def test_parent_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    with pytest.raises(UsageError) as raised:
        write_atomic(blocker / "sub" / "out.md", "x")
    message = str(raised.value)
    assert str(blocker) in message and "\n" not in message
    assert raised.value.exit_code == 2
    assert blocker.read_text() == "I am a file"


def test_target_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        write_atomic(tmp_path, "x")


# ---------------------------------------------------------------------------------------------
# build_pdf

DOCUMENT = r"""\documentclass{article}
\usepackage{amsmath}
\pdftrailerid{}
\begin{document}
\[ \frac{\partial E}{\partial z_k} = o_k - y_k \]
\end{document}
"""


@pytest.fixture
def tex() -> None:
    """Skip without TeX on a developer's machine; in CI (where test.sh installs it) fail."""
    if not tex_available():
        reason = "latexmk and pdflatex are not installed: run ./test.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the builds use ``tmp_path`` as the system temporary directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_minimal_document_builds(tex: None, private_tmp: Path) -> None:
    pdf = build_pdf(DOCUMENT)
    assert pdf.startswith(b"%PDF")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert build_directories(private_tmp) == []


def test_same_source_gives_the_same_bytes(tex: None) -> None:
    assert build_pdf(DOCUMENT) == build_pdf(DOCUMENT)


def test_tex_error_is_reported_in_one_line_with_the_log_kept(tex: None, private_tmp: Path) -> None:
    broken = DOCUMENT.replace(r"\[", r"\undefinedmacro \[")
    with pytest.raises(DeriveError) as raised:
        build_pdf(broken)
    message = str(raised.value)
    assert "\n" not in message
    assert "Undefined control sequence" in message
    assert "line 5" in message and r"\undefinedmacro" in message
    log = private_tmp / "derive-last-error.log"
    assert str(log) in message
    assert "Undefined control sequence" in log.read_text(errors="replace")
    assert (private_tmp / "derive-last-error.tex").read_text() == broken
    assert build_directories(private_tmp) == []


def test_missing_package_is_reported(tex: None, private_tmp: Path) -> None:
    with pytest.raises(DeriveError, match=r"no-such-package\.sty' not found"):
        build_pdf(DOCUMENT.replace("amsmath", "no-such-package"))


def test_timeout_stops_the_build_and_leaves_no_tex_running(tex: None, private_tmp: Path) -> None:
    looping = DOCUMENT.replace(r"\[", r"\def\x{\x}\x \[")
    with pytest.raises(DeriveError, match=r"within 3 seconds"):
        build_pdf(looping, timeout=3)
    assert running_processes_in(private_tmp) == []
    assert build_directories(private_tmp) == []


def test_missing_tools_give_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    assert not tex_available()
    with pytest.raises(DeriveError) as raised:
        build_pdf(DOCUMENT)
    assert str(raised.value) == MISSING_TOOLS_MESSAGE
    assert "texlive-latex-base" in MISSING_TOOLS_MESSAGE and "\n" not in MISSING_TOOLS_MESSAGE


LOG_WITH_FILE_LINE_ERROR = r"""This is pdfTeX, Version 3.141592653-2.6-1.40.24
(./doc.tex
./doc.tex:5: Undefined control sequence.
l.5 \foo
         \[
No pages of output.
"""

LOG_WITH_BANG = r"""This is pdfTeX
! Missing $ inserted.
<inserted text>
                $
l.7 a_
      b
"""

LOG_CLEAN = "This is pdfTeX\nOutput written on doc.pdf (1 page, 1234 bytes).\n"


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (LOG_WITH_FILE_LINE_ERROR, r"line 5: Undefined control sequence. near: \foo"),
        (LOG_WITH_BANG, "line 7: Missing $ inserted. near: a_"),
        (LOG_CLEAN, None),
    ],
)
def test_first_tex_error(log: str, expected: str | None) -> None:
    assert first_tex_error(log) == expected
