"""Benchmark of `nasctl search --strategy multishot` on the default space and digits.

``quality``: the same trial budget for NSGA-II and for random search (Optuna's
RandomSampler), 3 seeds each. Reported: the hypervolume of each feasible Pareto front in
(accuracy up, estimated latency down), with the reference point (accuracy 0, 2x the
baseline's latency), and the best arch within 1 point of the baseline's accuracy, with its
estimated and measured latency against the baseline's. The default 24 trials give NSGA-II
(population 8) three generations; fronts are drawn in ``results/search_quality.png``.

``scaling``: wall time of the same study run by 1 and by 2 workers on one PostgreSQL
server (a throwaway one on a loopback port, as in the tests).

``acceptance``: the user's command, `nasctl search SPACE --trials 12 --out DIR` with the
default per-trial budget, killed with SIGKILL after ``--kill-after`` complete trials and
re-run; reports both wall times, the final trial states and best-vs-baseline.

    python bench/search_multishot.py quality [--trials 24] [--trial-seconds 10] [--seeds 0 1 2]
    python bench/search_multishot.py plot     # redraw the quality figure from its JSON
    python bench/search_multishot.py scaling [--trials 8] [--trial-seconds 10]
    python bench/search_multishot.py acceptance [--trials 12] [--kill-after 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import RESULTS, save  # noqa: E402

from nasctl.contrastive import PretrainConfig  # noqa: E402
from nasctl.search import SearchConfig, TrialBudget, run_search, write_outputs  # noqa: E402

SPACE = ROOT / "search_spaces" / "mobilenetv2_32.yaml"


def hypervolume_2d(points: list[tuple[float, float]], ref_latency: float) -> float:
    """Area dominated by (accuracy, latency) points, accuracy up and latency down, bounded by
    accuracy 0 and latency ``ref_latency``."""
    pts = sorted((lat, acc) for acc, lat in points if lat < ref_latency and acc > 0)
    area, height = 0.0, 0.0
    # sweep latency upwards: between two consecutive latencies the dominated height is the
    # best accuracy among the points at or below the lower one
    for k, (lat, acc) in enumerate(pts):
        height = max(height, acc)
        nxt = pts[k + 1][0] if k + 1 < len(pts) else ref_latency
        area += (nxt - lat) * height
    return area


def _config(args, out: Path, seed: int, sampler: str, storage: str | None = None, workers: int = 1) -> SearchConfig:
    budget = TrialBudget(PretrainConfig(epochs=args.epochs, time_budget_s=args.trial_seconds, seed=seed))
    return SearchConfig(
        space_file=str(SPACE),
        out=str(out),
        budget=budget,
        trials=args.trials,
        seed=seed,
        sampler=sampler,
        storage=storage,
        workers=workers,
        study_name=f"bench-{sampler}-{seed}-w{workers}",
    )


def run_quality(args) -> None:
    runs = []
    root = Path(tempfile.mkdtemp(prefix="nasctl-bench-search-"))
    for seed in args.seeds:
        for sampler in ("nsga2", "random"):
            cfg = _config(args, root / f"{sampler}-{seed}", seed, sampler)
            t = time.perf_counter()
            run_search(cfg)
            wall = time.perf_counter() - t
            res = write_outputs(cfg, measure=True)
            base, pareto = res.baseline.to_dict(), [r.to_dict() for r in res.pareto]
            ref = 2 * base["latency_ms"]
            hv = hypervolume_2d([(r["accuracy"], r["latency_ms"]) for r in pareto], ref)
            summary = json.loads((Path(cfg.out) / "pareto.json").read_text())
            runs.append(
                {
                    "sampler": sampler,
                    "seed": seed,
                    "wall_s": wall,
                    "hypervolume": hv,
                    "pareto_size": len(res.pareto),
                    "baseline": {k: base.get(k) for k in ("accuracy", "latency_ms", "measured_latency_ms")},
                    "best_vs_baseline": summary["best_vs_baseline"],
                    "front": [
                        {k: r.get(k) for k in ("number", "accuracy", "latency_ms", "measured_latency_ms", "params")}
                        for r in pareto
                    ],
                }
            )
            b = summary["best_vs_baseline"]
            best = (
                f"best within 1 pt: {b['latency_change_pct']:+.1f}% {b['latency_key']}, "
                f"{b['accuracy_change_points']:+.1f} pts"
                if b
                else "no arch within 1 point of the baseline"
            )
            print(f"{sampler:6s} seed {seed}: HV {hv:.4f}, front {len(res.pareto)}, {wall:.0f} s; {best}", flush=True)
    table = {
        s: {
            "hypervolume_mean": float(np.mean([r["hypervolume"] for r in runs if r["sampler"] == s])),
            "hypervolume_runs": [r["hypervolume"] for r in runs if r["sampler"] == s],
        }
        for s in ("nsga2", "random")
    }
    print(
        f"hypervolume, mean of {len(args.seeds)} seeds: NSGA-II {table['nsga2']['hypervolume_mean']:.4f}, "
        f"random {table['random']['hypervolume_mean']:.4f}"
    )
    data = {"trials": args.trials, "trial_seconds": args.trial_seconds, "table": table, "runs": runs}
    save("search_quality", data)
    plot_quality(data, RESULTS / "search_quality.png")
    shutil.rmtree(root, ignore_errors=True)


def plot_quality(data: dict, path: Path) -> None:
    """Each run's feasible front (val accuracy against estimated latency) as a staircase:
    NSGA-II solid, random dashed, one colour per seed; the baseline as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    seeds = sorted({r["seed"] for r in data["runs"]})
    colours = plt.get_cmap("tab10")
    for r in data["runs"]:
        pts = sorted((p["latency_ms"], p["accuracy"]) for p in r["front"])
        if not pts:
            continue
        c = colours(seeds.index(r["seed"]))
        style = "-" if r["sampler"] == "nsga2" else "--"
        label = f"{'NSGA-II' if r['sampler'] == 'nsga2' else 'random'} seed {r['seed']} (HV {r['hypervolume']:.3f})"
        ax.step([p[0] for p in pts], [100 * p[1] for p in pts], where="post", ls=style, color=c, label=label)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o" if style == "-" else "x", color=c, ms=4)
    base = data["runs"][0]["baseline"]
    ax.plot([base["latency_ms"]], [100 * base["accuracy"]], "k*", ms=12, label="baseline (seed 0)")
    ax.set_xlabel("estimated latency (ms, shipped CPU estimator)")
    ax.set_ylabel("val linear-probe accuracy (%)")
    ax.set_title(f"Feasible Pareto fronts, {data['trials']} trials of {data['trial_seconds']:g} s each")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def run_scaling(args) -> None:
    from tests.pg import PostgresServer

    server = PostgresServer()
    why = server.start()
    if why:
        server.stop()
        sys.exit(f"no PostgreSQL server: {why}")
    root = Path(tempfile.mkdtemp(prefix="nasctl-bench-scaling-"))
    results = {}
    try:
        for workers in (1, 2):
            cfg = _config(args, root / f"w{workers}", 0, "nsga2", server.url, workers)
            t = time.perf_counter()
            counts = run_search(cfg)
            results[f"{workers}_workers"] = {"wall_s": time.perf_counter() - t, "counts": counts}
            print(f"{workers} worker(s): {results[f'{workers}_workers']['wall_s']:.0f} s for {args.trials} trials")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    speedup = results["1_workers"]["wall_s"] / results["2_workers"]["wall_s"]
    print(f"speed-up with 2 workers: {speedup:.2f}x (2 cores: each worker gets 1 torch thread)")
    save("search_scaling", {"trials": args.trials, "trial_seconds": args.trial_seconds, **results, "speedup": speedup})


