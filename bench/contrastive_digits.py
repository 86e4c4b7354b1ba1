"""Benchmarks of contrastive pretraining on real data (digits, the default space's baseline).

``budget``: the acceptance run: pretrain the baseline for a wall-clock budget (default
170 s, so that data loading, evaluation and export fit in 3 minutes), then the linear
probe on the test split, beside the same probe on the untrained (random-init) backbone.

``batch``: linear-probe accuracy of ``gamma`` and ``ntxent`` at batch sizes 16, 32, 64 and
256, the same number of epochs for every run, 3 seeds each; a PNG of accuracy vs batch
size. Runs are saved as they finish, so an interrupted sweep resumes where it stopped.

    python bench/contrastive_digits.py budget [--seconds 170] [--loss gamma]
    python bench/contrastive_digits.py batch [--epochs 5] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save  # noqa: E402

from nasctl.contrastive import PretrainConfig, load_data, pretrain_and_evaluate  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "mobilenetv2_32.yaml"
BATCH_SIZES = (16, 32, 64, 256)
LOSSES = ("gamma", "ntxent")


def _arch_and_data(seed: int = 0):
    arch = SearchSpace.load(SPACE).baseline()
    return arch, load_data("digits", arch.resolution, arch.in_channels, seed=seed)


def run_budget(args) -> None:
    arch, data = _arch_and_data()
    results = {"arch": arch.to_string(), "space": SPACE.name, "data": data.summary(), "runs": []}
    for loss in args.loss:
        t0 = time.perf_counter()
        cfg = PretrainConfig(loss=loss, epochs=1000, batch_size=args.batch_size, time_budget_s=args.seconds)
        _, m = pretrain_and_evaluate(arch, data, cfg, random_init_baseline=True)
        m["wall_seconds_incl_eval"] = time.perf_counter() - t0
        m["config"] = cfg.to_dict()
        results["runs"].append(m)
        print(
            f"{loss:7s} bs={args.batch_size}: {m['steps']} steps ({m['epochs_done']:.1f} epochs) in "
            f"{m['train_seconds']:.0f} s + eval {m['eval_seconds']:.0f} s: "
            f"linear probe {m['linear_probe_accuracy']:.1%} "
            f"(kNN {m['knn_accuracy']:.1%}); random init {m['random_init_linear_probe_accuracy']:.1%} "
            f"(kNN {m['random_init_knn_accuracy']:.1%})"
        )
    save("contrastive_budget", results)


def run_batch(args) -> None:
    partial = RESULTS / "contrastive_batch_size.partial.json"
    done: dict[str, dict] = json.loads(partial.read_text()) if partial.is_file() and not args.fresh else {}
    arch, data = _arch_and_data()
    for seed in args.seeds:
        for bs in args.batch_sizes:
            for loss in LOSSES:
                key = f"{loss}/{bs}/{seed}/{args.epochs}"
                if key in done:
                    continue
                cfg = PretrainConfig(loss=loss, epochs=args.epochs, batch_size=bs, seed=seed)
                _, m = pretrain_and_evaluate(arch, data, cfg)
                done[key] = {k: m[k] for k in ("linear_probe_accuracy", "knn_accuracy", "train_seconds", "steps")}
                done[key]["final_loss"] = m["final_loss"]
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps(done, indent=1))
                print(
                    f"{loss:7s} bs={bs:4d} seed={seed}: probe {m['linear_probe_accuracy']:.1%} "
                    f"kNN {m['knn_accuracy']:.1%} ({m['train_seconds']:.0f} s)",
                    flush=True,
                )
    table: dict = {}
    for loss in LOSSES:
        for bs in args.batch_sizes:
            accs = [done[f"{loss}/{bs}/{s}/{args.epochs}"]["linear_probe_accuracy"] for s in args.seeds]
            knns = [done[f"{loss}/{bs}/{s}/{args.epochs}"]["knn_accuracy"] for s in args.seeds]
            table[f"{loss}/{bs}"] = {
                "linear_probe_mean": float(np.mean(accs)),
                "linear_probe_std": float(np.std(accs)),
                "knn_mean": float(np.mean(knns)),
                "runs": accs,
            }
    print(f"\nlinear-probe test accuracy, mean of {len(args.seeds)} seeds, {args.epochs} epochs each")
    print("batch   " + "  ".join(f"{loss:>14s}" for loss in LOSSES))
    for bs in args.batch_sizes:
        cells = [
            f"{table[f'{loss}/{bs}']['linear_probe_mean']:.1%} ± {table[f'{loss}/{bs}']['linear_probe_std']:.1%}"
            for loss in LOSSES
        ]
        print(f"{bs:5d}   " + "  ".join(f"{c:>14s}" for c in cells))
    gap = table["gamma/32"]["linear_probe_mean"] - table["ntxent/256"]["linear_probe_mean"]
    print(f"gamma@32 - ntxent@256: {gap * 100:+.2f} points (target: >= -1)")
    _plot(table, args, RESULTS / "contrastive_batch_size.png")
    save(
        "contrastive_batch_size",
        {
            "arch": arch.to_string(),
            "data": data.summary(),
            "epochs": args.epochs,
            "seeds": args.seeds,
            "table": table,
            "gamma32_minus_ntxent256_points": gap * 100,
            "runs": done,
        },
    )


def _plot(table: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for loss, colour in zip(LOSSES, ("tab:red", "tab:blue"), strict=True):
        means = [table[f"{loss}/{bs}"]["linear_probe_mean"] * 100 for bs in args.batch_sizes]
        stds = [table[f"{loss}/{bs}"]["linear_probe_std"] * 100 for bs in args.batch_sizes]
        ax.errorbar(args.batch_sizes, means, yerr=stds, marker="o", capsize=3, color=colour, label=loss)
        for bs in args.batch_sizes:
            runs = [r * 100 for r in table[f"{loss}/{bs}"]["runs"]]
            ax.scatter([bs] * len(runs), runs, s=8, color=colour, alpha=0.4)
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.batch_sizes, [str(b) for b in args.batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("linear-probe test accuracy (%)")
    ax.set_title(f"digits, baseline arch, {args.epochs} epochs, {len(args.seeds)} seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    b = sub.add_parser("budget")
    b.add_argument("--seconds", type=float, default=170.0)
    b.add_argument("--loss", nargs="+", default=["gamma"], choices=LOSSES)
    b.add_argument("--batch-size", type=int, default=32)
    s = sub.add_parser("batch")
    s.add_argument("--epochs", type=int, default=5)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    s.add_argument("--fresh", action="store_true", help="Ignore runs saved by an interrupted sweep.")
    args = ap.parse_args()
    run_budget(args) if args.part == "budget" else run_batch(args)


if __name__ == "__main__":
    main()
