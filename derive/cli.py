"""The command line: parse, call the library, write the file, report.

Every derivation in the catalog becomes a command of the same name. Building and rendering
(SymPy, Jinja2) are imported inside the command, so ``derive --help``, ``derive list`` and
``derive --version`` start quickly.
"""

from __future__ import annotations

import atexit
import gc
import inspect
from contextlib import AbstractContextManager, contextmanager, nullcontext
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, NoReturn, Optional, Sequence, get_type_hints

import typer
from typer.core import TyperGroup

from derive.version import __version__
from derive.derivations.entries import CATALOG
from derive.derivations.naming import file_name
from derive.errors import DeriveError, UsageError
from derive.files import check_writable, is_special, write_atomic


class Format(str, Enum):
    """An output format; its value is also the file extension."""

    md = "md"
    tex = "tex"
    pdf = "pdf"
    json = "json"
    html = "html"
    py = "py"


FORMAT_BY_EXTENSION: dict[str, Format] = {f".{fmt.value}": fmt for fmt in Format}
STDOUT = "-"
STDOUT_PATHS = frozenset({STDOUT, "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
"""Outputs that mean standard output: written through it as it is, never opened or replaced."""
INTERRUPTED_EXIT_CODE = 130
DEBUG_VARIABLE = "DERIVE_DEBUG"

# Typer ships its own copy of Click in recent versions and uses the click package in older ones;
# its BadParameter is a UsageError, itself a ClickException, whichever Click that is.
ClickUsageError: type[Exception] = typer.BadParameter.__mro__[1]
ClickException: type[Exception] = typer.BadParameter.__mro__[2]

EXAMPLE = """\
Examples:

\b
  derive {name}                        writes output/{name}.md (H symbolic)
  derive {name} --classes 3            writes output/{name}-3.md
  derive {name} --classes 3 --logits 2,1,0.1 -o doc.pdf
  derive {name} --format json -o -     prints JSON on stdout
"""


class OneLineErrorsGroup(TyperGroup):
    """A command group that reports every error as one ``error: ...`` line on stderr.

    Click's usage errors keep their exit code 2; the project's errors keep theirs; an
    interrupt exits with 130. No traceback is printed.
    """

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # type: ignore[override]
        """An unknown command names the commands it may have meant (``mse``: ``mse-softmax``)."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from derive.derivations.naming import did_you_mean, suggestions

            hint = did_you_mean(suggestions(name, self.list_commands(ctx)))
            raise UsageError(f"no such command {name!r}{hint} (see '{ctx.command_path} --help')")
        return super().resolve_command(ctx, args)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as error:
            _fail(_click_message(error), error.exit_code)  # type: ignore[attr-defined]
        except DeriveError as error:
            _fail(str(error), error.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            _fail("interrupted", INTERRUPTED_EXIT_CODE)
        except Exception as error:
            # A bug, not a user's mistake: still one line, with the way to see more.
            if os.environ.get(DEBUG_VARIABLE):
                raise
            _fail(f"internal error: {type(error).__name__}: {error} (set {DEBUG_VARIABLE}=1 for the traceback)", 1)
        code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="derive",
    cls=OneLineErrorsGroup,
    help="Gradient derivations of machine learning as verified, step-by-step documents.",
    epilog="Example: derive softmax-ce --classes 3 -o ce.pdf",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"derive {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Gradient derivations of machine learning as verified, step-by-step documents.

    Run 'derive list' for the derivations, 'derive NAME --help' for one of them.
    """
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


@app.command("list", epilog="Example:\n\n\b\n  derive list")
def list_derivations() -> None:
    """List the derivations, one per line: name and description."""
    width = max((len(name) for name in CATALOG), default=0)
    for name, entry in CATALOG.items():
        typer.echo(f"{name:<{width}}  {entry.description}")


@app.command(
    "templates",
    epilog="Examples:\n\n\b\n  derive templates course        writes the templates into course/\n"
    "  derive softmax-ce --classes 3 --templates course",
)
def templates_command(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write them: a new or empty directory.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Write into a directory that is not empty, replacing files of the same name.")] = False,
) -> None:
    """Write the packaged templates and wording into DIR, as a starting point for --templates DIR.

    Keep only the files you change: a template replaces the packaged one of the same name, and a
    wording file (wording.toml, derivations/NAME.toml) is merged over the packaged one key by key.
    """
    from derive.files import write_templates

    write_templates(directory, force=force)
    typer.echo(str(directory))


QUIET = typer.Option("--quiet", "-q", help="No progress on stderr (it is shown only on a terminal, for work that takes a while).")
NOTATION = typer.Option(
    "--notation",
    metavar="NAME",
    help="How the symbols are written: seed (z, o, y, H, E, ln; the default), textbook (outputs y-hat, classes K, loss L, log), "
    "bishop (activations a, outputs y, targets t, classes K), probability (outputs p, targets t, classes C, loss L, log).",
    show_default=False,
)
SYMBOL = typer.Option(
    "--symbol",
    metavar="ROLE=NAME",
    help="Write one symbol your way, e.g. target=t, classes=C, output='hat y'; repeatable. Roles: logit, output, target, classes, "
    "error, i, j, k, input, inputs, weight, bias (or their letters z, o, y, H, E, x, D, W, b). A name is a letter, a Greek "
    "letter (alpha) or either with a hat (hat y, y-hat, \\hat{y}).",
    show_default=False,
)
FORMAT = typer.Option("--format", "-f", help="Output format (default: from the -o extension, else md).", case_sensitive=False, show_default=False)
TEMPLATES = typer.Option(
    metavar="DIR", help="A directory of templates that take precedence over the packaged ones.", exists=True, file_okay=False, dir_okay=True
)
LOG = typer.Option("--log", metavar="ln|log", help="Write the natural logarithm as ln or log (default: the notation's).", show_default=False)
MARKDOWN = typer.Option(
    "--markdown",
    metavar="github|dollars",
    help="Math syntax of Markdown: github (```math fences and $`...`$; the default) or dollars ($$ ... $$ and $...$, "
    "for Jupyter, MkDocs, MyST, pandoc and Quarto).",
    show_default=False,
)


def _markdown(syntax: str | None) -> None:
    """Check --markdown before any work (the library checks it again)."""
    if syntax is not None:
        from derive.markdown import check

        check(syntax)


def _notation(preset: str | None, symbols: list[str] | None, log: str | None) -> Any:
    """The notation that --notation, --symbol and --log ask for (None: the default), checked before any work."""
    if preset is None and not symbols and log is None:
        return None
    from derive.notation import notation

    return notation(preset, symbols or [], log)


@contextmanager
def _progress(quiet: bool) -> Iterator[None]:
    """Show progress on stderr while the block runs, if stderr is a terminal and not ``quiet``."""
    from derive import progress

    if quiet or not sys.stderr.isatty():
        yield
        return
    terminal = progress.Terminal(sys.stderr)
    previous = progress.install(terminal)
    try:
        yield
    finally:
        progress.install(previous)
        terminal.close()


@app.command("overview", epilog="Examples:\n\n\b\n  derive overview                 writes output/overview.md\n  derive overview -o overview.pdf")
def overview_command(
    format: Annotated[Optional[Format], FORMAT] = None,
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", metavar="PATH", help="Where to write; '-' for stdout (default: output/overview.EXT).", show_default=False),
    ] = None,
    templates: Annotated[Optional[Path], TEMPLATES] = None,
    notation: Annotated[Optional[str], NOTATION] = None,
    symbol: Annotated[Optional[list[str]], SYMBOL] = None,
    log: Annotated[Optional[str], LOG] = None,
    markdown: Annotated[Optional[str], MARKDOWN] = None,
    quiet: Annotated[bool, QUIET] = False,
) -> None:
    """A table of every activation and loss pair: its gradient, whether it is output minus target, and why.

    Written to a file, it comes with the documents it links to, beside it in the same format.
    """
    written = _notation(notation, symbol, log)
    _markdown(markdown)
    fmt = _choose_format(format, output)
    path = _target(fmt, output, Path("output") / f"overview.{fmt.value}")
    with _early_pdf(fmt, templates):
        from derive import overview, progress

        with _progress(quiet):
            document = overview.render(fmt.value, templates=templates, notation=written, markdown=markdown)
            # Its links name these files: without them every link of a fresh folder is dead.
            # Standard output, a device or a FIFO has no folder to put them in.
            linked = []
            if path is not None and not is_special(path):
                for name, content in overview.linked(fmt.value, templates=templates, notation=written, markdown=markdown):
                    linked.append((path.parent / name, content))
                    progress.update("the documents it links to", len(linked), len(overview.entries()))
    _deliver(document, path)
    for where, content in linked:
        _deliver(content, where)


GRAD_EXAMPLES = """\
Examples:

\b
  derive grad 'E = -sum_i y_i*ln(o_i)' 'o_i = exp(z_i)/sum_j exp(z_j)' --wrt z_k --assume 'sum_i y_i = 1'
  derive grad 'E = 1/2*sum_i (o_i - y_i)^2' 'o_i = tanh(z_i)' --wrt z_k --classes 3 --let z=2,1,0.1
  derive grad 'E = -\\sum_{i=1}^{H} y_i \\ln o_i' 'o_i = \\frac{e^{z_i}}{\\sum_{j=1}^{H} e^{z_j}}' --wrt z_k
  derive grad --spec focal.toml -o focal.pdf
"""


@app.command("grad", epilog=GRAD_EXAMPLES)
def grad_command(
    definitions: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="DEFINITION...", help="NAME = EXPRESSION, plain text or LaTeX; the first is the quantity differentiated.", show_default=False),
    ] = None,
    wrt: Annotated[Optional[list[str]], typer.Option("--wrt", metavar="VARIABLE", help="The variable to differentiate by: z_k, W_kd, gamma. Repeatable: each further one gets a section of its own.", show_default=False)] = None,
    assume: Annotated[Optional[list[str]], typer.Option("--assume", metavar="EQUATION", help="An assumption used last, after the general form: 'sum_i y_i = 1'. Repeatable.", show_default=False)] = None,
    let: Annotated[Optional[list[str]], typer.Option("--let", metavar="NAME=VALUES", help="Numbers of the worked example: z=2,1,0.1, gamma=2, W=1,2;3,4 (rows by ;). Repeatable.", show_default=False)] = None,
    size: Annotated[Optional[list[str]], typer.Option("--size", metavar="NAME=VALUE", help="A size of the worked example beside H: N=2, D=4. Repeatable.", show_default=False)] = None,
    range_: Annotated[Optional[list[str]], typer.Option("--range", metavar="INDEX=1..LIMIT", help="An index's range, overriding the conventions: n=1..B. Repeatable.", show_default=False)] = None,
    classes: Annotated[Optional[int], typer.Option("--classes", "-n", metavar="N", parser=lambda v: _parse_classes(v), help="H for a worked example (default: symbolic H).", show_default=False)] = None,
    reduction: Annotated[Optional[str], typer.Option("--reduction", metavar="sum|mean", help="The first definition is a loss of one example: derive its sum or mean over a batch of N (every indexed quantity per example; a term with none, a penalty on shared weights, added once).", show_default=False)] = None,
    shared: Annotated[Optional[list[str]], typer.Option("--shared", metavar="NAMES", help="With --reduction: the given quantities every example of the batch shares, a layer's weights: W,b. Repeatable.", show_default=False)] = None,
    upstream: Annotated[Optional[str], typer.Option("--upstream", metavar="Y=G", help="The first definition is a layer with output Y inside a network, given the upstream gradient G = dL/dY: differentiate L = sum G Y.", show_default=False)] = None,
    spec: Annotated[Optional[Path], typer.Option("--spec", metavar="FILE", help="Read the definitions and options from a TOML file.", show_default=False)] = None,
    format: Annotated[Optional[Format], FORMAT] = None,
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", metavar="PATH", help="Where to write; '-' for stdout (default: output/grad-QUANTITY-VARIABLE[-N].EXT).", show_default=False),
    ] = None,
    templates: Annotated[Optional[Path], TEMPLATES] = None,
    markdown: Annotated[Optional[str], MARKDOWN] = None,
    quiet: Annotated[bool, QUIET] = False,
) -> None:
    """Derive the gradient of your own definitions, written in index notation, step by step.

    Indices i, j, k, l run over 1..H, n over 1..N, m over 1..M, d over 1..D. Functions: exp (e^),
    ln and log (natural), sqrt, powers, sigmoid (\\sigma), tanh, softplus, softmax(z)_i. What no
    definition defines is a given quantity. See the README, "Your own derivation".
    """
    from derive import spec as specs

    _markdown(markdown)
    if spec is not None:
        if definitions or wrt or assume or range_ or upstream or reduction or shared:
            raise UsageError("--spec gives the definitions, --wrt, --assume, --range and --upstream itself; give them in the file or on the command line, not both")
        given = specs.read(spec)
        extra = specs.from_arguments(["-"], "-", lets=let or [], sizes=size or [], classes=classes)
        given = specs.with_example(given, extra)
    else:
        given = specs.from_arguments(definitions or [], wrt or None, assume or [], range_ or [], let or [], size or [], classes, upstream, reduction, shared or [])
    fmt = _choose_format(format, output)
    stem = specs.file_stem(given)
    path = _target(fmt, output, Path("output") / f"{stem.replace('.', '_') if fmt is Format.py else stem}.{fmt.value}")
    with _early_pdf(fmt, templates):
        import derive
        from derive import progress

        with _progress(quiet):
            progress.update("planning the steps")
            built = derive.grad(given)
            document = derive.render(built, fmt.value, templates=templates, markdown=markdown)
    _deliver(document, path)


