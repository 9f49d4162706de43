"""The README's promises that code can check: its snippets run as written, and what it says the
test command installs is what the script installs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def backprop_snippet() -> str:
    (snippet,) = [b for b in python_blocks() if "def test_my_softmax_ce_backward" in b]
    return snippet


def softmax_ce_backward(logits: list[float], target: list[float]) -> list[float]:
    top = max(logits)
    e = [math.exp(z - top) for z in logits]
    return [v / sum(e) - t for v, t in zip(e, target)]


def run_snippet(backward) -> None:
    namespace: dict = {"my_backward": backward}
    exec(compile(backprop_snippet(), "README.md", "exec"), namespace)
    namespace["test_my_softmax_ce_backward"]()


def test_the_backprop_snippet_needs_only_what_is_installed() -> None:
    imports = re.findall(r"^(?:import|from) (\w+)", backprop_snippet(), re.M)
    assert set(imports) <= {"derive", "pytest"}, imports


def test_the_backprop_snippet_passes_a_right_backward() -> None:
    run_snippet(softmax_ce_backward)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda z, y: [-g for g in softmax_ce_backward(z, y)],  # the descent direction y - o
        lambda z, y: softmax_ce_backward(z, y)[::-1],  # classes mixed up
        lambda z, y: [g if t else 0.0 for g, t in zip(softmax_ce_backward(z, y), y)],  # the single-product shortcut
    ],
    ids=["sign", "order", "shortcut"],
)
def test_the_backprop_snippet_fails_a_wrong_backward(wrong) -> None:
    with pytest.raises(AssertionError):
        run_snippet(wrong)


def test_the_readme_names_what_the_test_command_installs() -> None:
    script = (ROOT / "test.sh").read_text(encoding="utf-8")
    packages = {p for line in re.findall(r"^\s*apt_install (.+)$", script, re.M) for p in line.split()}
    assert packages >= {"texlive-latex-base", "chromium", "python3-venv"}
    start = README.index("./test.sh\n```\n\n") + len("./test.sh\n```\n\n")
    paragraph = README[start:README.index("\n\n", start)]  # the one after the command
    missing = [p for p in sorted(packages) if f"`{p}`" not in paragraph]
    assert missing == [], missing
    if 'sudo="sudo"' in script:
        assert "`sudo`" in paragraph and "not root" in paragraph


def test_the_readme_states_the_limits_the_code_enforces() -> None:
    from derive.concrete import EVERY_ENTRY, MATRIX_MOST, MAX_CLASSES
    from derive.concrete import EVERY_ENTRY_DEFINED as EVERY_GENERIC
    from derive.derivations.dense_softmax_ce import MAX_INPUTS, MAX_WEIGHTS

    text = " ".join(README.split())
    assert f"`--classes N` takes 1 to {MAX_CLASSES} classes" in text
    assert f"holds its $`N \\times N`$ matrix in the JSON up to {MATRIX_MOST} classes" in text
    assert f"entry by entry up to {EVERY_ENTRY} classes ({EVERY_GENERIC} for the derivations checked from their definitions alone)" in text
    assert f"up to {MAX_INPUTS} inputs and {MAX_WEIGHTS} weights" in text
