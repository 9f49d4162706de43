"""--format py of planned derivations: every spec file of the catalog, symbolic and for three
classes, and the examples of ``derive grad`` that bench/bench.py measures.

The files are run by pytest in subprocesses that cannot import derive or SymPy. Without a function
each file checks its own reference (against the worked example and finite differences of its
definitions); from Python, ``check`` passes a right backward of every derivation and fails a wrong
one; pytest with DERIVE_IMPL does the same for a few. Errors planted in a file's own reference are
caught by its own tests.

The files are written from the derivations without running their checks (the symbolic checks of
attention and of the hidden layers take most of a minute cold): one test shows that
``derive.render``, which runs them, writes the same bytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import derive
from derive import pytest_file
from derive.cli import app
from derive.rendering import TEMPLATE, environment, render_template

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench import OWN  # noqa: E402

np = pytest.importorskip("numpy")

BLOCKED = ("derive", "sympy", "mpmath", "jinja2", "typer", "click", "lark", "latex2mathml")
"""What the pytest file must not need."""
GUARD = "import sys\n" f"for name in {BLOCKED!r}:\n" "    sys.modules[name] = None  # importing it raises ImportError\n"
PYTEST = GUARD + "import pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rf', *sys.argv[1:]]))\n"
TIMEOUT = 300

SPECS = ["focal", "kl-softmax", "tanh-sse", "batch-norm", "layer-norm", "gelu", "gelu-tanh", "attention"]
"""The catalog's spec files (gelu-tanh is gelu --approximate tanh)."""


def own(args: list[str]) -> tuple[list[str], str, list[str]]:
    """bench.py's command line of derive grad -> definitions, wrt, assumptions."""
    definitions, wrt, assume = [], None, []
    words = iter(args)
    for word in words:
        if word == "--wrt":
            wrt = next(words)
        elif word == "--assume":
            assume.append(next(words))
        else:
            definitions.append(word)
    return definitions, wrt, assume


def stem(label: str) -> str:
    return "grad_" + re.sub(r"\W+", "_", label).strip("_")


SPEC_KEYS = {f"spec_{name.replace('-', '_')}{'_3' if classes else ''}": (name, classes) for name in SPECS for classes in (None, 3)}
GRAD_KEYS = {stem(label): args for label, args in OWN}
KEYS = [*SPEC_KEYS, *GRAD_KEYS]


def build(key: str) -> derive.Derivation:
    """spec_NAME[_3] or grad_LABEL (for three classes), built (not checked)."""
    if key in GRAD_KEYS:
        definitions, wrt, assume = own(GRAD_KEYS[key])
        return derive.grad(*definitions, wrt=wrt, assume=assume, classes=3)
    name, classes = SPEC_KEYS[key]
    if name == "gelu-tanh":
        return derive.derivation("gelu", classes=classes, approximate="tanh")
    return derive.derivation(name, classes=classes)


def text(d: derive.Derivation) -> str:
    """The pytest file of ``d``, as ``derive.render(d, "py")`` writes it once the checks pass."""
    return render_template(environment(), TEMPLATE["py"], pytest_file.document(d))


