"""Rendering: one derivation model, four formats, all through Jinja2 templates.

:func:`document` turns a derivation and its verification report into plain data (LaTeX strings,
numbers, wording from ``wording.toml``); the templates lay that data out. The renderer never
differentiates or simplifies: everything it shows was computed by the engine.
"""

from __future__ import annotations

import json
import re
import tomllib
import traceback
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import jinja2
import mpmath
import sympy as sp

from derive.errors import DeriveError, UsageError
from derive.latex import latex
from derive.model import Derivation, Example, JacobianExample, Step
from derive.verify import Report

FORMATS = ("md", "tex", "json", "pdf")
TEMPLATE = {"md": "document.md.j2", "tex": "document.tex.j2", "json": "document.json.j2"}
WORDING = "wording.toml"

SHOW = 8
"""Vectors, sums and tables longer than this are elided in the middle."""
HEAD, TAIL = 3, 2
"""How many entries an elided vector keeps at each end."""


def templates_dir() -> Path:
    """The packaged templates: inside the installed package, or beside it in a checkout."""
    packaged = resources.files("derive") / "templates"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "templates"


def render(d: Derivation, format: str = "md", templates: Path | str | None = None) -> str | bytes:
    """Render ``d`` as md, tex or json text, or pdf bytes; the checks run first."""
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    report = d.check()
    env = environment(templates)
    if format == "pdf":
        from derive.pdf import build_pdf

        return build_pdf(_render_text(env, d, report, "tex"))
    return _render_text(env, d, report, format)


def _render_text(env: jinja2.Environment, d: Derivation, report: Report, fmt: str) -> str:
    return render_template(env, TEMPLATE[fmt], document(d, report, wording(env), fmt))


def render_template(env: jinja2.Environment, name: str, data: dict[str, Any]) -> str:
    """Render one template with ``doc``; a template error names the template and line."""
    try:
        return env.get_template(name).render(doc=data)
    except jinja2.TemplateSyntaxError as error:
        where = f"{error.name or name}, line {error.lineno}"
        raise DeriveError(f"template {where}: {error.message}") from None
    except jinja2.TemplateError as error:
        raise DeriveError(f"template {_failing_template(error) or name}: {error.message or error}") from None


def _failing_template(error: Exception) -> str | None:
    """The template file in which a rendering error happened (Jinja puts template frames in the
    traceback), so an error in an included template names that template."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.endswith(".j2")]
    return f"{Path(frames[-1].filename).name}, line {frames[-1].lineno}" if frames else None


# --- the environment -----------------------------------------------------------------------------
def environment(templates: Path | str | None = None) -> jinja2.Environment:
    """Delimiters that cannot clash with LaTeX: ``((* block *))``, ``((( variable )))``, ``((= comment =))``.

    A user's directory goes first, so a course can restyle the documents file by file.
    """
    search = [str(templates_dir())]
    if templates is not None:
        user = Path(templates)
        if not user.is_dir():
            raise UsageError(f"templates directory {str(user)!r} does not exist")
        search.insert(0, str(user))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        bytecode_cache=_bytecode_cache(),
        block_start_string="((*",
        block_end_string="*))",
        variable_start_string="(((",
        variable_end_string=")))",
        comment_start_string="((=",
        comment_end_string="=))",
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    return env


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates are kept beside the check cache (Jinja checks each template's source)."""
    from derive.cache import directory

    folder = directory()
    if folder is None:
        return None
    try:
        (folder / "templates").mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder / "templates"))


def wording(env: jinja2.Environment) -> dict[str, Any]:
    """The prose: rule titles and justifications, labels, section texts, and each derivation's
    own wording from ``derivations/NAME.toml`` (user files first)."""
    from derive.derivations import CATALOG

    words = _toml(env, WORDING)
    for name in CATALOG:
        _merge(words, _toml(env, f"derivations/{name}.toml"), f"derivations/{name}.toml")
    return words


def _toml(env: jinja2.Environment, name: str) -> dict[str, Any]:
    try:
        source, filename, _ = env.loader.get_source(env, name)
    except jinja2.TemplateNotFound:
        raise DeriveError(f"no {name} among the templates") from None
    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        raise DeriveError(f"{filename}: {error}") from None


