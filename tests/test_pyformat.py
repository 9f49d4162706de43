"""--format py: a pytest file that checks the user's backprop code against the derivation.

The files are written for several catalog entries and run by pytest in subprocesses that cannot
import derive, SymPy, mpmath, Jinja2 or Typer (only NumPy and pytest): with a right
implementation every test passes, with a planted wrong one (a flipped sign, the diagonal-only
shortcut, a missing 1/T, a transposed Jacobian, o - y for the squared error, swapped rows of dW)
the file fails. Errors planted in the file's own reference are caught by its own tests.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp
from typer.testing import CliRunner

import derive
from derive.cli import app
from derive.pycode import NoNumpyForm, Printer, identifier
from derive.symbols import H, i, j, k, o, y, z

np = pytest.importorskip("numpy")

BLOCKED = ("derive", "sympy", "mpmath", "jinja2", "typer", "click", "lark", "latex2mathml")
"""What the pytest file must not need."""
RUN = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None  # importing it raises ImportError\n"
    "import pytest\n"
    "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', sys.argv[1]]))\n"
)
TIMEOUT = 120

IMPLEMENTATIONS = '''
import numpy as np


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def ce(z, y):
    return softmax(z) - y


def ce_sign_flipped(z, y):
    return y - softmax(z)


def ce_diagonal_only(z, y):
    o = softmax(z)
    return y * (o - 1)


def ce_options(z, y, temperature, label_smoothing):
    smoothed = (1 - label_smoothing) * y + label_smoothing / len(z)
    return (softmax(z / temperature) - smoothed) / temperature


def ce_options_without_scale(z, y, temperature, label_smoothing):
    smoothed = (1 - label_smoothing) * y + label_smoothing / len(z)
    return softmax(z / temperature) - smoothed


def softmax_jacobian(z):
    o = softmax(z)
    return np.diag(o) - np.outer(o, o)


def softmax_jacobian_diagonal_only(z):
    o = softmax(z)
    return np.diag(o * (1 - o))


def log_softmax_jacobian(z):
    return np.eye(len(z)) - softmax(z)[None, :]


def log_softmax_jacobian_transposed(z):
    return np.eye(len(z)) - softmax(z)[:, None]


def bce(z, y):
    return sigmoid(z) - y


def bce_through_the_sigmoid_again(z, y):
    o = sigmoid(z)
    return (o - y) * o * (1 - o)


def mse(z, y):
    o = softmax(z)
    return (np.diag(o) - np.outer(o, o)) @ (o - y)


def mse_output_minus_target(z, y):
    return softmax(z) - y


def dense(x, W, b, y):
    delta = softmax(W @ x + b) - y
    return np.outer(delta, x), delta


def dense_rows_swapped(x, W, b, y):
    delta = softmax(W @ x + b) - y
    return np.outer(delta, x)[::-1], delta
'''

CASES = [
    # (name, options, right implementation, wrong implementations)
    ("softmax-ce", {}, "ce", ("ce_sign_flipped", "ce_diagonal_only")),
    ("softmax-ce", {"temperature": 2, "label_smoothing": 0.1}, "ce_options", ("ce_options_without_scale",)),
    ("softmax", {}, "softmax_jacobian", ("softmax_jacobian_diagonal_only",)),
    ("log-softmax", {}, "log_softmax_jacobian", ("log_softmax_jacobian_transposed",)),
    ("sigmoid-bce", {}, "bce", ("bce_through_the_sigmoid_again",)),
    ("mse-softmax", {}, "mse", ("mse_output_minus_target",)),
    ("dense-softmax-ce", {}, "dense", ("dense_rows_swapped",)),
]

ALONE = ("softmax-ce", {})
"""The case also run without DERIVE_IMPL."""


def file_name(name: str, options: dict) -> str:
    return "-".join([name.replace("-", "_"), *(f"{key}{value}".replace(".", "_") for key, value in options.items())]) + ".py"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """The pytest file of each case, for three classes, beside the implementations."""
    folder = tmp_path_factory.mktemp("backprop")
    (folder / "mine.py").write_text(IMPLEMENTATIONS)
    out = {}
    for name, options, _, _ in CASES:
        path = folder / file_name(name, options)
        path.write_text(derive.render(derive.derivation(name, classes=3, **options), "py"))
        out[name, repr(options)] = path
    return out


@pytest.fixture(scope="module")
def runs(files) -> dict[tuple[str, str, str | None], subprocess.CompletedProcess]:
    """pytest on each file: without DERIVE_IMPL, with the right function and with each wrong
    one, all started at once."""
    started = {}
    for name, options, right, wrong in CASES:
        path = files[name, repr(options)]
        # Without DERIVE_IMPL once: the runs with a function check the reference of every file too.
        for function in ((None,) if (name, options) == ALONE else ()) + (right, *wrong):
            env = {key: value for key, value in os.environ.items() if key != "DERIVE_IMPL"}
            if function is not None:
                env["DERIVE_IMPL"] = f"mine:{function}"
            command = [sys.executable, "-c", RUN, str(path)]
            started[name, repr(options), function] = subprocess.Popen(
                command, cwd=path.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
    done = {}
    for key, process in started.items():
        out, _ = process.communicate(timeout=TIMEOUT)
        done[key] = subprocess.CompletedProcess(process.args, process.returncode, out)
    return done


def summary(run: subprocess.CompletedProcess) -> str:
    return run.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("name, options, right, wrong", CASES, ids=[f"{c[0]}{c[1] or ''}" for c in CASES])
def test_the_file_passes_a_right_backward_and_fails_a_wrong_one(runs, name, options, right, wrong):
    good = runs[name, repr(options), right]
    assert good.returncode == 0 and "skipped" not in summary(good) and "failed" not in summary(good), good.stdout
    for function in wrong:
        bad = runs[name, repr(options), function]
        assert bad.returncode == 1, bad.stdout
        # Every comparison of the wrong function fails, at the example and at each random point
        # (three of the example's sizes, two larger).
        assert "12 failed" in summary(bad), bad.stdout
        assert "yours (actual) against the reference" in bad.stdout and "against finite differences" in bad.stdout


def test_without_a_function_the_reference_is_checked_and_yours_skipped(runs):
    alone = runs[ALONE[0], repr(ALONE[1]), None]
    assert alone.returncode == 0, alone.stdout
    assert "8 passed, 12 skipped" in summary(alone) and "set DERIVE_IMPL=module:function to check your function" in alone.stdout


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_and_the_argument_form(files, tmp_path):
    path = files["softmax-ce", "{}"]
    module = load(path)
    mine = load(path.parent / "mine.py")
    module.check(mine.ce)
    with pytest.raises(AssertionError, match="dE/dz at example: yours"):
        module.check(mine.ce_diagonal_only)
    with pytest.raises(AssertionError, match=r"has shape \(3, 3\), expected \(3,\)"):
        module.check(lambda z, y: np.outer(z, y))
    run = subprocess.run([sys.executable, str(path), "mine:ce_sign_flipped"], cwd=path.parent, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 1 and "12 failed" in run.stdout
    run = subprocess.run([sys.executable, str(path), f"{path.parent / 'mine.py'}:ce"], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0 and "20 passed" in run.stdout
    run = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode != 0 and "usage: python" in run.stderr


def test_a_layer_returns_a_tuple(files):
    module = load(files["dense-softmax-ce", "{}"])
    with pytest.raises(AssertionError, match=r"expected a tuple of 2 arrays \(dE/dW, dE/db\)"):
        module.check(lambda x, W, b, y: np.zeros_like(W))


@pytest.mark.parametrize(
    "planted, fails",
    [
        # A wrong number of the worked example.
        (("    \"z\": np.array([-0.8, 0.6, 0.2]),", "    \"z\": np.array([-0.8, 0.6, 0.25]),"), {"test_reference_gives_the_worked_example"}),
        # A wrong reference gradient.
        (("    return o - y\n", "    return o + y\n"), {"test_reference_gives_the_worked_example", "test_reference_agrees_with_finite_differences"}),
        # A wrong reference error.
        (("    E = -np.sum(y * log_softmax(z), axis=-1)", "    E = -np.sum(y * log_softmax(z), axis=-1) ** 2"),
         {"test_forward_gives_the_worked_example", "test_reference_agrees_with_finite_differences"}),
    ],
)
def test_the_files_own_checks_catch_a_planted_error(files, tmp_path, planted, fails):
    text = files["softmax-ce", "{}"].read_text()
    old, new = planted
    assert text.count(old) == 1
    path = tmp_path / "planted.py"
    path.write_text(text.replace(old, new))
    module = load(path)
    failed = set()
    for test in ("test_reference_gives_the_worked_example", "test_forward_gives_the_worked_example", "test_reference_agrees_with_finite_differences"):
        function = getattr(module, test)
        for point in module.POINTS if test.endswith("finite_differences") else [None]:
            try:
                function(point) if point is not None else function()
            except AssertionError:
                failed.add(test)
    assert failed == fails


def test_the_same_input_gives_the_same_bytes():
    """Also in fresh processes with different string hashing (set and dict orders)."""
    script = "import sys, derive; sys.stdout.write(derive.render(derive.derivation('dense-softmax-ce', classes=3), 'py'))"
    texts = {
        subprocess.run([sys.executable, "-c", script], env=os.environ | {"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True, timeout=TIMEOUT).stdout
        for seed in ("1", "2")
    }
    texts.add(derive.render(derive.derivation("dense-softmax-ce", classes=3), "py"))
    assert len(texts) == 1


def test_symbolic_classes_are_refused():
    with pytest.raises(derive.UsageError, match="--format py needs a concrete number of classes: add --classes N"):
        derive.render(derive.derivation("softmax-ce"), "py")


def test_command_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["softmax", "--classes", "3", "-o", str(tmp_path / "check_softmax.py")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "check_softmax.py").read_text().startswith('"""Your backprop code, checked against the derivation softmax for H = 3.')
    result = runner.invoke(app, ["softmax-ce", "--format", "py", "-o", str(tmp_path / "symbolic.py")])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0
    assert "error: --format py needs a concrete number of classes" in result.output
    assert not (tmp_path / "symbolic.py").exists()
    result = runner.invoke(app, ["overview", "--format", "py", "-o", "-"])
    assert result.exit_code == 2 and "the overview has no py format" in result.output


