"""Atomic file writes and PDF builds: nothing half-written, nothing left running, the same bytes
whether pdflatex started early on the preamble or not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from derive import pdf
from derive.errors import DeriveError
from derive.files import write_atomic
from derive.pdf import MISSING_TOOLS_MESSAGE, build_pdf, early, first_tex_error, tex_available
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


def test_parent_that_is_a_file_is_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    with pytest.raises(DeriveError) as raised:
        write_atomic(blocker / "sub" / "out.md", "x")
    message = str(raised.value)
    assert str(blocker) in message and "\n" not in message
    assert raised.value.exit_code == 1
    assert blocker.read_text() == "I am a file"


def test_target_that_is_a_directory_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(DeriveError, match="directory"):
        write_atomic(tmp_path, "x")


# ---------------------------------------------------------------------------------------------
# build_pdf

PREAMBLE = r"""\documentclass{article}
\usepackage{amsmath}
\pdftrailerid{}
"""
DOCUMENT = PREAMBLE + r"""\begin{document}
\[ \frac{\partial E}{\partial z_k} = o_k - y_k \]
\end{document}
"""
# Another document with the same preamble: an early build must not keep anything of the first.
OTHER = PREAMBLE + r"""\begin{document}
Another page.
\end{document}
"""
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tex(pdflatex: None) -> None:
    """pdflatex and pdftotext (see conftest): skipped without them, failed in CI."""


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the builds use ``tmp_path`` as the system temporary directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The pdflatex commands that the builds start (the early one and each whole pass)."""
    started: list[tuple[str, ...]] = []
    start = pdf._start

    def recording(workdir: Path, command: tuple[str, ...], *args: Any, **kwargs: Any) -> Any:
        started.append(command)
        return start(workdir, command, *args, **kwargs)

    monkeypatch.setattr(pdf, "_start", recording)
    return started


def nothing_left(directory: Path) -> None:
    assert running_processes_in(directory) == []
    assert build_directories(directory) == []


def pdf_text(content: bytes, directory: Path) -> str:
    (directory / "text.pdf").write_bytes(content)
    completed = subprocess.run(["pdftotext", "-layout", "text.pdf", "-"], cwd=directory, capture_output=True, check=True)
    (directory / "text.pdf").unlink()
    return " ".join(completed.stdout.decode().split())


def test_minimal_document_builds_in_one_pass(tex: None, private_tmp: Path, passes: list[tuple[str, ...]]) -> None:
    content = build_pdf(DOCUMENT)
    assert content.startswith(b"%PDF")
    assert content.rstrip().endswith(b"%%EOF")
    assert passes == [pdf.PDFLATEX_COMMAND]
    nothing_left(private_tmp)


def test_same_source_gives_the_same_bytes(tex: None) -> None:
    assert build_pdf(DOCUMENT) == build_pdf(DOCUMENT)


@pytest.fixture(scope="module")
def packaged_documents() -> dict[str, str]:
    """The LaTeX of a derivation and of the overview, from the packaged templates (the overview
    as the gallery has it: rendering it runs the checks of every derivation; test_render.py
    keeps the gallery what the code produces)."""
    import derive

    return {
        "softmax-ce-3": str(derive.render(derive.derivation("softmax-ce", classes=3), "tex")),
        "overview": (ROOT / "output" / "overview.tex").read_text(encoding="utf-8"),
    }


@pytest.mark.parametrize("name", ["softmax-ce-3", "overview"])
def test_packaged_documents_start_with_the_preamble_and_build_in_one_pass(
    tex: None, private_tmp: Path, passes: list[tuple[str, ...]], packaged_documents: dict[str, str], name: str
) -> None:
    """Without this the early build would never be used, and the PDF would take two passes."""
    document = packaged_documents[name]
    assert pdf.preamble() is not None and document.startswith(pdf.preamble())
    content = build_pdf(document)
    assert len(passes) == 1
    assert "Title: " + document.split(r"\hypersetup{pdftitle={")[1].split("}}")[0] in pdf_info(content, private_tmp)
    nothing_left(private_tmp)


def pdf_info(content: bytes, directory: Path) -> str:
    (directory / "info.pdf").write_bytes(content)
    completed = subprocess.run(["pdfinfo", "info.pdf"], cwd=directory, capture_output=True, check=True)
    (directory / "info.pdf").unlink()
    return " ".join(completed.stdout.decode().split())


