"""Benchmark: the latency estimator on models and machines it never saw.

The user flow, as a new user runs it on this machine, then the estimate of every
standard network of ``nasctl.zoo`` (224x224, one image, 1 thread) against onnxruntime:

1. ``zoo-1``: the zoo networks timed (pass 1 of 3, adaptive repeats);
2. ``measure``: ``nasctl measure --device cpu --time-budget BUDGET --threads 1`` (the CLI);
3. ``fit``: ``nasctl fit-estimator`` on that CSV (the CLI; its per-kernel k-fold table);
4. ``zoo-2``: timing pass 2;
5. ``lofo``: leave-one-family-out: for each zoo family, an estimator fitted on the
   measurement rows of every network *not* of that family (the measure command times
   variants of the zoo families among its networks) estimates that family's networks.
   This is the honest held-out figure: no network of a family is in training when it
   is scored. Also the full estimator (every family in training), for contrast;
6. ``shipped``: the shipped ``cpu`` estimator, fitted on another machine, unadapted;
7. ``quick``: ``nasctl measure --quick --estimator cpu`` (the CLI, wall time recorded),
   and the adapted estimator on the zoo;
8. ``zoo-3``: timing pass 3.

The measured latency of a network is the median of its three passes; the same-run noise
floor is each pass against the median of the other two (MAPE), reported beside every
error. Stages are cached under ``bench/cache/latency_unseen/TAG`` and a re-run resumes;
``--refit`` fits and scores again from the cached timings (``fit`` and ``lofo`` only).
``--no-node-cost``, on a finished run, is the control for the profiler's per-node cost:
the full and the leave-one-family-out estimators fitted again on the same timings with
the cost left in the kernel times, saved as ``latency_unseen_no_node_cost.json``.

    python bench/latency_unseen.py [--budget 600] [--seed 1] [--tag run1] [--refit] [--no-node-cost]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl import zoo  # noqa: E402
from nasctl.latency.api import estimate_onnx  # noqa: E402
from nasctl.latency.estimator import LatencyEstimator, accuracy_metrics, read_measurements  # noqa: E402
from nasctl.latency.measure import NoiseMonitor, time_onnx_runs  # noqa: E402
from nasctl.latency.randnet import family_from_network_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RES = 224
PASSES = 3


def nasctl(*args: str) -> tuple[dict, float]:
    """Run the CLI with --json; (its JSON, wall seconds)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nasctl", *args, "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"nasctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout), wall