def _parse_classes(value: str) -> int:
    """Parse ``--classes``: a whole number, at least 1; the library checks the upper limit.

    Click's own messages for ``min=1`` differ between Typer releases ("'abc' is not a valid int
    range."); this one says what is wanted.
    """
    try:
        classes = int(value.strip())
    except ValueError:
        raise typer.BadParameter(f"the number of classes must be a whole number, not {value!r}") from None
    if classes < 1:
        raise typer.BadParameter(f"the number of classes must be at least 1, not {classes}")
    return classes


def _derivation_command(name: str) -> Callable[..., None]:
    """Build the command that writes the derivation ``name``."""

    def command(
        classes: Annotated[
            Optional[int],
            typer.Option(
                "--classes",
                "-n",
                metavar="N",
                parser=_parse_classes,
                help="Number of classes H (default: symbolic H).",
                show_default=False,
            ),
        ] = None,
        format: Annotated[Optional[Format], FORMAT] = None,
        output: Annotated[
            Optional[str],
            typer.Option(
                "--output",
                "-o",
                metavar="PATH",
                help="Where to write; '-' for stdout (default: output/NAME[-N][-OPTIONVALUE...].EXT).",
                show_default=False,
            ),
        ] = None,
        logits: Annotated[
            Optional[str],
            typer.Option(metavar="A,B,...", help="Logits of a worked example, comma-separated (needs --classes)."),
        ] = None,
        target: Annotated[
            Optional[str],
            typer.Option(metavar="T1,T2,...", help="Target of the worked example, comma-separated (needs --classes)."),
        ] = None,
        templates: Annotated[Optional[Path], TEMPLATES] = None,
        notation: Annotated[Optional[str], NOTATION] = None,
        symbol: Annotated[Optional[list[str]], SYMBOL] = None,
        log: Annotated[Optional[str], LOG] = None,
        markdown: Annotated[Optional[str], MARKDOWN] = None,
        quiet: Annotated[bool, QUIET] = False,
        **options: Any,
    ) -> None:
        try:
            written = _notation(notation, symbol, log)
            _markdown(markdown)
            with _progress(quiet):
                _write_derivation(name, classes, format, output, logits, target, templates, options, written, markdown)
        except DeriveError as error:
            _fail(str(error), error.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", INTERRUPTED_EXIT_CODE)

    return _with_options(command, name, CATALOG[name].options)


OPTIONS: dict[str, Any] = {
    "temperature": typer.Option(metavar="T", help="Softmax temperature T > 0: o = softmax(z / T) (default: none, T = 1)."),
    "label_smoothing": typer.Option(metavar="EPS", help="Label smoothing 0 <= EPS < 1: the target becomes (1 - EPS) y + EPS / H."),
    "inputs": typer.Option(metavar="D", help="Number of inputs D of the layer (default: symbolic D)."),
    "let": typer.Option(
        metavar="NAME=VALUES",
        help="Numbers of the worked example, repeatable, by the names of the document's definitions: x=1,2 (a vector), "
        "W=1,2;3,4;5,6 (a matrix, rows by ';'), gamma=2 (a number). Given quantities without numbers get distinct defaults.",
    ),
    "size": typer.Option(metavar="NAME=VALUE", help="A size of the worked example beside the classes, repeatable: N=4, D=3."),
    "reduction": typer.Option(metavar="sum|mean", help="The loss of a batch of N examples, summed or averaged (frameworks default to mean): the gradient by z_nk gains 1/N for mean."),
    "gamma": typer.Option(metavar="GAMMA", help="The focusing parameter of the worked example (default 2); the steps keep gamma a symbol."),
    "weight_decay": typer.Option(metavar="LAMBDA", help="Weight decay LAMBDA >= 0: E gains LAMBDA/2 times the sum of the squared weights (not the biases), the gradient by a weight LAMBDA times that weight; the steps keep lambda a symbol."),
    "approximate": typer.Option(metavar="FORM", help="none (the exact form, the default) or tanh (the tanh approximation, as approximate='tanh' in PyTorch)."),
}
OPTION_TYPES: dict[str, Any] = {"let": Optional[list[str]], "size": Optional[list[str]]}
"""An option's type when it is not one string (a repeatable option is a list)."""
"""A derivation's own options (see ``Entry.options``); the library parses and checks the values."""


_HINTS: dict[Any, dict[str, Any]] = {}


def _with_options(command: Callable[..., None], name: str, options: tuple[str, ...]) -> Callable[..., None]:
    """Give ``command`` a signature with the standard parameters and the derivation's own options,
    so that each command's ``--help`` shows only what it takes."""
    # Every command has the same standard parameters: resolve their (string) annotations once.
    hints = _HINTS.get(command.__code__) or _HINTS.setdefault(command.__code__, get_type_hints(command, include_extras=True))
    standard = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    extra = [
        inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[OPTION_TYPES.get(key, Optional[str]), OPTIONS[key]])
        for key in options
    ]

    def wrapper(**values: Any) -> None:
        command(**values)

    wrapper.__signature__ = inspect.Signature(standard + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in standard + extra}
    wrapper.__name__ = name.replace("-", "_")
    wrapper.__doc__ = CATALOG[name].description
    return wrapper


