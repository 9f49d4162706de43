"""The benchmark: our timings beside their reference points, measured in one run, as ratios.

    python bench/bench.py            # about twenty minutes
    python bench/bench.py --quick    # one repetition each, no naive route beyond H = 16
    python bench/bench.py --quick --entries   # every catalog entry and derive grad example only

Machines are shared and noisy, so every pair is measured interleaved (a, b, a, b, ...) and
reported as medians and the ratio of medians. Each measurement is a fresh process. "Cold" runs
have the cache of passed checks turned off (DERIVE_NO_CACHE=1): what a first run, a CI job or a
container pays; "warm" runs have it filled by the run before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
DERIVE = [PY, "-m", "derive"]

NAIVE = """
import sys, time
import sympy as sp
n = int(sys.argv[1])
start = time.perf_counter()
z = sp.symbols(f"z1:{n + 1}", real=True)
y = sp.symbols(f"y1:{n + 1}", real=True)
s = sum(sp.exp(v) for v in z)
o = [sp.exp(v) / s for v in z]
E = -sum(y[i] * sp.log(o[i]) for i in range(n))
normal = {y[-1]: 1 - sum(y[:-1])}
for k in range(n):
    g = sp.diff(E, z[k])
    assert sp.simplify((g - (o[k] - y[k])).subs(normal)) == 0
print(time.perf_counter() - start)
"""

NAIVE_JSON = """
import json, sys
import sympy as sp
n = int(sys.argv[1])
z = sp.symbols(f"z1:{n + 1}", real=True)
y = sp.symbols(f"y1:{n + 1}", real=True)
s = sum(sp.exp(v) for v in z)
o = [sp.exp(v) / s for v in z]
E = -sum(y[i] * sp.log(o[i]) for i in range(n))
normal = {y[-1]: 1 - sum(y[:-1])}
gradient = [sp.simplify(sp.diff(E, z[k]).subs(normal)) for k in range(n)]
json.dump([str(g) for g in gradient], sys.stdout)
"""

sys.path.insert(0, str(ROOT))
from derive.derivations import CATALOG as _ENTRIES  # noqa: E402  (no SymPy: the catalog's names only)

CATALOG = list(_ENTRIES)
"""Every catalog entry (``derive list``)."""

LIMIT = 300.0
"""Seconds a command of ours may take (--limit)."""

SOFTMAX = "o_i = exp(z_i)/sum_j exp(z_j)"
HIDDEN = ["E = -sum_i y_i*ln(o_i)", SOFTMAX, "z_i = sum_m W_im*h_m + b_i", "h_m = sigmoid(sum_d V_md*x_d)"]
NORMAL = ["--assume", "sum_i y_i = 1"]
OWN: list[tuple[str, list[str]]] = [
    ("cross-entropy", ["E = -sum_i y_i*ln(o_i)", SOFTMAX, "--wrt", "z_k", *NORMAL]),
    ("focal loss", ["E = -sum_i y_i*(1 - o_i)^gamma*ln(o_i)", SOFTMAX, "--wrt", "z_k", *NORMAL]),
    ("KL divergence", ["E = sum_i y_i*ln(y_i/o_i)", SOFTMAX, "--wrt", "z_k", *NORMAL]),
    ("squared error through tanh", ["E = 1/2*sum_i (o_i - y_i)^2", "o_i = tanh(z_i)", "--wrt", "z_k"]),
    ("log-sum-exp", ["E = ln(sum_j exp(z_j))", "--wrt", "z_k"]),
    ("log-softmax", ["l_i = z_i - ln(sum_j exp(z_j))", "--wrt", "z_k"]),
    ("binary cross-entropy", ["E = -sum_i (y_i*ln(o_i) + (1 - y_i)*ln(1 - o_i))", "o_i = sigmoid(z_i)", "--wrt", "z_k"]),
    ("temperature", ["E = -sum_i y_i*ln(o_i)", "o_i = exp(z_i/T)/sum_j exp(z_j/T)", "--wrt", "z_k", *NORMAL]),
    ("a batch", ["E = -1/N*sum_n sum_i y_ni*ln(o_ni)", "o_ni = exp(z_ni)/sum_j exp(z_nj)", "--wrt", "z_nk", "--assume", "sum_i y_ni = 1"]),
    ("hidden layer, dE/dV", [*HIDDEN, "--wrt", "V_md", *NORMAL]),
    ("hidden layer, dE/dW", [*HIDDEN, "--wrt", "W_km", *NORMAL]),
    ("weight decay", ["E = -sum_i y_i*ln(o_i) + lambda/2*sum_k sum_d W_kd^2", SOFTMAX, "z_i = sum_d W_id*x_d + b_i", "--wrt", "W_kd", *NORMAL]),
]
"""The examples of "Your own derivation" in the README, each run with --classes 3."""

OURS = """
import sys, time
import derive
from derive.concrete import checks
n = int(sys.argv[1])
start = time.perf_counter()
assert all(c.passed for c in checks(derive.derivation("softmax-ce", classes=n)))
print(time.perf_counter() - start)
"""

ONE_PAGE = r"""\documentclass{article}\pdftrailerid{}\begin{document}\[ \frac{\partial E}{\partial z_k} = o_k - y_k \]\end{document}
"""


class Failed(Exception):
    """A measured command failed: its row says so, and the other rows are still measured."""


def peak(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall time and peak memory (KiB) of one process, once."""
    return run(cmd, cwd, env)