# --- the NumPy printer ---------------------------------------------------------------------------------
W, x, b = sp.IndexedBase("W"), sp.IndexedBase("x"), sp.IndexedBase("b")
d_, m_ = sp.symbols("d m", integer=True, positive=True)
D = sp.Symbol("D", integer=True, positive=True)
N = sp.Symbol("N", integer=True, positive=True)
n_ = sp.Symbol("n'", integer=True)
"""An index that the limits do not know: a sum gives its range."""
T = sp.Symbol("T", positive=True)
LIMITS = {d_: D, m_: D}
SOFTMAX = sp.exp(z[i]) / sp.Sum(sp.exp(z[j]), (j, 1, H))


@pytest.mark.parametrize(
    "expr, axes, code",
    [
        (o[k] - y[k], (k,), "o - y"),
        (-y[k] + o[k], (k,), "o - y"),
        ((o[k] - y[k]) / T, (k,), "(o - y) / T"),
        (o[i] * (sp.KroneckerDelta(i, k) - o[k]), (i, k), "(np.eye(H) - o) * o[:, None]"),
        (sp.KroneckerDelta(i, k) - o[k], (i, k), "np.eye(H) - o"),
        (o[k] * sp.Sum(y[i], (i, 1, H)) - y[k], (k,), "o * np.sum(y, axis=-1) - y"),
        (sp.Sum(W[i, m_] * x[m_], (m_, 1, D)) + b[i], (i,), "b + np.sum(x * W, axis=-1)"),
        (x[d_] * (o[k] - y[k]), (k, d_), "(o[:, None] - y[:, None]) * x"),
        (W[k, d_], (d_, k), "W.T"),
        (sp.Rational(1, 2) * sp.Sum((o[i] - y[i]) ** 2, (i, 1, H)), (), "(1 / 2) * np.sum((o - y) ** 2, axis=-1)"),
        (sp.Sum(y[i], (i, 1, H)) * sp.Sum(o[j], (j, 1, H)), (), "np.sum(o, axis=-1) * np.sum(y, axis=-1)"),
        (sp.Sum(o[k], (i, 1, H)), (k,), "H * o"),
        (-sp.Sum(y[i] * sp.log(o[i]), (i, 1, H)), (), "-np.sum(y * np.log(o), axis=-1)"),
        (sp.exp(-z[k]) ** 2, (k,), "np.exp(-2 * z)"),
        (sp.Pow(o[k] - y[k], -2, evaluate=False), (k,), "1 / (o - y) ** 2"),
        (sp.Mul(-1, o[k], evaluate=False) - 3 * y[k] / 4, (k,), "-o - (3 / 4) * y"),
        # Several indices in one sum, the innermost first as SymPy keeps them.
        (sp.Sum(W[i, d_] ** 2, (d_, 1, D), (i, 1, H)), (), "np.sum(np.sum(W ** 2, axis=-1), axis=-1)"),
        (sp.Sum(y[k] * x[d_], (d_, 1, D), (n_, 1, N)), (k,), "N * np.sum(x * y[:, None], axis=-1)"),
        (sp.Sum(o[n_], (n_, 1, N)), (), "np.sum(o, axis=-1)"),
        (sp.sqrt(2) * sp.exp(-x[d_] ** 2 / 2) / sp.sqrt(2 * sp.pi), (d_,), "np.exp((-1 / 2) * x ** 2) / np.sqrt(np.pi)"),
        (x[d_] / sp.sqrt(D), (d_,), "x / np.sqrt(D)"),
        (sp.erf(z[k] / sp.sqrt(2)), (k,), "erf((1 / 2) * np.sqrt(2) * z)"),
    ],
)
def test_numpy_printer(expr, axes, code):
    assert Printer(lambda index: LIMITS.get(index, H)).code(expr, axes) == code


