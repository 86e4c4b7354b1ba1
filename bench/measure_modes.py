"""Benchmark: kernels timed in isolation vs in context (inside whole networks).

Measures this machine in both modes (`nasctl measure --mode kernels`: each kernel alone;
`--mode models`: kernels timed inside random networks), the same time budget each, once
per seed; fits one estimator on each CSV; and scores every estimator on the same held-out
whole models, measured once at the start of the run. Reported per seed and as mean +- std
over the seeds. The CSVs are kept in ``bench/cache/measure_modes/`` and reused by a re-run
with the same budget and seed (``--fresh`` measures again).

    python bench/measure_modes.py [--time-budget 120] [--seeds 0 1 2] [--archs 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mean_std, save  # noqa: E402

from nasctl.latency.estimator import LatencyEstimator, accuracy_metrics, read_measurements  # noqa: E402
from nasctl.latency.kernels import kernels_from_onnx  # noqa: E402
from nasctl.latency.measure import time_onnx  # noqa: E402
from nasctl.nn.builder import build_model  # noqa: E402
from nasctl.nn.export import export_onnx, randomize_batchnorm  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "cache" / "measure_modes"


def measured_csv(mode: str, budget: float, seed: int, fresh: bool) -> tuple[Path, dict]:
    """This machine's measurement CSV in ``mode`` (kernels | models) for ``seed``, from the
    cache or measured now; with the ``.meta.json`` that `nasctl measure` writes beside it."""
    from nasctl.latency.measure import measure

    csv = CACHE / f"{mode}-{budget:g}s-seed{seed}.csv"
    meta_path = csv.with_suffix(".meta.json")
    if fresh or not (csv.is_file() and meta_path.is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"measuring --mode {mode} --seed {seed} for {budget:g} s ...", flush=True)
        measure(csv, device="cpu", time_budget=budget, mode=mode, threads=1, seed=seed)
    return csv, json.loads(meta_path.read_text())


MODES = (("isolated", "kernels"), ("in-context", "models"))


def held_out(space_file: str, n: int, tmp: Path) -> tuple[list, np.ndarray]:
    """``n`` archs of a space (a seed no measurement uses), their kernels and one measurement each."""
    space = SearchSpace.load(ROOT / "search_spaces" / space_file)
    rng = np.random.default_rng(30_000)
    kernels, measured = [], []
    for i in range(n):
        arch = space.sample(rng)
        path = export_onnx(randomize_batchnorm(build_model(arch, seed=i), i), tmp / f"{space_file}-{i}.onnx")
        kernels.append(kernels_from_onnx(path))
        measured.append(time_onnx(path)[0])
    return kernels, np.array(measured)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-budget", type=float, default=120.0, help="seconds of measuring per mode and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one CSV per mode and seed")
    ap.add_argument("--archs", type=int, default=30, help="held-out archs per space")
    ap.add_argument("--fresh", action="store_true", help="measure again even if the cache has the CSVs")
    args = ap.parse_args()
    spaces = ("mobilenetv2_32.yaml", "mobilenetv2_224.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        targets = {s: held_out(s, args.archs, Path(tmp)) for s in spaces}
    results: dict = {"archs_per_space": args.archs, "csv": {}, "per_seed": {}, "spaces": {}}
    for seed in args.seeds:
        for name, mode in MODES:
            csv, meta = measured_csv(mode, args.time_budget, seed, args.fresh)
            est = LatencyEstimator().fit(read_measurements([csv]), folds=2)
            results["csv"][f"{name}/seed{seed}"] = {"file": str(csv.relative_to(ROOT)), "meta": meta}
            for space_file, (kernels, measured) in targets.items():
                pred = est.predict_many(kernels)
                m = accuracy_metrics(pred, measured)
                m["median_ratio"] = float(np.median(pred / measured))
                results["per_seed"].setdefault(space_file, {}).setdefault(name, []).append(m)
                print(
                    f"seed {seed} {space_file:24s} {name:10s} within 10%: {m['acc10']:5.1f}%  MAPE {m['mape']:6.1f}%  "
                    f"median estimate/measured {m['median_ratio']:.2f}",
                    flush=True,
                )
    for space_file, modes in results["per_seed"].items():
        results["spaces"][space_file] = {
            name: {k: mean_std([m[k] for m in ms]) for k in ("acc10", "mape", "median_ratio")}
            for name, ms in modes.items()
        }
    save("measure_modes", results, config=vars(args))


if __name__ == "__main__":
    main()