def zoo_pass(files: dict[str, Path], threads: int) -> dict[str, dict[str, float]]:
    """Each zoo network's median time, and the reference network's bursts around it (the
    machine's speed at that moment, as ``nasctl measure`` tracks it)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        mon = NoiseMonitor(tmp, threads)
        for i, (name, path) in enumerate(files.items()):
            before = mon.burst()
            ms = float(np.median(time_onnx_runs(path, threads, target_ci=0.01, max_s=2.0)))
            out[name] = {"ms": ms, "reference_ms": (before + mon.burst()) / 2}
            print(f"\r  timed {i + 1}/{len(files)}", end="", flush=True)
    print()
    return out


def network_family(model_id: str) -> str | None:
    """The zoo family of a measured network (table ids are 'CSV:network name')."""
    return family_from_network_name(model_id.partition(".csv:")[2])


def errors(pred: dict[str, float], measured: dict[str, float], noise: dict[str, float]) -> dict:
    names = sorted(pred)
    p = np.array([pred[n] for n in names])
    m = np.array([measured[n] for n in names])
    return {
        "per_model": {
            n: {
                "estimated_ms": pred[n],
                "measured_ms": measured[n],
                "error_pct": (pred[n] - measured[n]) / measured[n] * 100,
            }
            for n in names
        },
        "overall": accuracy_metrics(p, m) | {"noise_floor_mape": float(np.mean([noise[n] for n in names]))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="nasctl measure --time-budget (s)")
    ap.add_argument("--seed", type=int, default=1, help="nasctl measure --seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="run1", help="cache folder name")
    ap.add_argument("--shipped", default="cpu", help="the estimator --quick adapts")
    ap.add_argument(
        "--refit",
        action="store_true",
        help="fit the estimator and leave-one-family-out again from the cached measurements "
        "(after a change to the estimator); every timing is kept",
    )
    ap.add_argument(
        "--no-node-cost",
        action="store_true",
        help="on a finished run: fit again without taking the profiler's per-node cost off the kernel "
        "times (the control), results in latency_unseen_no_node_cost.json",
    )
    args = ap.parse_args()
    cache = ROOT / "bench" / "cache" / "latency_unseen" / args.tag
    variant = "_no_node_cost" if args.no_node_cost else ""
    (cache / "zoo").mkdir(parents=True, exist_ok=True)
    state_path = cache / "state.json"
    state: dict = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if args.refit:
        for stage in ("lofo" + variant,) if variant else ("fit", "lofo"):
            state.pop(stage, None)

    def done(stage: str, value) -> None:
        state[stage] = value
        state_path.write_text(json.dumps(state, indent=1))

    files = {}
    for name in sorted(zoo.ZOO):
        path = cache / "zoo" / f"{name}.onnx"
        if not path.is_file():
            zoo.export(name, path, resolution=RES)
        files[name] = path
    measure_csv, est_path, quick_path = cache / "measure.csv", cache / "est.json.gz", cache / "quick.json.gz"

    for stage in ("zoo-1", "measure", "fit", "zoo-2", "quick", "zoo-3"):
        if stage in state:
            continue
        if variant:
            raise SystemExit(f"--no-node-cost needs a finished run of --tag {args.tag} (stage {stage} missing)")
        print(f"stage {stage}")
        if stage.startswith("zoo-"):
            done(stage, zoo_pass(files, args.threads))
        elif stage == "measure":
            meta, wall = nasctl(
                "measure", "--device", "cpu", "--time-budget", str(args.budget), "--threads", str(args.threads),
                "--seed", str(args.seed), "--out", str(measure_csv),
            )  # fmt: skip
            done(stage, {"meta": meta, "wall_s": wall})
        elif stage == "fit":
            report, wall = nasctl("fit-estimator", str(measure_csv), "--out", str(est_path))
            done(stage, {"report": report, "wall_s": wall})
        elif stage == "quick":
            report, wall = nasctl(
                "measure",
                "--quick",
                "--estimator",
                args.shipped,
                "--threads",
                str(args.threads),
                "--out",
                str(quick_path),
            )
            done(
                stage,
                {
                    "report": {k: v for k, v in report.items() if k != "groups"},
                    "groups": report.get("groups"),
                    "wall_s": wall,
                },
            )

    passes = [state[f"zoo-{i}"] for i in range(1, PASSES + 1)]

    def truth(speed: float | None) -> tuple[dict[str, float], dict[str, float]]:
        """Measured ms per network (median of the passes) and its noise floor (each pass
        against the median of the others, % MAPE); with ``speed``, each pass rescaled to
        that reference time (ms) as `nasctl measure` rescales its rows."""
        measured, noise = {}, {}
        for n in files:
            vals = [p[n]["ms"] * (speed / p[n]["reference_ms"] if speed else 1.0) for p in passes]
            measured[n] = float(np.median(vals))
            others = [np.median(vals[:i] + vals[i + 1 :]) for i in range(len(vals))]
            noise[n] = float(np.mean([abs(v - o) / o * 100 for v, o in zip(vals, others, strict=True)]))
        return measured, noise

    def score(est: LatencyEstimator, pred: dict[str, float]) -> dict:
        """Errors against raw measurements, and against measurements rescaled to the speed
        the estimator's rows were rescaled to (where it records one)."""
        out = {"raw": errors(pred, *truth(None))}
        speed = est.device.get("reference_ms")
        if speed:
            out["at_reference_speed"] = errors(pred, *truth(speed)) | {"reference_ms": speed}
        return out

    def on_zoo(est: LatencyEstimator, names=None) -> dict[str, float]:
        return {n: estimate_onnx(files[n], est).latency_ms for n in (names or files)}

    node_cost = not args.no_node_cost
    if node_cost:
        full = LatencyEstimator.load(est_path)
    else:
        full = LatencyEstimator().fit(read_measurements([measure_csv]), folds=0, node_cost=False)
    raw_measured, raw_noise = truth(None)
    results: dict = {"passes": passes, "measured_ms": raw_measured, "noise_floor_pct": raw_noise}
    results["full"] = score(full, on_zoo(full))

    lofo = "lofo" + variant
    if lofo not in state:
        print(f"stage {lofo}")
        table = read_measurements([measure_csv])
        ids = {r["model_id"] for r in table.model_rows} | set(table.model_ids)
        fams = {m: network_family(m) for m in ids}
        pred, trained_without = {}, {}
        for family, names in zoo.FAMILIES.items():
            keep = {m for m, f in fams.items() if f != family}
            est = LatencyEstimator().fit(table.subset(keep), folds=0, node_cost=node_cost)
            trained_without[family] = len(ids) - len(keep)
            pred.update(on_zoo(est, [n for n in names if n in files]))
            print(f"  {family}: {len(ids) - len(keep)} networks left out")
        done(lofo, {"pred": pred, "networks_left_out": trained_without})
    results["lofo"] = score(full, state[lofo]["pred"]) | {"networks_left_out": state[lofo]["networks_left_out"]}
    shipped = LatencyEstimator.load(ROOT / "estimators" / f"{args.shipped}.json.gz")
    results["shipped"] = score(shipped, on_zoo(shipped))
    quick = LatencyEstimator.load(quick_path)
    results["quick"] = score(quick, on_zoo(quick)) | {
        "wall_s": state["quick"]["wall_s"],
        "report": state["quick"]["report"],
        "groups": state["quick"]["groups"],
    }
    results["measure"] = state["measure"]
    results["fit"] = state["fit"] if node_cost else {"overhead": full.meta["overhead"], "cv": "not run (folds=0)"}
    config = vars(args) | {"resolution": RES, "passes": PASSES, "zoo": sorted(files), "families": zoo.FAMILIES}
    save("latency_unseen" + variant, results, config)
    keys = ("lofo", "full", "shipped", "quick")
    for view in ("raw", "at_reference_speed"):
        print(f"-- {view}")
        for key in keys:
            if view in results[key]:
                o = results[key][view]["overall"]
                print(
                    f"{key:8s} MAPE {o['mape']:5.1f}%  within 10%: {o['acc10']:3.0f}%  "
                    f"spearman {o['spearman']:.3f}  noise floor MAPE {o['noise_floor_mape']:.1f}%"
                )
    print(
        f"{'model':20s} {'raw ms':>8s} " + " ".join(f"{k:>8s}" for k in keys) + "  (errors % at reference speed; raw)"
    )
    for n in sorted(files):
        cells = []
        for k in keys:
            r = results[k]
            v = r.get("at_reference_speed", r["raw"])["per_model"][n]["error_pct"]
            cells.append(f"{v:+8.1f}")
        print(f"{n:20s} {raw_measured[n]:8.2f} " + " ".join(cells))


if __name__ == "__main__":
    main()