def test_the_printed_code_computes_the_expression():
    """Printed code against SymPy's own values, entry by entry."""
    rng = np.random.default_rng(1)
    n = 4
    values = {"o": rng.uniform(size=n), "y": rng.uniform(size=n)}
    expr = o[i] * (sp.KroneckerDelta(i, k) - o[k]) + sp.Sum(o[j] * y[j], (j, 1, H)) * y[k]
    code = Printer(lambda index: H).code(expr, (i, k))
    got = eval(code, {"np": np, "H": n, **values})
    for r in range(n):
        for c in range(n):
            at = expr.subs({i: r + 1, k: c + 1, H: n}).doit()
            at = at.subs({o[m + 1]: values["o"][m] for m in range(n)} | {y[m + 1]: values["y"][m] for m in range(n)})
            assert got[r, c] == pytest.approx(float(at), rel=1e-12)


def test_sums_over_several_indices_compute_the_expression():
    rng = np.random.default_rng(2)
    values = {"W": rng.normal(size=(3, 2)), "y": rng.normal(size=3), "x": rng.normal(size=2)}
    expr = sp.Sum(W[i, d_] ** 2 * y[i], (d_, 1, D), (i, 1, H)) + sp.Sum(y[k] * x[d_], (d_, 1, D), (n_, 1, N))
    printer = Printer(lambda index: LIMITS.get(index, H))
    got = eval(printer.code(expr, (k,)), {"np": np, "H": 3, "D": 2, "N": 4, **values})
    want = [(values["W"] ** 2 * values["y"][:, None]).sum() + 4 * values["y"][c] * values["x"].sum() for c in range(3)]
    assert got == pytest.approx(want, rel=1e-12)
    assert printer.used == {N}


