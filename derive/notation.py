r"""How a document writes its symbols: presets, single overrides, and the wording's math.

Derivations compute with fixed internal names (z, o, y, H, E, the indices i, j, k, and x, D, W,
b for a dense layer); a :class:`~derive.latex.Notation` says how each is written, and which
logarithm (``\ln`` or ``\log``). The notation is applied only when a document is printed: the
LaTeX printer maps the names of the expressions, and :func:`math` rewrites the math that the
wording and the templates write with the internal letters.

A name is a single Latin letter, a Greek letter (``alpha``, ``\alpha`` or ``α``), either of them
with a hat (``hat y``, ``y-hat``, ``\hat{y}``, ``ŷ``). Every role gets a name of its own.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from derive.errors import UsageError
from derive.latex import DEFAULT, Notation


@dataclass(frozen=True)
class Role:
    name: str
    internal: str
    """The name the derivations compute with, and the seed notation's name."""
    meaning: str
    index: bool = False


ROLES: tuple[Role, ...] = (
    Role("logit", "z", "the logits, the input of the output layer"),
    Role("output", "o", "the outputs of the layer (probabilities)"),
    Role("target", "y", "the target"),
    Role("classes", "H", "the number of classes"),
    Role("error", "E", "the error (the loss)"),
    Role("i", "i", "a class index", index=True),
    Role("j", "j", "a class index", index=True),
    Role("k", "k", "a class index", index=True),
    Role("input", "x", "the inputs of a dense layer"),
    Role("inputs", "D", "the number of inputs"),
    Role("weight", "W", "the weights of a dense layer"),
    Role("bias", "b", "the bias of a dense layer"),
)
BY_ROLE: dict[str, Role] = {r.name: r for r in ROLES}
BY_LETTER: dict[str, Role] = {r.internal: r for r in ROLES}

FIXED: frozenset[str] = frozenset({"e", "c", "f", "m", "n", "u", "v", "T", "d", "N", r"\delta", r"\sigma", r"\varepsilon"})
r"""Letters the documents write that are no role and keep their meaning: Euler's number e; the
generic c, f, n, u and v of the rules (the power rule's u^n and u - c, an activation f, the
quotient u / v); the class index m of a worked step; the temperature T; the Kronecker delta; the
sigmoid; the label smoothing; a dense layer's input index d (beside m) and a training set's
example index n and size N. No
role may be written as one of them (tests/test_notation.py finds every letter the documents use)."""

LOGS: dict[str, str] = {"ln": r"\ln", "log": r"\log"}

PRESETS: dict[str, tuple[dict[str, str], str]] = {
    # The seed questions' own: logits z, outputs o, targets y, H classes, error E, ln.
    "seed": ({}, "ln"),
    # Deep-learning textbooks: the prediction y-hat against the label y, K classes, a loss L, log.
    "textbook": ({"output": r"\hat{y}", "classes": "K", "error": "L"}, "log"),
    # Bishop's Pattern Recognition and Machine Learning: activations a, outputs y, targets t, K classes.
    "bishop": ({"logit": "a", "output": "y", "target": "t", "classes": "K"}, "ln"),
    # Probabilities p against targets t, C classes, a loss L, log.
    "probability": ({"output": "p", "target": "t", "classes": "C", "error": "L"}, "log"),
}
"""Each preset: the roles it renames (the others keep their seed names), and its logarithm."""

GREEK: tuple[str, ...] = (
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
    "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega",
)
"""The Greek letters a name may be: those LaTeX writes with a command of their own."""

SYNTAX = "a letter (p), a Greek letter (alpha), either with a hat (hat y, y-hat, \\hat{y})"


# --- names -----------------------------------------------------------------------------------------
def parse_name(text: str, index: bool = False) -> str:
    r"""The LaTeX of a name as a user writes it: ``p`` -> ``p``, ``alpha`` -> ``\alpha``,
    ``hat y`` / ``y-hat`` / ``\hat{y}`` / ``ŷ`` -> ``\hat{y}``.

    Raises:
        UsageError: anything else (an index takes no hat).
    """
    raw = unicodedata.normalize("NFD", text.strip())
    hat = False
    if raw.endswith("\u0302") and len(raw) > 1:
        hat, raw = True, raw[:-1]
    else:
        m = re.fullmatch(r"\\hat\s*\{\s*(.+?)\s*\}|\\hat\s+(\S+)|hat\s*\(\s*(.+?)\s*\)|hat\s+(\S+)|(.+?)\s*-\s*hat", raw)
        if m:
            hat, raw = True, next(g for g in m.groups() if g)
    letter = _letter(raw)
    if letter is None:
        raise UsageError(f"{text.strip()!r} is not a name: write {SYNTAX}")
    if hat and index:
        raise UsageError(f"{text.strip()!r}: an index is a plain letter, without a hat")
    return rf"\hat{{{letter}}}" if hat else letter