MINE = '''
import math

import numpy as np


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax_backward(o, upstream):
    """The softmax Jacobian's transpose times an upstream gradient."""
    return o * (upstream - np.sum(upstream * o, axis=-1, keepdims=True))


def cross_entropy(z, y):
    return softmax(z) - y


def cross_entropy_sign_flipped(z, y):
    return y - softmax(z)


def focal(z, y, gamma):
    o = softmax(z)
    return softmax_backward(o, -y * (-gamma * (1 - o) ** (gamma - 1) * np.log(o) + (1 - o) ** gamma / o))


def focal_as_cross_entropy(z, y, gamma):
    return softmax(z) - y


def tanh_sse(z, y):
    o = np.tanh(z)
    return (o - y) * (1 - o**2)


def tanh_sse_without_tanh_prime(z, y):
    return np.tanh(z) - y


def log_sum_exp(z):
    return softmax(z)


def log_sum_exp_diagonal(z):
    o = softmax(z)
    return o * (1 - o)


def log_softmax_jacobian(z):
    return np.eye(len(z)) - softmax(z)[None, :]


def log_softmax_jacobian_transposed(z):
    return np.eye(len(z)) - softmax(z)[:, None]


def bce(z, y):
    return sigmoid(z) - y


def bce_through_the_sigmoid_again(z, y):
    o = sigmoid(z)
    return (o - y) * o * (1 - o)


def temperature(z, y, T):
    return (softmax(z / T) - y) / T


def temperature_without_scale(z, y, T):
    return softmax(z / T) - y


def batch_mean(z, y):
    return (softmax(z) - y) / len(z)


def batch_without_mean(z, y):
    return softmax(z) - y


def hidden_dV(V, y, W, b, x):
    h = sigmoid(V @ x)
    o = softmax(W @ h + b)
    return np.outer((W.T @ (o - y)) * h * (1 - h), x)


def hidden_dV_without_sigmoid_prime(V, y, W, b, x):
    h = sigmoid(V @ x)
    o = softmax(W @ h + b)
    return np.outer(W.T @ (o - y), x)


def hidden_dW(W, y, b, V, x):
    h = sigmoid(V @ x)
    return np.outer(softmax(W @ h + b) - y, h)


def hidden_dW_with_the_input(W, y, b, V, x):
    h = sigmoid(V @ x)
    return np.outer(softmax(W @ h + b) - y, np.ones_like(h))


def weight_decay(W, y, b, x, lambda_):
    return np.outer(softmax(W @ x + b) - y, x) + lambda_ * W


def weight_decay_forgotten(W, y, b, x, lambda_):
    return np.outer(softmax(W @ x + b) - y, x)


def _normalised(x, epsilon):
    mu = x.mean()
    v = ((x - mu) ** 2).mean()
    return (x - mu) / np.sqrt(v + epsilon), np.sqrt(v + epsilon)


def batch_norm(x, gamma, beta, g, epsilon):
    u, sd = _normalised(x, epsilon)
    n = len(x)
    return gamma * (n * g - g.sum() - u * (g * u).sum()) / (n * sd), (g * u).sum(), g.sum()


def batch_norm_mean_only(x, gamma, beta, g, epsilon):
    u, sd = _normalised(x, epsilon)
    return gamma * (g - g.mean()) / sd, (g * u).sum(), g.sum()


def layer_norm(x, gamma, beta, g, epsilon):
    u, sd = _normalised(x, epsilon)
    d = len(x)
    gg = g * gamma
    return (d * gg - gg.sum() - u * (gg * u).sum()) / (d * sd), g * u, g


def layer_norm_scale_forgotten(x, gamma, beta, g, epsilon):
    u, sd = _normalised(x, epsilon)
    d = len(x)
    return (d * g - g.sum() - u * (g * u).sum()) / (d * sd), g * u, g


def _erf(x):
    return np.vectorize(math.erf, otypes=[float])(x)


def gelu(x, g):
    return g * (0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi))


def gelu_without_density(x, g):
    return g * 0.5 * (1 + _erf(x / math.sqrt(2)))


def gelu_tanh(x, g):
    c = math.sqrt(2 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2))


def gelu_tanh_exact_form(x, g):
    return gelu(x, g)


def attention(q, K, V, g, m):
    root = math.sqrt(len(q))
    s = K @ q / root
    e = m * np.exp(s - s.max())
    a = e / e.sum()
    da = V @ g
    ds = a * (da - a @ da)
    return K.T @ ds / root, np.outer(ds, q) / root, np.outer(a, g)


def attention_without_scale(q, K, V, g, m):
    dq, dK, dV = attention(q, K, V, g, m)
    return dq * math.sqrt(len(q)), dK * math.sqrt(len(q)), dV
'''

