"""Benchmark (a): latency-estimator accuracy on held-out whole models.

CPU: for >= 50 random archs of each shipped space (seeds never used by `nasctl measure`)
and for the standard architectures of `nasctl.zoo` (none of which is in the training
data), export ONNX, estimate it from the file, and measure it twice with onnxruntime,
interleaved (model by model, then the whole second pass): estimate-vs-first-measurement
gives the accuracy; second-vs-first gives the noise floor of measuring at all.
sim-npu: estimate vs the simulator on the same archs, P=16 and P=32.

    python bench/latency_accuracy.py [--archs 50] [--estimator estimators/cpu.json.gz]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl.latency.api import estimate_archs, estimate_onnx, load_estimator  # noqa: E402
from nasctl.latency.estimator import accuracy_metrics  # noqa: E402
from nasctl.latency.kernels import kernels_from_arch  # noqa: E402
from nasctl.latency.measure import time_onnx  # noqa: E402
from nasctl.latency.simulator import SimNPU  # noqa: E402
from nasctl.nn.builder import build_model  # noqa: E402
from nasctl.nn.export import export_onnx, randomize_batchnorm  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACES = ["mobilenetv2_32.yaml", "mobilenetv2_32_uncurated.yaml", "mobilenetv2_224.yaml"]
ZOO_RES = 224


def _metrics(pred, meas, repeat):
    m = accuracy_metrics(np.array(pred), np.array(meas))
    noise = accuracy_metrics(np.array(repeat), np.array(meas))
    m["noise_floor"] = {k: noise[k] for k in ("mape", "acc5", "acc10", "acc15")}
    return m


def estimator_record(name: str, est) -> dict:
    """What the bench ran with: the estimator's file (path, sha256) and what the loaded
    estimator says of itself (the machine it was measured on, its rows, its per-kernel
    cross-validation)."""
    from nasctl.latency.api import estimator_path

    path = estimator_path(name)
    meta = est.meta
    keep = (
        "schema",
        "created",
        "nasctl_version",
        "lightgbm_version",
        "device",
        "n_rows",
        "rows_per_group",
        "cv",
        "cv_overall",
    )
    return {
        "name": name,
        "path": str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT) else str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        **{k: meta.get(k) for k in keep},
    }


def cpu_bench(n_archs: int, estimator: str, tmp: Path) -> dict:
    est = load_estimator(estimator)
    out: dict = {"estimator": estimator_record(estimator, est), "spaces": {}, "zoo": {}}
    items: list[tuple[str, str, Path]] = []
    for space_file in SPACES:
        space = SearchSpace.load(ROOT / "search_spaces" / space_file)
        rng = np.random.default_rng(10_000)
        for i in range(n_archs):
            arch = space.sample(rng)
            path = export_onnx(randomize_batchnorm(build_model(arch, seed=i), i), tmp / f"{space_file}-{i}.onnx")
            items.append(("space", space_file, path))
    try:
        from nasctl import zoo

        for name in sorted(zoo.ZOO):
            items.append(("zoo", name, zoo.export(name, tmp / f"zoo-{name}.onnx", resolution=ZOO_RES)))
    except ImportError:
        print("nasctl.zoo not available: standard architectures skipped")
    preds = [estimate_onnx(p, est).latency_ms for _, _, p in items]
    first = []
    for i, (_, _, p) in enumerate(items):
        first.append(time_onnx(p)[0])
        print(f"\rmeasured {i + 1}/{len(items)} (pass 1)", end="", flush=True)
    second = []
    for i, (_, _, p) in enumerate(items):
        second.append(time_onnx(p)[0])
        print(f"\rmeasured {i + 1}/{len(items)} (pass 2)", end="", flush=True)
    print()
    for space_file in SPACES:
        idx = [i for i, (kind, name, _) in enumerate(items) if kind == "space" and name == space_file]
        out["spaces"][space_file] = _metrics([preds[i] for i in idx], [first[i] for i in idx], [second[i] for i in idx])
    zidx = [i for i, (kind, _, _) in enumerate(items) if kind == "zoo"]
    for i in zidx:
        out["zoo"][items[i][1]] = {
            "estimated_ms": preds[i],
            "measured_ms": first[i],
            "remeasured_ms": second[i],
            "error_pct": (preds[i] - first[i]) / first[i] * 100,
        }
    if zidx:
        out["zoo_overall"] = _metrics([preds[i] for i in zidx], [first[i] for i in zidx], [second[i] for i in zidx])
    sidx = [i for i, (kind, _, _) in enumerate(items) if kind == "space"]
    out["spaces_overall"] = _metrics([preds[i] for i in sidx], [first[i] for i in sidx], [second[i] for i in sidx])
    return out


def sim_bench(n_archs: int) -> dict:
    out = {}
    for p in (16, 32):
        est = load_estimator(f"sim-npu-p{p}")
        sim = SimNPU(parallelism=p)
        per_space = {}
        for space_file in SPACES:
            space = SearchSpace.load(ROOT / "search_spaces" / space_file)
            rng = np.random.default_rng(20_000)
            archs = [space.sample(rng) for _ in range(max(n_archs, 200))]
            pred = estimate_archs(archs, est)["latency_ms"]
            true = np.array([sim.model_latency_ms(kernels_from_arch(a)) for a in archs])
            per_space[space_file] = accuracy_metrics(pred, true)
        out[f"p{p}"] = per_space
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=50, help="random archs per shipped space")
    ap.add_argument("--estimator", default="cpu")
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()
    results: dict = {"archs_per_space": args.archs}
    results["sim_npu"] = sim_bench(args.archs)
    for p, spaces in results["sim_npu"].items():
        for s, m in spaces.items():
            print(f"sim-npu {p} {s:32s} within 5%: {m['acc5']:5.1f}%  MAPE {m['mape']:.2f}%")
    if not args.skip_cpu:
        with tempfile.TemporaryDirectory() as tmp:
            results["cpu"] = cpu_bench(args.archs, args.estimator, Path(tmp))
        cpu = results["cpu"]
        for s, m in cpu["spaces"].items():
            print(
                f"cpu {s:32s} within 10%: {m['acc10']:5.1f}%  MAPE {m['mape']:5.1f}%  "
                f"(noise floor: within 10% {m['noise_floor']['acc10']:.0f}%, MAPE {m['noise_floor']['mape']:.1f}%)"
            )
        for name, z in cpu["zoo"].items():
            print(
                f"cpu zoo {name:20s} est {z['estimated_ms']:8.2f} ms  meas {z['measured_ms']:8.2f} ms  "
                f"err {z['error_pct']:+6.1f}%"
            )
        if "zoo_overall" in cpu:
            print(
                f"cpu zoo MAPE {cpu['zoo_overall']['mape']:.1f}% "
                f"(noise floor {cpu['zoo_overall']['noise_floor']['mape']:.1f}%)"
            )
    # --skip-cpu reruns the simulator half alone (after a refit of the sim estimators):
    # its own file, so the cpu half of latency_accuracy.json stays whole
    save("latency_accuracy_sim" if args.skip_cpu else "latency_accuracy", results, config=vars(args))


if __name__ == "__main__":
    main()
