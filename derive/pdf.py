"""Turning a LaTeX document into PDF bytes with pdflatex.

A build runs pdflatex in a temporary directory that is removed afterwards, and runs it again
only when a pass says that its result is not final yet: the log asks for a rerun (labels, table
widths, outlines) or an auxiliary file that the pass read, such as the table of contents, came
out different. Each pass runs in a process group of its own, so that a timeout or Ctrl-C ends
whatever pdflatex started too, and with a fixed date, so that the same source gives the same
bytes.

The preamble of the packaged documents (``templates/preamble.tex``) depends on nothing that a
derivation computes, and loading its packages is most of a pass. :func:`early` starts pdflatex
on it before the derivation exists; pdflatex reads the preamble and then waits on its standard
input. When the complete document is ready, :func:`build_pdf` (or :meth:`EarlyBuild.finish`)
sends it the rest, if the document starts with exactly that preamble, and otherwise builds from
scratch. Either way the PDF is the same, byte for byte.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Iterator

from derive import progress
from derive.errors import DeriveError
from derive.files import templates_dir

REQUIRED_TOOLS = ("pdflatex",)
MISSING_TOOLS_MESSAGE = (
    "PDF output needs pdflatex: install the Debian packages texlive-latex-base "
    "texlive-latex-recommended, or use --format tex or --format md"
)
DEFAULT_TIMEOUT = 120.0
"""Seconds a build may take, all its passes together."""
MAX_PASSES = 5
"""pdflatex runs at most this often for one document (latexmk's default limit too)."""
PREAMBLE = "preamble.tex"
"""The template that every packaged LaTeX document starts with, unchanged."""

PDFLATEX_OPTIONS = (
    "-interaction=nonstopmode",
    "-halt-on-error",
    "-file-line-error",
    "-no-shell-escape",
)
PDFLATEX_COMMAND = ("pdflatex", *PDFLATEX_OPTIONS, "doc.tex")
# The early build reads doc.tex (the preamble) in nonstopmode, like a whole build, so that an
# error there ends it at once; then \scrollmode lets pdflatex wait for a terminal line instead
# of stopping at the end of the file, and that line (sent on stdin) switches back to nonstopmode
# and reads the rest of the document. Should that line never come (stdin closed), pdflatex stops
# with "End of file on the terminal!".
EARLY_COMMAND = ("pdflatex", *PDFLATEX_OPTIONS, r"\input{doc.tex}\scrollmode")
REST_LINE = b"\\nonstopmode\\input{doc.tex}\n"
# pdfTeX takes its dates from these, so the PDF's /CreationDate and /ModDate are fixed;
# the templates add \pdftrailerid{} for a fixed /ID.
REPRODUCIBLE_ENVIRONMENT = {
    "SOURCE_DATE_EPOCH": "0",
    "FORCE_SOURCE_DATE": "1",
    "TZ": "UTC",
    # TeX wraps log lines at 79 characters by default, which would cut error messages in two.
    "max_print_line": "10000",
}
LAST_ERROR_LOG = "derive-last-error.log"
LAST_ERROR_TEX = "derive-last-error.tex"
OUTPUT = "pdflatex.out"
"""What pdflatex printed on the terminal, beside its log in the build directory."""

_FILE_LINE_ERROR = re.compile(r"^(?:\./)?doc\.tex:(\d+): (.*)$")
_CONTEXT_LINE = re.compile(r"^l\.(\d+) (.*)$")
# What LaTeX and its packages print when the next pass would come out different: the kernel
# ("Label(s) may have changed. Rerun to get cross-references right."), longtable ("Table widths
# have changed. Rerun LaTeX."), rerunfilecheck and hyperref ("Rerun to get outlines right"),
# natbib ("Citation(s) may have changed."), and others that say "Please rerun LaTeX".
_RERUN_REQUEST = re.compile(r"Rerun to get|Rerun LaTeX|Please rerun|Label\(s\) may have changed|Citation\(s\) may have changed")
# The files of the job (doc.*) that the next pass does not read.
_NOT_AUXILIARY = frozenset({"doc.tex", "doc.log", "doc.pdf"})

_ACTIVE: ContextVar[EarlyBuild | None] = ContextVar("derive_pdf_early_build", default=None)


def tex_available() -> bool:
    """Return whether pdflatex is on the PATH."""
    return all(shutil.which(tool) for tool in REQUIRED_TOOLS)


def build_pdf(tex: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Compile a complete LaTeX document and return the PDF's bytes.

    Inside :func:`early`, a document that starts with the early build's preamble finishes that
    build; any other document is built from scratch.

    Args:
        tex: the document, from ``\\documentclass`` to ``\\end{document}``.
        timeout: seconds before the build is stopped.

    Raises:
        DeriveError: pdflatex is missing, the build failed (the message names the first TeX
            error and where the full log was kept) or it ran out of time.
    """
    if not tex_available():
        raise DeriveError(MISSING_TOOLS_MESSAGE)
    started = _ACTIVE.get()
    if started is not None and not started.done:
        return started.finish(tex, timeout)
    return _build_from_scratch(tex, timeout)


def preamble(templates: Path | str | None = None) -> str | None:
    """The preamble template's text, looked up as the renderer looks up templates: in the user's
    ``templates`` directory first, then in the packaged ones. None when there is none.

    It is read as it is, without Jinja (which would cost the time the early build saves): a
    preamble with template syntax renders differently, and the build then starts from scratch.
    """
    for folder in ([Path(templates)] if templates is not None else []) + [templates_dir()]:
        try:
            return (folder / PREAMBLE).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        except (OSError, UnicodeDecodeError):
            return None
    return None


@contextmanager
def early(preamble: str | None) -> Iterator[EarlyBuild | None]:
    """Start pdflatex on ``preamble`` now; stop it, and remove its files, when the block ends.

    Inside the block, :func:`build_pdf` finishes this build (see there). Yields None, and starts
    nothing, when there is no usable preamble (empty, or not ending in a newline) or no pdflatex.
    """
    if not preamble or not preamble.endswith("\n") or not tex_available():
        yield None
        return
    try:
        started = EarlyBuild(preamble)
    except OSError:
        # Whatever kept it from starting is reported by the build that needs it.
        yield None
        return
    token = _ACTIVE.set(started)
    try:
        yield started
    finally:
        _ACTIVE.reset(token)
        started.cancel()


class EarlyBuild:
    """pdflatex, started on a preamble alone, waiting for the rest of the document.

    Use it through :func:`early`, which guarantees that it never outlives the block.
    """

    def __init__(self, preamble: str) -> None:
        self.preamble = preamble
        self.done = False
        self._workdir = Path(tempfile.mkdtemp(prefix="derive-pdf-"))
        self._output: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        try:
            _write(self._workdir / "doc.tex", preamble)
            self._output = open(self._workdir / OUTPUT, "wb")
            self._process = _start(self._workdir, EARLY_COMMAND, self._output, stdin=subprocess.PIPE)
        except BaseException:
            self.cancel()
            raise

    def finish(self, tex: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Build the complete document ``tex`` and return the PDF's bytes (see :func:`build_pdf`).

        If ``tex`` starts with the preamble, pdflatex reads the rest; else this build is stopped
        and ``tex`` is built from scratch. Either way this build is over afterwards.
        """
        if self.done or not tex.startswith(self.preamble):
            self.cancel()
            return _build_from_scratch(tex, timeout)
        assert self._process is not None and self._process.stdin is not None
        progress.update("building the PDF with pdflatex")
        deadline = time.monotonic() + timeout
        try:
            # pdflatex may still be reading the preamble: the rest replaces the file rather than
            # overwriting it, so the open file keeps its contents. But it must have opened it:
            # TeX creates the log right after it opened its first file. A comment line for each
            # line of the preamble keeps the line numbers of the log those of the whole document.
            while not (self._workdir / "doc.log").exists() and self._process.poll() is None:
                if time.monotonic() > deadline:
                    _wait(self._process, deadline, timeout)  # stops it and says so
                time.sleep(0.005)
            _write(self._workdir / "doc.tex", "%\n" * self.preamble.count("\n") + tex[len(self.preamble) :])
            try:
                self._process.stdin.write(REST_LINE)
                self._process.stdin.close()
            except BrokenPipeError:
                pass  # pdflatex stopped in the preamble: its log says why
            returncode = _wait(self._process, deadline, timeout)
            return _complete(self._workdir, tex, returncode, {}, deadline, timeout)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop pdflatex and everything it started, and remove the build directory."""
        self.done = True
        # Once waited for, its process group may be gone and its number given to another.
        if self._process is not None and self._process.returncode is None:
            _kill_group(self._process)
            if self._process.stdin is not None:
                try:
                    self._process.stdin.close()
                except BrokenPipeError:
                    pass
        if self._output is not None:
            self._output.close()
        shutil.rmtree(self._workdir, ignore_errors=True)


def _build_from_scratch(tex: str, timeout: float) -> bytes:
    progress.update("building the PDF with pdflatex")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="derive-pdf-") as directory:
        workdir = Path(directory)
        _write(workdir / "doc.tex", tex)
        returncode = _run_pass(workdir, deadline, timeout)
        return _complete(workdir, tex, returncode, {}, deadline, timeout)


def _complete(workdir: Path, tex: str, returncode: int, before: dict[str, bytes], deadline: float, timeout: float) -> bytes:
    """Check the pass that ended with ``returncode``, run more while they are needed, and return
    the PDF's bytes. ``before``: the auxiliary files as they were when that pass started."""
    pdf = workdir / "doc.pdf"
    passes = 1
    while True:
        if returncode != 0 or not pdf.is_file():
            raise DeriveError(_failure_message(workdir, tex))
        if passes >= MAX_PASSES or not _needs_rerun(workdir, before):
            return pdf.read_bytes()
        if passes == 1:
            _write(workdir / "doc.tex", tex)  # after an early build it holds only the rest
        before = _auxiliary_files(workdir)
        returncode = _run_pass(workdir, deadline, timeout)
        passes += 1


def _needs_rerun(workdir: Path, before: dict[str, bytes]) -> bool:
    """Whether another pass would give a different PDF: the log asks for one, or an auxiliary
    file came out different from what the pass read (a missing one reads as empty). The main
    ``.aux`` counts only once a pass has read it: on the first pass LaTeX checks the labels
    itself, and the rest of it (the page count, say) changes nothing in our documents."""
    log = workdir / "doc.log"
    if log.is_file() and _RERUN_REQUEST.search(log.read_text(encoding="utf-8", errors="replace")):
        return True
    after = _auxiliary_files(workdir)
    return any(content != before.get(name, b"") for name, content in after.items() if name in before or name != "doc.aux")


def _auxiliary_files(workdir: Path) -> dict[str, bytes]:
    """The files a pass leaves for the next one to read (.aux, .toc, .out, ...), by name."""
    return {
        p.name: p.read_bytes() for p in workdir.glob("doc.*") if p.name not in _NOT_AUXILIARY and p.is_file()
    }


def _write(path: Path, text: str) -> None:
    """Write ``text`` to a new file and rename it to ``path``: a reader of the old file keeps it."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text, encoding="utf-8", newline="\n")
    os.replace(fresh, path)


def _start(workdir: Path, command: tuple[str, ...], output: IO[bytes], stdin: int) -> subprocess.Popen[bytes]:
    """Start ``command`` in ``workdir`` in a process group of its own."""
    return subprocess.Popen(
        command,
        cwd=workdir,
        stdin=stdin,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, **REPRODUCIBLE_ENVIRONMENT},
        start_new_session=True,
    )


def _run_pass(workdir: Path, deadline: float, timeout: float) -> int:
    """Run one pdflatex pass over ``workdir/doc.tex`` and return its exit code."""
    with open(workdir / OUTPUT, "wb") as output:
        return _wait(_start(workdir, PDFLATEX_COMMAND, output, subprocess.DEVNULL), deadline, timeout)


def _wait(process: subprocess.Popen[bytes], deadline: float, timeout: float) -> int:
    """Wait for ``process`` until ``deadline``; on timeout or any interruption stop its whole group."""
    try:
        return process.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise DeriveError(f"the PDF build did not finish within {timeout:g} seconds and was stopped") from None
    except BaseException:
        # Ctrl-C or any other interruption must not leave pdflatex behind either.
        _kill_group(process)
        raise


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` and everything it started, and wait until they are gone."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    # What pdflatex started (mktexpk making a font, say) is reaped by init, not by us: give it a
    # moment so that nothing is still running, or still holding the build directory, when we return.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Return whether a process of group ``pgid`` is still running (zombies do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name, in parentheses, may contain spaces: split after its closing one.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _failure_message(workdir: Path, tex: str) -> str:
    """Describe a failed build in one line, keeping the full log and source for the reader."""
    log_path = workdir / "doc.log"
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    error = first_tex_error(log)
    if error is None:
        output_path = workdir / OUTPUT
        output = output_path.read_text(encoding="utf-8", errors="replace") if output_path.is_file() else ""
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        error = lines[-1] if lines else "pdflatex produced no PDF"
    kept_log = _keep(log_path if log else workdir / OUTPUT, LAST_ERROR_LOG)
    kept_tex = _keep_text(tex, LAST_ERROR_TEX)
    kept = [f"full log: {kept_log}"] if kept_log else []
    kept += [f"source: {kept_tex}"] if kept_tex else []
    where = f" ({'; '.join(kept)})" if kept else ""
    return f"LaTeX failed: {error}{where}"


def first_tex_error(log: str) -> str | None:
    """Return the first error of a TeX log as one line, with the source line it points at.

    With ``-file-line-error`` errors read ``./doc.tex:12: Undefined control sequence.``; others
    (and logs written without the option) start with ``!``. The ``l.12 \\foo`` line that
    follows shows the input where TeX stopped.
    """
    lines = log.splitlines()
    for index, line in enumerate(lines):
        match = _FILE_LINE_ERROR.match(line)
        if match:
            message = f"line {match.group(1)}: {match.group(2).strip()}"
        elif line.startswith("! "):
            message = line[2:].strip()
        else:
            continue
        for following in lines[index + 1 : index + 30]:
            context = _CONTEXT_LINE.match(following)
            if context:
                snippet = context.group(2).strip()
                if not match:
                    message = f"line {context.group(1)}: {message}"
                if snippet:
                    message += f" near: {snippet}"
                break
        return message
    return None


def _keep(source: Path, name: str) -> Path | None:
    """Copy ``source`` to ``name`` in the system temporary directory; return the copy's path."""
    target = Path(tempfile.gettempdir()) / name
    try:
        shutil.copyfile(source, target)
    except OSError:
        return None
    return target


def _keep_text(text: str, name: str) -> Path | None:
    """Save ``text`` as ``name`` in the system temporary directory; return its path."""
    target = Path(tempfile.gettempdir()) / name
    try:
        target.write_text(text, encoding="utf-8", newline="\n")
    except OSError:
        return None
    return target
