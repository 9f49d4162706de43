"""What a PDF build may leave behind: its build directories and running TeX processes."""

from __future__ import annotations

import os
from pathlib import Path


def build_directories(directory: Path) -> list[Path]:
    """The build directories of derive/pdf.py (derive-pdf-*) in a temporary directory."""
    return sorted(directory.glob("derive-pdf-*"))


def running_processes_in(directory: Path) -> list[str]:
    """Processes (not zombies) whose working directory is inside ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            stat = (entry / "stat").read_text()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2 :].split()[0]
        if state != "Z" and (cwd == directory or directory in cwd.parents):
            found.append(f"{entry.name} {name} in {cwd}")
    return found