def run(cmd: list[str], cwd: Path, env: dict[str, str], inner: bool = False) -> tuple[float, int]:
    """Wall time in seconds and peak memory in KiB of one process; with ``inner``, the time the
    process itself printed (the work without the interpreter's start and imports)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # A command of ours over the limit is stopped, its row says so and the run goes on; a
    # reference point runs to its end.
    ours = cmd[: len(DERIVE)] == DERIVE
    timer = threading.Timer(LIMIT, proc.kill) if ours else None
    if timer is not None:
        timer.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if timer is not None:
        timer.cancel()
    elapsed = time.perf_counter() - start
    proc.returncode = status
    if status != 0 and ours and elapsed >= LIMIT:
        raise Failed(f"over {LIMIT:.0f} s, stopped: {' '.join(cmd[2:])}")
    if status != 0:
        raise Failed(f"failed: {' '.join(cmd)}: {err.decode().strip().splitlines()[-1][-300:] if err.strip() else status}")
    return (float(out.decode().split()[-1]) if inner else elapsed), usage.ru_maxrss


def pair(a: list[str], b: list[str], reps: int, cwd: Path, env: dict[str, str], inner: bool = False) -> tuple[list, list]:
    """Measure a and b interleaved, after one warm-up run of each."""
    run(a, cwd, env, inner)
    run(b, cwd, env, inner)
    ra, rb = [], []
    for _ in range(reps):
        ra.append(run(a, cwd, env, inner))
        rb.append(run(b, cwd, env, inner))
    return ra, rb


def med(rs: list[tuple[float, int]], i: int = 0) -> float:
    return statistics.median(r[i] for r in rs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--limit", type=float, default=300, help="seconds a measured process may take (default 300); a row over it says so")
    parser.add_argument("--from-large", action="store_true", help="skip the catalog's, the overview's and derive grad's rows: start at the large sizes")
    parser.add_argument("--from-naive", action="store_true", help="skip those and the large sizes too: start at the naive SymPy route")
    parser.add_argument("--entries", action="store_true", help="only the catalog's, the overview's and derive grad's rows (every entry cold and warm)")
    args = parser.parse_args()
    args.from_large = args.from_large or args.from_naive
    global LIMIT
    LIMIT = args.limit
    reps = 3 if args.quick else 7
    work = Path(tempfile.mkdtemp(prefix="derive-bench-"))
    env = {**os.environ, "DERIVE_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    # Measure what a user runs: an installed package has compiled bytecode (pip writes it, and a
    # checkout writes it on the first run), so a shell that forbids .pyc files would charge us
    # for compiling our own modules at every start while SymPy's come precompiled.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    (work / "one.tex").write_text(ONE_PAGE)
    (work / "naive.py").write_text(NAIVE)
    (work / "ours.py").write_text(OURS)
    rows: list[tuple[str, str, str, str, str]] = []

    def row(what, ours, ref, ratio, goal):
        rows.append((what, ours, ref, ratio, goal))
        print(f"{what:<64} {ours:>10} {ref:>10} {ratio:>7}  {goal}", flush=True)

    print(f"{'measure':<64} {'ours':>10} {'reference':>10} {'ratio':>7}  goal")
    floor = [PY, "-c", "import sympy, jinja2, typer"]
    bare_sympy = [PY, "-c", "import sympy"]

    cold = {**env, "DERIVE_NO_CACHE": "1"}
    cold_reps = 1 if args.quick else 3

    def floor_row(what: str, cmd: list[str], environment: dict[str, str], goal: str, times: int) -> None:
        try:
            a, b = pair(cmd, floor, times, work, environment)
        except Failed as e:
            row(what, "failed", "", "", goal)
            print(f"  {e}", flush=True)
            return
        row(what, f"{med(a):.2f} s", f"{med(b):.2f} s", f"{med(a) / med(b):.2f}", goal)

    # The table: every catalog entry, symbolic and for three classes, cold and warm.
    for name in CATALOG if not args.from_large else ():
        for classes in ([], ["--classes", "3"]):
            cmd = DERIVE + [name, *classes, "-o", str(work / "entry.md")]
            label = f"{name}{' --classes 3' if classes else ''}"
            floor_row(f"{label}, cold / import floor", cmd, cold, "<= 2", cold_reps)
            floor_row(f"{label}, warm / import floor", cmd, env, "", cold_reps)
    if not args.from_large:
        floor_row("overview, cold / import floor", DERIVE + ["overview", "-o", str(work / "overview" / "overview.md")], cold, "<= 4", cold_reps)
        floor_row("overview, warm / import floor", DERIVE + ["overview", "-o", str(work / "overview" / "overview.md")], env, "", cold_reps)
    for label, spec in OWN if not args.from_large else ():
        cmd = DERIVE + ["grad", *spec, "--classes", "3", "-o", str(work / "own.md")]
        floor_row(f"derive grad: {label}, cold / import floor", cmd, cold, "<= 3", 1)
    if args.entries:
        return _table(rows, work)
    large = DERIVE + ["softmax-ce", "--classes", "100000", "--format", "json", "-o", str(work / "large.json")]
    def peak_row(what: str, cmd: list[str], environment: dict[str, str], goal: str) -> None:
        try:
            t, kib = peak(cmd, work, environment)
        except Failed as e:
            row(what, "failed", "", "", goal)
            print(f"  {e}", flush=True)
            return
        row(what, f"{t:.2f} s", f"{kib / 1024:.0f} MiB", "", goal)

    for what, environment in (("cold", cold), ("warm", env)) if not args.from_naive else ():
        peak_row(f"softmax-ce --classes 100000 --format json, {what} (time, peak memory)", large, environment, "< 10 s, < 500 MB")
    for name in CATALOG if not args.from_naive else ():
        for what, environment in (("cold", cold), ("warm", env)):
            peak_row(f"{name} --classes 1000 (md), {what} (time, peak memory)", DERIVE + [name, "--classes", "1000", "-o", str(work / "thousand.md")], environment, "< 5 s")
    naive_size = 16 if args.quick else 32
    ours_json = DERIVE + ["softmax-ce", "--classes", str(naive_size), "--format", "json", "-o", str(work / "ours.json")]
    (work / "naive_json.py").write_text(NAIVE_JSON)
    a, b = pair(ours_json, [PY, "naive_json.py", str(naive_size)], 1, work, cold)
    row(f"naive SymPy / softmax-ce --classes {naive_size} --format json, cold", f"{med(a):.2f} s", f"{med(b):.2f} s", f"{med(b) / med(a):.0f}x", ">= 20x")

    main_job = DERIVE + ["softmax-ce", "--classes", "3", "-o", str(work / "doc.md")]
    a, b = pair(main_job, floor, reps, work, env)
    row("softmax-ce --classes 3 (md), warm / import floor", f"{med(a):.2f} s", f"{med(b):.2f} s", f"{med(a) / med(b):.2f}", "<= 1.1")
    row("peak memory of the main job / import floor", f"{med(a, 1) / 1024:.0f} MiB", f"{med(b, 1) / 1024:.0f} MiB", f"{med(a, 1) / med(b, 1):.2f}", "<= 1.2")

    for light in (["--help"], ["list"], ["--version"]):
        a, b = pair(DERIVE + light, bare_sympy, reps, work, env)
        row(f"derive {light[0]} / import sympy", f"{med(a):.2f} s", f"{med(b):.2f} s", f"{med(a) / med(b):.2f}", "<= 0.6")

    if shutil.which("latexmk"):
        latexmk = ["latexmk", "-pdf", "-interaction=nonstopmode", "-norc", "-g", "one.tex"]
        pdf_job = DERIVE + ["softmax-ce", "--classes", "3", "-o", str(work / "doc.pdf")]
        a, b = pair(pdf_job, latexmk, reps, work, env)
        f = med(pair(floor, floor, 1, work, env)[0])
        row("--format pdf / (floor + 1.3 x bare latexmk)", f"{med(a):.2f} s", f"{f + 1.3 * med(b):.2f} s", f"{med(a) / (f + 1.3 * med(b)):.2f}", "<= 1")
    else:
        print("--format pdf: skipped, its reference point is a latexmk build (apt-get install latexmk)", flush=True)

    # The verification itself, timed inside each process (both pay the same imports).
    naive_sizes = (8, 16) if args.quick else (8, 16, 32)
    for n in naive_sizes:
        a, b = pair([PY, "ours.py", str(n)], [PY, "naive.py", str(n)], 1 if n > 16 else min(reps, 3), work, env, inner=True)
        row(f"exact gradient check, H = {n}: naive SymPy / ours", f"{med(a):.3f} s", f"{med(b):.2f} s", f"{med(b) / med(a):.0f}x", ">= 20x at H = 16")
    previous = None
    for n in (8, 64, 512, 4096, 32768):
        t = med([run([PY, "ours.py", str(n)], work, env, inner=True) for _ in range(1 if n >= 512 else 3)])
        growth = f"{t / previous:.1f}x" if previous else ""
        row(f"gradient, Jacobian and example checks, H = {n}", f"{t:.3f} s", "", growth, "O(H): 8x per row")
        previous = t

    sizes = {}
    for n in (8, 100000):
        out = work / f"doc-{n}.md"
        run(DERIVE + ["softmax-ce", "--classes", str(n), "-o", str(out)], work, env)
        sizes[n] = out.stat().st_size
    row("Markdown size, H = 100000 / H = 8", f"{sizes[100000]} B", f"{sizes[8]} B", f"{sizes[100000] / sizes[8]:.2f}", "bounded (elided)")
    _table(rows, work)


def _table(rows: list, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    # The README's table is this, pasted.
    print("\n| measure | ours | reference | ratio | goal |\n|---|---|---|---|---|")
    for what, ours, ref, ratio, goal in rows:
        print(f"| {what} | {ours} | {ref} | {ratio} | {goal} |")


if __name__ == "__main__":
    main()