def _merge(into: dict[str, Any], more: dict[str, Any], source: str, where: str = "") -> None:
    """Merge tables; a key set twice is a mistake in the wording, not an override."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, f"{where}{key}.")
        elif key in into:
            raise DeriveError(f"{source}: {where}{key} is already set in another wording file")
        else:
            into[key] = value


# --- filters -------------------------------------------------------------------------------------
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "#": r"\#",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "~": r"\~{}",
    "^": r"\^{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
# Letters that pdflatex sets with the default OT1 fonts of base TeX Live, and accents by name.
_TEX_LETTERS = {"ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "ø": r"\o{}", "Ø": r"\O{}", "œ": r"\oe{}",
                "Œ": r"\OE{}", "å": r"\aa{}", "Å": r"\AA{}", "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}"}
_TEX_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"', "\u0304": "=",
                "\u0306": "u", "\u0307": ".", "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|$~])")
_INLINE = re.compile(r"\\\((.+?)\\\)")


def tex_escape(text: str) -> str:
    """Escape prose for LaTeX (never math).

    ASCII specials are escaped; accented Latin letters become accent commands; Greek letters
    become math symbols; anything else base TeX Live cannot set with its default fonts is written
    as its code point, [U+68AF], rather than breaking the build.
    """
    return "".join(_tex_char(c) for c in str(text))


def _tex_char(c: str) -> str:
    if c.isascii():
        return _TEX_SPECIAL.get(c, c)
    if c in _TEX_LETTERS:
        return _TEX_LETTERS[c]
    base, *marks = unicodedata.normalize("NFD", c)
    if base.isascii() and base.isalpha() and marks and all(m in _TEX_ACCENTS for m in marks):
        out = base if base not in "ij" else "\\" + base
        for m in marks:
            out = f"\\{_TEX_ACCENTS[m]}{{{out}}}"
        return out
    name = unicodedata.name(c, "")
    if name.startswith("GREEK ") and " LETTER " in name and "WITH" not in name:
        letter = name.split(" LETTER ")[1].lower().replace("lamda", "lambda")
        if letter in _GREEK:
            command = letter if "SMALL" in name else letter.capitalize()
            return rf"\(\{command}\)" if command in _GREEK_COMMANDS else f"[U+{ord(c):04X}]"
    return f"[U+{ord(c):04X}]"


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"}
_GREEK_COMMANDS = _GREEK | {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def md_escape(text: str) -> str:
    """Escape prose for Markdown (never math)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def prose(text: str, fmt: str) -> str:
    r"""Our wording writes inline math as \( ... \); Markdown wants $`...`$ (GitHub's safe form)."""
    if fmt == "md":
        return _INLINE.sub(lambda m: f"$`{m.group(1)}`$", text)
    return text


FILTERS: dict[str, Callable[..., Any]] = {"tex_escape": tex_escape, "md_escape": md_escape, "prose": prose}


# --- numbers -------------------------------------------------------------------------------------
def number(x: sp.Expr, digits: int = 4) -> str:
    """A decimal for a reader: 0.2, -0.8, 1.6094, 5.076 \\times 10^{-435} (LaTeX)."""
    with mpmath.workdps(40):
        v = mpmath.mpf(sp.N(x, 40)) if not isinstance(x, mpmath.mpf) else x
        if v == 0:
            return "0"
        if abs(v) >= mpmath.mpf(10) ** -digits and abs(v) < 10**7:
            text = mpmath.nstr(v, digits + 1 + max(0, int(mpmath.floor(mpmath.log10(abs(v))))), min_fixed=-mpmath.inf, max_fixed=mpmath.inf)
            text = f"{float(mpmath.nstr(v, 30)):.{digits}f}".rstrip("0").rstrip(".")
            return "0" if text in ("-0", "") else text
        mantissa, exponent = mpmath.nstr(v, digits, min_fixed=1, max_fixed=0).split("e")
        return rf"{mantissa} \times 10^{{{int(exponent)}}}"


def exact_and_decimal(x: sp.Expr) -> str:
    """ln 5 ~ 1.6094 when the exact value is not itself a short decimal."""
    decimal = number(x)
    if isinstance(x, sp.Float) or x.is_Integer:
        return decimal
    if x.is_Rational and sp.Rational(decimal) == x:
        return decimal
    return rf"{latex(x)} \approx {decimal}"


def elide(values: Sequence[Any], gap: Any) -> list[Any]:
    """The first HEAD and last TAIL entries with ``gap`` between, when there are more than SHOW."""
    values = list(values)
    if len(values) <= SHOW:
        return values
    return values[:HEAD] + [gap] + values[-TAIL:]


