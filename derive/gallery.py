"""The gallery in ``output/``: every format of the documents a visitor opens first.

Regenerate it with ``python -m derive.gallery`` (or ``python -m derive.gallery DIR``); a test
fails when the committed gallery differs from what the code produces.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

GALLERY: tuple[tuple[str, int | None] | tuple[str, int | None, dict[str, object]], ...] = (
    ("softmax-ce", None),
    ("softmax-ce", 3),
    ("softmax-ce", None, {"temperature": 2}),
    ("softmax-ce", None, {"label_smoothing": 0.1}),
    ("softmax-ce", 3, {"temperature": 2}),
    ("softmax-ce", 3, {"label_smoothing": 0.1}),
    ("softmax", None),
    ("softmax", 3),
    ("log-softmax", None),
    ("log-softmax", 3),
    ("sigmoid-bce", None),
    ("sigmoid-bce", 3),
    ("sse-linear", None),
    ("sse-linear", 3),
    ("mse-softmax", None),
    ("mse-softmax", 3),
    ("dense-softmax-ce", None),
    ("dense-softmax-ce", 3),
    ("focal", None),
    ("focal", 3),
    ("kl-softmax", None),
    ("kl-softmax", 3),
    ("tanh-sse", None),
    ("tanh-sse", 3),
    ("batch-norm", None),
    ("batch-norm", 3),
    ("layer-norm", None),
    ("layer-norm", 3),
    ("gelu", None),
    ("gelu", 3),
    ("gelu", 3, {"approximate": "tanh"}),
    ("attention", None),
    ("attention", 3),
    ("mlp", None),
    ("mlp", 3),
    ("mlp", 3, {"weight_decay": 0.1}),
)
"""(name, classes), or (name, classes, options) for a derivation's own options."""
FORMATS = ("md", "tex", "json", "pdf", "html")


def documents(formats: tuple[str, ...] = FORMATS) -> Iterator[tuple[str, str | bytes]]:
    """(file name, content) for every gallery document."""
    import derive
    from derive.derivations.naming import file_name

    for name, classes, *more in GALLERY:
        options = more[0] if more else {}
        d = derive.derivation(name, classes=classes, **options)
        for fmt in formats:
            yield file_name(name, classes, fmt, options), derive.render(d, fmt)
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
