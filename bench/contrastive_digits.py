"""Benchmarks of contrastive pretraining on real data (digits, the default space's baseline).

Every comparison here is at equal optimiser steps (``PretrainConfig.steps``), over several
seeds, and reports mean +- std (population std over the seeds). Finished runs are kept in
``results/NAME.partial.json``, so an interrupted bench resumes where it stopped
(``--fresh`` starts over).

``compare``: ``gamma`` against ``ntxent`` at one batch size and one number of steps, and
the same linear probe on the untrained (random-init, BatchNorm recalibrated) backbone of
each seed. Written to ``results/contrastive_compare.json``.

``batch``: linear-probe accuracy of ``gamma`` and ``ntxent`` at several batch sizes, the
same number of optimiser steps for every run (so a larger batch sees more images); a PNG
of accuracy against batch size. Written to ``results/contrastive_batch_size.json``.

    python bench/contrastive_digits.py compare [--steps 300] [--batch-size 32] [--seeds 0 1 2]
    python bench/contrastive_digits.py batch [--steps 120] [--batch-sizes 16 32 64 128] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, Partial, mean_std, save  # noqa: E402

from nasctl.contrastive import PretrainConfig, load_data, pretrain_and_evaluate  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "mobilenetv2_32.yaml"
LOSSES = ("gamma", "ntxent")
KEEP = (
    "linear_probe_accuracy",
    "linear_probe_val_accuracy",
    "knn_accuracy",
    "random_init_linear_probe_accuracy",
    "random_init_knn_accuracy",
    "train_seconds",
    "eval_seconds",
    "steps",
    "epochs_done",
    "stopped_by",
    "final_loss",
)


def _arch_and_data():
    arch = SearchSpace.load(SPACE).baseline()
    return arch, load_data("digits", arch.resolution, arch.in_channels, seed=0)


def _run(arch, data, cfg: PretrainConfig, random_init: bool) -> dict:
    t = time.perf_counter()
    _, m = pretrain_and_evaluate(arch, data, cfg, random_init_baseline=random_init)
    run = {k: m[k] for k in KEEP if k in m}
    run["wall_seconds"] = time.perf_counter() - t
    run["config"] = cfg.to_dict()
    return run


def run_compare(args) -> None:
    arch, data = _arch_and_data()
    done = Partial("contrastive_compare", args.fresh)
    for seed in args.seeds:
        for i, loss in enumerate(args.loss):
            key = f"{loss}/bs{args.batch_size}/steps{args.steps}/seed{seed}"
            if key in done:
                continue
            cfg = PretrainConfig(loss=loss, steps=args.steps, batch_size=args.batch_size, seed=seed)
            # the random-init backbone depends on the seed only: probe it once per seed
            m = _run(arch, data, cfg, random_init=i == 0)
            done.put(key, m)
            print(
                f"{loss:7s} seed {seed}: {m['steps']} steps ({m['epochs_done']:.1f} epochs) in "
                f"{m['train_seconds']:.0f} s: linear probe {m['linear_probe_accuracy']:.1%} "
                f"(kNN {m['knn_accuracy']:.1%})",
                flush=True,
            )
    runs = {
        loss: [done[f"{loss}/bs{args.batch_size}/steps{args.steps}/seed{s}"] for s in args.seeds] for loss in args.loss
    }
    table = {
        loss: {
            "linear_probe": mean_std([r["linear_probe_accuracy"] for r in rs]),
            "knn": mean_std([r["knn_accuracy"] for r in rs]),
            "train_seconds": mean_std([r["train_seconds"] for r in rs]),
        }
        for loss, rs in runs.items()
    }
    first = runs[args.loss[0]]
    table["random_init"] = {
        "linear_probe": mean_std([r["random_init_linear_probe_accuracy"] for r in first]),
        "knn": mean_std([r["random_init_knn_accuracy"] for r in first]),
    }
    print(f"\n{args.steps} steps at batch {args.batch_size}, {len(args.seeds)} seeds, mean ± std:")
    for name, row in table.items():
        lp, kn = row["linear_probe"], row["knn"]
        print(f"  {name:12s} linear probe {lp['mean']:.1%} ± {lp['std']:.1%}   kNN {kn['mean']:.1%} ± {kn['std']:.1%}")
    save(
        "contrastive_compare",
        {"arch": arch.to_string(), "space": SPACE.name, "data": data.summary(), "table": table, "runs": runs},
        config=vars(args),
    )


def run_batch(args) -> None:
    arch, data = _arch_and_data()
    done = Partial("contrastive_batch_size", args.fresh)
    for seed in args.seeds:
        for bs in args.batch_sizes:
            for loss in LOSSES:
                key = f"{loss}/bs{bs}/steps{args.steps}/seed{seed}"
                if key in done:
                    continue
                m = _run(arch, data, PretrainConfig(loss=loss, steps=args.steps, batch_size=bs, seed=seed), False)
                done.put(key, m)
                print(
                    f"{loss:7s} bs={bs:4d} seed={seed}: probe {m['linear_probe_accuracy']:.1%} "
                    f"kNN {m['knn_accuracy']:.1%} ({m['train_seconds']:.0f} s)",
                    flush=True,
                )
    table: dict = {}
    runs: dict = {}
    for loss in LOSSES:
        for bs in args.batch_sizes:
            rs = [done[f"{loss}/bs{bs}/steps{args.steps}/seed{s}"] for s in args.seeds]
            runs[f"{loss}/{bs}"] = rs
            table[f"{loss}/{bs}"] = {
                "linear_probe": mean_std([r["linear_probe_accuracy"] for r in rs]),
                "knn": mean_std([r["knn_accuracy"] for r in rs]),
                "epochs_done": rs[0]["epochs_done"],
                "train_seconds": mean_std([r["train_seconds"] for r in rs]),
            }
    print(f"\nlinear-probe test accuracy, {len(args.seeds)} seeds, {args.steps} optimiser steps every run, mean ± std")
    print("batch   " + "  ".join(f"{loss:>14s}" for loss in LOSSES))
    for bs in args.batch_sizes:
        cells = [
            f"{table[f'{loss}/{bs}']['linear_probe']['mean']:.1%} ± {table[f'{loss}/{bs}']['linear_probe']['std']:.1%}"
            for loss in LOSSES
        ]
        print(f"{bs:5d}   " + "  ".join(f"{c:>14s}" for c in cells))
    _plot(table, args, RESULTS / "contrastive_batch_size.png")
    save(
        "contrastive_batch_size",
        {"arch": arch.to_string(), "space": SPACE.name, "data": data.summary(), "table": table, "runs": runs},
        config=vars(args),
    )


def _plot(table: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for loss, colour in zip(LOSSES, ("tab:red", "tab:blue"), strict=True):
        cells = [table[f"{loss}/{bs}"]["linear_probe"] for bs in args.batch_sizes]
        ax.errorbar(
            args.batch_sizes,
            [c["mean"] * 100 for c in cells],
            yerr=[c["std"] * 100 for c in cells],
            marker="o",
            capsize=3,
            color=colour,
            label=loss,
        )
        for bs, c in zip(args.batch_sizes, cells, strict=True):
            ax.scatter([bs] * c["n"], [v * 100 for v in c["values"]], s=8, color=colour, alpha=0.4)
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.batch_sizes, [str(b) for b in args.batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("linear-probe test accuracy (%)")
    ax.set_title(f"digits, baseline arch, {args.steps} steps every run, {len(args.seeds)} seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--loss", nargs="+", default=list(LOSSES), choices=LOSSES)
    b = sub.add_parser("batch")
    b.add_argument("--steps", type=int, default=120)
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    for p in (c, b):
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--fresh", action="store_true", help="Ignore runs saved by an interrupted bench.")
    args = ap.parse_args()
    if len(args.seeds) < 3:
        print(f"warning: {len(args.seeds)} seed(s): the README's figures use at least 3", file=sys.stderr)
    run_compare(args) if args.part == "compare" else run_batch(args)


if __name__ == "__main__":
    main()
