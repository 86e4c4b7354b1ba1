"""Benchmark: kernels timed in isolation vs in context (inside whole networks).

Measures this machine in both modes (`nasctl measure --mode kernels`: each kernel alone;
`--mode models`: kernels timed inside random networks), the same time budget each, fits
one estimator on each CSV, then estimates the same held-out whole models with both and
measures them once, in the same run, so both estimators are scored against identical
measurements. The two CSVs are kept in ``bench/cache/measure_modes/`` and reused by a
re-run with the same budget (``--fresh`` measures again).

    python bench/measure_modes.py [--time-budget 300] [--archs 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl.latency.estimator import LatencyEstimator, accuracy_metrics, read_measurements  # noqa: E402
from nasctl.latency.kernels import kernels_from_onnx  # noqa: E402
from nasctl.latency.measure import time_onnx  # noqa: E402
from nasctl.nn.builder import build_model  # noqa: E402
from nasctl.nn.export import export_onnx, randomize_batchnorm  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "cache" / "measure_modes"


def measured_csv(mode: str, budget: float, fresh: bool) -> tuple[Path, dict]:
    """This machine's measurement CSV in ``mode`` (kernels | models), from the cache or
    measured now; with the ``.meta.json`` that `nasctl measure` writes beside it."""
    from nasctl.latency.measure import measure

    csv = CACHE / f"{mode}-{budget:g}s.csv"
    meta_path = csv.with_suffix(".meta.json")
    if fresh or not (csv.is_file() and meta_path.is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"measuring --mode {mode} for {budget:g} s ...", flush=True)
        measure(csv, device="cpu", time_budget=budget, mode=mode, threads=1, seed=0)
    return csv, json.loads(meta_path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-budget", type=float, default=300.0, help="seconds of measuring in each mode")
    ap.add_argument("--archs", type=int, default=30, help="held-out archs per space")
    ap.add_argument("--fresh", action="store_true", help="measure again even if the cache has the CSVs")
    args = ap.parse_args()
    csvs = {
        name: measured_csv(mode, args.time_budget, args.fresh)
        for name, mode in (("isolated", "kernels"), ("in-context", "models"))
    }
    ests = {name: LatencyEstimator().fit(read_measurements([csv]), folds=2) for name, (csv, _) in csvs.items()}
    results: dict = {
        "archs_per_space": args.archs,
        "csv": {name: {"file": str(csv.relative_to(ROOT)), "meta": meta} for name, (csv, meta) in csvs.items()},
        "spaces": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for space_file in ("mobilenetv2_32.yaml", "mobilenetv2_224.yaml"):
            space = SearchSpace.load(ROOT / "search_spaces" / space_file)
            rng = np.random.default_rng(30_000)
            kernels, measured = [], []
            for i in range(args.archs):
                arch = space.sample(rng)
                path = export_onnx(randomize_batchnorm(build_model(arch, seed=i), i), Path(tmp) / f"{i}.onnx")
                kernels.append(kernels_from_onnx(path))
                measured.append(time_onnx(path)[0])
            results["spaces"][space_file] = {
                mode: accuracy_metrics(est.predict_many(kernels), np.array(measured)) for mode, est in ests.items()
            }
            for mode, m in results["spaces"][space_file].items():
                ratio = float(np.median(ests[mode].predict_many(kernels) / np.array(measured)))
                m["median_ratio"] = ratio
                print(
                    f"{space_file:24s} {mode:10s} within 10%: {m['acc10']:5.1f}%  MAPE {m['mape']:6.1f}%  "
                    f"median estimate/measured {ratio:.2f}"
                )
    save("measure_modes", results, config=vars(args))


if __name__ == "__main__":
    main()
