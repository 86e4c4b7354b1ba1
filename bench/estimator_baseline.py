"""Which kernel groups the estimator's analytic baseline should serve.

For one measurement CSV, ``fit-estimator``'s 5-fold cross-validation (folds by network)
per kernel group, fitted three ways: no group with a baseline, every group with one, and
the default (every group but ``datamove``). Each setting runs in its own process
(``--setting``) and is cached under ``bench/cache/estimator_baseline/``; the last one to
finish writes ``results/estimator_baseline.json`` with every finished setting.

    python bench/estimator_baseline.py CSV --setting none|all|default [--tag run3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl.latency.estimator import NO_BASELINE, LatencyEstimator, read_measurements  # noqa: E402
from nasctl.latency.features import OP_GROUP  # noqa: E402

SETTINGS = {"none": None, "all": frozenset(), "default": NO_BASELINE}  # None: every group without
CACHE = Path(__file__).resolve().parent / "cache" / "estimator_baseline"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path, help="a measurement CSV (nasctl measure)")
    ap.add_argument("--setting", choices=list(SETTINGS), required=True)
    ap.add_argument("--tag", default="run", help="cache folder name (one per CSV)")
    args = ap.parse_args()
    table = read_measurements([args.csv])
    groups = sorted({OP_GROUP.get(op, "unknown") for op in table.ops} - {"unknown"})
    no_baseline = SETTINGS[args.setting]
    t = time.perf_counter()
    est = LatencyEstimator().fit(table, folds=5, no_baseline=frozenset(groups) if no_baseline is None else no_baseline)
    rec = {"cv": est.meta["cv"], "cv_overall": est.meta["cv_overall"], "seconds": time.perf_counter() - t}
    cache = CACHE / args.tag
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{args.setting}.json").write_text(json.dumps(rec))
    done = {p.stem: json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))}
    for name, r in done.items():
        print(
            f"{name:8s} overall MAPE {r['cv_overall']['mape']:5.1f}%  "
            + "  ".join(f"{g} {c['mape']:.1f}" for g, c in sorted(r["cv"].items()) if "mape" in c)
        )
    config = {
        "csv": str(args.csv),
        "rows": len(table),
        "tag": args.tag,
        "settings": {k: sorted(v) if v else v for k, v in SETTINGS.items()},
    }
    save("estimator_baseline", {"settings": done}, config)


if __name__ == "__main__":
    main()