RIGHT_AND_WRONG = {
    "spec_focal": ("focal", "focal_as_cross_entropy"),
    "spec_kl_softmax": ("cross_entropy", "cross_entropy_sign_flipped"),
    "spec_tanh_sse": ("tanh_sse", "tanh_sse_without_tanh_prime"),
    "spec_batch_norm": ("batch_norm", "batch_norm_mean_only"),
    "spec_layer_norm": ("layer_norm", "layer_norm_scale_forgotten"),
    "spec_gelu": ("gelu", "gelu_without_density"),
    "spec_gelu_tanh": ("gelu_tanh", "gelu_tanh_exact_form"),
    "spec_attention": ("attention", "attention_without_scale"),
    "grad_cross_entropy": ("cross_entropy", "cross_entropy_sign_flipped"),
    "grad_focal_loss": ("focal", "focal_as_cross_entropy"),
    "grad_KL_divergence": ("cross_entropy", "cross_entropy_sign_flipped"),
    "grad_squared_error_through_tanh": ("tanh_sse", "tanh_sse_without_tanh_prime"),
    "grad_log_sum_exp": ("log_sum_exp", "log_sum_exp_diagonal"),
    "grad_log_softmax": ("log_softmax_jacobian", "log_softmax_jacobian_transposed"),
    "grad_binary_cross_entropy": ("bce", "bce_through_the_sigmoid_again"),
    "grad_temperature": ("temperature", "temperature_without_scale"),
    "grad_a_batch": ("batch_mean", "batch_without_mean"),
    "grad_hidden_layer_dE_dV": ("hidden_dV", "hidden_dV_without_sigmoid_prime"),
    "grad_hidden_layer_dE_dW": ("hidden_dW", "hidden_dW_with_the_input"),
    "grad_weight_decay": ("weight_decay", "weight_decay_forgotten"),
}
"""A right backward and a wrong one for each file (the spec's symbolic and concrete files share them)."""


def functions(key: str) -> tuple[str, str]:
    return RIGHT_AND_WRONG[key.removesuffix("_3")]


@pytest.fixture(scope="module")
def built() -> dict[str, derive.Derivation]:
    return {key: build(key) for key in KEYS}


@pytest.fixture(scope="module")
def folder(built, tmp_path_factory) -> Path:
    """Every file, beside the backward functions of mine.py."""
    out = tmp_path_factory.mktemp("planned")
    (out / "mine.py").write_text(MINE)
    for key, d in built.items():
        (out / f"{key}.py").write_text(text(d))
    return out


