"""Benchmark (b): estimator speed.

* Arch estimates per second (kernel IR + memory + LightGBM, batch API), cold and warm
  prediction cache, on each shipped space;
* time to estimate one ONNX file of EfficientNet-B0 size (parse + shape inference +
  grouping + prediction + memory), with a cold and a warm prediction cache, and its split
  by phase, against the time to measure the same file with onnxruntime by this project's
  two protocols, timed side by side in the same repetitions (the machine is shared:
  medians over ``--reps``):

  - ``minimal``: one ``time_onnx`` call, what ``nasctl estimate --measure`` does
    (session creation, 5 warm-up runs, then timed runs until the median is known to 2%,
    at least 10, at most 1 s);
  - ``accuracy``: what ``bench/latency_accuracy.py`` takes per model for its figures, a
    measurement and an independent re-measurement (two ``time_onnx`` calls), because
    repeat measurements on these shared machines differ by up to ~15%.

* the whole command ``nasctl estimate FILE`` on the same file, as a user runs it (process
  start, imports, estimator load, ONNX parse, prediction, printing): ``python -m nasctl``
  and the installed ``nasctl`` entry point, each run ``--command-runs`` times as a
  subprocess after one untimed run, median and min wall seconds (``whole_command`` in the JSON).

It ends with one table of the targets, each pass or fail (also under ``targets`` in the
JSON): an ONNX estimate in-process < 50 ms (cold cache), >= 10x faster than one
measurement (``minimal``), >= 1000 Arch estimates/s (cold cache, slowest space), and the
whole command < 1.5 s (median).

    python bench/latency_speed.py [--estimator cpu] [--reps 7] [--command-runs 7] [--name latency_speed]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl.latency.api import (  # noqa: E402
    _estimate,
    estimate_archs,
    estimate_onnx,
    estimator_path,
    load_estimator,
)
from nasctl.latency.estimator import LatencyEstimator  # noqa: E402
from nasctl.latency.kernels import kernels_from_graph, load_onnx, onnx_graph  # noqa: E402
from nasctl.latency.measure import time_onnx  # noqa: E402
from nasctl.latency.memory import memory_from_graph  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("load", "shapes", "grouping", "memory", "predict")
# the targets, checked in the summary table at the end (see the docstring)
ESTIMATE_MS_MAX = 50.0  # one ONNX file, in-process, cold prediction cache
SPEEDUP_MIN = 10.0  # estimate vs one measurement (minimal protocol), cold cache
ARCHS_PER_S_MIN = 1000.0  # Arch estimates per second, cold cache, slowest shipped space
COMMAND_S_MAX = 1.5  # the whole `nasctl estimate FILE` command, median wall seconds


def _seconds(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def estimate_phases_s(path: Path, est: LatencyEstimator) -> dict[str, float]:
    """The steps of ``estimate_onnx``, one by one, with a cold prediction cache."""
    est._cache.clear()
    s: dict[str, float] = {}
    s["load"], model = _seconds(lambda: load_onnx(path))
    s["shapes"], graph = _seconds(lambda: onnx_graph(model))
    s["grouping"], kernels = _seconds(lambda: kernels_from_graph(graph))
    s["memory"], mem = _seconds(lambda: memory_from_graph(graph, kernels))
    s["predict"], _ = _seconds(lambda: _estimate(est, kernels, mem))
    return s


def arch_speed(est_name: str, n_archs: int) -> dict[str, dict[str, float]]:
    out = {}
    for space_file in sorted((ROOT / "search_spaces").glob("*.yaml")):
        space = SearchSpace.load(space_file)
        rng = np.random.default_rng(1)
        archs = [space.sample(rng) for _ in range(n_archs)]
        est = LatencyEstimator.load(estimator_path(est_name))  # a fresh instance: cold cache
        cold, _ = _seconds(lambda: estimate_archs(archs, est))  # noqa: B023
        archs = [space.sample(rng) for _ in range(n_archs)]
        warm, _ = _seconds(lambda: estimate_archs(archs, est))  # noqa: B023
        out[space_file.name] = {"cold": n_archs / cold, "warm": n_archs / warm}
        print(f"{space_file.name:32s} {n_archs / cold:8.0f} archs/s cold cache, {n_archs / warm:8.0f} warm")
    return out


def onnx_speed(path: Path, name: str, est: LatencyEstimator, reps: int) -> dict:
    est.predict_kernels([])  # import / warm the library
    estimate_onnx(path, est)
    time_onnx(path)  # onnxruntime's first session in the process pays one-off set-up
    rows: dict[str, list[float]] = {"cold": [], "warm": [], "minimal": [], "accuracy": []}
    phases: list[dict[str, float]] = []
    meas: list[tuple[float, float, int]] = []
    for _ in range(reps):  # interleaved: every repetition sees the same machine load
        est._cache.clear()
        rows["cold"].append(_seconds(lambda: estimate_onnx(path, est))[0])
        rows["warm"].append(_seconds(lambda: estimate_onnx(path, est))[0])
        phases.append(estimate_phases_s(path, est))
        t, m = _seconds(lambda: time_onnx(path))
        rows["minimal"].append(t)
        meas.append(m)
        rows["accuracy"].append(_seconds(lambda: (time_onnx(path), time_onnx(path)))[0])
    ms = {k: float(np.median(v)) * 1e3 for k, v in rows.items()}
    phase_ms = {p: float(np.median([r[p] for r in phases])) * 1e3 for p in PHASES}
    latency_ms = float(np.median([m[0] for m in meas]))
    runs = int(np.median([m[2] for m in meas]))
    out = {
        "model": name,
        "file_mb": path.stat().st_size / 1e6,
        "n_kernels": len(estimate_onnx(path, est).kernels),
        "repetitions": reps,
        "estimate_ms": {"cold_cache": ms["cold"], "warm_cache": ms["warm"]},
        "estimate_phases_ms": phase_ms,
        "measure_ms": {
            "minimal": ms["minimal"],  # one time_onnx: nasctl estimate --measure
            "accuracy": ms["accuracy"],  # two time_onnx: bench/latency_accuracy.py per model
        },
        "measured_latency_ms": latency_ms,
        "timed_runs_per_measurement": runs,
        "speedup": {
            f"{protocol}_vs_{cache}": ms[protocol] / ms[cache]
            for protocol in ("minimal", "accuracy")
            for cache in ("cold", "warm")
        },
        "all_ms": {k: [x * 1e3 for x in v] for k, v in rows.items()},
    }
    print(
        f"{name} ({out['file_mb']:.0f} MB, {out['n_kernels']} kernels): estimate {ms['cold']:.1f} ms cold cache, "
        f"{ms['warm']:.1f} ms warm ({', '.join(f'{p} {v:.1f}' for p, v in phase_ms.items())} ms)"
    )
    for protocol, what in (
        ("minimal", f"session + 5 warm-up + {runs} runs of {latency_ms:.1f} ms"),
        ("accuracy", "measurement + re-measurement"),
    ):
        print(
            f"  measure ({protocol}: {what}) {ms[protocol]:.0f} ms: estimating is "
            f"{ms[protocol] / ms['cold']:.0f}x faster (cold cache), {ms[protocol] / ms['warm']:.0f}x (warm)"
        )
    return out


def _entry_point() -> str | None:
    """The installed ``nasctl`` script: beside this interpreter (a venv not activated), else on PATH."""
    beside = Path(sys.executable).parent / "nasctl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nasctl")


def command_speed(path: Path, estimator: str, runs: int) -> dict[str, dict]:
    """Wall seconds of the whole ``nasctl estimate FILE`` command, run as a subprocess from
    the repository root: one untimed run (file cache), then ``runs`` timed ones."""
    extra = [] if estimator == "cpu" else ["--estimator", estimator]
    commands = {"python -m nasctl": [sys.executable, "-m", "nasctl"]}
    entry = _entry_point()
    if entry:
        commands["nasctl (entry point)"] = [entry]
    else:
        print("no installed nasctl entry point found: timing python -m nasctl only")
    out = {}
    for label, prefix in commands.items():
        argv = [*prefix, "estimate", str(path), *extra]
        times = []
        for i in range(runs + 1):
            t = time.perf_counter()
            r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            if i:
                times.append(time.perf_counter() - t)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        med = float(np.median(times))
        out[label] = {
            "argv": argv,
            "runs": runs,
            "median_s": med,
            "min_s": float(min(times)),
            "all_s": times,
            "pass": med < COMMAND_S_MAX,
        }
        print(
            f"{label} estimate {path.name}: median {med:.2f} s, min {min(times):.2f} s over {runs} runs "
            f"(target < {COMMAND_S_MAX} s: {'pass' if med < COMMAND_S_MAX else 'FAIL'})"
        )
    return out


def targets(results: dict) -> list[dict]:
    """The targets, each with its figure and pass/fail."""
    o = results["onnx"]
    slowest = min(results["arch_estimates_per_s"].items(), key=lambda kv: kv[1]["cold"])
    rows = [
        ("ONNX estimate in-process, cold cache", o["estimate_ms"]["cold_cache"], "<", ESTIMATE_MS_MAX, "ms"),
        ("estimate vs one measurement (speed-up)", o["speedup"]["minimal_vs_cold"], ">=", SPEEDUP_MIN, "x"),
        (f"Arch estimates/s, cold ({slowest[0]})", slowest[1]["cold"], ">=", ARCHS_PER_S_MIN, "/s"),
    ]
    rows += [
        (f"whole command, {label} (median)", c["median_s"], "<", COMMAND_S_MAX, "s")
        for label, c in results["whole_command"].items()
    ]
    return [
        {
            "target": what,
            "value": value,
            "bound": f"{op} {bound:g} {unit}",
            "pass": bool(value < bound if op == "<" else value >= bound),
        }
        for what, value, op, bound, unit in rows
    ]


def print_targets(rows: list[dict]) -> None:
    width = max(len(r["target"]) for r in rows)
    print(f"\n{'target':{width}s}  {'value':>9s}  {'bound':12s}  result")
    for r in rows:
        print(f"{r['target']:{width}s}  {r['value']:9.2f}  {r['bound']:12s}  {'pass' if r['pass'] else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--estimator", default="cpu")
    ap.add_argument("--name", default="latency_speed", help="results file: bench/results/NAME.json")
    ap.add_argument("--archs", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions of estimate and measure")
    ap.add_argument("--command-runs", type=int, default=7, help="timed runs of the whole nasctl estimate command")
    args = ap.parse_args()
    # the machine is shared: record how busy it was (1-minute load average, 2 cores)
    results: dict = {"estimator": args.estimator, "load_average_start": os.getloadavg()[0]}
    results["arch_estimates_per_s"] = arch_speed(args.estimator, args.archs)
    est = load_estimator(args.estimator)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from nasctl import zoo

            path = zoo.export("efficientnet_b0", Path(tmp) / "effb0.onnx", resolution=224)
            name = "efficientnet_b0"
        except ImportError:
            from nasctl.nn.export import export_onnx

            path = export_onnx(
                SearchSpace.load(ROOT / "search_spaces/mobilenetv2_224.yaml").baseline(), Path(tmp) / "mbv2.onnx"
            )
            name = "mobilenetv2_224 baseline"
        results["onnx"] = onnx_speed(Path(path), name, est, args.reps)
        results["whole_command"] = command_speed(Path(path), args.estimator, args.command_runs)
    results["targets"] = targets(results)
    results["load_average_end"] = os.getloadavg()[0]
    start, end = results["load_average_start"], results["load_average_end"]
    print_targets(results["targets"])
    print(f"load average (1 min): {start:.1f} at the start, {end:.1f} at the end")
    save(args.name, results, config=vars(args))


if __name__ == "__main__":
    main()