def test_stable_forms_for_softmax_and_sigmoid():
    printer = Printer(lambda index: H)
    from derive.model import Definition

    assert printer.definition(Definition("softmax", o[i], SOFTMAX)) == "o = softmax(z)"
    assert printer.code(sp.log(o[k]), (k,)) == "log_softmax(z)"
    printer = Printer(lambda index: H)
    assert printer.definition(Definition("sigmoid", o[i], 1 / (1 + sp.exp(-z[i] / T)))) == "o = sigmoid(z / T)"
    assert printer.code(y[i] * sp.log(o[i]) + (1 - y[i]) * sp.log(1 - o[i]), (i,)) == "(1 - y) * log_sigmoid(-(z / T)) + y * log_sigmoid(z / T)"
    assert printer.helpers == {"sigmoid", "log_sigmoid"}


@pytest.mark.parametrize(
    "expr, axes, message",
    [
        (sp.Sum(o[i], (i, 2, H)), (), "a sum must run over its index's whole range from 1"),
        (o[k] * k, (k,), "the index k outside a subscript"),
        (o[i], (k,), "i is not an index in scope"),
        (sp.Derivative(o[k], z[k]), (k,), "no NumPy form for Derivative"),
        (sp.KroneckerDelta(i, d_), (i, d_), "both indices must run over the same range"),
    ],
)
def test_numpy_printer_names_what_it_cannot_print(expr, axes, message):
    with pytest.raises(NoNumpyForm, match=message):
        Printer(lambda index: LIMITS.get(index, H)).code(expr, axes)


@pytest.mark.parametrize("name, python", [("z", "z"), (r"\tilde{z}", "z_tilde"), ("y'", "y_prime"), ("epsilon", "epsilon"), ("lambda", "lambda_")])
def test_identifiers(name, python):
    assert identifier(name) == python


def test_the_default_name_of_a_pytest_file_is_a_module_name(tmp_path):
    """--temperature 0.5 --format py writes output/softmax-ce-3-temperature0_5.py: a dot would
    cut the module's name short and pytest could not collect the file."""
    made = subprocess.run([sys.executable, "-m", "derive", "softmax-ce", "--classes", "3", "--temperature", "0.5", "--format", "py"], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    (path,) = (tmp_path / "output").iterdir()
    assert path.name == "softmax-ce-3-temperature0_5.py"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout + run.stderr
