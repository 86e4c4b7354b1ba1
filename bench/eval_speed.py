"""Benchmark: time to score a trained backbone (what each search trial pays after training).

For the default space's baseline, briefly pretrained on digits, the parts of
``nasctl.contrastive.probe.evaluate`` are timed at two inference batch sizes, interleaved
in the same repetitions (medians over ``--reps``; the machine is shared): BN recalibration
on 512 train images, features of all three splits (1,797 images), the logistic-regression
probe and kNN. Batch 64 is ``probe.EVAL_BATCH``; 256 was the earlier default.

    python bench/eval_speed.py [--reps 5] [--batches 64 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import save  # noqa: E402

from nasctl.contrastive import PretrainConfig, load_data  # noqa: E402
from nasctl.contrastive.pretrain import pretrain  # noqa: E402
from nasctl.contrastive.probe import (  # noqa: E402
    EVAL_BATCH,
    _splits,
    extract_features,
    knn_accuracy,
    linear_probe,
    recalibrate_bn,
)
from nasctl.space import SearchSpace  # noqa: E402


def timed_parts(model, data, batch: int) -> dict[str, float]:
    x = data.x
    out = {}
    t = time.perf_counter()
    recalibrate_bn(model, x[torch.from_numpy(data.train[:512])], batch_size=batch)
    out["bn_recalibration_s"] = time.perf_counter() - t
    t = time.perf_counter()
    f = {n: extract_features(model, x[torch.from_numpy(i)], batch_size=batch) for n, i in _splits(data).items()}
    out["features_s"] = time.perf_counter() - t
    y = {n: data.y[i] for n, i in _splits(data).items()}
    t = time.perf_counter()
    linear_probe(f["train"], y["train"], [f["val"], f["test"]], [y["val"], y["test"]])
    out["probe_s"] = time.perf_counter() - t
    t = time.perf_counter()
    knn_accuracy(f["train"], y["train"], f["test"], y["test"])
    knn_accuracy(f["train"], y["train"], f["val"], y["val"])
    out["knn_s"] = time.perf_counter() - t
    out["total_s"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[EVAL_BATCH, 256])
    args = ap.parse_args()
    arch = SearchSpace.load(ROOT / "search_spaces" / "mobilenetv2_32.yaml").baseline()
    data = load_data("digits", arch.resolution, arch.in_channels, seed=0)
    model = pretrain(arch, data, PretrainConfig(epochs=1, time_budget_s=5.0, seed=0)).model
    runs: dict[int, list[dict[str, float]]] = {b: [] for b in args.batches}
    for _ in range(args.reps):
        for b in args.batches:
            runs[b].append(timed_parts(model, data, b))
    table = {str(b): {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for b, rs in runs.items()}
    for b, row in table.items():
        print(f"batch {b:>4}: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in row.items()))
    base, other = str(args.batches[0]), str(args.batches[-1])
    ratio = table[other]["total_s"] / table[base]["total_s"]
    print(f"whole evaluation: batch {other} takes {ratio:.2f}x the time of batch {base}")
    save(
        "eval_speed",
        {"arch": arch.to_string(), "reps": args.reps, "median": table, "ratio_total": ratio, "runs": runs},
        config=vars(args),
    )


if __name__ == "__main__":
    main()