for _name, _entry in CATALOG.items():
    app.command(_name, help=_entry.description, epilog=EXAMPLE.format(name=_name))(_derivation_command(_name))


def _write_derivation(
    name: str,
    classes: int | None,
    format: Format | None,
    output: str | None,
    logits: str | None,
    target: str | None,
    templates: Path | None,
    options: dict[str, Any],
    notation: Any = None,
    markdown: str | None = None,
) -> None:
    """Build, render and write one derivation; print where it went."""
    fmt = _choose_format(format, output)
    path = _target(fmt, output, _default_path(name, classes, fmt, options))

    with _early_pdf(fmt, templates):
        import derive
        from derive import progress

        progress.update("building the derivation")
        given = {key: value for key, value in options.items() if value is not None}  # only the options used
        built = derive.derivation(name, classes=classes, logits=_split(logits), target=_split(target), **given)
        document = derive.render(built, fmt.value, templates=templates, notation=notation, markdown=markdown)
    _deliver(document, path)


def _early_pdf(fmt: Format, templates: Path | None) -> AbstractContextManager[Any]:
    """For a PDF, start pdflatex on the templates' preamble at once, while SymPy loads and the
    derivation is built; the render's PDF build then only reads the rest of the document (see
    ``derive.pdf.early``). pdflatex is stopped when the block ends, however it ends."""
    if fmt is not Format.pdf:
        return nullcontext()
    from derive import pdf

    return pdf.early(pdf.preamble(templates))


