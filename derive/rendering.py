"""Rendering: one derivation model, four formats, all through Jinja2 templates.

:func:`document` turns a derivation and its verification report into plain data (LaTeX strings,
numbers, wording from ``wording.toml``); the templates lay that data out. The renderer never
differentiates or simplifies: everything it shows was computed by the engine.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
import json
import re
import traceback
import unicodedata
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jinja2
import mpmath
import sympy as sp

from derive.derivations.naming import option_text
from derive.directions import HEAD, SHOW, TAIL
from derive.errors import DeriveError, UsageError
from derive.files import templates_dir
from derive import notation as naming
from derive import checking
from derive.latex import DEFAULT, Notation, latex, printing
from derive.model import Derivation, Example, JacobianExample, LayerExample, Step
from derive.shown import named
from derive.symbols import ExcludedSum
from derive.verify import Report
from derive.worked import rational

FORMATS = ("md", "tex", "json", "pdf", "html", "py")
TEMPLATE = {"md": "document.md.j2", "tex": "document.tex.j2", "json": "document.json.j2", "html": "document.html.j2", "py": "document.py.j2"}
WORDING = "wording.toml"



def render(
    d: Derivation,
    format: str = "md",
    templates: Path | str | None = None,
    notation: Notation | str | dict[str, str] | None = None,
    markdown: str | None = None,
) -> str | bytes:
    """Render ``d`` as md, tex, json, html or py text, or pdf bytes; the checks run first.

    ``notation``: how the symbols are written (see :func:`derive.notation.resolve`).
    ``markdown``: the math syntax of md, ``"github"`` (the default) or ``"dollars"`` (see
    :mod:`derive.markdown`). The py format is a pytest file (see :mod:`derive.pytest_file`); a
    catalog entry built by a module of its own needs a concrete number of classes for it.
    """
    from derive import markdown as flavours

    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    syntax = flavours.check(markdown)
    if markdown is not None and format != "md":
        raise UsageError(f"the Markdown math syntax applies to the md format, not {format}")
    notation = naming.resolve(notation)
    _own_names(d, notation)
    if format == "py":
        from derive import pytest_file

        pytest_file.require_concrete(d)  # before the checks: a usage error costs nothing
        checking.check(d)
        return render_template(environment(templates), TEMPLATE["py"], pytest_file.document(d))
    report = checking.check(d)
    env = environment(templates)
    if format == "pdf":
        from derive.pdf import build_pdf

        return build_pdf(_render_text(env, d, report, "tex", notation))
    text = _render_text(env, d, report, format, notation)
    return flavours.math_syntax(text, syntax) if format == "md" else text


def _render_text(env: jinja2.Environment, d: Derivation, report: Report, fmt: str, notation: Notation = DEFAULT) -> str:
    from derive import proofread

    with _noting(_PROSE) as (texts,):
        text = render_template(env, TEMPLATE[fmt], document(d, report, wording(env), fmt, notation))
    # Every formula of the wording the document shows that states a fact is checked against the
    # derivation before the document is returned (and so before it is written).
    proofread.facts(proofread.WordingFacts(d, texts, notation))
    return text


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
        loader=Loader(search),
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


class TemplateWarning(UserWarning):
    """A user's template that looks wrong but still renders: Jinja's default delimiters."""


_DEFAULT_DELIMITERS = re.compile(
    r"""\{\{-?\s*[A-Za-z_"'][^{}\\\n]*?-?\}\}"""
    r"|\{%-?\s*(?:if|for|block|extends|include|import|from|set|macro|call|filter|with|raw|else|elif|end\w+)\b[^\n]*?%\}"
)
"""{{ doc.title }} and {% if ... %}: Jinja's own delimiters, which these templates do not use, so
the text would be copied into the document as it is. LaTeX's {{...}} and {% (a brace before a
comment) do not match: the expression starts with a letter or a quote and has no backslash."""


class Loader(jinja2.FileSystemLoader):
    """The search path, the user's folders before the packaged templates. A user's template that
    writes {{ ... }} or {% ... %} gets a TemplateWarning naming the file and line: the text is
    copied into the document unchanged, which is hardly what its author meant."""

    def __init__(self, searchpath: list[str]):
        super().__init__(searchpath)
        self.warned: set[str] = set()

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if filename not in self.warned and Path(filename).parent.resolve() != templates_dir().resolve() and template.endswith(".j2"):
            self.warned.add(filename)
            for match in _DEFAULT_DELIMITERS.finditer(source):
                line = source.count("\n", 0, match.start()) + 1
                warnings.warn(
                    f"{filename}, line {line}: {match.group(0)!r} is copied into the document as it is: "
                    "these templates write a value as ((( ... ))) and a block as ((* ... *))",
                    TemplateWarning,
                    stacklevel=2,
                )
        return source, filename, uptodate


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
    own wording from ``derivations/NAME.toml``.

    The packaged files come first; a file of the same name in a user's templates directory is
    merged over them key by key, so it need hold only the keys it rewords (see :func:`_override`).
    The merged result is kept in the cache under a hash of the files' text (like the compiled
    templates), so a run parses TOML only when a wording file changed.
    """
    from derive import cache
    from derive.derivations.entries import CATALOG

    # An entry that is a spec file has its words in it (title, describe); it has no file here.
    names = [WORDING, *(f"derivations/{name}.toml" for name, entry in CATALOG.items() if not entry.spec)]
    packaged = [_source(templates_dir(), name) for name in names]
    own_folders = [Path(folder) for folder in getattr(env.loader, "searchpath", [])[:-1]]
    own = [(name, str(folder / name), (folder / name).read_text(encoding="utf-8")) for folder in reversed(own_folders) for name in names if (folder / name).is_file()]
    key = hashlib.sha256(json.dumps([packaged, own]).encode()).hexdigest()
    return cache.cached(key, lambda: _merged(packaged, own), kind="wording")


def _source(folder: Path, name: str) -> tuple[str, str, str]:
    """A packaged wording file's name, where it is, and its text."""
    try:
        return name, str(folder / name), (folder / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeriveError(f"no {name} among the templates") from None


def _table(filename: str, source: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        raise DeriveError(f"{filename}: {error}") from None


def _merged(packaged: list[tuple[str, str, str]], own: list[tuple[str, str, str]] = ()) -> dict[str, Any]:
    words: dict[str, Any] = {}
    for name, filename, source in packaged:
        _merge(words, _table(filename, source), name)
    for name, filename, source in own:
        _override(words, _table(filename, source), filename, words)
    return words


def _merge(into: dict[str, Any], more: dict[str, Any], source: str, where: str = "") -> None:
    """Merge tables; a key set twice is a mistake in the wording, not an override."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, f"{where}{key}.")
        elif key in into:
            raise DeriveError(f"{source}: {where}{key} is already set in another wording file")
        else:
            into[key] = value


SHARED = ("rule", "section")
"""Tables a derivation may reword for itself under [derivation.NAME...]: any key the shared
table has (``[derivation.softmax-ce.rule.sum_rule] why = ...``)."""


def _override(into: dict[str, Any], more: dict[str, Any], filename: str, words: dict[str, Any], path: tuple[str, ...] = ()) -> None:
    """Merge a user's wording file over the packaged wording, key by key.

    A key must be one the packaged wording has (or, under [derivation.NAME...], one of a shared
    table it may reword): an unknown key is most likely a typo that would silently change nothing,
    so it is an error that names the key and the file. A table stays a table, a text a text.
    """
    for key, value in more.items():
        here = (*path, key)
        dotted = ".".join(here)
        if key not in into and not _rewords_shared(words, here):
            raise DeriveError(f"{filename}: unknown key {dotted!r}: the packaged wording has no such key (derive templates DIR writes them all)")
        if isinstance(value, dict):
            if not isinstance(into.setdefault(key, {}), dict):
                raise DeriveError(f"{filename}: {dotted} is a text in the packaged wording, not a table")
            _override(into[key], value, filename, words, here)
        elif isinstance(into.get(key), dict):
            raise DeriveError(f"{filename}: {dotted} is a table in the packaged wording, not a text")
        elif not (isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise DeriveError(f"{filename}: {dotted} must be a text (or a list of texts), not {value!r}")
        else:
            into[key] = value


def _rewords_shared(words: dict[str, Any], path: tuple[str, ...]) -> bool:
    """Whether ``path`` is derivation.NAME[...].rule.ID... (or .section...) for a key of the
    shared table: a derivation's own wording of a rule or section."""
    if len(path) < 3 or path[0] != "derivation" or path[1] not in words.get("derivation", {}):
        return False
    for m in range(2, len(path)):
        if path[m] in SHARED:
            node: Any = words.get(path[m], {})
            for key in path[m + 1:]:
                if not isinstance(node, dict) or key not in node:
                    break
                node = node[key]
            else:
                return True
    return False


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
    r"""Our wording writes inline math as \( ... \); Markdown wants $`...`$ (GitHub's safe form),
    HTML inline MathML with the rest of the text escaped."""
    noted = _PROSE.get()
    if noted is not None:
        noted.append(text)
    return _inline(text, fmt)


def _inline(text: str, fmt: str) -> str:
    """Text with \\( ... \\) math in ``fmt``'s own inline math (see :func:`prose`)."""
    if fmt == "md":
        return _INLINE.sub(lambda m: f"$`{m.group(1)}`$", text)
    if fmt == "html":
        import html

        from derive.mathml import mathml

        parts = _INLINE.split(text)  # text, math, text, math, ..., text
        return "".join(mathml(p) if n % 2 else html.escape(p, quote=False) for n, p in enumerate(parts))
    return text


@jinja2.pass_context
def _mathml_filter(context: Any, latex: str, block: bool = False) -> str:
    """The mathml filter. Taking the context keeps Jinja from running it on constant formulas when
    it compiles a template, which would keep old MathML in the cached compiled template."""
    from derive.mathml import mathml  # only HTML needs it (and its XML parser)

    return mathml(latex, block)


FILTERS: dict[str, Callable[..., Any]] = {"tex_escape": tex_escape, "md_escape": md_escape, "prose": prose, "mathml": _mathml_filter}


# --- numbers -------------------------------------------------------------------------------------
_NUMBERS: "ContextVar[list | None]" = ContextVar("numbers", default=None)
_PROSE: "ContextVar[list | None]" = ContextVar("prose", default=None)


@contextmanager
def _noting(*variables: ContextVar) -> Iterator[list]:
    """What the block writes into ``variables`` (the numbers of :func:`number`, the wording of
    :func:`prose`), one list each, for proofreading; inside a block that notes them already,
    the same lists."""
    noted = [v.get() if v.get() is not None else [] for v in variables]
    tokens = [v.set(n) for v, n in zip(variables, noted)]
    try:
        yield noted
    finally:
        for v, t in zip(variables, tokens):
            v.reset(t)


def number(x: sp.Expr, digits: int = 4) -> str:
    """A decimal for a reader: 0.2, -0.8, 1.6094, 5.076 \\times 10^{-435} (LaTeX)."""
    text = _number(x, digits)
    noted = _NUMBERS.get()
    if noted is not None:
        noted.append((text, x))
    return text


def _number(x: sp.Expr, digits: int) -> str:
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
    if x.is_Rational and _decimal_value(decimal) == x:
        return decimal
    return rf"{latex(x)} \approx {decimal}"


def _decimal_value(decimal: str) -> sp.Rational:
    """The exact value of a decimal that :func:`number` wrote: 0.25, or 1.0 \\times 10^{-5}."""
    mantissa, _, exponent = decimal.partition(r" \times 10^{")
    return sp.Rational(mantissa) * sp.Integer(10) ** int(exponent.rstrip("}") or 0)


def elide(values: Sequence[Any], gap: Any, show: Callable[[Any], Any] = lambda v: v) -> list[Any]:
    """The first HEAD and last TAIL entries with ``gap`` between, when there are more than SHOW;
    ``show`` formats only the entries kept (a vector of 100,000 classes shows five)."""
    if len(values) <= SHOW:
        return [show(v) for v in values]
    return [show(v) for v in values[:HEAD]] + [gap] + [show(v) for v in values[-TAIL:]]


# --- the document data ---------------------------------------------------------------------------
def document(d: Derivation, report: Report, words: dict[str, Any], fmt: str, notation: Notation = DEFAULT) -> dict[str, Any]:
    """Everything a template needs, as strings and numbers, with the symbols in ``notation``:
    every formula printed, the wording's math, the checks' names; ``names`` (role -> LaTeX, and
    ``log``) and ``names_text`` (role -> plain text) for the templates' own math and words."""
    from derive import proofread
    from derive.latex import recording

    if notation != DEFAULT:
        words = naming.wording(words, notation)
    with printing(notation), recording() as printed, _noting(_NUMBERS) as (numbers,):
        doc = _document(d, report, words, fmt)
        claims = {}
        for section, x in (("pitfall", d.pitfall), ("counterexample", d.counterexample)):
            for c in x.claims if x is not None else ():
                # Where a claim holds in a setting of its own: [pitfall] KEY_setting (regression_setting).
                claims[f"{section}: {c.key}"] = (latex(c.equation), words.get(section, {}).get(f"{c.key.split('_')[0]}_setting", ""))
    if notation != DEFAULT:
        for c in doc["checks"]:
            c["what"], c["method"] = naming.words(c["what"], notation), naming.words(c["method"], notation)
        for row in doc["check_rows"]:
            row["what"], row["methods"] = naming.words(row["what"], notation), [naming.words(m, notation) for m in row["methods"]]
    # Every formula and number the data holds is read back before a template sees it.
    proofread.rendered([(t, e, labels) for t, e, labels, n in printed if n == notation], numbers, notation)
    titles = {("", s["number"]): s["title"] for s in doc["steps"]} | {(p["name"], s["number"]): s["title"] for p in doc["parts"] for s in p["steps"]}
    for row in doc["check_rows"]:
        row["claim"] = _claim(row["what"], titles, claims, fmt)
    table = naming.names(notation)
    return doc | {"names": table, "names_text": {r: naming.plain(v) for r, v in table.items() if r != "log"}}


def _document(d: Derivation, report: Report, words: dict[str, Any], fmt: str) -> dict[str, Any]:
    subject = latex(d.subject)
    about = own_wording(d, words["derivation"][d.name]) if d.name in words["derivation"] else _user_wording(d, words["user"])
    # A sentence that states the result takes it from the derivation: %(subject)s = %(result)s.
    results = _Placeholders(subject=subject, result=latex(d.result.rhs), **({"general": latex(d.general.rhs)} if d.general is not None else {}))
    about = _filled(about, results)
    return {
        "name": d.name,
        "format": fmt,
        "title": about["title"],
        "summary": prose(about["summary"], fmt),
        "setting": prose(about["setting"], fmt),
        "notation": [prose(n, fmt) for n in about["notation"]],
        "classes": d.classes,
        "options": {key: float(value) for key, value in d.options},
        "subject": subject,
        "definitions": [
            {"key": x.key, "latex": f"{latex(x.symbol)} = {latex(x.value)}", "text": prose(words["definition"].get(x.key, words["definition"]["given"]), fmt)}
            for x in d.definitions
        ],
        "assumptions": [
            {"key": a.key, "latex": latex(a.statement), "text": prose(words["assumption"].get(a.key, words["assumption"]["given"]), fmt)} for a in d.assumptions
        ],
        # A catalog entry words its steps in its own file; a planned derivation of the user's
        # gets sentences filled with each step's terms (Step.notes).
        "steps": [_step(n, s if d.name not in words["derivation"] else replace(s, notes=()), subject, words, fmt, about.get("rule", {}), [t.rule for t in d.steps[: n - 1]].count(s.rule), named(d.steps, n - 1, d.setting)) for n, s in enumerate(d.steps, 1)],
        "general": latex(d.general.rhs) if d.general is not None else None,
        "result": f"{subject} = {latex(d.result.rhs)}",
        "result_rhs": latex(d.result.rhs),
        "pitfall": _pitfall(d, words, fmt) if d.pitfall is not None else None,
        "counterexample": _counterexample(d, about, fmt) if d.counterexample is not None else None,
        "concrete": _concrete(d, about) if d.concrete is not None else None,
        "worked": _worked(d, words["user"]["worked"], fmt) if d.worked is not None else None,
        "checks": [{"what": c.what, "method": c.method, "passed": c.passed} for c in report.checks],
        "check_rows": _check_rows(report),
        "checks_passed": sum(c.passed for c in report.checks),
        # A derivation may word a section its own way (its worked example), in [derivation.NAME.section].
        "words": _filled(_section_words(words.get("section", {}) | about.get("section", {}), d, about.get("section", {})), results),
        "figure": _figure(d, words, fmt),
        "parts": [_part(p, words, fmt, about, d.definitions) for p in d.parts],
    }


class _Placeholders(dict):
    """Values for %(NAME)s in the wording; a name it does not have stays as it was written."""

    def __missing__(self, key: str) -> str:
        return f"%({key})s"


def _filled(x: Any, values: dict[str, str]) -> Any:
    """The wording ``x`` (a text, a list or a table of them) with %(NAME)s filled from ``values``."""
    if isinstance(x, dict):
        return {key: _filled(v, values) for key, v in x.items()}
    if isinstance(x, list):
        return [_filled(v, values) for v in x]
    return x % values if isinstance(x, str) and "%(" in x else x


def _section_words(section: dict[str, Any], d: Derivation, own: dict[str, Any] | None = None) -> dict[str, Any]:
    """The section texts. The sentence on a worked example the user gave numbers for says which:
    ``example_given_logits`` when only the logits were given, ``example_given_target`` when only
    the target was, ``example_given`` when both were. A layer's example (``layer_example_given``)
    has a sentence per quantity, ``layer_NAME_given`` or ``layer_NAME_ours``.

    With one class, a text KEY_one takes the place of KEY (there is no class 2 to speak of), where
    it is worded beside KEY: a derivation that words KEY itself (``own``) and not KEY_one keeps
    its KEY. Where the example's probabilities are the classic 0.2, 0.6, 0.2, the sentences on
    our example end with ``classic_probabilities``."""
    from derive.concrete import classic

    own = own or {}
    example = getattr(d.concrete, "example", None)
    if d.concrete is not None and d.concrete.classes == 1:
        section = section | {
            key[: -len("_one")]: text for key, text in section.items() if key.endswith("_one") and (key in own or key[: -len("_one")] not in own)
        }
    elif example is not None and classic(example.probabilities) and "classic_probabilities" in section:
        section = section | {key: _before_colon(section[key], section["classic_probabilities"]) for key in ("example_ours", "jacobian_example_ours", "layer_example_ours") if key in section}
    given = d.concrete.example.given if d.concrete is not None else ()
    if isinstance(getattr(d.concrete, "example", None), LayerExample) and given:
        names = ("x", "W", "b", "target")
        return section | {"layer_example_given": " ".join(section[f"layer_{name}_{'given' if name in given else 'ours'}"] for name in names)}
    own = f"example_given_{'_'.join(given)}"
    return section | {"example_given": section[own]} if given and own in section else section


def _before_colon(text: str, sentence: str) -> str:
    """``text`` with ``sentence`` added at its end, or before its last sentence when that one ends
    in a colon and introduces what follows (The Jacobian at these logits:)."""
    head, dot, last = text.rstrip().rpartition(". ")
    if text.rstrip().endswith(":") and dot:
        return f"{head}. {sentence} {last}"
    return f"{text} {sentence}"


_STEP_CHECK = re.compile(r"^(?:(?P<part>[\w-]+): )?step (?P<number>\d+) \((?P<rule>\w+)\)(?P<rest>.*)$")
_CLAIM_CHECK = re.compile(r"^(?P<claim>(?:pitfall|counterexample): \w+) (?P<verdict>holds|is wrong)$")


def _claim(what: str, titles: dict[tuple[str, int], str], claims: dict[str, tuple[str, str]], fmt: str) -> str:
    """What a check verified, for the table of a document: a step by its number and its rule's
    title (not the rule's id), a claim of the pitfall by its formula (and the setting it holds
    in, when not the derivation's own), escaped for ``fmt``."""
    step = _STEP_CHECK.match(what)
    if step and (step["part"] or "", int(step["number"])) in titles:
        part = f"{step['part']}: " if step["part"] else ""
        return _escaped(f"{part}step {step['number']} ({titles[(step['part'] or '', int(step['number']))]}){step['rest']}", fmt)
    claim = _CLAIM_CHECK.match(what)
    if claim and claim["claim"] in claims:
        section, _ = claim["claim"].split(": ")
        formula, where = claims[claim["claim"]]
        return _escaped(f"{section}: ", fmt) + _math(formula, fmt) + _escaped(f" {claim['verdict']}", fmt) + (f" {prose(where, fmt)}" if where else "")
    return _escaped(what, fmt)


def _escaped(text: str, fmt: str) -> str:
    import html

    return {"md": md_escape, "tex": tex_escape, "html": lambda t: html.escape(t, quote=False)}.get(fmt, str)(text)


def _math(tex: str, fmt: str) -> str:
    """Inline math in ``fmt``, as the wording's \\( ... \\) becomes (see :func:`prose`): a printed
    formula, not wording (the claims of the table say whether they hold)."""
    return _inline(f"\\({tex}\\)", fmt)


SHORT_FORMULA = 60
"""The longest result (in LaTeX characters) a user derivation's summary writes in running text."""


def _user_wording(d: Derivation, user: dict[str, Any]) -> dict[str, Any]:
    """The wording of a derivation its user wrote: the [user] sentences filled with its own
    formulas, and a line in the notation list for every name it uses."""
    from derive.latex import plain

    setting = d.setting
    wrt = setting.wrt
    values = {
        "quantity": latex(d.subject.expr),
        "variable": latex(wrt),
        "subject": latex(d.subject),
        "result": latex(d.result.rhs),
        "general": latex(d.general.rhs) if d.general is not None else "",
        "quantity_text": _plain_name(d.subject.expr),
        "variable_text": _and([_plain_name(x.setting.wrt) for x in (d, *d.parts)]),
    }
    # A formula in running text does not break across lines: a long result is left to the boxed
    # display that follows, and the general form to the result's section.
    summary = user["summary"] % values if len(values["result"]) <= SHORT_FORMULA else user["summary_long"] % values
    roles = user["role"]
    defined = {x.symbol.base if isinstance(x.symbol, sp.Indexed) else x.symbol: x.symbol for x in d.definitions}
    own = dict(d.words)
    described = {key.split(" ", 1)[1]: text for key, text in own.items() if key.startswith("describe ")}
    lines = []
    names: dict[Any, sp.Basic] = {}
    labels = {b.label for x in d.definitions for b in (e.base for e in x.value.atoms(sp.Indexed))} | ({wrt.base.label} if isinstance(wrt, sp.Indexed) else set())
    for x in d.definitions:
        for e in sorted(x.value.atoms(sp.Indexed), key=sp.default_sort_key):
            names.setdefault(e.base, e)
        for e in sorted(x.value.free_symbols, key=sp.default_sort_key):
            if isinstance(e, sp.Symbol) and not e.is_integer and e not in labels and not isinstance(e, sp.Indexed):
                names.setdefault(e, e)
    names.pop(getattr(wrt, "base", wrt), None)
    lines.append(roles["variable"] % {"name": latex(wrt)})
    for head, symbol in defined.items():
        depends = head == d.subject.expr or setting.depends(symbol)
        key = "defined" if depends else "constant"
        lines.append(_role(roles, key, symbol, str(head), described, values))
    public = {key.split(" ", 1)[1]: name for key, name in own.items() if key.startswith("public ")}
    for head, e in sorted(names.items(), key=lambda kv: str(kv[0])):
        if head in defined:
            continue
        line = _role(roles, "leaf", e, str(head), described, values)
        if str(head) in public:  # the name its numbers go by: mask for m
            line = f"{line.rstrip('.')}. " + roles["public"] % {"public": public[str(head)]}
        lines.append(line)
    indices = sorted({s for x in d.definitions for s in x.symbol.free_symbols if s.is_integer} | set(getattr(wrt, "indices", ())), key=str)
    for ix in indices:
        lines.append(roles["index"] % {"name": latex(ix), "limit": latex(setting.limit(ix))})
    if any(s.rhs.has(sp.KroneckerDelta) or any(c for c in s.cases) for s in d.steps):
        lines.append(roles["delta"])
    section = {"general": user["general"] % values, "general_display": user["general_display"]} if d.general is not None else {}
    return {"title": own.get("title") or user["title"] % values, "summary": summary, "setting": user["setting"] % values, "notation": lines, "section": section}


def _role(roles: dict[str, str], key: str, e: sp.Basic, name: str, described: dict[str, str], values: dict[str, str]) -> str:
    if name in described:
        return roles["described"] % {"name": latex(e), "words": described[name]}
    return roles[key] % {"name": latex(e), **values}


def _and(names: list[str]) -> str:
    """a; a and b; a, b and c."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _plain_name(e: sp.Basic) -> str:
    """z_k, W_kd, E: a name as the language writes it."""
    if isinstance(e, sp.Indexed):
        return f"{e.base}_{''.join(str(i) for i in e.indices)}"
    return str(e)


def own_wording(d: Derivation, about: dict[str, Any]) -> dict[str, Any]:
    """The wording of a derivation built with options: over its own, the table of each option
    ([derivation.NAME.OPTION], named as on the command line: label-smoothing), then that of the
    combination ([derivation.NAME.OPTION1-OPTION2]), subtables (rule, section) merged key by key.
    In their text %(OPTION)s stands for the option's value (%(label_smoothing)s) and
    %(general)s for the general form of the result."""
    if not d.options:
        return about
    names = [key.replace("_", "-") for key, _ in d.options]
    values = _Placeholders({key: option_text(value) for key, value in d.options})
    if d.general is not None:
        values["general"] = latex(d.general.rhs)

    def fill(x: Any) -> Any:
        if isinstance(x, dict):
            return {key: fill(v) for key, v in x.items()}
        if isinstance(x, list):
            return [fill(v) for v in x]
        return x % values if isinstance(x, str) and "%(" in x else x

    def merge(under: Any, over: Any) -> Any:
        if isinstance(under, dict) and isinstance(over, dict):
            return under | {key: merge(under.get(key), v) for key, v in over.items()}
        return over

    own = about
    for layer in [n for n in names if n in about] + (["-".join(names)] if len(names) > 1 and "-".join(names) in about else []):
        own = merge(own, fill(about[layer]))
    return own


def _figure(d: Derivation, words: dict[str, Any], fmt: str) -> dict[str, str] | None:
    """The picture of the network (derive.figure): tex, mermaid and svg, with its caption, its
    symbols written as the document's formulas write them."""
    from derive.figure import figure

    names = {s: latex(sp.Symbol(s)) for s in ("x", "z", "o", "y", "E", "D", "H")}
    log = latex(sp.log(sp.Symbol("u"), evaluate=False)).split(" ")[0]
    drawn = figure(d.name, d.classes, words.get("figure", {}), escape=tex_escape, names=names, log=log)
    return drawn and drawn | {"caption": prose(drawn["caption"], fmt)}


def _check_rows(report: Report) -> list[dict[str, Any]]:
    """One row per claim: a step's exact and numeric checks share a row."""
    rows: dict[str, dict[str, Any]] = {}
    for c in report.checks:
        row = rows.setdefault(c.what, {"what": c.what, "methods": [], "passed": True})
        row["methods"].append(c.method)
        row["passed"] = row["passed"] and c.passed
    return list(rows.values())


def _summed(e: sp.Basic, path) -> sp.Basic:
    """The summation index of the sum a factor at ``path`` stands in front of (i of a_i-free
    factor times sum_i ...); i where there is none."""
    for n in path[:-1]:
        e = e.args[n]
    total = e.args[-1] if isinstance(e, sp.Mul) and e.args else None
    if isinstance(total, ExcludedSum):
        return total.index
    return total.limits[0][0] if isinstance(total, sp.Sum) else sp.Symbol("i")


def _own_names(d: Derivation, notation: Notation) -> None:
    """A notation renames the catalog's roles (z, o, y, ...); a derivation with names of its own
    (typed by hand, or a spec file: gamma, beta, mu) must not have a role renamed onto one of them,
    or one letter would mean two things."""
    renamed = {notation.name(k): k for k in notation.names if notation.name(k) != k}
    if not renamed:
        return
    from derive.latex import GREEK

    internal = {r.internal for r in naming.ROLES}
    own = set()
    for x in (d, *d.parts):
        for e in (x.subject, *(v for df in x.definitions for v in (df.symbol, df.value))):
            own |= {str(b.label) for b in e.atoms(sp.IndexedBase)} | {s.name for s in e.free_symbols if isinstance(s, sp.Symbol)}
            own |= {"pi"} if e.has(sp.pi, sp.erf) else set()  # the erf rule writes 2 / sqrt(pi)
    for name in sorted(own - internal):
        written = GREEK.get(name, name)
        if written in renamed:
            raise UsageError(f"the notation writes {renamed[written]} as {written}, which {d.name} uses for its own {name}: choose another name")


def _step(n: int, s: Step, subject: str, words: dict[str, Any], fmt: str, own: dict[str, Any] | None = None, use: int = 0, named: dict | None = None) -> dict[str, Any]:
    """One step; ``own`` is the derivation's [derivation.NAME.rule.ID] wording: what the rule does
    in this derivation, in place of the general sentence, key by key. A rule the derivation uses
    more than once may give a list of sentences, one per use in order (``use`` counts from 0).
    ``named`` gives what a label names (see ``shown.named``): its wording writes it as
    %(derivative)s (and %(condition)s)."""
    rule = words["rule"][s.rule] | (own or {}).get(s.rule, {})
    rule = {key: v[min(use, len(v) - 1)] if isinstance(v, list) else v for key, v in rule.items()}
    labels = {}
    for l in s.labels:
        derivative, condition = (named or {}).get(l.path, (None, None))
        values = _Placeholders({"derivative": latex(derivative)} if derivative is not None else {}, **({"condition": latex(condition)} if condition is not None else {}))
        if l.key == "independent":
            values["index"] = latex(_summed(s.rhs, l.path))
        labels[l.path] = _filled(words["label"][l.key], values)
        if derivative is not None:
            # A label in math (a course's own wording too) must name what it stands under.
            from derive import proofread
            from derive.latex import printing_notation

            problem = proofread.label(labels[l.path], derivative, condition, printing_notation())
            if problem is not None:
                raise DeriveError(f"step {n}: the label {labels[l.path]!r} {problem}")
    why = rule["why"]
    if s.notes and not (own or {}).get(s.rule, {}).get("why"):
        # A planned step's justification speaks of its own terms: the first sentence whose
        # placeholders the step fills (why_chain needs the inner function the chain rule brings,
        # why_linear also its constant derivative, why_delta the Kronecker delta of an entry of
        # the variable, each taken in the same step).
        notes = {key: latex(value) for key, value in s.notes}
        for key in ("why_example", "why_weighted", "why_delta", "why_linear", "why_chain", "why_step"):
            if key in rule and set(re.findall(r"%\((\w+)\)s", rule[key])) <= set(notes):
                why = rule[key] % notes
                break
    return {
        "number": n,
        "rule": s.rule,
        "title": rule["title"],
        "why": prose(why, fmt),
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


def _total(values: Sequence[sp.Expr]) -> sp.Expr:
    """The sum of an example's numbers; with 30-digit entries, a sum below their rounding
    (1e-25 of the largest) is 0, not the rounding error (softmax gradients sum to exactly 0)."""
    total = sum(values, sp.Integer(0))
    if all(v.is_Rational for v in values):
        return total
    return sp.Integer(0) if abs(total) <= sp.Float("1e-25") * max((abs(v) for v in values), default=0) else total


def _counterexample(d: Derivation, about: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A tempting formula shown wrong (``Derivation.counterexample``): its claims, and a table of
    numbers per comparison; the wording is the derivation's own [derivation.NAME.counterexample]."""
    c = d.counterexample
    words = about["counterexample"]
    vector = lambda xs: "(" + ", ".join(number(x) for x in xs) + ")"
    tables = []
    for comparison in c.comparisons:
        ex = comparison.example
        top = max(range(len(ex.target)), key=lambda m: ex.target[m])
        values = {
            "o": vector(ex.probabilities),
            "y": vector(ex.target),
            "class": top + 1,
            "gradient": number(ex.gradient[top]),
            "shortcut": number(comparison.shortcut[top]),
            "ratio": number(comparison.shortcut[top] / ex.gradient[top], 0) if ex.gradient[top] != 0 else "-",
        }
        rows = [
            {
                "index": m + 1,
                "probability": number(p),
                "target": number(t),
                "gradient": number(g),
                "shortcut": number(s),
                "sign": words["opposite_sign"] if g * s < 0 else "",
            }
            for m, (p, t, g, s) in enumerate(zip(ex.probabilities, ex.target, ex.gradient, comparison.shortcut))
        ]
        tables.append({"key": comparison.key, "text": prose(words[comparison.key] % values, fmt), "rows": rows})
    named = {x.key for x in c.comparisons}
    return {
        "claims": {x.key: {"latex": latex(x.equation), "lhs": latex(x.equation.lhs), "rhs": latex(x.equation.rhs), "holds": x.holds} for x in c.claims},
        "shortcut": latex(c.shortcut),
        "tables": tables,
        "text": {key: prose(v, fmt) for key, v in words.items() if key not in named},
        "json": {
            "shortcut": latex(c.shortcut),
            "examples": [
                {
                    "name": x.key,
                    "logits": [float(v) for v in x.example.logits],
                    "probabilities": [float(v) for v in x.example.probabilities],
                    "target": [float(v) for v in x.example.target],
                    "gradient": [float(v) for v in x.example.gradient],
                    "shortcut": [float(v) for v in x.shortcut],
                }
                for x in c.comparisons
            ],
        },
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


def _worked(d: Derivation, words: dict[str, str], fmt: str) -> dict[str, Any]:
    """A planned derivation's worked example: every number, its LaTeX and its JSON."""
    from derive.latex import plain

    w = d.worked

    def shown(value: Any) -> str:
        if isinstance(value, tuple) and value and isinstance(value[0], tuple):
            rows = elide(list(value), None)
            width = len(value[0])
            cols = elide(list(range(width)), None)
            cell = lambda row, c: r"\vdots" if row is None else r"\cdots" if c is None else number(rational(row[c]))
            return r"\begin{pmatrix} " + r" \\ ".join(" & ".join(cell(r, c) if not (r is None and c is None) else r"\ddots" for c in cols) for r in rows) + r" \end{pmatrix}"
        if isinstance(value, tuple):
            return r"\left(" + ", ".join(elide([number(rational(v)) for v in value], r"\dots")) + r"\right)"
        return number(rational(value))

    def data(value: Any) -> Any:
        if isinstance(value, tuple):
            return [data(v) for v in value]
        return float(rational(value))

    quantity = d.subject.expr
    wrt = d.setting.wrt
    whole = quantity if not getattr(quantity, "indices", ()) else sp.Symbol(str(quantity.base))
    # The gradient by each variable: the document's, then each part's (x, then gamma and beta).
    gradients = [(x.worked.gradient_of, f"{latex(sp.Derivative(whole, sp.Symbol(x.worked.gradient_of)))} = {shown(x.worked.gradient)}", data(x.worked.gradient)) for x in (d, *d.parts) if x.worked is not None]
    given = [{"name": str(b), "latex": f"{latex(sp.Symbol(str(b)))} = {shown(v)}", "user": str(b) in w.user} for b, v in w.given]
    sizes = ", ".join(f"{latex(s)} = {n}" for s, n in w.sizes)
    names = ", ".join(rf"\({latex(sp.Symbol(n))}\)" for n in w.user)
    public = {key.split(" ", 1)[1]: name for key, name in d.words if key.startswith("public ")}  # m -> mask
    values = {"quantity": latex(quantity), "names": names, "failed": ", ".join(w.failed)}
    text = words["given" if w.user else "ours" if d.assumptions else "ours_plain"] % values
    return {
        "title": words["title"],
        "text": prose(text, fmt),
        "defined_text": prose(words["defined"] % values, fmt),
        "gradient_text": prose((words["general"] if w.general else words["gradient"]) % values, fmt),
        "sizes": sizes,
        "given": given,
        "given_latex": r",\quad ".join(g["latex"] for g in given),
        "defined_latex": r",\quad ".join(f"{latex(sp.Symbol(name))} = {shown(v)}" for name, v in w.defined),
        "user": bool(w.user),
        "defined": [{"name": name, "latex": f"{latex(sp.Symbol(name))} = {shown(v)}"} for name, v in w.defined],
        "quantity": f"{latex(quantity if not getattr(quantity, 'indices', ()) else sp.Symbol(str(quantity.base)))} = {shown(w.quantity)}",
        "gradient": gradients[0][1],
        "gradients": [g[1] for g in gradients],
        "general": w.general,
        "failed": list(w.failed),
        "json": {
            "sizes": {str(s): n for s, n in w.sizes},
            "values": {public.get(str(b), str(b)): data(v) for b, v in w.given},
            "defined": {name: data(v) for name, v in w.defined},
            ("loss" if not getattr(quantity, "indices", ()) else str(quantity.base)): data(w.quantity),
            **({"gradient": gradients[0][2]} if len(gradients) == 1 else {"gradients": {public.get(name, name): g for name, _, g in gradients}}),
        },
    }


def _concrete(d: Derivation, about: dict[str, Any]) -> dict[str, Any]:
    """The appendix: the Jacobian for every derivation, then what its kind of example shows."""
    c = d.concrete
    common = {
        "classes": c.classes,
        "jacobian": _matrix(c.classes, lambda r, col: latex(c.jacobian[r, col])) if c.jacobian is not None else None,
        "jacobian_symbol": about["jacobian"],
        # Values the instance fixes (a temperature) go beside H in the heading.
        "parameters": "".join(f", {latex(s)} = {option_text(v)}" for s, v in c.parameters),
        # A derivation's own per-class numbers (a smoothed target) are columns of the table.
        "columns": [about.get("columns", {}).get(key, key) for key, v in getattr(c.example, "extra", ()) if isinstance(v, tuple)],
        "elided": c.classes > SHOW,
        "given": c.example.given,
    }
    return common | _EXAMPLES[type(c.example)](d)


def _jacobian_example(d: Derivation) -> dict[str, Any]:
    ex = d.concrete.example
    return {
        "loss": None,
        "logits_vector": _vector(elide(ex.logits, r"\vdots", exact_and_decimal)),
        "probabilities_vector": _vector(elide(ex.probabilities, r"\vdots", number)),
        "example_jacobian": _matrix(d.concrete.classes, lambda r, col: number(ex.jacobian[r][col])),
        # Beyond concrete.MATRIX_MOST classes the JSON holds the vectors that determine the
        # Jacobian (o_i (delta_ik - o_k), or delta_ik - o_k for log-softmax), not its H^2 entries.
        "json": {
            "logits": [float(v) for v in ex.logits],
            "jacobian": [[float(v) for v in row] for row in ex.jacobian],
        }
        if isinstance(ex.jacobian, tuple)
        else {"logits": [float(v) for v in ex.logits], "probabilities": [float(v) for v in ex.probabilities]},
    }


WIDE = 80
"""A written-out error wider than this many visible characters (about a line of the PDF) is set
on several lines of at most ROW."""
ROW = 64


def _visible(tex: str) -> int:
    """A rough width of a formula: its characters once sizing macros, braces and scripts' marks
    are dropped; an operator name counts its letters (\\ln two, \\log three), every other macro
    one character."""
    tex = re.sub(r"\\(left|right|[Bb]ig[lr]?)\b", "", tex)
    tex = re.sub(r"\\(ln|log|exp)\b", r"\1", tex)
    return len(re.sub(r"[{}_^ ]", "", re.sub(r"\\[A-Za-z]+", "x", tex)))


def _written_out(symbol: str, front: str | None, terms: list[str]) -> str:
    """E = front (t_1 + ... + t_H), or E = t_1 + ... without a factor in front; when it is wider
    than WIDE, the terms go on rows of at most ROW (the binary cross-entropy has two per class)."""
    one = f"{symbol} = {front}\\left(" + " + ".join(terms) + "\\right)" if front is not None else f"{symbol} = " + " + ".join(terms)
    if _visible(one) <= WIDE:
        return one
    rows: list[list[str]] = [[]]
    for t in terms:
        if rows[-1] and _visible(" + ".join(rows[-1] + [t])) > ROW:
            rows.append([])
        rows[-1].append(t)
    body = r" \\ \qquad {} + ".join(" + ".join(r) for r in rows)
    inner = f"{front}\\Bigl(" + body + r"\Bigr)" if front is not None else body
    return rf"\begin{{array}}{{l}} {symbol} = {inner} \end{{array}}"


def _loss_example(d: Derivation) -> dict[str, Any]:
    c = d.concrete
    ex = c.example
    n = c.classes
    from derive.concrete import normalised

    # A factor in front of the written-out sum (the minus of -(y_1 ln o_1 + ...)); one class has
    # no sum, and its single term is the whole loss.
    summed = c.loss.front is not None and len(c.loss.terms) > 1
    factors = list(sp.Mul.make_args(c.loss.front)) if summed else []
    whole = c.loss.expr if not summed else None
    terms = elide(c.loss.terms, r"\cdots", latex) if summed else elide(whole.args if isinstance(whole, sp.Add) else [whole], r"\cdots", latex)
    front = "-" if factors == [sp.Integer(-1)] else latex(sp.Mul(*factors)) + " " if factors else ""
    loss = next(x for x in d.definitions if x.symbol == d.subject.expr)
    table = elide(
        range(n),
        None,
        lambda m: {
            "index": m + 1,
            "logit": exact_and_decimal(ex.logits[m]),
            "probability": number(ex.probabilities[m]),
            "target": number(ex.target[m]),
            "extra": [number(v[m]) for _, v in ex.extra if isinstance(v, tuple)],
            "gradient": number(ex.gradient[m]),
        },
    )
    return {
        "loss": _written_out(latex(loss.symbol), front if factors else None, terms),
        "loss_sum": latex(loss.value.xreplace({d.setting.classes: sp.Integer(n), **dict(c.parameters)})),
        "gradient": _vector(elide(c.gradient, r"\vdots", latex)),
        "probabilities_vector": _vector(elide(ex.probabilities, r"\vdots", number)),
        "table": table,
        "loss_value": exact_and_decimal(ex.loss),
        # The note on an unnormalised target concerns derivations whose result assumes one.
        "normalised": d.general is None or normalised(ex.target),
        "target_sum": number(sp.Add(*ex.target)),
        "gradient_sum": number(ex.gradient_sum if ex.gradient_sum is not None else _total(ex.gradient)),
        "json": {
            "logits": [float(v) for v in ex.logits],
            "probabilities": [float(v) for v in ex.probabilities],
            "target": [float(v) for v in ex.target],
            "loss": float(ex.loss),
            "gradient": [float(v) for v in ex.gradient],
        }
        | {key: [float(v) for v in value] if isinstance(value, tuple) else float(value) for key, value in ex.extra},
    }


def _part(p: Derivation, words: dict[str, Any], fmt: str, about: dict[str, Any], shown: tuple = ()) -> dict[str, Any]:
    """A further result of the document (``Derivation.parts``): its own section, with its wording
    from [derivation.NAME.part.PART] (title, text, and rule sentences of its own under rule.ID)."""
    from derive.lang import parse_expression, parse_variable

    generic = words["user"]["special" if p.name.startswith("at ") else "part"]
    case = p.name[3:].split(" = ") if p.name.startswith("at ") else ("", "")
    values = {"variable": latex(p.setting.wrt), "variable_text": _plain_name(p.setting.wrt), "case": latex(sp.Eq(parse_variable(case[0]), parse_expression(case[1]), evaluate=False)) if case[0] else "", "case_text": p.name[3:]}
    own = about.get("part", {}).get(p.name) or {key: text % values for key, text in generic.items()}
    rules_ = {key: about.get("rule", {}).get(key, {}) | v for key, v in own.get("rule", {}).items()}
    subject = latex(p.subject)
    return {
        "name": p.name,
        "title": own["title"],
        "text": prose(own["text"], fmt),
        "subject": subject,
        "definitions": [
            {"key": x.key, "latex": f"{latex(x.symbol)} = {latex(x.value)}", "text": prose(words["definition"].get(x.key, words["definition"]["given"]), fmt)}
            for x in p.definitions
            if (x.symbol, x.key) not in {(s.symbol, s.key) for s in shown}  # the same, up to its bound letters
        ],
        # A part the catalog words (as the document itself) speaks with its sentences, not with
        # those a planned step's notes fill in.
        "steps": [_step(n, s if p.name not in about.get("part", {}) else replace(s, notes=()), subject, words, fmt, rules_, [t.rule for t in p.steps[: n - 1]].count(s.rule), named(p.steps, n - 1, p.setting)) for n, s in enumerate(p.steps, 1)],
        "result": f"{subject} = {latex(p.result.rhs)}",
        "after": prose(own["after"], fmt) if "after" in own else None,
    }


def _layer_example(d: Derivation) -> dict[str, Any]:
    """A dense layer before the loss (``LayerExample``): the layer and the gradient with respect
    to its parameters written out for H and D, and the worked example."""
    from derive.concrete import normalised
    from derive.symbols import E, i

    c = d.concrete
    ex = c.example
    n, inputs = c.classes, len(ex.x)
    W, b = d.setting.wrt.base, d.parts[0].setting.wrt.base if d.parts else None
    x, z, o, y = (sp.IndexedBase(name) for name in "xzoy")
    rows, cols = elide(range(n), None), elide(range(inputs), None)

    def matrix(entry: Callable[[int, int], str]) -> str:
        def cell(r, col):
            if r is None:
                return r"\ddots" if col is None else r"\vdots"
            return r"\cdots" if col is None else entry(r, col)

        return r"\begin{pmatrix} " + r" \\ ".join(" & ".join(cell(r, col) for col in cols) for r in rows) + r" \end{pmatrix}"

    column = lambda values, show: _vector(elide(values, r"\vdots", show))  # formats only what it shows
    by_w = lambda r, col: c.gradient[r * inputs + col]
    table = elide(
        range(n),
        None,
        lambda r: {
            "index": r + 1,
            "logit": exact_and_decimal(ex.logits[r]),
            "probability": number(ex.probabilities[r]),
            "target": number(ex.target[r]),
            "gradient": number(ex.gradient_b[r]),
        },
    )
    symbol = lambda name: latex(sp.Symbol(name))
    return {
        "loss": None,
        "layer": {
            "written": f"{column(range(n), lambda r: latex(z[r + 1]))} = {matrix(lambda r, col: latex(W[r + 1, col + 1]))} "
            f"{column(range(inputs), lambda col: latex(x[col + 1]))} + {column(range(n), lambda r: latex(b[r + 1]))}",
            "gradient_weights": f"{latex(sp.Derivative(E, sp.Symbol('W')))} = {matrix(lambda r, col: latex(by_w(r, col)))}",
            "gradient_bias": f"{latex(sp.Derivative(E, sp.Symbol('b')))} = {column(range(n * inputs, n * inputs + n), lambda m: latex(c.gradient[m]))}",
            "elided": n > SHOW or inputs > SHOW,
            "inputs": inputs,
            "parameters": f"{symbol('x')} = {column(ex.x, exact_and_decimal)}, \\qquad "
            f"{symbol('W')} = {matrix(lambda r, col: exact_and_decimal(ex.W[r][col]))}, \\qquad "
            f"{symbol('b')} = {column(ex.b, exact_and_decimal)}",
            "header": [latex(i), latex(z[i]), latex(o[i]), latex(y[i]), latex(sp.Derivative(E, b[i]))],
            "table": table,
            "loss": f"{latex(E)} = {latex(next(x for x in d.definitions if x.symbol == E).value.xreplace({d.setting.classes: sp.Integer(n)}))} = {exact_and_decimal(ex.loss)}",
            "example_weights": f"{latex(sp.Derivative(E, sp.Symbol('W')))} = {matrix(lambda r, col: number(ex.gradient_W[r][col]))}",
            "normalised": normalised(ex.target),
        },
        "json": {
            "x": [float(v) for v in ex.x],
            "W": [[float(v) for v in row] for row in ex.W],
            "b": [float(v) for v in ex.b],
            "logits": [float(v) for v in ex.logits],
            "probabilities": [float(v) for v in ex.probabilities],
            "target": [float(v) for v in ex.target],
            "loss": float(ex.loss),
            "gradient_W": [[float(v) for v in row] for row in ex.gradient_W],
            "gradient_b": [float(v) for v in ex.gradient_b],
        },
    }


_EXAMPLES: dict[type, Callable[[Derivation], dict[str, Any]]] = {Example: _loss_example, JacobianExample: _jacobian_example, LayerExample: _layer_example}
"""What the appendix shows for each kind of worked example."""


def as_json(doc: dict[str, Any]) -> str:
    """The JSON document: stable key order, two-space indent, one trailing newline."""
    out = {
        "name": doc["name"],
        "title": doc["title"],
        "classes": doc["classes"],
        **({"options": doc["options"]} if doc.get("options") else {}),
        # How the symbols are written, when not as in the seed notation: role -> LaTeX.
        **({"notation": doc["names"]} if doc.get("names", naming.SEED) != naming.SEED else {}),
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
    if doc.get("worked") is not None:
        out["example"] = doc["worked"]["json"]
    if doc.get("parts"):
        out["parts"] = [
            {
                "name": p["name"],
                "subject": p["subject"],
                "definitions": [{"key": x["key"], "latex": x["latex"]} for x in p["definitions"]],
                "steps": [{"number": s["number"], "rule": s["rule"], "title": s["title"], "latex": s["latex"], "assumptions": s["assumptions"]} for s in p["steps"]],
                "result": p["result"],
            }
            for p in doc["parts"]
        ]
    if doc.get("counterexample") is not None:
        out["counterexample"] = doc["counterexample"]["json"]
    return json.dumps(out, indent=2, ensure_ascii=False)


FILTERS["json_document"] = as_json

LONG_TEX = 120
"""A formula with more LaTeX than this may be wider than the line of a PDF page (see :func:`fit`)."""


def fit(tex: str) -> str:
    """Display math that fits the line of a PDF page: a long formula is set in a scratch box and
    scaled down to the line's width only where it is wider (plain TeX and graphicx, no macro of
    our own, so the formula still works where it is copied)."""
    if len(tex) <= LONG_TEX:
        return tex
    return f"\\sbox0{{$\\displaystyle {tex}$}}\\ifdim\\wd0>\\linewidth\\resizebox{{\\linewidth}}{{!}}{{\\usebox0}}\\else\\usebox0\\fi"


FILTERS["fit"] = fit
FILTERS["long"] = lambda tex: len(tex) > LONG_TEX


@jinja2.pass_context
def notate(context: jinja2.runtime.Context, tex: str) -> str:
    r"""A template's own math, written with the internal names, in the document's notation:
    ``((( "o_j" | notate )))``, ``((* filter notate *))\partial E / \partial z_i((* endfilter *))``.
    Only for math written in the template: the document's data is in the notation already."""
    doc = context.get("doc")
    return naming.notate(tex, doc.get("names") if isinstance(doc, dict) else None)


FILTERS["notate"] = notate
