"""Benchmark: does the supernet rank subnets of the default space as stand-alone training does?

N subnets are drawn uniformly from the default space at the supernet's resolution (32),
with a fixed sampling seed. Each is trained stand-alone with the task pipeline (NT-Xent,
the supernet's loss, 4 epochs at batch 64, no time cap) once per training seed and
scored by a linear probe. Its stand-alone accuracy is the mean over the seeds (4) of the
probe accuracy on the val and test splits together (538 images, so one image is 0.19
points). Two seeds of one arch disagree a lot on this space, hence the four.

Supernets are trained once per variant (with / without in-place distillation), and
every subnet is scored by its inherited weights with and without BatchNorm
recalibration (the same probe, same splits). Reported: Kendall tau of inherited against
stand-alone accuracy with its 90% bootstrap interval and Spearman rho, beside
tau(params), tau(FLOPs), the seed-vs-seed tau of stand-alone training (the ceiling for
one seed) and the tau of the mean of seeds 0-1 against that of seeds 2-3; and the cost
of a single-shot search against a multishot search reaching the same accuracy at the
same latency. Everything is cached under ``bench/cache/supernet_rank`` (stand-alone
runs, supernet checkpoints, inherited scores), so the bench resumes across sessions.

    python bench/supernet_rank.py [--archs 32] [--seeds 0,1,2,3] [--supernet-epochs 20] [--phase all]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save  # noqa: E402

from nasctl.latency.api import load_estimator  # noqa: E402
from nasctl.search.objectives import arch_cost  # noqa: E402
from nasctl.singleshot.evaluate import inherited_accuracy  # noqa: E402
from nasctl.singleshot.train import SPLIT_SEED, SupernetConfig, load_supernet, train_supernet  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402
from nasctl.zeroshot.evaluate import EvalConfig, append_jsonl, kendall_ci, read_jsonl, train_archs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "cache" / "supernet_rank"
VARIANTS = {"distill": True, "nodistill": False}


def standalone(args, space, archs) -> dict:
    cfg = EvalConfig(
        space_file=args.space,
        out=str(CACHE / "standalone"),
        epochs=args.epochs,
        batch_size=64,
        loss="ntxent",
        seeds=(0,),
    )
    done = {}
    for seed in args.seeds:  # every arch at one seed before the next seed
        done = train_archs(replace(cfg, seeds=(seed,)), archs, progress=_log)
    return {"config": cfg.train_key(), "runs": done}


def _log(p: dict) -> None:
    if p.get("event") == "trained":
        print(f"  trained {p['arch_id']} seed {p['seed']}: val {p['val_accuracy']}, {p['seconds']} s", flush=True)


def supernet_cfg(args, distill: bool) -> SupernetConfig:
    return SupernetConfig(epochs=args.supernet_epochs, distill=distill, resolution=args.resolution, checkpoint_every=10)


def train_variants(args, space) -> None:
    for name in args.variants:
        path = CACHE / f"supernet_{name}.npz"
        print(f"supernet {name} -> {path}", flush=True)

        def show(p: dict) -> None:
            if p["step"] % 19 == 0:
                print(f"  step {p['step']}/{p['total_steps']} loss {p['loss']:.3f} {p['elapsed_s']:.0f} s", flush=True)

        train_supernet(space, supernet_cfg(args, VARIANTS[name]), path, progress=show)


def inherited(args, archs) -> dict:
    """``{(variant, recalibrate, arch_id): record}`` from the cache, scoring what is missing."""
    from nasctl.contrastive import load_data

    path = CACHE / "inherited.jsonl"
    cache = {(r["variant"], r["recalibrate"], r["arch_id"], r["step"]): r for r in read_jsonl(path)}
    out = {}
    for name in args.variants:
        net, meta = load_supernet(CACHE / f"supernet_{name}.npz")
        if not meta["finished"]:
            raise SystemExit(
                f"supernet {name} is not trained to the end yet (step {meta['step']}/{meta['total_steps']})"
            )
        data = load_data("digits", net.resolution, 3, seed=SPLIT_SEED)
        for recal in (True, False):
            for arch in archs:
                key = (name, recal, arch.id, meta["step"])
                if key not in cache:
                    rec = {"variant": name, "recalibrate": recal, "arch_id": arch.id, "step": meta["step"]}
                    rec.update(inherited_accuracy(net, arch, data, recalibrate=recal))
                    append_jsonl(path, rec)
                    cache[key] = rec
                out[(name, recal, arch.id)] = cache[key]
    return out


def both_splits(rec: dict) -> float:
    """Accuracy on val and test together (the splits are the same size)."""
    return (rec["val_accuracy" if "val_accuracy" in rec else "accuracy"] + rec["test_accuracy"]) / 2


def tau_entry(x, y) -> dict:
    from scipy.stats import spearmanr

    tau, lo, hi = kendall_ci(np.asarray(x, float), np.asarray(y, float), level=0.90)
    return {"kendall_tau": tau, "tau_ci90": [lo, hi], "spearman_rho": float(spearmanr(x, y).statistic)}


def analyse(args, space, archs, runs, scores) -> dict:
    est = load_estimator("cpu")
    ids = [a.id for a in archs]
    by_seed = {s: np.array([both_splits(runs[(i, s)]) for i in ids]) for s in args.seeds}
    acc = np.mean([by_seed[s] for s in args.seeds], axis=0)
    costs = [arch_cost(a, est) for a in archs]
    params = np.array([c["params"] for c in costs], float)
    flops = np.array([c["flops"] for c in costs], float)
    latency = np.array([c["latency_ms"] for c in costs], float)
    table: dict = {
        "params": tau_entry(params, acc),
        "flops": tau_entry(flops, acc),
    }
    if len(args.seeds) >= 2:
        table["seed_vs_seed"] = tau_entry(by_seed[args.seeds[0]], by_seed[args.seeds[1]])
    if len(args.seeds) >= 4:  # the ceiling for a mean over half the seeds: one half against the other
        half = len(args.seeds) // 2
        first = np.mean([by_seed[s] for s in args.seeds[:half]], axis=0)
        second = np.mean([by_seed[s] for s in args.seeds[half : 2 * half]], axis=0)
        table["half_vs_half"] = tau_entry(first, second)
    for name in args.variants:
        for recal in (True, False):
            inh = np.array([both_splits(scores[(name, recal, i)]) for i in ids])
            table[f"{name}_{'recal' if recal else 'norecal'}"] = {
                **tau_entry(inh, acc),
                "inherited_mean": float(inh.mean()),
                "inherited": inh.tolist(),
            }
    cost = search_cost(args, archs, runs, scores, acc, latency)
    return {
        "archs": [a.to_string() for a in archs],
        "standalone_accuracy": acc.tolist(),
        "standalone_by_seed": {str(s): v.tolist() for s, v in by_seed.items()},
        "latency_ms": latency.tolist(),
        "params": params.tolist(),
        "flops": flops.tolist(),
        "tau": table,
        "cost": cost,
        "supernets": {
            name: {k: v for k, v in load_supernet(CACHE / f"supernet_{name}.npz")[1].items() if k != "space_yaml"}
            for name in args.variants
        },
    }


def search_cost(args, archs, runs, scores, acc, latency) -> dict:
    """Single-shot: train the supernet once, score every subnet by inheritance, pick the
    best-scored one under the median latency; its stand-alone accuracy is the target.
    Multishot (random sampler): the expected number of stand-alone trainings until one
    reaches that accuracy within the same latency, from the sampled subnets' hit rate."""
    name = args.variants[0]
    ids = [a.id for a in archs]
    inh = np.array([both_splits(scores[(name, True, i)]) for i in ids])
    budget = float(np.median(latency))
    ok = latency <= budget
    pick = int(np.argmax(np.where(ok, inh, -np.inf)))
    target = float(acc[pick])
    hits = int(np.sum(ok & (acc >= target)))
    train_s = float(np.mean([runs[(i, s)]["seconds"] for i in ids for s in args.seeds]))
    score_s = float(np.mean([scores[(name, True, i)]["score_seconds"] for i in ids]))
    supernet_s = float(load_supernet(CACHE / f"supernet_{name}.npz")[1]["seconds"])
    expected = len(archs) / hits  # trials until the first hit, drawing with replacement
    return {
        "variant": name,
        "latency_budget_ms": budget,
        "picked": ids[pick],
        "picked_standalone_accuracy": target,
        "best_standalone_accuracy_in_budget": float(acc[ok].max()),
        "hits": hits,
        "supernet_train_seconds": supernet_s,
        "inherited_score_seconds_per_arch": score_s,
        "singleshot_seconds": supernet_s + score_s * len(archs),
        "standalone_train_seconds_per_arch": train_s,
        "multishot_expected_trials": expected,
        "multishot_seconds": expected * train_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "mobilenetv2_32.yaml"))
    ap.add_argument("--archs", type=int, default=32)
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--epochs", type=int, default=4, help="stand-alone training epochs")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--supernet-epochs", type=int, default=20)
    ap.add_argument("--variants", default="distill,nodistill")
    ap.add_argument("--phase", default="all", choices=["standalone", "supernet", "inherited", "all"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="supernet_rank")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.variants = args.variants.split(",")
    torch.set_num_threads(args.threads)
    space = SearchSpace.load(args.space)
    archs = space.samples(args.archs, seed=0, fixed={"resolution": args.resolution})
    if args.phase in ("standalone", "all"):
        runs = standalone(args, space, archs)["runs"]
    if args.phase in ("supernet", "all"):
        train_variants(args, space)
    if args.phase in ("inherited", "all"):
        inherited(args, archs)
    if args.phase != "all":
        return
    scores = inherited(args, archs)
    result = analyse(args, space, archs, runs, scores)
    config = {
        **vars(args),
        "standalone": {"loss": "ntxent", "epochs": args.epochs, "batch_size": 64},
        "supernet": {n: supernet_cfg(args, VARIANTS[n]).to_dict() for n in args.variants},
    }
    path = save(args.name, result, config)
    for k, v in result["tau"].items():
        print(f"{k:>18}: tau {v['kendall_tau']:+.3f} [{v['tau_ci90'][0]:+.2f}, {v['tau_ci90'][1]:+.2f}]")
    print(json.dumps(result["cost"], indent=1))
    print(f"wrote {path} ({RESULTS})")


if __name__ == "__main__":
    main()