def _target(fmt: Format, output: str | None, default: Path) -> Path | None:
    """Where a document goes (None: stdout), checked before any work is done."""
    if output in STDOUT_PATHS:
        if fmt is Format.pdf and sys.stdout.isatty():
            raise UsageError("refusing to write a PDF to a terminal: redirect stdout or use -o FILE")
        path = None
    else:
        path = Path(output) if output is not None else default
        check_writable(path)
    if fmt is Format.pdf:
        # Without TeX the build would fail anyway, after seconds of checks: say so at once.
        from derive.pdf import MISSING_TOOLS_MESSAGE, tex_available

        if not tex_available():
            raise DeriveError(MISSING_TOOLS_MESSAGE)
    return path


def _deliver(document: str | bytes, path: Path | None) -> None:
    """Write a rendered document to ``path`` atomically, or to stdout; print where it went."""
    from derive import progress

    progress.finish()  # a progress line on the terminal is erased before anything is printed
    if path is None:
        _write_stdout(document)
        return
    write_atomic(path, document)
    typer.echo(str(path))


def _choose_format(format: Format | None, output: str | None) -> Format:
    """Return ``--format`` if given, else the format named by the output's extension, else md."""
    if format is not None:
        return format
    if output is None or output in STDOUT_PATHS:
        return Format.md
    extension = Path(output).suffix.lower()
    if extension not in FORMAT_BY_EXTENSION:
        known = " ".join(FORMAT_BY_EXTENSION)
        raise UsageError(f"cannot tell the format of {output!r} (known extensions: {known}): add --format")
    return FORMAT_BY_EXTENSION[extension]


