"""The gallery in ``output/``: every format of the documents a visitor opens first.

Regenerate it with ``python -m derive.gallery`` (or ``python -m derive.gallery DIR``); a test
fails when the committed gallery differs from what the code produces.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

GALLERY: tuple[tuple[str, int | None], ...] = (
    ("softmax-ce", None),
    ("softmax-ce", 3),
    ("softmax", None),
    ("softmax", 3),
    ("log-softmax", None),
    ("log-softmax", 3),
)
FORMATS = ("md", "tex", "json", "pdf")


def filename(name: str, classes: int | None, fmt: str) -> str:
    return f"{name}.{fmt}" if classes is None else f"{name}-{classes}.{fmt}"


def documents(formats: tuple[str, ...] = FORMATS) -> Iterator[tuple[str, str | bytes]]:
    """(file name, content) for every gallery document."""
    import derive

    for name, classes in GALLERY:
        d = derive.derivation(name, classes=classes)
        for fmt in formats:
            yield filename(name, classes, fmt), derive.render(d, fmt)
    from derive import overview

    for fmt in formats:
        yield f"overview.{fmt}", overview.render(fmt)


def main(argv: list[str]) -> None:
    from derive.files import write_atomic

    folder = Path(argv[0]) if argv else Path("output")
    for name, content in documents():
        write_atomic(folder / name, content)
        print(folder / name)


if __name__ == "__main__":
    main(sys.argv[1:])
