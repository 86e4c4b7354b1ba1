"""Benchmark (b): estimator speed.

* Arch estimates per second (kernel IR + memory + LightGBM, batch API), cold and warm
  prediction cache, on each shipped space;
* time to estimate one ONNX file of EfficientNet-B0 size (parse + shape inference +
  grouping + prediction + memory) against the time to measure it with onnxruntime
  (session creation, warm-up and the timed runs `nasctl measure` does), as a ratio.

    python bench/latency_speed.py [--estimator cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl.latency.api import estimate_archs, estimate_onnx, estimator_path, load_estimator  # noqa: E402
from nasctl.latency.estimator import LatencyEstimator  # noqa: E402
from nasctl.latency.measure import time_onnx  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--estimator", default="cpu")
    ap.add_argument("--archs", type=int, default=2000)
    args = ap.parse_args()
    est_path = args.estimator
    results: dict = {"estimator": est_path, "arch_estimates_per_s": {}}
    for space_file in sorted((ROOT / "search_spaces").glob("*.yaml")):
        space = SearchSpace.load(space_file)
        rng = np.random.default_rng(1)
        archs = [space.sample(rng) for _ in range(args.archs)]
        est = LatencyEstimator.load(estimator_path(est_path))  # a fresh instance: cold cache
        t = time.perf_counter()
        estimate_archs(archs, est)
        cold = args.archs / (time.perf_counter() - t)
        archs = [space.sample(rng) for _ in range(args.archs)]
        t = time.perf_counter()
        estimate_archs(archs, est)
        warm = args.archs / (time.perf_counter() - t)
        results["arch_estimates_per_s"][space_file.name] = {"cold": cold, "warm": warm}
        print(f"{space_file.name:32s} {cold:8.0f} archs/s cold cache, {warm:8.0f} warm")
    est = load_estimator(est_path)
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
        est.predict_kernels([])  # import / warm the library
        times = []
        for _ in range(5):
            est._cache.clear()
            t = time.perf_counter()
            estimate_onnx(path, est)
            times.append(time.perf_counter() - t)
        est_s = float(np.median(times))
        t = time.perf_counter()
        med, _, runs = time_onnx(path)
        meas_s = time.perf_counter() - t
    results["onnx"] = {
        "model": name,
        "estimate_s": est_s,
        "measure_s": meas_s,
        "measured_latency_ms": med,
        "measure_runs": runs,
        "speedup": meas_s / est_s,
    }
    print(
        f"{name}: estimate {est_s * 1e3:.0f} ms, measure {meas_s * 1e3:.0f} ms ({runs} runs of {med:.1f} ms): "
        f"{meas_s / est_s:.0f}x faster"
    )
    save("latency_speed", results)


if __name__ == "__main__":
    main()
