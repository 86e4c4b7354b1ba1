"""The information-gap experiment: do the modality-structure regularisers help a two-tower
model when image and text each carry information the other lacks?

Data: ``pairs:digits:P`` (embedded): each real 8x8 digit gets a caption that names its
label with probability P (the shared information), always names a colour the image does
not show (text-only attribute, 4 classes), and the image carries a drawn bar (none,
horizontal, vertical, cross) the caption never mentions (image-only attribute, 4 classes).
One data seed (0) for every run: the captions and the split are the same; the training
seed varies.

Image tower: the default space's baseline arch (fixed). Text tower: embedding + two 1-D
convolutions. Variants, each trained for the same number of steps (``--steps``, batch
``--batch``):

* ``infonce``: symmetric InfoNCE with a learnt temperature (the CLIP baseline);
* ``intra``: + the intra-modal NT-Xent on the shared embeddings alone (the control for
  separation's added loss);
* ``separation``: + shared/specific parts, orthogonality and the intra-modal loss on the
  specific parts;
* ``bridge``, ``geometry``: + each of the other regularisers;
* ``bridge_0.02``: the bridge at a tenth of the weight (at 0.2 it can overpower InfoNCE
  near t = 0 and 1, where the 1 / (2 t(1-t) + 0.1) factor reaches 10);
* ``all``: + separation, bridge and geometry together.

Scored on the test split: retrieval R@1 both ways (a hit is any identical caption),
zero-shot classification by caption prompts, and linear probes of the image / text / joint
embeddings on the label, ``image_mark`` and ``text_colour``.

Resumable: every run is a line of ``bench/cache/multimodal_gap/runs.jsonl``; a re-run
trains only what is missing. ``--shard K/N`` lets N processes share the runs (run K of
each N). The JSON (and the PNG) are rewritten after every run, ``complete`` false until
all cells have every seed.

    python bench/multimodal_gap.py [--steps 300] [--seeds 3] [--p 0.25,0.5,1.0] [--shard 0/2]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import save  # noqa: E402

CACHE = Path(__file__).resolve().parent / "cache" / "multimodal_gap"
RESULTS = Path(__file__).resolve().parent / "results"
# regulariser weights: ours, not tuned (each term is of order 0.1-4 at the start of training)
VARIANTS = {
    "infonce": {},
    "intra": {"intra": 1.0},
    "separation": {"separation": 1.0},
    "bridge": {"bridge": 0.2},
    "bridge_0.02": {"bridge": 0.02},
    "geometry": {"geometry": 1.0},
    "all": {"separation": 1.0, "bridge": 0.2, "geometry": 1.0},
}
# what the table and the plot show: (key in a run's metrics, label)
TASKS = [
    ("zero_shot", "zero-shot label"),
    ("probe.label.image", "label, image probe"),
    ("probe.image_mark.image", "image-only mark, image probe"),
    ("probe.text_colour.text", "text-only colour, text probe"),
    ("probe.label.both", "label, joint probe"),
    ("i2t_r1", "image->text R@1"),
    ("t2i_r1", "text->image R@1"),
]


def flatten(m: dict) -> dict[str, float]:
    out = {
        "zero_shot": m["zero_shot_accuracy"],
        "i2t_r1": m["retrieval"]["image_to_text_r@1"],
        "t2i_r1": m["retrieval"]["text_to_image_r@1"],
        "i2t_r5": m["retrieval"]["image_to_text_r@5"],
        "t2i_r5": m["retrieval"]["text_to_image_r@5"],
    }
    for task, views in m["probe"].items():
        for view, acc in views.items():
            out[f"probe.{task}.{view}"] = acc
    return out


def read_cache(path: Path, key: dict) -> dict[tuple, dict]:
    runs = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["key"] == key:
                runs[(r["variant"], r["p"], r["seed"])] = r
    return runs


def aggregate(runs: dict[tuple, dict], variants: list[str], ps: list[float], seeds: int) -> dict:
    cells = {}
    for v in variants:
        for p in ps:
            got = [runs[(v, p, s)]["scores"] for s in range(seeds) if (v, p, s) in runs]
            if not got:
                continue
            cells[f"{v}@{p}"] = {
                "variant": v,
                "p": p,
                "seeds": len(got),
                **{
                    k: {"mean": float(np.mean([g[k] for g in got])), "std": float(np.std([g[k] for g in got], ddof=1))}
                    if len(got) > 1
                    else {"mean": float(got[0][k]), "std": None}
                    for k in got[0]
                },
            }
    return cells


def plot(cells: dict, variants: list[str], ps: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = (len(TASKS) + 2) // 2  # two rows; the last panel holds the legend
    fig, grid = plt.subplots(2, cols, figsize=(3.3 * cols, 6.4), sharex=True)
    axes = grid.ravel()
    for ax, (key, label) in zip(axes, TASKS, strict=False):
        for v in variants:
            xs = [p for p in ps if f"{v}@{p}" in cells]
            if not xs:
                continue
            m = [100 * cells[f"{v}@{p}"][key]["mean"] for p in xs]
            s = [100 * (cells[f"{v}@{p}"][key]["std"] or 0.0) for p in xs]
            ax.errorbar(xs, m, yerr=s, marker="o", ms=3, capsize=2, lw=1, label=v)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("p (caption names the digit)", fontsize=7)
        ax.tick_params(labelsize=7, labelbottom=True)
    for ax in grid[:, 0]:
        ax.set_ylabel("test accuracy / recall (%)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[len(TASKS) :]:
        ax.axis("off")
    axes[-1].legend(handles, labels, fontsize=8, loc="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt2

    plt2.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--p", default="0.25,0.5,1.0", help="comma-separated caption-mention probabilities")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--space", default="mobilenetv2_32")
    ap.add_argument("--shard", default="0/1", help="K/N: this process trains runs K, K+N, ... of the list")
    args = ap.parse_args()
    from nasctl.api import pretrain_two_tower
    from nasctl.space import SearchSpace

    ps = [float(p) for p in args.p.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    k, n = (int(x) for x in args.shard.split("/"))
    space = SearchSpace.load(args.space)
    arch = space.baseline()
    key = {"steps": args.steps, "batch": args.batch, "arch": arch.to_string(), "data_seed": 0}
    config = {**vars(args), "variants": {v: VARIANTS[v] for v in variants}, "key": key}
    path = CACHE / "runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    todo = [(v, p, s) for s in range(args.seeds) for p in ps for v in variants]  # a whole seed first
    for i, (v, p, s) in enumerate(todo):
        if i % n != k or (v, p, s) in read_cache(path, key):
            continue
        t = time.perf_counter()
        m = pretrain_two_tower(
            arch,
            data=f"pairs:digits:{p}",
            data_seed=0,
            probes=True,
            steps=args.steps,
            batch_size=args.batch,
            seed=s,
            **VARIANTS[v],
        )
        rec = {"key": key, "variant": v, "p": p, "seed": s, "weights": VARIANTS[v], "scores": flatten(m)}
        rec["seconds"] = time.perf_counter() - t
        rec["temperature"] = m["temperature"]
        rec["final_parts"] = m["final_parts"]
        with path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(rec) + "\n")
        sc = rec["scores"]
        print(
            f"{v:>10} p={p:<4} seed {s}: zero-shot {sc['zero_shot']:.3f}  "
            f"mark(img) {sc['probe.image_mark.image']:.3f}  "
            f"colour(txt) {sc['probe.text_colour.text']:.3f}  i2t R@1 {sc['i2t_r1']:.3f}  ({rec['seconds']:.0f} s)",
            flush=True,
        )
        write(read_cache(path, key), variants, ps, args.seeds, config)
    write(read_cache(path, key), variants, ps, args.seeds, config)


def write(runs: dict, variants: list[str], ps: list[float], seeds: int, config: dict) -> None:
    cells = aggregate(runs, variants, ps, seeds)
    complete = all(cells.get(f"{v}@{p}", {}).get("seeds") == seeds for v in variants for p in ps)
    RESULTS.mkdir(exist_ok=True)
    plot(cells, variants, ps, RESULTS / "multimodal_gap.png")
    save(
        "multimodal_gap",
        {
            "complete": complete,
            "runs_done": len(runs),
            "runs_total": len(variants) * len(ps) * seeds,
            "tasks": dict(TASKS),
            "cells": cells,
            "runs": [runs[k] for k in sorted(runs)],
            "plot": "multimodal_gap.png",
        },
        config,
    )


if __name__ == "__main__":
    main()