def pytest_run(folder: Path, files: list[str], function: str | None = None) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "DERIVE_IMPL"}
    if function is not None:
        env["DERIVE_IMPL"] = f"mine:{function}"
    return subprocess.Popen([sys.executable, "-c", PYTEST, *files], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


CHECK = GUARD + '''
import importlib.util, json
import mine


def load(path):
    spec = importlib.util.spec_from_file_location(path[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


out = {}
for key, right, wrong in json.loads(sys.argv[1]):
    module = load(key + ".py")
    module.check(getattr(mine, right))
    try:
        module.check(getattr(mine, wrong))
    except AssertionError as error:
        out[key] = str(error)
    else:
        out[key] = None
print(json.dumps(out))
'''

PINNED = [("spec_attention_3", "attention", "attention_without_scale"), ("spec_batch_norm", "batch_norm", "batch_norm_mean_only")]
"""Files also run by pytest with DERIVE_IMPL, with a right function and a wrong one."""


@pytest.fixture(scope="module")
def runs(folder) -> dict[str, subprocess.CompletedProcess]:
    """All at once: pytest on every file without a function; check() of every file with its
    right and its wrong function, in one process; pytest with DERIVE_IMPL on PINNED."""
    started = {"reference": pytest_run(folder, [f"{key}.py" for key in KEYS])}
    cases = [(key, *functions(key)) for key in KEYS]
    started["check"] = subprocess.Popen([sys.executable, "-c", CHECK, json.dumps(cases)], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for key, right, wrong in PINNED:
        for function in (right, wrong):
            started[f"{key}:{function}"] = pytest_run(folder, [f"{key}.py"], function)
    done = {}
    for name, process in started.items():
        out, _ = process.communicate(timeout=TIMEOUT)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out)
    return done


def last(run: subprocess.CompletedProcess) -> str:
    return run.stdout.strip().splitlines()[-1]


def test_every_file_checks_its_own_reference(runs):
    """8 tests with a worked example (the example's derivatives and value, finite differences at
    the example and at five random points), 5 without; the tests of a function are skipped."""
    run = runs["reference"]
    with_example = sum(1 for key in KEYS if key in GRAD_KEYS or SPEC_KEYS[key][1])
    passed, skipped = 8 * with_example + 5 * (len(KEYS) - with_example), 12 * with_example + 10 * (len(KEYS) - with_example)
    assert run.returncode == 0 and f"{passed} passed, {skipped} skipped" in last(run), run.stdout


def test_every_file_passes_a_right_backward_and_fails_a_wrong_one(runs):
    run = runs["check"]
    assert run.returncode == 0, run.stdout
    failures = json.loads(last(run))
    assert set(failures) == set(KEYS)
    for key, message in failures.items():
        assert message is not None and "yours (actual) against" in message, (key, message)


@pytest.mark.parametrize("key, right, wrong", PINNED, ids=[p[0] for p in PINNED])
def test_pytest_with_a_function(runs, key, right, wrong):
    good, bad = runs[f"{key}:{right}"], runs[f"{key}:{wrong}"]
    assert good.returncode == 0 and "failed" not in last(good) and "skipped" not in last(good), good.stdout
    assert bad.returncode == 1, bad.stdout
    # The wrong one fails every comparison, at each point (with the example: 6 points, else 5).
    points = 6 if key.endswith("_3") else 5
    assert f"{2 * points} failed" in last(bad), bad.stdout


# --- errors planted in a file's own reference -----------------------------------------------------------
PLANTS = [
    # The output of attention by V without its softmax's denominator: the example's dL/dV and
    # finite differences at every point.
    ("spec_attention_3", "        g * a[:, None],\n", "        g * (m * np.exp(s))[:, None],\n", 1,
     {"test_reference_gives_the_worked_example", *(f"test_reference_agrees_with_finite_differences[{p}]" for p in ("example", "random-1", "random-2", "random-3", "random-4-D3-H4", "random-5-D4-H5"))}),
    # The density of GELU's derivative with the wrong exponent; no worked example: the random points.
    ("spec_gelu", "np.exp((-1 / 2) * x ** 2)", "np.exp(-x ** 2)", 1,
     {f"test_reference_agrees_with_finite_differences[{p}]" for p in ("random-1", "random-2", "random-3", "random-4-H4", "random-5-H5")}),
    # The unbiased variance in forward() alone (its first line of v): the example's value, and
    # finite differences wherever the gradient is checked against it.
    ("spec_layer_norm_3", "    v = np.sum((x - mu) ** 2, axis=-1) / D\n", "    v = np.sum((x - mu) ** 2, axis=-1) / (D - 1)\n", 2,
     {"test_forward_gives_the_worked_example", *(f"test_reference_agrees_with_finite_differences[{p}]" for p in ("example", "random-1", "random-2", "random-3", "random-4-D3", "random-5-D4"))}),
    # A wrong focusing parameter for the whole file: forward() and gradient() still agree, the
    # worked example does not.
    ("spec_focal_3", "\ngamma = 2.0\n", "\ngamma = 1.0\n", 1, {"test_reference_gives_the_worked_example", "test_forward_gives_the_worked_example"}),
    # The weight decay's term dropped from the derived gradient.
    ("grad_weight_decay", "    return lambda_ * W + ", "    return ", 1,
     {"test_reference_gives_the_worked_example", *(f"test_reference_agrees_with_finite_differences[{p}]" for p in ("example", "random-1", "random-2", "random-3", "random-4-D3-H4", "random-5-D4-H5"))}),
]


def test_a_planted_error_in_the_reference_fails_its_own_tests(folder, tmp_path):
    files = []
    for key, old, new, count, _ in PLANTS:
        original = (folder / f"{key}.py").read_text()
        assert original.count(old) == count, (key, old)
        (tmp_path / f"planted_{key}.py").write_text(original.replace(old, new, 1))
        files.append(f"planted_{key}.py")
    process = pytest_run(tmp_path, files)
    out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1, out
    failed: dict[str, set[str]] = {}
    for line in out.splitlines():
        found = re.match(r"FAILED planted_(\w+)\.py::(\S+)", line)
        if found:
            failed.setdefault(found.group(1), set()).add(found.group(2))
    assert failed == {key: fails for key, _, _, _, fails in PLANTS}, out


# --- the file, from derive -----------------------------------------------------------------------------
def test_render_runs_the_checks_and_writes_the_same_file(built):
    for key in ("spec_tanh_sse_3", "grad_cross_entropy", "spec_batch_norm"):
        assert derive.render(build(key), "py") == text(built[key])


def test_the_same_input_gives_the_same_bytes(built):
    """Also in fresh processes with different string hashing (set and dict orders)."""
    script = (
        "import sys, derive\n"
        "from derive import pytest_file\n"
        "from derive.rendering import TEMPLATE, environment, render_template\n"
        "d = derive.derivation('attention', classes=3)\n"
        "sys.stdout.write(render_template(environment(), TEMPLATE['py'], pytest_file.document(d)))\n"
    )
    texts = {
        subprocess.run([sys.executable, "-c", script], env=os.environ | {"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True, timeout=TIMEOUT).stdout
        for seed in ("1", "2")
    }
    texts.add(text(built["spec_attention_3"]))
    assert len(texts) == 1


def test_what_the_file_says(folder):
    batch_norm = (folder / "spec_batch_norm_3.py").read_text()
    assert batch_norm.startswith('"""Your backprop code, checked against the derivation batch-norm for N = 2.')
    assert "    backward(x, gamma, beta, g, epsilon=0.1) -> dL/dx, dL/dgamma, dL/dbeta\n" in batch_norm
    assert "    v = Sum((-mu + x[m])**2, (m, 1, N))/N\n" in batch_norm
    symbolic = (folder / "spec_batch_norm.py").read_text()
    assert symbolic.startswith('"""Your backprop code, checked against the derivation batch-norm.\n')
    assert "EXAMPLE" not in symbolic and 'SIZES = {"N": 2}' in symbolic
    attention = (folder / "spec_attention.py").read_text()
    assert '"m": mask(rng, (sizes["H"],)),' in attention and "m: given, ones and zeros (at least one 1), shape (H,)" in attention
    # A matrix's entries by the variable's own indices: the keys k by position j and feature d.
    assert "        dL/dk, shape (H, D): entry (j, d) is the derivative by k[j, d]\n" in attention
    # Your own attention: a mask given as zeros and ones is drawn so; given other numbers, it is not.
    definitions = ["L = sum_c g_c*o_c", "o_c = sum_j a_j*V_jc", "a_j = m_j*exp(s_j)/sum_l m_l*exp(s_l)", "s_j = 1/sqrt(D)*sum_p q_p*K_jp"]
    for let, draw in (({"m": "1,0,1"}, 'mask(rng, (sizes["H"],))'), ({"m": "1,2,1"}, 'rng.normal(size=(sizes["H"],))')):
        d = derive.grad(*definitions, wrt="K_kd", range={"c": "1..D", "p": "1..D"}, classes=3, let=let)
        assert f'        "m": {draw},\n' in text(d)
    # A keyword of Python is not a name: lambda is lambda_.
    assert "    backward(W, y, b, x, lambda_=0.1) -> dE/dW\n" in (folder / "grad_weight_decay.py").read_text()
    # GELU's erf is the standard library's.
    assert "import math\n" in (folder / "spec_gelu.py").read_text() and "import math\n" not in batch_norm


def test_a_quantity_named_like_the_files_own_names_is_refused(built, monkeypatch):
    monkeypatch.setattr(pytest_file, "RESERVED", pytest_file.RESERVED | {"u"})
    with pytest.raises(derive.DeriveError, match="cannot name a quantity u: the file uses that name itself"):
        pytest_file.document(built["spec_batch_norm"])


def test_command_line(tmp_path):
    runner = CliRunner()
    path = tmp_path / "check_tanh.py"
    result = runner.invoke(app, ["grad", "E = 1/2*sum_i (o_i - y_i)^2", "o_i = tanh(z_i)", "--wrt", "z_k", "--classes", "3", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert "    backward(z, y) -> dE/dz\n" in path.read_text()
    result = runner.invoke(app, ["tanh-sse", "--format", "py", "-o", str(tmp_path / "symbolic.py")])
    assert result.exit_code == 0, result.output
    run = subprocess.run([sys.executable, "-c", PYTEST, "symbolic.py"], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0 and "5 passed, 10 skipped" in run.stdout, run.stdout
