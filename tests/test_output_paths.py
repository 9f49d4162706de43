"""Output paths as a careful tool treats them: a device, a FIFO or standard output is written to
and never replaced; a symbolic link is kept and its target replaced atomically; a missing
directory is created; what the file system refuses is a failure (exit code 1)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from derive.errors import DeriveError
from derive.files import check_writable, write_atomic

ROOT = Path(__file__).resolve().parent.parent
ARGS = ("softmax-ce", "--classes", "3")


def run(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """``python -m derive`` as a real process in ``cwd`` (the test's check cache included)."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "derive", *args], cwd=cwd, env={**os.environ, "PYTHONPATH": python_path},
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300, check=False, **kwargs,
    )


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The Markdown document, as ``-o -`` writes it."""
    completed = run(*ARGS, "-o", "-", cwd=tmp_path_factory.mktemp("expected"))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(b"# ")
    return completed.stdout


class Reader(threading.Thread):
    """Reads a FIFO to its end, as another program would."""

    def __init__(self, fifo: Path):
        super().__init__(daemon=True)
        self.fifo, self.data = fifo, b""

    def run(self) -> None:
        with open(self.fifo, "rb") as handle:  # waits for the writer
            self.data = handle.read()


# --- FIFOs and devices ----------------------------------------------------------------------------
def test_write_atomic_writes_into_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    reader = Reader(fifo)
    reader.start()
    write_atomic(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert reader.data == b"through the pipe\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.md"]


def test_command_line_writes_into_a_fifo(tmp_path: Path, expected: bytes) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    reader = Reader(fifo)
    reader.start()
    completed = run(*ARGS, "-o", str(fifo), cwd=tmp_path)
    reader.join(timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"{fifo}\n".encode()
    assert reader.data == expected
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.md"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a device node (and replace one)")
def test_write_atomic_writes_into_a_device_and_keeps_it(tmp_path: Path) -> None:
    """A private copy of /dev/null: a rename over it would turn it into a regular file."""
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    write_atomic(null, "discarded\n")
    check_writable(null)
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert os.lstat(null).st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_dev_null_stays_a_character_device(tmp_path: Path) -> None:
    before = os.lstat("/dev/null")
    completed = run(*ARGS, "--format", "md", "-o", "/dev/null", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"/dev/null\n"
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["/dev/stdout", "-"])
def test_dev_stdout_is_standard_output(tmp_path: Path, expected: bytes, path: str) -> None:
    completed = run(*ARGS, "-o", path, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == expected
    assert list(tmp_path.iterdir()) == []


def test_dev_stdout_appends_to_a_redirected_file(tmp_path: Path, expected: bytes) -> None:
    """Standard output as the shell opened it (here for appending), not the file opened again."""
    out = tmp_path / "log.md"
    out.write_bytes(b"before\n")
    with open(out, "ab") as handle:
        completed = run(*ARGS, "-o", "/dev/stdout", cwd=tmp_path, stdout=handle)
    assert completed.returncode == 0, completed.stderr
    assert out.read_bytes() == b"before\n" + expected


# --- symbolic links -------------------------------------------------------------------------------
def test_a_link_is_kept_and_its_target_replaced(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "real.md"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    link = tmp_path / "link.md"
    link.symlink_to(Path("docs") / "real.md")
    write_atomic(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(Path("docs") / "real.md")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != old_inode  # replaced by a rename, not rewritten in place
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["real.md"]


def test_a_chain_of_links_and_a_dangling_link(tmp_path: Path) -> None:
    final = tmp_path / "final.md"
    (tmp_path / "middle.md").symlink_to(final)
    (tmp_path / "first.md").symlink_to(tmp_path / "middle.md")
    write_atomic(tmp_path / "first.md", "written\n")  # final.md does not exist yet
    assert final.read_text() == "written\n"
    assert (tmp_path / "first.md").is_symlink() and (tmp_path / "middle.md").is_symlink()


def test_a_loop_of_links_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "a.md").symlink_to(tmp_path / "b.md")
    (tmp_path / "b.md").symlink_to(tmp_path / "a.md")
    with pytest.raises(DeriveError, match="loop") as raised:
        write_atomic(tmp_path / "a.md", "x")
    assert raised.value.exit_code == 1


def test_command_line_through_a_link(tmp_path: Path, expected: bytes) -> None:
    target = tmp_path / "real.md"
    target.write_text("old\n")
    (tmp_path / "link.md").symlink_to("real.md")
    completed = run(*ARGS, "-o", "link.md", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"link.md\n"
    assert (tmp_path / "link.md").is_symlink()
    assert target.read_bytes() == expected


# --- directories --------------------------------------------------------------------------------
def test_a_missing_directory_is_created(tmp_path: Path, expected: bytes) -> None:
    completed = run(*ARGS, "-o", "new/deeper/doc.md", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "new" / "deeper" / "doc.md").read_bytes() == expected


def test_what_the_file_system_refuses_is_a_failure(tmp_path: Path) -> None:
    """Exit code 1, as the README says for failures; 2 is for a command line that is wrong."""
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "folder.md").mkdir()
    for output in ("blocker/doc.md", "folder.md"):
        completed = run(*ARGS, "-o", output, cwd=tmp_path)
        assert completed.returncode == 1, (output, completed.stderr)
        assert completed.stderr.startswith(b"error: cannot write ") and completed.stderr.count(b"\n") == 1
    usage = run(*ARGS, "-o", "doc.txt", cwd=tmp_path)
    assert usage.returncode == 2, usage.stderr
