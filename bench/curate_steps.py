"""What `nasctl curate` finds on each target, and whether the cpu steps are real.

1. `curate` (the library call the command makes) on the shipped spaces with the shipped
   estimators (cpu, sim-npu-p16, sim-npu-p32): the detected step (period, phase,
   strength, permutation p), each stage's kept widths, the baseline's latency before and
   after curation (estimated).
2. sim-npu: the simulator itself (no estimator) on the same sweeps, for the truth the
   estimator's curves should show: where the true jumps are.
3. cpu, measured: the cpu estimator's curves are a sawtooth (odd channel counts slower
   than the even count above them). On the 224 baseline, one stage's width is set to
   every count over a window, every block a fused-IBN, each model exported to ONNX and
   timed with onnxruntime (1 thread), interleaved over rounds; the median of the rounds
   per width. Beside: the estimator's prediction and the noise floor (the spread of one
   width's repeated rounds).

    python bench/curate_steps.py [--rounds 5] [--window 24,40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import save  # noqa: E402
from nasctl.curate import curate, stage_slices, sweep, with_stage  # noqa: E402
from nasctl.latency.api import estimate_archs, load_estimator  # noqa: E402
from nasctl.latency.kernels import kernels_from_arch  # noqa: E402
from nasctl.latency.simulator import SimNPU  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

SPACES = ("mobilenetv2_32", "mobilenetv2_224")
TARGETS = ("cpu", "sim-npu-p16", "sim-npu-p32")


def curated(space_name: str, target: str) -> dict:
    space = SearchSpace.load(space_name)
    r = curate(space, load_estimator(target))
    out = r.to_dict()
    if target.startswith("sim-npu"):
        sim = SimNPU(parallelism=int(target.rsplit("p", 1)[1]))
        true_edges = []
        for cv in sweep(space, load_estimator(target)):  # the same sweeps, the simulator's latency
            params = space.baseline_params()
            blocks = stage_slices(space, params)[cv.stage]
            base = space.baseline()
            lat = np.array(
                [
                    sim.model_latency_ms(kernels_from_arch(with_stage(base, blocks, int(c), cv.kind)))
                    for c in cv.channels
                ]
            )
            d = np.diff(lat)
            big = d > np.median(d) + 3 * (np.median(np.abs(d - np.median(d))) + 1e-12)
            true_edges.append({"stage": cv.stage, "kind": cv.kind, "edges": [int(c) for c in cv.channels[:-1][big]]})
        out["simulator_edges"] = true_edges
    return out


def cpu_sawtooth(rounds: int, window: tuple[int, int], stage: int) -> dict:
    from nasctl.latency.measure import time_onnx
    from nasctl.nn.export import export_onnx

    space = SearchSpace.load("mobilenetv2_224")
    base = space.baseline()
    blocks = stage_slices(space, space.baseline_params())[stage]
    widths = list(range(window[0], window[1] + 1))
    archs = {c: with_stage(base, blocks, c, "fused_ibn") for c in widths}
    est = estimate_archs(list(archs.values()), load_estimator("cpu"))["latency_ms"]
    times: dict[int, list[float]] = {c: [] for c in widths}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {c: export_onnx(a, Path(tmp) / f"w{c}.onnx") for c, a in archs.items()}
        for r in range(rounds):
            order = widths if r % 2 == 0 else widths[::-1]
            for c in order:
                times[c].append(float(time_onnx(paths[c], threads=1)[0]))
            print(f"\rround {r + 1}/{rounds}", end="", flush=True)
    print()
    med = {c: float(np.median(v)) for c, v in times.items()}
    spread = [float((np.max(v) - np.min(v)) / np.median(v) * 100) for v in times.values()]
    odd = [med[c] / med[c + 1] - 1 for c in widths[:-1] if c % 2 == 1]
    even = [med[c] / med[c + 1] - 1 for c in widths[:-1] if c % 2 == 0]
    est_odd = [est[i] / est[i + 1] - 1 for i, c in enumerate(widths[:-1]) if c % 2 == 1]
    return {
        "stage": space.spec.stages[stage].name or f"s{stage + 1}",
        "widths": widths,
        "measured_ms": [med[c] for c in widths],
        "estimated_ms": [float(x) for x in est],
        "rounds": rounds,
        "noise_floor_pct": {"median_range_over_rounds": float(np.median(spread)), "max": float(np.max(spread))},
        "measured_odd_over_next_even_pct": 100 * float(np.mean(odd)),
        "measured_even_over_next_odd_pct": 100 * float(np.mean(even)),
        "estimated_odd_over_next_even_pct": 100 * float(np.mean(est_odd)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per width (cpu)")
    ap.add_argument("--window", default="24,40", help="cpu: the widths timed, LO,HI")
    ap.add_argument("--stage", type=int, default=2, help="cpu: the stage swept (0-based)")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.window.split(","))
    results: dict = {"curate": {}}
    for space in SPACES:
        for target in TARGETS:
            r = curated(space, target)
            s = r["steps"]
            print(
                f"{space:18s} {target:12s} step {s['period']} (phase {s['phase']}, strength {s['strength']}, "
                f"p {s['p_value']:.3f}) widths {[st['widths'] for st in r['stages']]}"
            )
            results["curate"][f"{space}/{target}"] = r
    results["cpu_measured"] = cpu_sawtooth(args.rounds, (lo, hi), args.stage)
    m = results["cpu_measured"]
    print(
        f"cpu measured: an odd width {m['measured_odd_over_next_even_pct']:+.1f}% vs the even one above "
        f"(estimated {m['estimated_odd_over_next_even_pct']:+.1f}%); "
        f"noise floor {m['noise_floor_pct']['median_range_over_rounds']:.1f}%"
    )
    save("curate_steps", results, config=vars(args))


if __name__ == "__main__":
    main()
