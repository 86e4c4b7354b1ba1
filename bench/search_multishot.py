"""Benchmark of `nasctl search --strategy multishot` on the default space and digits.

``quality``: the same trial budget for NSGA-II and for random search (Optuna's
RandomSampler), 3 seeds each: equal trials, each trained for at most ``--epochs`` epochs
and ``--trial-seconds`` seconds (equal time per trial, not equal steps: a small arch trains
more steps in the same seconds). Finished runs are kept in
``results/search_quality.partial.json`` and a re-run resumes (``--fresh`` starts over).
Reported: the hypervolume of each feasible Pareto front in
(accuracy up, estimated latency down), with the reference point (accuracy 0, 2x the
baseline's latency), and the best arch within 1 point of the baseline's accuracy, with its
estimated and measured latency against the baseline's. The default 24 trials give NSGA-II
(population 8) three generations; fronts are drawn in ``results/search_quality.png``.

``scaling``: wall time of the same study run by 1 and by 2 workers on one PostgreSQL
server (a throwaway one on a loopback port, as in the tests), ``--repeats`` times,
interleaved (1 worker, 2 workers, 1 worker, ...).

``acceptance``: the user's command, `nasctl search SPACE --trials 12 --out DIR` with the
default per-trial budget, killed with SIGKILL after ``--kill-after`` complete trials and
re-run; reports both wall times, the final trial states and best-vs-baseline.

    python bench/search_multishot.py quality [--trials 24] [--trial-seconds 10] [--seeds 0 1 2]
    python bench/search_multishot.py plot     # redraw the quality figure from its JSON
    python bench/search_multishot.py scaling [--trials 8] [--trial-seconds 10] [--repeats 3]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import RESULTS, Partial, mean_std, save  # noqa: E402

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


def _config(
    args, out: Path, seed: int, sampler: str, storage: str | None = None, workers: int = 1, tag: str = ""
) -> SearchConfig:
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
        study_name=f"bench-{sampler}-{seed}-w{workers}{tag}",
    )


def run_quality(args) -> None:
    done = Partial("search_quality", args.fresh)
    root = Path(tempfile.mkdtemp(prefix="nasctl-bench-search-"))
    for seed in args.seeds:
        for sampler in ("nsga2", "random"):
            key = f"{sampler}/seed{seed}/trials{args.trials}/s{args.trial_seconds:g}/e{args.epochs}"
            if key in done:
                continue
            cfg = _config(args, root / f"{sampler}-{seed}", seed, sampler)
            t = time.perf_counter()
            run_search(cfg)
            wall = time.perf_counter() - t
            res = write_outputs(cfg, measure=True)
            base, pareto = res.baseline.to_dict(), [r.to_dict() for r in res.pareto]
            ref = 2 * base["latency_ms"]
            hv = hypervolume_2d([(r["accuracy"], r["latency_ms"]) for r in pareto], ref)
            summary = json.loads((Path(cfg.out) / "pareto.json").read_text())
            done.put(
                key,
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
                    "search_config": cfg.to_dict(),
                },
            )
            b = summary["best_vs_baseline"]
            best = (
                f"best within 1 pt: {b['latency_change_pct']:+.1f}% {b['latency_key']}, "
                f"{b['accuracy_change_points']:+.1f} pts"
                if b
                else "no arch within 1 point of the baseline"
            )
            print(f"{sampler:6s} seed {seed}: HV {hv:.4f}, front {len(res.pareto)}, {wall:.0f} s; {best}", flush=True)
    runs = [
        done[f"{sampler}/seed{seed}/trials{args.trials}/s{args.trial_seconds:g}/e{args.epochs}"]
        for seed in args.seeds
        for sampler in ("nsga2", "random")
    ]
    table = {
        s: {"hypervolume": mean_std([r["hypervolume"] for r in runs if r["sampler"] == s])} for s in ("nsga2", "random")
    }
    wins = sum(
        a["hypervolume"] > b["hypervolume"]
        for a, b in zip(runs[0::2], runs[1::2], strict=True)  # (nsga2, random) of one seed
    )
    table["nsga2_ahead_in_seeds"] = f"{wins} of {len(args.seeds)}"
    n, r = table["nsga2"]["hypervolume"], table["random"]["hypervolume"]
    print(
        f"hypervolume over {len(args.seeds)} seeds: NSGA-II {n['mean']:.4f} ± {n['std']:.4f}, "
        f"random {r['mean']:.4f} ± {r['std']:.4f}; NSGA-II ahead in {wins} of {len(args.seeds)}"
    )
    data = {"trials": args.trials, "trial_seconds": args.trial_seconds, "table": table, "runs": runs}
    save("search_quality", data, config=vars(args))
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
    ax.set_title(f"Feasible Pareto fronts, {data['trials']} trials of at most {data['trial_seconds']:g} s each")
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
    runs: list[dict] = []
    try:
        for rep in range(args.repeats):
            for workers in (1, 2):
                cfg = _config(args, root / f"w{workers}-r{rep}", 0, "nsga2", server.url, workers, tag=f"-r{rep}")
                t = time.perf_counter()
                counts = run_search(cfg)
                wall = time.perf_counter() - t
                runs.append({"repeat": rep, "workers": workers, "wall_s": wall, "counts": counts})
                print(f"repeat {rep}: {workers} worker(s): {wall:.0f} s for {args.trials} trials", flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    walls = {w: [r["wall_s"] for r in runs if r["workers"] == w] for w in (1, 2)}
    speedups = [a / b for a, b in zip(walls[1], walls[2], strict=True)]
    table = {"1_worker_s": mean_std(walls[1]), "2_workers_s": mean_std(walls[2]), "speedup": mean_std(speedups)}
    s = table["speedup"]
    print(f"speed-up with 2 workers: {s['mean']:.2f}x ± {s['std']:.2f} over {args.repeats} repeats (2 cores)")
    save("search_scaling", {"table": table, "runs": runs}, config=vars(args))


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
    for f in ("trials.csv", "pareto.json", "pareto.png", "report.md", "study.db", "search.json"):
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
            "search_config": json.loads((out / "search.json").read_text()),  # what the command ran with
        },
        config=vars(args),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    # each part takes only the options it uses, so its JSON's config says what ran
    q = sub.add_parser("quality")
    q.add_argument("--trials", type=int, default=24)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--fresh", action="store_true", help="Ignore runs saved by an interrupted bench.")
    s = sub.add_parser("scaling")
    s.add_argument("--trials", type=int, default=8)
    s.add_argument("--repeats", type=int, default=3)
    for p in (q, s):
        p.add_argument("--trial-seconds", type=float, default=10.0)
        p.add_argument("--epochs", type=int, default=3)
    a = sub.add_parser("acceptance", help="the CLI's own defaults for the per-trial budget")
    a.add_argument("--trials", type=int, default=12)
    a.add_argument("--kill-after", type=int, default=6)
    sub.add_parser("plot", help="redraw results/search_quality.png from results/search_quality.json")
    args = ap.parse_args()
    if args.part == "plot":
        plot_quality(json.loads((RESULTS / "search_quality.json").read_text()), RESULTS / "search_quality.png")
        return
    {"quality": run_quality, "scaling": run_scaling, "acceptance": run_acceptance}[args.part](args)


if __name__ == "__main__":
    main()
