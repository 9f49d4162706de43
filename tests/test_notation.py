"""Notation: presets, single overrides, validation, and one notation in every format (equations,
wording, tables, JSON), with the wording's LaTeX commands left intact."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import derive
from derive.derivations import CATALOG
from derive import notation as N
from derive.cli import app
from derive.errors import UsageError
from derive.latex import DEFAULT, Notation
from derive.rendering import TEMPLATE, document, environment, render_template, wording
from derive.verify import Report
from mathcheck import check_formulas, markdown_formulas

ROOT = Path(__file__).resolve().parent.parent

RENAMED = {
    "logit": "a", "output": "p", "target": "t", "classes": "K", "error": "L", "i": "r", "j": "s", "k": "q",
    "input": "g", "inputs": "M", "weight": "V", "bias": "h",
}
"""Every role renamed to a Latin letter that the documents use for nothing else."""
GREEK = {
    "logit": r"\zeta", "output": r"\hat{y}", "target": r"\tau", "classes": r"\Gamma", "error": r"\hat{\varepsilon}",
    "i": r"\alpha", "j": r"\beta", "k": r"\kappa", "input": r"\xi", "inputs": r"\Delta", "weight": r"\Omega", "bias": r"\theta",
}
"""Every role renamed to a command: braces after _ and ^, spaces before letters must be right."""
INTERNAL = {r.internal for r in N.ROLES}
ROLE_ENTRIES = [name for name in derive.catalog() if not CATALOG[name].spec]
"""The entries written in the roles a notation renames; those that are spec files write names of
their own too, onto which no role may be renamed (test_a_role_renamed_onto_a_name_of_its_own_is_refused)."""


def full(names: dict[str, str], log: str = "log") -> Notation:
    return N.notation("seed", names, log)


def identity() -> Notation:
    """The seed notation, spelled out, so that every rewrite runs and must change nothing."""
    return Notation(names={r.internal: r.internal for r in N.ROLES}, log=r"\ln")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(text: str) -> None:
    assert "Traceback" not in text
    assert text.startswith("error: ") and text.endswith("\n") and text.count("\n") == 1, text


def identifiers(tex: str) -> list[str]:
    """The single-letter identifiers of a formula: not command names, not \\text{...} words."""
    out = []
    pos = 0
    while pos < len(tex):
        m = N._TOKEN.match(tex, pos)
        token, pos = m.group(0), m.end()
        if token.startswith("\\") and token[1:].isalpha():
            if token[1:] in N._TEXT_COMMANDS:
                pos = N._group_end(tex, pos)
        elif len(token) == 1 and token.isalpha():
            out.append(token)
    return out


def rename_back(tex: str, letters: dict[str, str], whole: bool) -> str:
    """Undo a rewrite to single Latin letters: each identifier in ``letters`` gets its old letter
    back and \\log becomes \\ln (a separate, simpler walk than the one under test)."""

    def back(seg: str) -> str:
        out, pos = [], 0
        while pos < len(seg):
            m = N._TOKEN.match(seg, pos)
            token, pos = m.group(0), m.end()
            if token.startswith("\\") and token[1:].isalpha():
                out.append(r"\ln" if token == r"\log" else token)
                if token[1:] in N._TEXT_COMMANDS:
                    end = N._group_end(seg, pos)
                    out.append(seg[pos:end])
                    pos = end
            else:
                out.append(letters.get(token, token))
        return "".join(out)

    return back(tex) if whole else N._INLINE.sub(lambda m: m.group(1) + back(m.group(2)) + m.group(3), tex)


def commands(tex: str) -> list[str]:
    return re.findall(r"\\[A-Za-z]+", tex)


def wording_math() -> list[tuple[tuple[str, ...], str, bool]]:
    """Every string of wording.toml and derivations/*.toml: (path, text, whether it is math as a whole)."""
    out = []

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                walk(v, path + (key,))
        elif isinstance(value, list):
            for v in value:
                walk(v, path)
        elif isinstance(value, str):
            whole = any(len(p) == len(path) and all(a in ("*", b) for a, b in zip(p, path)) for p in N.MATH_ONLY)
            out.append((path, value, whole))

    walk(wording(environment()), ())
    return out


def segments(text: str, whole: bool) -> list[str]:
    return [text] if whole else [m.group(2) for m in N._INLINE.finditer(text)]


def markdown_math(md: str) -> list[str]:
    return [tex for tex, _ in markdown_formulas(md)]


def unchecked(d, fmt: str, notation: Any = None) -> str:
    """A document without running the checks (its table of checks is empty): fast, for what the
    notation changes."""
    env = environment()
    return render_template(env, TEMPLATE[fmt], document(d, Report(d.name, ()), wording(env), fmt, N.resolve(notation)))


@pytest.fixture(scope="module")
def three():
    return derive.derivation("softmax-ce", classes=3)


# --- presets and names ---------------------------------------------------------------------------
def test_presets_name_every_role_distinctly():
    assert N.notation() == N.notation("seed")
    assert N.is_default(N.notation("seed"))
    for preset in N.PRESETS:
        n = N.notation(preset)
        names = [n.name(r.internal) for r in N.ROLES]
        assert len(set(names)) == len(names), preset
        assert n.log in (r"\ln", r"\log")
    textbook = N.notation("textbook")
    assert (textbook.name("o"), textbook.name("y"), textbook.name("H"), textbook.log) == (r"\hat{y}", "y", "K", r"\log")
    bishop = N.notation("bishop")
    assert (bishop.name("z"), bishop.name("o"), bishop.name("y"), bishop.name("H"), bishop.log) == ("a", "y", "t", "K", r"\ln")
    assert not N.is_default(textbook)


def test_unknown_preset():
    with pytest.raises(UsageError, match="no notation 'nope'; the presets are seed, textbook"):
        N.notation("nope")


@pytest.mark.parametrize(
    "text, latex",
    [
        ("p", "p"), ("K", "K"), ("alpha", r"\alpha"), (r"\alpha", r"\alpha"), ("α", r"\alpha"), ("Γ", r"\Gamma"),
        ("hat y", r"\hat{y}"), ("y-hat", r"\hat{y}"), (r"\hat{y}", r"\hat{y}"), (r"\hat y", r"\hat{y}"), ("ŷ", r"\hat{y}"),
        ("hat alpha", r"\hat{\alpha}"), (r"\hat{\alpha}", r"\hat{\alpha}"), (" t ", "t"), ("varepsilon", r"\varepsilon"),
    ],
)
def test_names(text, latex):
    assert N.parse_name(text) == latex


@pytest.mark.parametrize("text", ["pp", "1", "y_1", r"\frac", "hat", "", r"\hat{yy}", r"\mathbf{y}", "omicron", "y'", "ж", "hat hat y"])
def test_not_names(text):
    with pytest.raises(UsageError, match="is not a name: write a letter"):
        N.parse_name(text)


def test_plain_names():
    assert [N.plain(x) for x in ("p", r"\alpha", r"\Gamma", r"\hat{y}", r"\varepsilon")] == ["p", "α", "Γ", "ŷ", "ε"]


def test_overrides_by_role_or_letter():
    n = N.notation("seed", ["target=t", "o=p", "classes = C"])
    assert (n.name("y"), n.name("o"), n.name("H"), n.name("z")) == ("t", "p", "C", "z")
    assert N.notation("textbook", {"target": "t"}).name("o") == r"\hat{y}"
    assert N.notation("seed", {"output": "y", "target": "o"}).name("o") == "y"  # a swap is fine


@pytest.mark.parametrize(
    "symbols, message",
    [
        (["output=y"], "output and target would both be written y: give target another name too"),
        (["i=x"], "i and input would both be written x"),
        (["output=e"], "output cannot be written e: the documents use e for something else"),
        (["output=delta"], r"cannot be written \\delta"),
        (["k=hat k"], "an index is a plain letter, without a hat"),
        (["mass=m"], "no role 'mass'; the roles are logit, output, target"),
        (["target"], "write ROLE=NAME"),
        (["target=t", "y=s"], "--symbol target is given twice"),
        (["target=t t"], "is not a name"),
    ],
)
def test_bad_overrides(symbols, message):
    with pytest.raises(UsageError, match=message):
        N.notation("seed", symbols)


def test_a_preset_clash_is_reported():
    with pytest.raises(UsageError, match="output and target would both be written y"):
        N.notation("bishop", ["target=y"])


def test_log():
    assert N.notation(log="log").log == r"\log"
    assert N.notation(log=r"\ln").log == r"\ln"
    assert N.notation("textbook", log="ln").log == r"\ln"
    with pytest.raises(UsageError, match="--log takes ln or log, not 'log10'"):
        N.notation(log="log10")


def test_resolve():
    assert N.resolve(None) is DEFAULT
    assert N.resolve("textbook") == N.notation("textbook")
    assert N.resolve({"preset": "bishop", "log": "log", "k": "l"}) == N.notation("bishop", ["k=l"], "log")
    with pytest.raises(UsageError, match="the documents use c for something else"):
        N.resolve({"preset": "bishop", "k": "c"})
    n = N.notation("probability")
    assert N.resolve(n) == n
    with pytest.raises(UsageError, match="'oo' is not a name"):
        N.resolve(Notation(names={"o": "oo"}))
    with pytest.raises(UsageError, match="output and target would both be written y"):
        N.resolve(Notation(names={"o": "y"}))
    with pytest.raises(UsageError):
        N.resolve(3)


# --- the printer -----------------------------------------------------------------------------------
def test_printer_writes_the_notation():
    import sympy as sp

    from derive.latex import latex, printing
    from derive.symbols import H, i, k, o, y, z

    greek = N.notation("seed", {"i": "alpha", "output": "hat y", "target": "t", "classes": "K"}, "log")
    assert latex(sp.KroneckerDelta(i, k), notation=greek) == r"\delta_{\alpha k}"
    assert latex(z[i], notation=greek) == r"z_{\alpha}"
    assert latex(sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)), notation=greek) == r"\sum_{\alpha=1}^{K} t_{\alpha} \log \hat{y}_{\alpha}"
    assert latex(sp.Derivative(o[i], z[k]), notation=greek) == r"\frac{\partial \hat{y}_{\alpha}}{\partial z_k}"
    assert latex(o[k] ** 2, notation=greek) == r"\hat{y}_k^{2}"
    with printing(greek):
        assert latex(o[k] - y[k]) == r"\hat{y}_k - t_k"
    assert latex(o[k] - y[k]) == "o_k - y_k"  # outside the block: the seed notation


# --- the rewrite of the wording's math -------------------------------------------------------------
@pytest.mark.parametrize(
    "tex, notation, expected",
    [
        (r"\frac{\partial o_i}{\partial z_k}", {"output": "p"}, r"\frac{\partial p_i}{\partial z_k}"),
        (r"\text{all terms with } i \neq k", {"i": "a"}, r"\text{all terms with } a \neq k"),
        (r"\delta_{ik}", {"i": r"\alpha"}, r"\delta_{\alpha k}"),
        (r"z_i", {"i": r"\alpha"}, r"z_{\alpha}"),
        (r"e^{z_j}", {"logit": r"\hat{a}"}, r"e^{\hat{a}_j}"),
        (r"\sum_k e^{z_k}", {"k": "c"}, None),
        (r"o_io_k", {"output": r"\pi"}, r"\pi_i\pi_k"),
        (r"\ln o_i", {}, r"\log o_i"),
        (r"o = %(o)s", {"output": "p"}, r"p = %(o)s"),
        (r"\frac{\partial E}{\partial z_k} = o_k \sum_{i=1}^{H} y_i - y_k", {"error": "L", "classes": "K", "target": "t"},
         r"\frac{\partial L}{\partial z_k} = o_k \sum_{i=1}^{K} t_i - t_k"),
    ],
)
def test_math_rewrite(tex, notation, expected):
    if expected is None:
        with pytest.raises(UsageError):
            N.notation("seed", notation, "log")
        return
    assert N.math(tex, N.notation("seed", notation, "log")) == expected


def test_prose_rewrites_math_only():
    n = full(RENAMED)
    text = r"Every output \(o_i\) depends on every logit \(z_k\); the error is \(E\)."
    assert N.prose(text, n) == r"Every output \(p_r\) depends on every logit \(a_q\); the error is \(L\)."


def test_every_wording_string_in_a_renamed_notation():
    """No role's letter is left in any math of the wording, the commands are the same but for \\ln,
    renaming back gives the original, and the text outside the math is untouched."""
    n = full(RENAMED)
    back = {new: old for old, new in n.names.items()}
    strings = wording_math()
    assert len(strings) > 50
    for path, text, whole in strings:
        rewritten = N.math(text, n) if whole else N.prose(text, n)
        for seg in segments(rewritten, whole):
            assert not set(identifiers(seg)) & INTERNAL, (path, seg)
            assert r"\ln" not in commands(seg), (path, seg)
        assert [c.replace(r"\log", r"\ln") for c in commands(rewritten)] == commands(text), path
        assert rename_back(rewritten, back, whole) == text, path
        if not whole:
            assert N._INLINE.sub("", rewritten) == N._INLINE.sub("", text), path


def test_every_wording_string_in_the_seed_notation_spelled_out():
    n = identity()
    for path, text, whole in wording_math():
        assert (N.math(text, n) if whole else N.prose(text, n)) == text, path


def test_every_wording_string_with_commands_as_names():
    """Greek and hatted names of every role: what each math segment becomes still has every
    original command, and each role's letter is gone."""
    n = full(GREEK)
    for path, text, whole in wording_math():
        rewritten = N.math(text, n) if whole else N.prose(text, n)
        for seg in segments(rewritten, whole):
            assert not set(identifiers(seg)) & (INTERNAL - {"y"}), (path, seg)  # \hat{y} brings its y
            assert not re.search(r"[_^]\\hat", seg), (path, seg)
        originals = [c.replace(r"\ln", r"\log") for c in commands(text)]
        kept = commands(rewritten)
        for c in originals:
            assert c in kept, (path, c)


def test_letters_the_documents_use_are_roles_or_fixed():
    """A letter in the wording's math or in a printed formula is a role or one of N.FIXED, so no
    role can be renamed to a letter that already means something else. A new derivation that
    writes a new letter fails here until the letter is added to N.FIXED."""
    letters: set[str] = set()
    greek: set[str] = set()
    for _, text, whole in wording_math():
        for seg in segments(text, whole):
            letters |= set(identifiers(seg))
            greek |= {c for c in commands(seg) if c[1:] in N.GREEK}
    for name in ROLE_ENTRIES:
        for formula in markdown_math(unchecked(derive.derivation(name), "md")):
            letters |= set(identifiers(formula))
            greek |= {c for c in commands(formula) if c[1:] in N.GREEK}
    assert letters - INTERNAL - N.FIXED == set()
    # pi is written only where erf is (gelu), and a notation that names a role pi is refused there
    # (test_a_role_renamed_onto_a_name_of_its_own_is_refused); elsewhere pi may name a role.
    assert greek - N.FIXED - {r"\pi"} == set()


# --- one notation in every format --------------------------------------------------------------
def test_seed_is_byte_identical_when_spelled_out(three):
    for fmt in ("md", "tex", "json"):
        default = derive.render(three, fmt)
        assert derive.render(three, fmt, notation=identity()) == default
        assert derive.render(three, fmt, notation="seed") == default
        assert derive.render(three, fmt, notation={"log": "ln"}) == default
    assert '"notation"' not in derive.render(three, "json")


@pytest.mark.parametrize("name", derive.catalog())
def test_seed_spelled_out_changes_no_byte_of_any_document(name):
    """Every rewrite runs (the notation is not the default object) and must change nothing."""
    for classes in (None, 3):
        d = derive.derivation(name, classes=classes)
        for fmt in ("md", "tex", "json", "html"):
            assert unchecked(d, fmt, identity()) == unchecked(d, fmt), (name, classes, fmt)


def test_output_p_in_md_tex_and_json(three):
    notation = {"output": "p", "target": "t", "classes": "C"}
    md = derive.render(three, "md", notation=notation)
    tex = derive.render(three, "tex", notation=notation)
    data = json.loads(derive.render(three, "json", notation=notation))
    formulas = markdown_math(md)
    assert any("p_k - t_k" in f for f in formulas)
    for f in formulas:
        assert not {"o", "y", "H"} & set(identifiers(f)), f
    assert "p<sub>1</sub>" in md and "o<sub>1</sub>" not in md  # the picture of the network
    assert "p_k - t_k" in tex and r"\boxed{\frac{\partial E}{\partial z_k} = p_k - t_k}" in tex
    assert not re.search(r"(?<![\\A-Za-z])[oy]_[{ijk0-9]", tex)
    assert not re.search(r"(?<![\\A-Za-z])H(?![A-Za-z])", tex.split(r"\begin{document}")[1])
    # the tables: appendix and pitfall headers, the checks
    assert "probability $`p_i`$ | target $`t_i`$" in md and "| $`k`$ | $`p_k`$ | $`t_k`$ |" in md
    assert r"\(p_k\) & \(t_k\)" in tex and "exact modulo a 61-bit prime at random points, C = 1..6" in tex and "the gradient for C = 3" in md
    assert md.startswith("# The gradient of the cross-entropy error through a softmax layer, for C = 3\n")
    # JSON: every formula, the notation, and the example's keys as they were
    latex_strings = [data["subject"], data["general"], data["result"]]
    latex_strings += [x["latex"] for x in data["definitions"] + data["assumptions"] + data["steps"]]
    assert data["result"] == r"\frac{\partial E}{\partial z_k} = p_k - t_k"
    for s in latex_strings:
        if s:
            assert not {"o", "y", "H"} & set(identifiers(s)), s
    assert data["notation"]["output"] == "p" and data["notation"]["target"] == "t" and data["notation"]["log"] == r"\ln"
    assert set(data["notation"]) == {r.name for r in N.ROLES} | {"log"}
    assert set(data["example"]) >= {"logits", "probabilities", "target", "gradient", "loss"}
    assert all(c["what"] != "the gradient for H = 3" for c in data["checks"])


def test_log_or_ln(three):
    md_log = derive.render(three, "md", notation={"log": "log"})
    md_ln = derive.render(three, "md")
    assert r"\ln" not in "".join(markdown_math(md_log)) and r"y_i \log o_i" in md_log
    assert r"\log" not in "".join(markdown_math(md_ln)) and r"y_i \ln o_i" in md_ln
    assert "$`\\log`$: the natural logarithm" in md_log
    tex = derive.render(three, "tex", notation="textbook")
    assert r"\ln" not in tex and r"\log \hat{y}_i" in tex and "-sum y log ŷ" in derive.render(three, "md", notation="textbook")


def test_labels_and_jacobian_symbol_use_the_notation(three):
    md = derive.render(three, "md", notation=full(RENAMED))
    assert r"_{\frac{\partial p_r}{\partial a_q}}" in md  # an underbrace label
    assert r"\frac{\partial p}{\partial a} = \begin{pmatrix}" in md  # the Jacobian's symbol
    assert r"\text{all terms with } r \neq q" in md


def test_formulas_parse_in_katex_and_mathjax_with_command_names(three):
    formulas = []
    for name in ROLE_ENTRIES:
        for classes in (None, 3):
            formulas += markdown_formulas(unchecked(derive.derivation(name, classes=classes), "md", full(GREEK)))
    formulas += markdown_formulas(derive.render(three, "md", notation="textbook"))
    assert any(r"\hat{\varepsilon}" in tex for tex, _ in formulas)
    assert check_formulas(formulas) == []


def test_html_uses_the_notation(three):
    page = derive.render(three, "html", notation=full(GREEK))
    assert "for Γ = 3</title>" in page
    assert "<mi>o</mi>" not in page and "<mi>z</mi>" not in page


def test_pdf_compiles_with_command_names(three, tmp_path, pdflatex):
    pdf = derive.render(three, "pdf", notation=full(GREEK))
    assert pdf.startswith(b"%PDF")


@pytest.fixture
def no_checks(monkeypatch):
    """The overview checks every derivation; what it shows of the notation does not need that."""
    from derive import checking

    monkeypatch.setattr(checking, "check", lambda d: Report(d.name, ()))


def test_overview_uses_the_notation(no_checks):
    from derive import overview

    md = overview.render("md", notation="bishop")
    assert r"\frac{\partial E}{\partial a_k} = y_k - t_k" in md and "exactly $`y_k - t_k`$" in md
    data = json.loads(overview.render("json", notation="bishop"))
    assert data["notation"]["target"] == "t" and "notation" not in json.loads(overview.render("json"))


# --- the command line ---------------------------------------------------------------------------
def test_cli_notation_and_symbols(tmp_path):
    out = tmp_path / "ce.md"
    result = invoke("softmax-ce", "--classes", "3", "--notation", "textbook", "--symbol", "target=t", "--symbol", "classes=C", "--log", "ln", "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert r"\boxed{\frac{\partial L}{\partial z_k} = \hat{y}_k - t_k}" in text and r"t_i \ln \hat{y}_i" in text
    assert text.startswith("# The gradient of the cross-entropy error through a softmax layer, for C = 3\n")


def test_cli_overview_takes_a_notation(tmp_path, no_checks):
    out = tmp_path / "overview.json"
    result = invoke("overview", "--symbol", "output=p", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["notation"]["output"] == "p"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--symbol", "output=pp"], "error: 'pp' is not a name"),
        (["--symbol", "output=y"], "error: output and target would both be written y"),
        (["--notation", "nope"], "error: no notation 'nope'"),
        (["--log", "log10"], "error: --log takes ln or log"),
        (["--symbol", "speed=v"], "error: no role 'speed'"),
    ],
)
@pytest.mark.parametrize("command", ["softmax-ce", "overview"])
def test_cli_bad_notation_is_one_line_exit_2_nothing_written(tmp_path, args, message, command):
    out = tmp_path / "doc.md"
    result = invoke(command, *args, "-o", str(out))
    assert result.exit_code == 2
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith(message)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_help_names_every_preset_and_role():
    for command in ("softmax-ce", "overview"):
        text = " ".join(invoke(command, "--help").output.split())
        for preset in N.PRESETS:
            assert preset in text, (command, preset)
        for role in N.ROLES:
            assert role.name in text
        assert "--symbol ROLE=NAME" in text and "--log ln|log" in text


def test_a_role_renamed_onto_a_name_of_its_own_is_refused():
    d = derive.derivation("batch-norm")
    with pytest.raises(UsageError, match="which batch-norm uses for its own beta"):
        derive.render(d, "md", notation=full(GREEK))
    assert "t_" in derive.render(derive.derivation("focal"), "md", notation="bishop")
    with pytest.raises(UsageError, match="which gelu uses for its own pi"):
        derive.render(derive.derivation("gelu"), "md", notation={"output": r"\pi"})