# --- the document data ---------------------------------------------------------------------------
def document(d: Derivation, report: Report, words: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Everything a template needs, as strings and numbers."""
    subject = latex(d.subject)
    about = words["derivation"][d.name]
    return {
        "name": d.name,
        "format": fmt,
        "title": about["title"],
        "summary": prose(about["summary"], fmt),
        "setting": prose(about["setting"], fmt),
        "notation": [prose(n, fmt) for n in about["notation"]],
        "classes": d.classes,
        "subject": subject,
        "definitions": [
            {"key": x.key, "latex": f"{latex(x.symbol)} = {latex(x.value)}", "text": prose(words["definition"][x.key], fmt)}
            for x in d.definitions
        ],
        "assumptions": [
            {"key": a.key, "latex": latex(a.statement), "text": prose(words["assumption"][a.key], fmt)} for a in d.assumptions
        ],
        "steps": [_step(n, s, subject, words, fmt) for n, s in enumerate(d.steps, 1)],
        "general": latex(d.general.rhs) if d.general is not None else None,
        "result": f"{subject} = {latex(d.result.rhs)}",
        "result_rhs": latex(d.result.rhs),
        "pitfall": _pitfall(d, words, fmt) if d.pitfall is not None else None,
        "concrete": _concrete(d, about) if d.concrete is not None else None,
        "checks": [{"what": c.what, "method": c.method, "passed": c.passed} for c in report.checks],
        "check_rows": _check_rows(report),
        "checks_passed": sum(c.passed for c in report.checks),
        "words": words.get("section", {}),
    }


def _check_rows(report: Report) -> list[dict[str, Any]]:
    """One row per claim: a step's exact and numeric checks share a row."""
    rows: dict[str, dict[str, Any]] = {}
    for c in report.checks:
        row = rows.setdefault(c.what, {"what": c.what, "methods": [], "passed": True})
        row["methods"].append(c.method)
        row["passed"] = row["passed"] and c.passed
    return list(rows.values())


def _step(n: int, s: Step, subject: str, words: dict[str, Any], fmt: str) -> dict[str, Any]:
    rule = words["rule"][s.rule]
    labels = {l.path: words["label"][l.key] for l in s.labels}
    return {
        "number": n,
        "rule": s.rule,
        "title": rule["title"],
        "why": prose(rule["why"], fmt),
        "latex": f"{subject} = {latex(s.rhs, labels)}",
        "rhs": latex(s.rhs, labels),
        "identity": latex(s.identity) if s.identity is not None else None,
        "restates": s.lhs == s.rhs,
        "cases": [{"value": latex(c.value), "condition": latex(c.condition)} for c in s.cases],
        "assumptions": list(s.assumptions),
    }


def _pitfall(d: Derivation, words: dict[str, Any], fmt: str) -> dict[str, Any]:
    p = d.pitfall
    ex = p.example
    rows = []
    for m in range(len(ex.probabilities)):
        rows.append(
            {
                "index": m + 1,
                "probability": number(ex.probabilities[m]),
                "target": number(ex.target[m]),
                "shortcut": number(p.shortcut[m]),
                "gradient": number(ex.gradient[m]),
                "direct": number(p.direct[m]),
                "quotient": number(p.quotient[m]),
                "agree": p.shortcut[m] == ex.gradient[m],
            }
        )
    vector = lambda xs: "(" + ", ".join(number(x) for x in xs) + ")"
    values = {"o": vector(ex.probabilities), "y": vector(ex.target)}
    return {
        "claims": {
            c.key: {"latex": latex(c.equation), "lhs": latex(c.equation.lhs), "rhs": latex(c.equation.rhs), "holds": c.holds}
            for c in p.claims
        },
        "rows": rows,
        "text": {k: prose(v % values if "%(" in v else v, fmt) for k, v in words["pitfall"].items()},
    }


def _vector(xs: Sequence[str]) -> str:
    return r"\begin{pmatrix} " + r" \\ ".join(elide(xs, r"\vdots")) + r" \end{pmatrix}"


def _matrix(n: int, entry: Callable[[int, int], str]) -> str:
    """An n x n matrix, its middle rows and columns elided beyond SHOW."""
    kept = elide(range(n), None)

    def cell(r, col):
        if r is None and col is None:
            return r"\ddots"
        if r is None:
            return r"\vdots"
        if col is None:
            return r"\cdots"
        return entry(r, col)

    return r"\begin{pmatrix} " + r" \\ ".join(" & ".join(cell(r, col) for col in kept) for r in kept) + r" \end{pmatrix}"


def _concrete(d: Derivation, about: dict[str, Any]) -> dict[str, Any]:
    """The appendix: the Jacobian for every derivation, then what its kind of example shows."""
    c = d.concrete
    common = {
        "classes": c.classes,
        "jacobian": _matrix(c.classes, lambda r, col: latex(c.jacobian[r, col])),
        "jacobian_symbol": about["jacobian"],
        "elided": c.classes > SHOW,
        "given": c.example.given,
    }
    return common | _EXAMPLES[type(c.example)](d)


def _jacobian_example(d: Derivation) -> dict[str, Any]:
    ex = d.concrete.example
    return {
        "loss": None,
        "logits_vector": _vector([exact_and_decimal(v) for v in ex.logits]),
        "probabilities_vector": _vector([number(p) for p in ex.probabilities]),
        "example_jacobian": _matrix(d.concrete.classes, lambda r, col: number(ex.jacobian[r][col])),
        "json": {
            "logits": [float(v) for v in ex.logits],
            "jacobian": [[float(v) for v in row] for row in ex.jacobian],
        },
    }


def _loss_example(d: Derivation) -> dict[str, Any]:
    c = d.concrete
    ex = c.example
    n = c.classes
    from derive.concrete import normalised

    factors = [a for a in c.loss.args if not isinstance(a, sp.Add)] if isinstance(c.loss, sp.Mul) else []
    inner = next((a for a in c.loss.args if isinstance(a, sp.Add)), c.loss) if factors else c.loss
    terms = elide([latex(t) for t in inner.args] if isinstance(inner, sp.Add) else [latex(inner)], r"\cdots")
    front = "-" if factors == [sp.Integer(-1)] else latex(sp.Mul(*factors)) + " " if factors else ""
    loss = next(x for x in d.definitions if x.symbol == d.subject.expr)
    table = [
        {
            "index": m + 1,
            "logit": exact_and_decimal(ex.logits[m]),
            "probability": number(ex.probabilities[m]),
            "target": number(ex.target[m]),
            "gradient": number(ex.gradient[m]),
        }
        for m in range(n)
    ]
    return {
        "loss": f"{latex(loss.symbol)} = {front}\\left(" + " + ".join(terms) + "\\right)" if factors else f"{latex(loss.symbol)} = " + " + ".join(terms),
        "loss_sum": latex(loss.value.xreplace({d.setting.classes: sp.Integer(n), **dict(c.parameters)})),
        "gradient": _vector([latex(g) for g in c.gradient]),
        "probabilities_vector": _vector([number(p) for p in ex.probabilities]),
        "table": elide(table, None),
        "loss_value": exact_and_decimal(ex.loss),
        "normalised": normalised(ex.target),
        "target_sum": number(sum(ex.target)),
        "gradient_sum": number(sum(ex.gradient)),
        "json": {
            "logits": [float(v) for v in ex.logits],
            "probabilities": [float(v) for v in ex.probabilities],
            "target": [float(v) for v in ex.target],
            "loss": float(ex.loss),
            "gradient": [float(v) for v in ex.gradient],
        }
        | {key: [float(v) for v in value] if isinstance(value, tuple) else float(value) for key, value in ex.extra},
    }


_EXAMPLES: dict[type, Callable[[Derivation], dict[str, Any]]] = {Example: _loss_example, JacobianExample: _jacobian_example}
"""What the appendix shows for each kind of worked example."""


def as_json(doc: dict[str, Any]) -> str:
    """The JSON document: stable key order, two-space indent, one trailing newline."""
    out = {
        "name": doc["name"],
        "title": doc["title"],
        "classes": doc["classes"],
        "subject": doc["subject"],
        "definitions": [{"key": x["key"], "latex": x["latex"]} for x in doc["definitions"]],
        "assumptions": [{"key": a["key"], "latex": a["latex"]} for a in doc["assumptions"]],
        "steps": [
            {"number": s["number"], "rule": s["rule"], "title": s["title"], "latex": s["latex"], "assumptions": s["assumptions"]}
            for s in doc["steps"]
        ],
        "general": doc["general"],
        "result": doc["result"],
        "checks": [{"what": c["what"], "method": c["method"], "passed": c["passed"]} for c in doc["checks"]],
    }
    if doc["concrete"] is not None:
        out["example"] = doc["concrete"]["json"]
    return json.dumps(out, indent=2, ensure_ascii=False)


FILTERS["json_document"] = as_json
