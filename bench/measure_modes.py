"""Benchmark: kernels timed in isolation vs in context (inside whole networks).

Fits one estimator on each measurements CSV (`nasctl measure --mode kernels` and
`--mode models`), then estimates the same held-out whole models with both and measures
them once, in the same run, so both estimators are scored against identical measurements.

    nasctl measure --device cpu --mode kernels --time-budget 300 --out iso.csv
    python bench/measure_modes.py --kernels-csv iso.csv --models-csv estimators/cpu.csv
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels-csv", required=True)
    ap.add_argument("--models-csv", required=True)
    ap.add_argument("--archs", type=int, default=30, help="held-out archs per space")
    args = ap.parse_args()
    ests = {
        mode: LatencyEstimator().fit(read_measurements([csv]), folds=2)
        for mode, csv in (("isolated", args.kernels_csv), ("in-context", args.models_csv))
    }
    results: dict = {
        "archs_per_space": args.archs,
        "csv": {"isolated": args.kernels_csv, "in-context": args.models_csv},
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
    save("measure_modes", results)


if __name__ == "__main__":
    main()