def run_acceptance(args) -> None:
    import os
    import signal
    import sqlite3
    import subprocess

    out = Path(tempfile.mkdtemp(prefix="nasctl-accept-")) / "run"
    cmd = [sys.executable, "-m", "nasctl", "search", str(SPACE), "--trials", str(args.trials), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    complete = 0
    while proc.poll() is None:
        time.sleep(1)
        try:
            with sqlite3.connect(out / "study.db") as con:
                complete = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        except sqlite3.Error:
            continue
        if complete >= args.kill_after:
            time.sleep(5)  # into the next trial
            os.killpg(proc.pid, signal.SIGKILL)
            break
    first_s = time.perf_counter() - t0
    print(f"killed with SIGKILL after {first_s:.0f} s, {complete} complete trials", flush=True)
    t1 = time.perf_counter()
    r = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    second_s = time.perf_counter() - t1
    if r.returncode != 0:
        sys.exit(f"the re-run failed: {r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    import csv

    with open(out / "trials.csv", newline="") as f:
        states = [row["state"] for row in csv.DictReader(f)]
    print(f"re-run: {second_s:.0f} s; states: {', '.join(f'{s} x{states.count(s)}' for s in sorted(set(states)))}")
    b, base = summary["best_vs_baseline"], summary["baseline"]
    print(
        f"baseline: val acc {base['accuracy']:.1%}, est {base['latency_ms']:.3f} ms, "
        f"measured {base.get('measured_latency_ms', float('nan')):.3f} ms"
    )
    if b:
        print(
            f"best within 1 point: trial {b['trial']}: {b['latency_change_pct']:+.1f}% {b['latency_key']}, "
            f"accuracy {b['accuracy_change_points']:+.1f} points"
        )
    for f in ("trials.csv", "pareto.json", "pareto.png", "report.md", "study.db"):
        assert (out / f).is_file(), f
    shutil.copy(out / "pareto.png", Path(__file__).resolve().parent / "results" / "search_acceptance_pareto.png")
    save(
        "search_acceptance",
        {
            "command": " ".join(cmd[2:]),
            "killed_after_s": first_s,
            "complete_when_killed": complete,
            "rerun_s": second_s,
            "total_s": first_s + second_s,
            "states": {s: states.count(s) for s in set(states)},
            "baseline": base,
            "best_vs_baseline": b,
            "pareto": summary["pareto"],
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    for name, trials in (("quality", 24), ("scaling", 8), ("acceptance", 12)):
        p = sub.add_parser(name)
        p.add_argument("--kill-after", type=int, default=6)
        p.add_argument("--trials", type=int, default=trials)
        p.add_argument("--trial-seconds", type=float, default=10.0)
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sub.add_parser("plot", help="redraw results/search_quality.png from results/search_quality.json")
    args = ap.parse_args()
    if args.part == "plot":
        plot_quality(json.loads((RESULTS / "search_quality.json").read_text()), RESULTS / "search_quality.png")
        return
    {"quality": run_quality, "scaling": run_scaling, "acceptance": run_acceptance}[args.part](args)


if __name__ == "__main__":
    main()
