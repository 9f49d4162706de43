"""Progress on stderr: shown on a terminal for long work, never in a pipe, never with --quiet."""

import io
import os
import pty
import subprocess
import sys
import time

from derive import progress


def test_terminal_reporter_shows_the_stage_and_erases_it():
    stream = io.StringIO()
    terminal = progress.Terminal(stream, delay=0)
    previous = progress.install(terminal)
    try:
        progress.update("verifying step", 3, 13)
        time.sleep(0.35)
    finally:
        progress.install(previous)
        terminal.close()
    text = stream.getvalue()
    assert "derive: verifying step 3/13" in text
    assert text.endswith("\r") and text.rstrip("\r").endswith(" ")


def test_terminal_reporter_is_silent_for_quick_work():
    stream = io.StringIO()
    terminal = progress.Terminal(stream, delay=5)
    progress.update("anything")
    terminal.close()
    assert stream.getvalue() == ""


def test_updates_without_a_reporter_do_nothing():
    assert progress.install(None) is None
    progress.update("nothing listens", 1, 2)


def run_with_stderr(args, tmp_path, terminal):
    """Run the CLI with stderr on a pseudo-terminal or a pipe; return (exit code, stderr)."""
    env = dict(os.environ, DERIVE_PROGRESS_DELAY="0", DERIVE_NO_CACHE="1")
    command = [sys.executable, "-m", "derive", *args]
    if not terminal:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stderr
    main, secondary = pty.openpty()
    child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    return child.wait(timeout=300), b"".join(chunks).decode()


def test_cli_shows_progress_on_a_terminal_only(tmp_path):
    code, shown = run_with_stderr(["softmax", "--classes", "3", "-o", "a.md"], tmp_path, terminal=True)
    assert code == 0 and "derive: verifying step" in shown
    code, piped = run_with_stderr(["softmax", "--classes", "3", "-o", "b.md"], tmp_path, terminal=False)
    assert code == 0 and piped == ""
    code, quiet = run_with_stderr(["softmax", "--classes", "3", "-o", "c.md", "--quiet"], tmp_path, terminal=True)
    assert code == 0 and "derive:" not in quiet
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes() == (tmp_path / "c.md").read_bytes()


def screen(text):
    """The lines a terminal shows for ``text``: a carriage return goes back to the start of the
    line, and what follows overwrites what was there."""
    lines, line, column = [], [], 0
    for c in text:
        if c == "\n":
            lines.append("".join(line).rstrip())
            line, column = [], 0
        elif c == "\r":
            column = 0
        else:
            line[column:column + 1] = [c]
            column += 1
    return lines + ["".join(line).rstrip()]


def test_screen_shows_what_a_terminal_shows():
    assert screen("derive: working (1 s)a.md\r\n") == ["derive: working (1 s)a.md", ""]
    assert screen("\rderive: working (1 s)\r" + " " * 21 + "\ra.md\r\n") == ["a.md", ""]


def test_the_progress_line_is_erased_before_the_path_is_printed(tmp_path):
    """stdout and stderr on one terminal, as in a shell: the path written gets a line of its own."""
    env = dict(os.environ, DERIVE_PROGRESS_DELAY="0", DERIVE_NO_CACHE="1")
    main, secondary = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "derive", "softmax", "--classes", "3", "-o", "a.md"],
                             cwd=tmp_path, env=env, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert child.wait(timeout=300) == 0
    text = b"".join(chunks).decode()
    assert "derive: verifying step" in text  # the progress line was there
    assert [line for line in screen(text) if line] == ["a.md"]
