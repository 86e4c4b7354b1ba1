"""Benchmark: where a `nasctl pretrain` run's time goes beyond training and the two probes.

A run's ``metrics.json`` breaks its time down: ``import_seconds`` (the modules loaded on
first use: scikit-learn, torch's compiler stack that the optimiser's constructor pulls in,
ONNX export, matplotlib), ``data_seconds``, ``setup_seconds``, ``train_seconds``,
``eval_seconds`` (BatchNorm recalibration, features, linear probe and kNN of the trained
backbone), ``random_init_eval_seconds`` (the same for the untrained one),
``write_seconds`` (weights, ONNX export, loss plot), and ``fixed_seconds``: the run's
in-process total less imports, training and the two probes. The target is
``fixed_seconds`` <= 3 s.

Two views, ``--repeats`` times each, interleaved:
- the command as a user runs it (a fresh process: ``nasctl pretrain --space SPACE
  --baseline --batch-size B --epochs E --out DIR``), with its whole wall time;
- ``nasctl.api.pretrain`` called again in a process that has already run once, as a
  search's second and later trials are (the imports are paid).

    python bench/pretrain_overhead.py [--batch-size 256] [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mean_std, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "mobilenetv2_32.yaml"
PARTS = (
    "import_seconds",
    "data_seconds",
    "setup_seconds",
    "train_seconds",
    "eval_seconds",
    "random_init_eval_seconds",
    "write_seconds",
    "fixed_seconds",
    "total_seconds",
)


def command_run(args, out: Path) -> dict:
    cmd = [
        *(sys.executable, "-m", "nasctl", "pretrain", "--space", str(SPACE), "--baseline"),
        *("--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--out", str(out), "--json"),
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"pretrain failed: {r.stderr[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"command_wall_seconds": wall, **{k: m[k] for k in PARTS}}


def in_process_run(arch, args, out: Path) -> dict:
    from nasctl.api import pretrain

    m = pretrain(arch, out=out, batch_size=args.batch_size, epochs=args.epochs)
    return {k: m[k] for k in PARTS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from nasctl.space import SearchSpace

    arch = SearchSpace.load(SPACE).baseline()
    runs: dict[str, list[dict]] = {"command": [], "in_process": []}
    with tempfile.TemporaryDirectory() as tmp:
        in_process_run(arch, args, Path(tmp) / "warm-up")  # this process pays its imports here
        for rep in range(args.repeats):
            runs["command"].append(command_run(args, Path(tmp) / f"cmd-{rep}"))
            runs["in_process"].append(in_process_run(arch, args, Path(tmp) / f"api-{rep}"))
            c, i = runs["command"][-1], runs["in_process"][-1]
            print(
                f"repeat {rep}: command {c['command_wall_seconds']:.1f} s (fixed {c['fixed_seconds']:.2f} s, "
                f"imports {c['import_seconds']:.2f} s); in process: fixed {i['fixed_seconds']:.2f} s",
                flush=True,
            )
    table = {view: {k: mean_std([r[k] for r in rs]) for k in rs[0]} for view, rs in runs.items()}
    for view, row in table.items():
        print(f"\n{view} (mean ± std of {args.repeats}):")
        for k, v in row.items():
            print(f"  {k:26s} {v['mean']:7.2f} ± {v['std']:.2f}")
    worst = max(r["fixed_seconds"] for rs in runs.values() for r in rs)
    print(f"\nlargest fixed cost of any run: {worst:.2f} s (target <= 3 s)")
    save(
        "pretrain_overhead",
        {"arch": arch.to_string(), "table": table, "max_fixed_seconds": worst, "runs": runs},
        config=vars(args),
    )


if __name__ == "__main__":
    main()
