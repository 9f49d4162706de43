"""The benchmark: our timings beside their reference points, measured in one run, as ratios.

    python bench/bench.py            # about two minutes
    python bench/bench.py --quick    # fewer repetitions, no naive route beyond H = 16

Machines are shared and noisy, so every pair is measured interleaved (a, b, a, b, ...) and
reported as medians and the ratio of medians. Each measurement is a fresh process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def run(cmd: list[str], cwd: Path, env: dict[str, str], inner: bool = False) -> tuple[float, int]:
    """Wall time in seconds and peak memory in KiB of one process; with ``inner``, the time the
    process itself printed (the work without the interpreter's start and imports)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = status
    if status != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {err.decode()[-500:]}")
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
    args = parser.parse_args()
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
        print(f"{what:<46} {ours:>10} {ref:>10} {ratio:>7}  {goal}", flush=True)

    print(f"{'measure':<46} {'ours':>10} {'reference':>10} {'ratio':>7}  goal")
    floor = [PY, "-c", "import sympy, jinja2, typer"]
    bare_sympy = [PY, "-c", "import sympy"]

    main_job = DERIVE + ["softmax-ce", "--classes", "3", "-o", str(work / "doc.md")]
    a, b = pair(main_job, floor, reps, work, env)
    row("softmax-ce --classes 3 (md) / import floor", f"{med(a):.2f} s", f"{med(b):.2f} s", f"{med(a) / med(b):.2f}", "<= 1.25")
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
    for n in (8, 16, 32, 64, 128, 256):
        t = med([run([PY, "ours.py", str(n)], work, env, inner=True) for _ in range(1 if n >= 128 else 3)])
        growth = f"{t / previous:.1f}x" if previous else ""
        row(f"gradient, Jacobian and example checks, H = {n}", f"{t:.3f} s", "", growth, "H = 256 well under a minute")
        previous = t

    sizes = {}
    for n in (8, 64, 256):
        out = work / f"doc-{n}.md"
        run(DERIVE + ["softmax-ce", "--classes", str(n), "-o", str(out)], work, env)
        sizes[n] = out.stat().st_size
    row("Markdown size, H = 256 / H = 8", f"{sizes[256]} B", f"{sizes[8]} B", f"{sizes[256] / sizes[8]:.2f}", "bounded (elided)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