def _letter(text: str) -> str | None:
    if re.fullmatch(r"[A-Za-z]", text):
        return text
    word = text[1:] if text.startswith("\\") else text
    if word in GREEK:
        return "\\" + word
    if len(text) == 1:
        name = unicodedata.name(text, "")
        if name.startswith("GREEK ") and " LETTER " in name:
            word = name.split(" LETTER ")[1].lower().replace("lamda", "lambda")
            word = word if "SMALL" in name else word.capitalize()
            if word in GREEK:
                return "\\" + word
    return None


def plain(latex_name: str) -> str:
    r"""A name as plain text, for titles and tables of words: ``\hat{y}`` -> ``ŷ``, ``\alpha`` -> ``α``."""
    hat = latex_name.startswith(r"\hat{")
    base = latex_name[5:-1] if hat else latex_name
    if base.startswith("\\"):
        word = base[1:].replace("var", "")
        kind = "CAPITAL" if word[0].isupper() else "SMALL"
        base = unicodedata.lookup(f"GREEK {kind} LETTER {word.upper().replace('LAMBDA', 'LAMDA')}")
    return unicodedata.normalize("NFC", base + "\u0302") if hat else base


def role(key: str) -> Role:
    """A role by its name (``output``) or its internal letter (``o``)."""
    found = BY_ROLE.get(key.strip()) or BY_LETTER.get(key.strip())
    if found is None:
        roles = ", ".join(r.name for r in ROLES)
        raise UsageError(f"no role {key.strip()!r}; the roles are {roles} (or their letters z, o, y, H, E, x, D, W, b)")
    return found


def parse_log(text: str) -> str:
    key = text.strip().lstrip("\\")
    if key not in LOGS:
        raise UsageError(f"--log takes ln or log, not {text.strip()!r}")
    return LOGS[key]


# --- notations -----------------------------------------------------------------------------------
def notation(preset: str | None = None, symbols: Mapping[str, str] | Iterable[str] | None = None, log: str | None = None) -> Notation:
    """A notation: a preset (default ``seed``), then single overrides, then the logarithm.

    ``symbols`` maps roles (or their letters) to names, or is a list of ``ROLE=NAME`` strings
    as ``--symbol`` takes them.

    Raises:
        UsageError: an unknown preset or role, a name that is not a name, two roles with one
            name, or a role written as a letter that keeps another meaning.
    """
    key = (preset or "seed").strip()
    if key not in PRESETS:
        raise UsageError(f"no notation {key!r}; the presets are {', '.join(PRESETS)}")
    renamed, preset_log = PRESETS[key]
    names = {r.name: r.internal for r in ROLES} | dict(renamed)
    given: dict[str, str] = {}
    for role_key, text in _pairs(symbols):
        r = role(role_key)
        if r.name in given:
            raise UsageError(f"--symbol {r.name} is given twice")
        given[r.name] = names[r.name] = parse_name(text, index=r.index)
    _distinct(names, given)
    return Notation(names={r.internal: names[r.name] for r in ROLES}, log=parse_log(log or preset_log))


def _pairs(symbols: Mapping[str, str] | Iterable[str] | None) -> list[tuple[str, str]]:
    if symbols is None:
        return []
    if isinstance(symbols, Mapping):
        return [(str(k), str(v)) for k, v in symbols.items()]
    out = []
    for item in symbols:
        if "=" not in item:
            raise UsageError(f"--symbol {item!r}: write ROLE=NAME, e.g. target=t or output=hat y")
        k, v = item.split("=", 1)
        out.append((k, v))
    return out


def _distinct(names: dict[str, str], given: dict[str, str]) -> None:
    by_name: dict[str, list[str]] = {}
    for r, n in names.items():
        by_name.setdefault(n, []).append(r)
    for n, roles in by_name.items():
        if n in FIXED:
            raise UsageError(f"{roles[0]} cannot be written {n}: the documents use {n} for something else")
        if len(roles) > 1:
            kept = [r for r in roles if r not in given]
            hint = f": give {kept[0]} another name too (--symbol {kept[0]}=NAME)" if kept else ""
            raise UsageError(f"{' and '.join(roles)} would both be written {n}{hint}")


def resolve(value: Notation | str | Mapping[str, str] | None) -> Notation:
    """What ``render(..., notation=...)`` takes: None (seed), a preset name, a Notation, or a dict
    of roles to names with optional ``preset`` and ``log`` keys. Each is checked as ``--symbol`` is.
    """
    if value is None or value == DEFAULT:
        return DEFAULT
    if isinstance(value, Notation):
        table = names(value)
        return notation("seed", {r: table[r] for r in BY_ROLE}, table["log"])
    if isinstance(value, str):
        return notation(value)
    if isinstance(value, Mapping):
        rest = {k: v for k, v in value.items() if k not in ("preset", "log")}
        return notation(value.get("preset"), rest, value.get("log"))
    raise UsageError(f"a notation is a preset name, a dict or a Notation, not {type(value).__name__}")


