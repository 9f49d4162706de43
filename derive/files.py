"""Files: writing output so that a reader never sees half of one, and finding the packaged
templates (without the renderer, which imports SymPy and Jinja)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from derive.errors import DeriveError, UsageError


def templates_dir() -> Path:
    """The packaged templates: inside the installed package, or beside it in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


def write_templates(directory: Path | str, force: bool = False) -> list[Path]:
    """Write the packaged templates and wording into ``directory`` (created when missing), as
    a course's starting point for ``--templates``; return the files written.

    Raises:
        UsageError: ``directory`` holds files already and ``force`` is not set.
        DeriveError: ``directory`` is a file, or a file cannot be written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DeriveError(f"cannot write templates into {directory}: it is not a directory")
    if not force and directory.is_dir() and any(directory.iterdir()):
        raise UsageError(f"{directory} is not empty: choose a new directory, or add --force to replace the files of the same name in it")
    source = templates_dir()
    written = []
    for path in sorted(source.rglob("*")):
        if path.is_file() and not any(part.startswith((".", "__")) for part in path.relative_to(source).parts):
            write_atomic(directory / path.relative_to(source), path.read_bytes())
            written.append(directory / path.relative_to(source))
    return written


def write_atomic(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` in one step: the old file, if any, survives any failure.

    The data goes to a temporary file in the same directory, is flushed to disk and then
    renamed over ``path``, so a crash or an error leaves either the old file or the new one.
    What is not a regular file is written to, never replaced: a device (``/dev/null``), a FIFO
    or a socket gets the data in place. A symbolic link is kept and its target replaced.

    Args:
        path: the file to write; missing parent directories are created.
        data: text (written as UTF-8 with ``\\n`` newlines) or bytes (written as they are).

    Raises:
        DeriveError: the parent directory cannot be created or is not a directory, ``path`` is
            a directory, or the write itself failed (a full disk, say); a regular file at
            ``path`` is untouched.
    """
    given = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if is_special(given):
        _write_in_place(given, payload)
        return
    path = _resolved(given)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DeriveError(f"cannot write {given}: {_first_file_in(parent)} is not a directory") from None
    except OSError as error:
        raise DeriveError(f"cannot create the directory {parent}: {error.strerror}") from None
    if path.is_dir():
        raise DeriveError(f"cannot write {given}: it is a directory")

    try:
        fd, temp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise DeriveError(f"cannot write in {parent}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        os.chmod(temp_name, 0o666 & ~_umask())
        os.replace(temp_name, path)
    except BaseException as error:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise DeriveError(f"cannot write {given}: {error.strerror or error}") from None
        raise


def check_writable(path: Path | str) -> None:
    """Fail early, before any work, when ``path`` can certainly not be written.

    Raises:
        DeriveError: an ancestor of ``path`` is a file, ``path`` is a directory, the directory
            that would hold ``path`` (or its nearest existing ancestor) is not writable, or
            ``path`` is a device or FIFO this process may not write to.
    """
    given = Path(path)
    if is_special(given):
        if not os.access(given, os.W_OK):
            raise DeriveError(f"cannot write {given}: permission denied")
        return
    path = _resolved(given)
    blocker = _first_file_in(path.parent)
    if blocker.exists() and not blocker.is_dir():
        raise DeriveError(f"cannot write {given}: {blocker} is not a directory")
    if path.is_dir():
        raise DeriveError(f"cannot write {given}: it is a directory")
    # The temporary file (and any missing directory) is created there. Root passes os.access
    # whatever the mode; write_atomic still reports what the system refuses then.
    existing = _nearest_existing(path.parent)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DeriveError(f"cannot write {given}: {existing} is not writable")


def is_special(path: Path) -> bool:
    """Whether ``path`` (its link's target, for a link) exists and is neither a regular file nor
    a directory: a device, a FIFO or a socket, which is written to and never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _write_in_place(path: Path, payload: bytes) -> None:
    """Write to a device or FIFO as it is: open it (a FIFO waits for its reader) and write."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise DeriveError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    except OSError as error:
        raise DeriveError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        os.close(fd)


def _resolved(path: Path) -> Path:
    """The file a symbolic link finally names (the path itself when it is no link): the link is
    kept and its target replaced. A link that points nowhere is written where it points."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if target.is_symlink():
        raise DeriveError(f"cannot write {path}: its symbolic links form a loop")
    return target


def _first_file_in(directory: Path) -> Path:
    """Return the first ancestor of ``directory`` (or itself) that exists but is not a directory."""
    for candidate in reversed([directory, *directory.parents]):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return directory


def _nearest_existing(directory: Path) -> Path:
    """Return ``directory`` if it exists, else its nearest ancestor that does."""
    for candidate in [directory, *directory.parents]:
        if candidate.exists():
            return candidate
    return directory


def _umask() -> int:
    """Return the process umask (reading it means setting it, so set it back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def catalog_spec(name: str) -> Path:
    """The spec file of a catalog entry (derive/catalog/NAME.toml), shipped inside the package."""
    return Path(__file__).resolve().parent / "catalog" / f"{name}.toml"