LABELS = PREAMBLE + r"""\begin{document}
\section{Alpha}\label{alpha}
Step~\ref{beta} follows from section~\ref{alpha}.
\section{Beta}\label{beta}
\end{document}
"""
CONTENTS = PREAMBLE + r"""\begin{document}
\tableofcontents
\section{Alpha}
\section{Beta}
\end{document}
"""


@pytest.mark.parametrize(
    ("document", "expected"),
    [(LABELS, "Step 2 follows from section 1."), (CONTENTS, "Contents 1 Alpha 1 2 Beta 1")],
    ids=["label and ref", "table of contents"],
)
@pytest.mark.parametrize("how", ["from scratch", "early"])
def test_a_rerun_when_the_first_pass_is_not_final(
    tex: None, private_tmp: Path, passes: list[tuple[str, ...]], document: str, expected: str, how: str
) -> None:
    if how == "early":
        with early(PREAMBLE) as started:
            assert started is not None
            content = build_pdf(document)
    else:
        content = build_pdf(document)
    assert expected in pdf_text(content, private_tmp)
    assert len(passes) == 2
    nothing_left(private_tmp)


def test_passes_are_limited(tex: None, private_tmp: Path, passes: list[tuple[str, ...]]) -> None:
    """A document that asks for a rerun every time gets MAX_PASSES passes, and its PDF."""
    asking = DOCUMENT.replace(r"\begin{document}", r"\AtEndDocument{\typeout{Rerun to get it right}}\begin{document}")
    assert build_pdf(asking).startswith(b"%PDF")
    assert len(passes) == pdf.MAX_PASSES
    nothing_left(private_tmp)


@pytest.mark.parametrize("document", [DOCUMENT, OTHER, LABELS])
def test_early_build_gives_the_bytes_of_a_build_from_scratch(
    tex: None, private_tmp: Path, passes: list[tuple[str, ...]], document: str
) -> None:
    cold = build_pdf(document)
    from_scratch = len(passes)
    passes.clear()
    with early(PREAMBLE) as started:
        assert started is not None
        assert running_processes_in(private_tmp) != []
        warm = build_pdf(document)
        assert started.done
    assert warm == cold
    assert passes[0] == pdf.EARLY_COMMAND and len(passes) == from_scratch
    nothing_left(private_tmp)


def test_packaged_document_gives_the_same_bytes_early(tex: None, private_tmp: Path, packaged_documents: dict[str, str]) -> None:
    document = packaged_documents["softmax-ce-3"]
    cold = build_pdf(document)
    with early(pdf.preamble()):
        time.sleep(1)  # pdflatex has read the preamble and waits
        assert build_pdf(document) == cold
    nothing_left(private_tmp)


@pytest.mark.parametrize("delay", [0, 0.5])
def test_the_rest_may_come_before_pdflatex_has_read_the_preamble(
    tex: None, private_tmp: Path, monkeypatch: pytest.MonkeyPatch, delay: float
) -> None:
    """The rest is there at once, and pdflatex starts slowly (on a busy machine, say)."""
    cold = build_pdf(LABELS)
    start = pdf._start

    def slow(workdir: Path, command: tuple[str, ...], *args: Any, **kwargs: Any) -> Any:
        return start(workdir, ("sh", "-c", f'sleep {delay}; exec "$0" "$@"', *command), *args, **kwargs)

    monkeypatch.setattr(pdf, "_start", slow)
    with early(PREAMBLE):
        assert build_pdf(LABELS) == cold
    nothing_left(private_tmp)


def test_another_preamble_is_built_from_scratch(tex: None, private_tmp: Path, passes: list[tuple[str, ...]]) -> None:
    different = DOCUMENT.replace(r"\documentclass{article}", r"\documentclass[a5paper]{article}")
    cold = build_pdf(different)
    passes.clear()
    with early(PREAMBLE) as started:
        assert started is not None
        assert build_pdf(different) == cold
        assert started.done
        # Stopped before the build from scratch began, not when the block ends.
        assert len(build_directories(private_tmp)) == 0
    assert passes == [pdf.EARLY_COMMAND, pdf.PDFLATEX_COMMAND]
    nothing_left(private_tmp)


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_leaving_the_block_stops_the_early_build(tex: None, private_tmp: Path, raised: type[BaseException]) -> None:
    with pytest.raises(raised):
        with early(PREAMBLE):
            assert running_processes_in(private_tmp) != []
            assert len(build_directories(private_tmp)) == 1
            raise raised()
    nothing_left(private_tmp)


