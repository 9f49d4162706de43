"""Turning a LaTeX document into PDF bytes with latexmk and pdflatex.

The build runs in a temporary directory that is removed afterwards, in a process group of its
own so that a timeout ends pdflatex too (killing latexmk alone would leave it running), and with
a fixed date so that the same source gives the same bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from derive import progress
from derive.errors import DeriveError

REQUIRED_TOOLS = ("latexmk", "pdflatex")
MISSING_TOOLS_MESSAGE = (
    "PDF output needs latexmk and pdflatex: install the Debian packages texlive-latex-base "
    "texlive-latex-recommended latexmk, or use --format tex or --format md"
)
LATEXMK_COMMAND = (
    "latexmk",
    "-pdf",
    "-interaction=nonstopmode",
    "-halt-on-error",
    "-file-line-error",
    "-no-shell-escape",
    "-norc",
    "doc.tex",
)
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

_FILE_LINE_ERROR = re.compile(r"^(?:\./)?doc\.tex:(\d+): (.*)$")
_CONTEXT_LINE = re.compile(r"^l\.(\d+) (.*)$")


def tex_available() -> bool:
    """Return whether latexmk and pdflatex are both on the PATH."""
    return all(shutil.which(tool) for tool in REQUIRED_TOOLS)


def build_pdf(tex: str, timeout: float = 120) -> bytes:
    """Compile a complete LaTeX document and return the PDF's bytes.

    Args:
        tex: the document, from ``\\documentclass`` to ``\\end{document}``.
        timeout: seconds before the build is stopped.

    Raises:
        DeriveError: the tools are missing, the build failed (the message names the first TeX
            error and where the full log was kept) or it ran out of time.
    """
    if not tex_available():
        raise DeriveError(MISSING_TOOLS_MESSAGE)
    progress.update("building the PDF with latexmk")
    with tempfile.TemporaryDirectory(prefix="derive-pdf-") as directory:
        workdir = Path(directory)
        (workdir / "doc.tex").write_text(tex, encoding="utf-8", newline="\n")
        returncode = _run_latexmk(workdir, timeout)
        pdf = workdir / "doc.pdf"
        if returncode != 0 or not pdf.is_file():
            raise DeriveError(_failure_message(workdir, tex))
        return pdf.read_bytes()


def _run_latexmk(workdir: Path, timeout: float) -> int:
    """Run latexmk in ``workdir`` and return its exit code; stop the whole group on timeout."""
    environment = {**os.environ, **REPRODUCIBLE_ENVIRONMENT}
    with open(workdir / "latexmk.out", "wb") as output:
        process = subprocess.Popen(
            LATEXMK_COMMAND,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise DeriveError(f"the PDF build did not finish within {timeout:g} seconds and was stopped") from None
        except BaseException:
            # Ctrl-C or any other interruption must not leave pdflatex behind either.
            _kill_group(process)
            raise


def _kill_group(process: subprocess.Popen) -> None:
    """Kill ``process`` and everything it started, and wait until they are gone."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    # The grandchildren (pdflatex) are reaped by init, not by us: give it a moment so that
    # nothing is still running, or still holding the build directory, when we return.
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
        output = (workdir / "latexmk.out").read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        error = lines[-1] if lines else "latexmk produced no PDF"
    kept_log = _keep(log_path if log else workdir / "latexmk.out", LAST_ERROR_LOG)
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
