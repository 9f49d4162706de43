"""The formula checker itself: it must accept what GitHub renders and reject what it does not."""

from __future__ import annotations

import pytest

from mathcheck import check_formulas, markdown_formulas

VALID = [
    r"\frac{\partial E}{\partial z_k} = o_k - y_k",
    r"\underbrace{a}_{\text{b}}",
    r"\begin{aligned}a&=b\\c&=d\end{aligned}",
    r"\boxed{x}",
    r"\mathrm{softmax}(z)_k = \frac{e^{z_k}}{\sum_{j=1}^{H} e^{z_j}}",
    r"\frac{\partial o_i}{\partial z_k} = \begin{cases} o_k (1 - o_k) & i = k \\ -o_i o_k & i \neq k \end{cases}",
    r"\sum_{i \neq k} y_i \xrightarrow{\text{split}} \cancel{a} + \boldsymbol{y} + \color{red}{x}",
]

# (formula, the engine that must reject it)
INVALID = [
    (r"\frac{a}{", "katex"),
    (r"\frac{a}{", "mathjax"),
    (r"\foo", "katex"),
    (r"\foo", "mathjax"),
    (r"\newcommand{\x}{1}\x", "mathjax"),
    (r"\def\x{1}\x", "mathjax"),
    (r"a \nobreak b", "mathjax"),
    (r"\operatorname{softmax}(z)", "mathjax"),
    (r"\begin{aligned}a&=b", "katex"),
    (r"\begin{aligned}a&=b", "mathjax"),
]


@pytest.mark.parametrize("display", [True, False])
def test_accepts_formulas_github_renders(display: bool) -> None:
    assert check_formulas([(tex, display) for tex in VALID]) == []


@pytest.mark.parametrize(("tex", "engine"), INVALID)
def test_rejects_invalid_formula(tex: str, engine: str) -> None:
    errors = check_formulas([(r"x", True), (tex, True)])
    assert any(error.startswith(f"formula 1 ({engine}):") for error in errors), errors
    assert not any(error.startswith("formula 0 ") for error in errors), errors


def test_error_names_the_formula() -> None:
    [*errors] = check_formulas([(r"\foo + 1", False)])
    assert errors and all(error.endswith(r"\foo + 1") for error in errors)
    assert any("foo" in error.split(":", 1)[1] for error in errors)


def test_empty_list_needs_no_parse() -> None:
    assert check_formulas([]) == []


MARKDOWN = r"""# Softmax

The gradient is $`o_k - y_k`$, for $x^2$ too.

```math
\frac{\partial E}{\partial z_k} = o_k - y_k
```

$$
\begin{aligned}a&=b\\c&=d\end{aligned}
$$

```python
not = "math $`x`$"
```

- a list item $`\{i \neq k\}`$

| step | formula |
| --- | --- |
| 1 | $`\sum_i y_i = 1`$ |
"""


def test_markdown_formulas_finds_fences_blocks_and_inline_math_in_order() -> None:
    assert markdown_formulas(MARKDOWN) == [
        ("o_k - y_k", False),
        ("x^2", False),
        (r"\frac{\partial E}{\partial z_k} = o_k - y_k", True),
        (r"\begin{aligned}a&=b\\c&=d\end{aligned}", True),
        (r"\{i \neq k\}", False),
        (r"\sum_i y_i = 1", False),
    ]


def test_markdown_without_math_has_no_formulas() -> None:
    assert markdown_formulas("# Title\n\nPlain text, `code` and a $5 price.\n") == []