def test_interrupted_finish_stops_pdflatex(tex: None, private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(process: Any, deadline: float, timeout: float) -> int:
        assert running_processes_in(private_tmp) != []
        raise KeyboardInterrupt

    monkeypatch.setattr(pdf, "_wait", interrupt)
    with early(PREAMBLE):
        with pytest.raises(KeyboardInterrupt):
            build_pdf(DOCUMENT)
        nothing_left(private_tmp)
    nothing_left(private_tmp)


def test_early_build_ends_when_the_command_is_killed(tex: None, private_tmp: Path) -> None:
    """Even without the block's cleanup (SIGKILL), pdflatex stops: its stdin ends."""
    probe = (
        "import sys, time\n"
        "from derive import pdf\n"
        f"with pdf.early({PREAMBLE!r}):\n"
        "    print('started', flush=True)\n"
        "    time.sleep(60)\n"
    )
    command = subprocess.Popen(
        [sys.executable, "-c", probe],
        env={**os.environ, "TMPDIR": str(private_tmp), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert command.stdout is not None and command.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 30
        while not running_processes_in(private_tmp):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        command.kill()
        command.wait()
        while running_processes_in(private_tmp):
            assert time.monotonic() < deadline, running_processes_in(private_tmp)
            time.sleep(0.05)
    finally:
        command.kill()
        command.wait()
        command.stdout.close()  # type: ignore[union-attr]


BROKEN = DOCUMENT.replace(r"\[", r"\undefinedmacro \[")


@pytest.mark.parametrize("how", ["from scratch", "early"])
def test_tex_error_is_reported_in_one_line_with_the_log_kept(tex: None, private_tmp: Path, how: str) -> None:
    with early(PREAMBLE if how == "early" else None):
        with pytest.raises(DeriveError) as raised:
            build_pdf(BROKEN)
    message = str(raised.value)
    log = private_tmp / "derive-last-error.log"
    assert message == (
        r"LaTeX failed: line 5: Undefined control sequence. near: \undefinedmacro "
        f"(full log: {log}; source: {private_tmp / 'derive-last-error.tex'})"
    )
    assert "Undefined control sequence" in log.read_text(errors="replace")
    assert (private_tmp / "derive-last-error.tex").read_text() == BROKEN
    nothing_left(private_tmp)


@pytest.mark.parametrize("how", ["from scratch", "early", "early, stopped before the rest came"])
def test_missing_package_is_reported(tex: None, private_tmp: Path, how: str) -> None:
    broken = DOCUMENT.replace("amsmath", "no-such-package")
    with early(broken[: broken.index(r"\begin")] if how != "from scratch" else None):
        deadline = time.monotonic() + 30
        while how.endswith("came") and running_processes_in(private_tmp):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(DeriveError) as raised:
            build_pdf(broken)
    # TeX notices the missing file at the end of the \usepackage line, with the next one read.
    assert str(raised.value).startswith("LaTeX failed: line 3: LaTeX Error: File `no-such-package.sty' not found. near: \\pdftrailerid (")
    nothing_left(private_tmp)


LOOP = r"\def\x{\x}\x" + "\n"


@pytest.mark.parametrize(
    ("preamble", "document"),
    [(None, DOCUMENT.replace(r"\[", LOOP + r"\[")), (PREAMBLE, DOCUMENT.replace(r"\[", LOOP + r"\[")), (PREAMBLE + LOOP, PREAMBLE + LOOP + DOCUMENT[len(PREAMBLE) :])],
    ids=["from scratch", "early, loop in the rest", "early, loop in the preamble"],
)
def test_timeout_stops_the_build_and_leaves_no_tex_running(tex: None, private_tmp: Path, preamble: str | None, document: str) -> None:
    with early(preamble):
        started = time.monotonic()
        with pytest.raises(DeriveError, match=r"^the PDF build did not finish within 3 seconds and was stopped$"):
            build_pdf(document, timeout=3)
        assert time.monotonic() - started < 10
        nothing_left(private_tmp)


def test_missing_tools_give_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    assert not tex_available()
    with pytest.raises(DeriveError) as raised:
        build_pdf(DOCUMENT)
    assert str(raised.value) == MISSING_TOOLS_MESSAGE
    for needed in ("pdflatex", "texlive-latex-base", "texlive-latex-recommended", "--format tex"):
        assert needed in MISSING_TOOLS_MESSAGE
    assert "latexmk" not in MISSING_TOOLS_MESSAGE and "\n" not in MISSING_TOOLS_MESSAGE
    with early(PREAMBLE) as started:
        assert started is None


@pytest.mark.parametrize("preamble", [None, "", PREAMBLE.rstrip("\n")])
def test_no_early_build_without_a_usable_preamble(private_tmp: Path, preamble: str | None) -> None:
    with early(preamble) as started:
        assert started is None
        assert build_directories(private_tmp) == []


def test_preamble_is_looked_up_like_the_templates(tmp_path: Path) -> None:
    from derive.rendering import environment, templates_dir

    packaged = (templates_dir() / "preamble.tex").read_text(encoding="utf-8")
    assert pdf.preamble() == packaged == pdf.preamble(tmp_path)
    assert environment(tmp_path).loader.get_source(environment(tmp_path), "preamble.tex")[0] == packaged  # type: ignore[union-attr]
    (tmp_path / "preamble.tex").write_text("\\documentclass{book}\n", encoding="utf-8")
    assert pdf.preamble(tmp_path) == "\\documentclass{book}\n"
    assert environment(tmp_path).loader.get_source(environment(tmp_path), "preamble.tex")[0] == pdf.preamble(tmp_path)  # type: ignore[union-attr]


def test_command_line_starts_the_pdf_before_sympy_and_finishes_it(tex: None, tmp_path: Path) -> None:
    """pdflatex starts before SymPy is imported, and the render's build finishes it (not a build
    from scratch); the PDF is the one the library builds."""
    probe = (
        "import json, sys\n"
        "from derive import pdf\n"
        "seen = []\n"
        "start, scratch = pdf.EarlyBuild.__init__, pdf._build_from_scratch\n"
        "def init(self, preamble):\n"
        "    seen.append('sympy' in sys.modules)\n"
        "    start(self, preamble)\n"
        "def from_scratch(*args):\n"
        "    seen.append('from scratch')\n"
        "    return scratch(*args)\n"
        "pdf.EarlyBuild.__init__, pdf._build_from_scratch = init, from_scratch\n"
        "sys.argv = ['derive', 'softmax-ce', '--classes', '3', '-o', 'doc.pdf']\n"
        "from derive.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "sys.stderr.write(json.dumps(seen))\n"
    )
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(private_tmp)},
        capture_output=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stderr) == [False]
    assert completed.stdout == b"doc.pdf\n"
    import derive

    assert (tmp_path / "doc.pdf").read_bytes() == derive.render(derive.derivation("softmax-ce", classes=3), "pdf")
    assert list(private_tmp.iterdir()) == []


def test_overview_command_finishes_an_early_build(
    tex: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packaged_documents: dict[str, str]
) -> None:
    from typer.testing import CliRunner

    from derive import overview
    from derive.cli import app

    document = packaged_documents["overview"]
    cold = build_pdf(document)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.chdir(tmp_path)
    used: list[bool] = []

    def render(format: str, templates: Any = None, notation: Any = None, markdown: Any = None) -> bytes:
        used.append(pdf._ACTIVE.get() is not None and running_processes_in(private_tmp) != [])
        return build_pdf(document)  # what overview.render("pdf") does, without the checks of every derivation

    def from_scratch(*args: Any) -> bytes:
        raise AssertionError("built from scratch")

    monkeypatch.setattr(overview, "render", render)
    monkeypatch.setattr(overview, "linked", lambda *args, **kwargs: iter(()))  # the documents it links to: built from scratch
    monkeypatch.setattr(pdf, "_build_from_scratch", from_scratch)
    result = CliRunner().invoke(app, ["overview", "-o", "overview.pdf"])
    assert result.exit_code == 0, result.output
    assert used == [True]
    assert (tmp_path / "overview.pdf").read_bytes() == cold
    nothing_left(private_tmp)


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