def is_default(n: Notation) -> bool:
    """Whether ``n`` writes every symbol as the seed notation does."""
    return n.log == DEFAULT.log and all(n.name(r.internal) == r.internal for r in ROLES)


def names(n: Notation) -> dict[str, str]:
    """Role -> LaTeX name, and ``log``: the ``notation`` of a JSON document, ``doc.names`` of a template."""
    return {r.name: n.name(r.internal) for r in ROLES} | {"log": n.log}


SEED: dict[str, str] = names(DEFAULT)


def from_names(table: Mapping[str, str]) -> Notation:
    """The inverse of :func:`names`."""
    return Notation(names={r.internal: table.get(r.name, r.internal) for r in ROLES}, log=table.get("log", DEFAULT.log))


def notate(tex: str, table: Mapping[str, str] | None) -> str:
    """The template filter: ``tex`` (math with the internal names) in the notation of ``doc.names``."""
    if not table or table == SEED:
        return tex
    return math(tex, from_names(table))


# --- rewriting the wording's math ----------------------------------------------------------------
_TEXT_COMMANDS = frozenset({"text", "textbf", "textit", "textrm", "mathrm", "operatorname", "mbox", "begin", "end"})
"""Commands whose braced argument is words or an environment name, never math to rename."""
_TOKEN = re.compile(r"%\([A-Za-z_]+\)[sd]|\\[A-Za-z]+|\\.|[A-Za-z]|.", re.S)
_INLINE = re.compile(r"(\\\()(.+?)(\\\))", re.S)


def math(tex: str, n: Notation) -> str:
    r"""LaTeX math written with the internal names, in notation ``n``.

    Only identifiers are renamed: single letters outside command names, outside the argument of
    ``\text`` (and the like) and outside ``%(key)s`` placeholders. ``\ln`` becomes ``n.log``. A
    name longer than one character gets braces after ``_`` or ``^`` and a space before a letter.
    """
    out: list[str] = []
    pos = 0
    while pos < len(tex):
        m = _TOKEN.match(tex, pos)
        token = m.group(0)
        pos = m.end()
        if token.startswith("\\") and token[1:].isalpha():
            out.append(n.log if token == r"\ln" else token)
            if token[1:] in _TEXT_COMMANDS:
                end = _group_end(tex, pos)
                out.append(tex[pos:end])
                pos = end
        elif len(token) == 1 and token.isalpha() and token in BY_LETTER:
            name = n.name(token)
            if name != token and len(name) > 1:
                if out and out[-1] in ("_", "^"):
                    name = "{" + name + "}"
                elif name[-1].isalpha() and pos < len(tex) and tex[pos].isalpha():
                    name += " "
            out.append(name)
        else:
            out.append(token)
    return "".join(out)


def _group_end(tex: str, pos: int) -> int:
    """The end of the braced group at ``pos`` (after spaces), or ``pos`` when there is none."""
    at = pos
    while at < len(tex) and tex[at] == " ":
        at += 1
    if at >= len(tex) or tex[at] != "{":
        return pos
    depth = 0
    while at < len(tex):
        c = tex[at]
        if c == "\\":
            at += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return len(tex)


def prose(text: str, n: Notation) -> str:
    r"""Wording with inline math ``\( ... \)``: the math in notation ``n``, the words as they are."""
    return _INLINE.sub(lambda m: m.group(1) + math(m.group(2), n) + m.group(3), text)


_WORD = re.compile(r"(?<![\w\\])(?:[A-Za-z]|ln)(?![\w])")


def words(text: str, n: Notation) -> str:
    """Plain text with symbols written as words (the checks: ``every i, k``, ``H = 1..6``,
    ``-sum y ln o``): each role's letter standing alone becomes the plain form of its name, and
    ``ln`` the notation's logarithm."""

    def word(m: re.Match[str]) -> str:
        w = m.group(0)
        if w == "ln":
            return n.log.lstrip("\\")
        return plain(n.name(w)) if w in BY_LETTER else w

    return _WORD.sub(word, text)


MATH_ONLY: tuple[tuple[str, ...], ...] = (("label", "*"), ("derivation", "*", "jacobian"))
"""Wording that is math as a whole (an underbrace label, a Jacobian's symbol), not prose."""


def wording(table: dict[str, Any], n: Notation, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """A copy of the wording (wording.toml and derivations/*.toml) in notation ``n``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        here = path + (key,)
        if isinstance(value, dict):
            out[key] = wording(value, n, here)
        elif isinstance(value, list):
            out[key] = [_text(v, n, here) for v in value]
        else:
            out[key] = _text(value, n, here)
    return out


def _text(value: Any, n: Notation, path: tuple[str, ...]) -> Any:
    if not isinstance(value, str):
        return value
    whole = any(len(p) == len(path) and all(a in ("*", b) for a, b in zip(p, path)) for p in MATH_ONLY)
    return math(value, n) if whole else prose(value, n)
