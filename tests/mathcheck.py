"""Finding the math of a GitHub-flavoured Markdown document and parsing it as its readers will.

``markdown_formulas`` extracts the formulas; ``check_formulas`` hands them to
``tests/js/check_math.mjs``, which parses each with KaTeX and with MathJax 3 configured like
GitHub. The JavaScript packages are installed by ``./test.sh`` (``npm ci`` in ``tests/js``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

JS_DIR = Path(__file__).resolve().parent / "js"
CHECKER = JS_DIR / "check_math.mjs"
NODE_PACKAGES = ("katex", "mathjax-full")
TIMEOUT_SECONDS = 120

Formula = tuple[str, bool]


def markdown_formulas(md_text: str) -> list[Formula]:
    """Return every formula of a Markdown document as ``(tex, display)``, in document order.

    Display math is a ```` ```math ```` fence or a ``$$ ... $$`` block; inline math is
    ``$`...`$`` (GitHub's portable form) or ``$...$``. Other code fences are not math.
    """
    parser = MarkdownIt("commonmark").enable("table").use(dollarmath_plugin, double_inline=True)
    formulas: list[Formula] = []
    for token in parser.parse(md_text):
        if token.type == "fence" and token.info.strip() == "math":
            formulas.append((token.content.strip(), True))
        elif token.type == "math_block":
            formulas.append((token.content.strip(), True))
        elif token.type == "inline":
            for child in token.children or []:
                if child.type == "math_inline":
                    formulas.append((_strip_backticks(child.content), False))
                elif child.type == "math_inline_double":
                    formulas.append((child.content.strip(), True))
    return formulas


def _strip_backticks(content: str) -> str:
    """Turn the inside of ``$`x`$`` (seen by the dollar-math parser as ```x``) into ``x``."""
    if len(content) >= 2 and content.startswith("`") and content.endswith("`"):
        return content[1:-1]
    return content


def check_formulas(formulas: list[Formula]) -> list[str]:
    """Parse each ``(tex, display)`` with KaTeX and MathJax; return one message per failure.

    Without Node.js or the JavaScript packages the calling test is skipped on a developer's
    machine and fails in CI (the ``CI`` environment variable is set), where they must be there.
    """
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node")
    missing += [package for package in NODE_PACKAGES if not (JS_DIR / "node_modules" / package).is_dir()]
    if missing:
        reason = f"formula check needs {', '.join(missing)}: run ./test.sh (npm ci in tests/js)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    if not formulas:
        return []

    payload = {"formulas": [{"tex": tex, "display": display} for tex, display in formulas]}
    completed = subprocess.run(
        [node, str(CHECKER)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"check_math.mjs failed ({completed.returncode}): {completed.stderr.strip()}")
    errors = json.loads(completed.stdout)["errors"]
    return [
        f"formula {error['index']} ({error['engine']}): {error['message']}: {formulas[error['index']][0]}"
        for error in errors
    ]