def _default_path(name: str, classes: int | None, fmt: Format, options: dict[str, Any] | None = None) -> Path:
    """Return ``output/NAME.EXT`` (symbolic) or ``output/NAME-N.EXT``, under the working directory;
    a derivation's own options add to the name (``output/softmax-ce-3-temperature2.md``)."""
    return Path("output") / file_name(name, classes, fmt.value, options)


def _split(numbers: str | None) -> list[str] | None:
    """Split a comma-separated list; the library validates the numbers themselves."""
    if numbers is None:
        return None
    return [item.strip() for item in numbers.split(",")]


def _write_stdout(document: str | bytes) -> None:
    """Write a rendered document to stdout as it is, text or bytes."""
    if isinstance(document, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(document)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(document)
        sys.stdout.flush()


def _click_message(error: Exception) -> str:
    """Return Click's message for ``error`` on one line, with a pointer to the command's help."""
    # Recent Typer validates with pydantic, whose messages start with this.
    message = error.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
    context = getattr(error, "ctx", None)
    if isinstance(error, ClickUsageError) and context is not None:
        message += f" (see '{context.command_path} --help')"
    return " ".join(message.split())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """A warning as one ``warning: ...`` line on stderr (a progress line is erased first)."""
    from derive import progress

    progress.finish()
    typer.echo(f"warning: {message}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    """Print one error line on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def main() -> None:
    """Run the command line; it ends with ``SystemExit``, like any Click program."""
    # One command creates tens of thousands of objects that live until it exits (SymPy's import
    # makes most of them) and almost no cyclic garbage: the cyclic collector would walk the same
    # objects again and again (SymPy's import alone triggers 168 collections that free under 500
    # objects), about a tenth of the run. Reference counting still frees whatever is dropped.
    gc.disable()
    app(prog_name="derive")


def console() -> NoReturn:
    """The ``derive`` console script and ``python -m derive``: :func:`main`, then leave at once.

    A normal interpreter exit frees every object one by one, which takes about 0.1 s after SymPy
    (a sixth of the whole run); the operating system reclaims the memory anyway. The exit
    handlers still run and the streams are flushed. Every file is closed before this point (see
    ``derive.files.write_atomic``), and the PDF build has stopped its processes.
    """
    try:
        main()
        status: object = 0
    except SystemExit as exit:
        status = exit.code
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:  # what Python does with sys.exit("message")
        print(status, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # Python's own status when flushing at exit fails
    os._exit(code)
