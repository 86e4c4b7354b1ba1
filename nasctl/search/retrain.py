"""Retraining archs stand-alone under one identical budget, over seeds.

``retrain(arch, data, config, seeds, initial)`` pretrains ``arch`` once per seed with the
task pipeline (contrastive pretraining, then the linear probe) under ``config``'s epochs
with no time cap, from a seeded initialisation or from given weights, and returns each
run's accuracies. ``finetune_winners`` is ``search --finetune K`` for a singleshot run:
its K best-scored Pareto archs retrained from the weights they inherit and from scratch,
beside their inherited accuracy, written to ``finetune.json`` (the report shows it).
``retrain_run`` is ``nasctl retrain RUN_DIR``: the baseline and the K best-scored Pareto
archs of any run retrained under one identical budget over several seeds, and the fairly
compared "best within 1 point of the baseline" (``retrain.json``, the report shows it).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nasctl.arch import Arch
    from nasctl.contrastive import ImageData, PretrainConfig
    from nasctl.search.config import SearchConfig

FINETUNE_FILE = "finetune.json"
RETRAIN_FILE = "retrain.json"
RETRAIN_CACHE = "retrain.jsonl"  # one line per finished (arch, seed, budget) run: a killed retrain resumes


def retrain(
    arch: Arch,
    data: ImageData,
    config: PretrainConfig,
    seeds: tuple[int, ...] = (0,),
    initial: dict | None = None,
    progress=None,
) -> dict[str, Any]:
    """Accuracies of ``arch`` retrained once per seed (mean and std over seeds too)."""
    from nasctl.contrastive import pretrain_and_evaluate

    runs = []
    for seed in seeds:
        t = time.perf_counter()
        _, m = pretrain_and_evaluate(
            arch, data, replace(config, seed=seed, time_budget_s=None), progress, initial=initial
        )
        runs.append(
            {
                "seed": seed,
                "accuracy": float(m["linear_probe_val_accuracy"]),
                "test_accuracy": float(m["linear_probe_accuracy"]),
                "seconds": time.perf_counter() - t,
            }
        )
    return summarize(runs)


def summarize(runs: list[dict]) -> dict[str, Any]:
    """Mean and std (over seeds, ddof 1) of the runs' val and test accuracy, and the runs."""
    acc = np.array([r["accuracy"] for r in runs])
    test = np.array([r["test_accuracy"] for r in runs])
    return {
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "test_accuracy_mean": float(test.mean()),
        "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        "runs": runs,
    }


def best_scored(res, k: int, baseline: bool = True) -> list:
    """The ``k`` best-scored trained Pareto archs of a run (the baseline among them only
    with ``baseline``), best first."""
    ranked = sorted((r for r in res.pareto if r.trained), key=lambda r: -r.score(res.objective))
    return [r for r in ranked if baseline or not r.baseline][:k]


def finetune_winners(cfg: SearchConfig, top: list, progress=None) -> dict[str, Any]:
    """Retrain ``top`` (trial records of a singleshot run) from their inherited weights and
    from scratch (``cfg.budget.pretrain``'s epochs, loss and batch, no time cap; seed
    ``cfg.seed``), on the split the supernet trained on; write and return ``finetune.json``."""
    from nasctl.arch import Arch
    from nasctl.search.scorers.supernet import shared_scorer

    net, data = shared_scorer(cfg).load()
    budget = cfg.budget.pretrain
    rows = []
    for r in top:
        arch = Arch.from_string(r.arch)
        if progress:
            progress({"event": "finetune", "trial": r.number, "arch": r.arch})
        inherited = {k: v.detach().clone() for k, v in net.subnet(arch, "embedding").state_dict().items()}
        rows.append(
            {
                "trial": r.number,
                "arch": r.arch,
                "arch_id": r.arch_id,
                "latency_ms": r.latency_ms,
                "inherited_accuracy": r.metrics.get("accuracy"),
                "inherited_test_accuracy": r.metrics.get("test_accuracy"),
                "from_inherited": retrain(arch, data, budget, (cfg.seed,), inherited),
                "from_scratch": retrain(arch, data, budget, (cfg.seed,)),
            }
        )
    out = {
        "budget": {"loss": budget.loss, "epochs": budget.epochs, "batch_size": budget.batch_size, "seeds": [cfg.seed]},
        "winners": rows,
    }
    (Path(cfg.out) / FINETUNE_FILE).write_text(json.dumps(out, indent=2) + "\n")
    return out


def finetune_if_asked(cfg: SearchConfig, progress=None) -> dict[str, Any] | None:
    """``search --finetune K``: fine-tune the winners once (a re-run whose ``finetune.json``
    already holds the same K winners keeps it)."""
    from nasctl.search.results import collect

    if not cfg.finetune:
        return None
    top = best_scored(collect(cfg), cfg.finetune)
    path = Path(cfg.out) / FINETUNE_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if [w["trial"] for w in old.get("winners", [])] == [r.number for r in top]:
            return old
    return finetune_winners(cfg, top, progress)


def retrain_run(
    cfg: SearchConfig,
    top: int = 3,
    epochs: int | None = None,
    seeds: int = 3,
    measure: bool = True,
    progress=None,
) -> dict[str, Any]:
    """Retrain the run's baseline and its ``top`` best-scored Pareto archs under one budget:
    the search's loss and batch size, ``epochs`` (default: the search's) and no time cap,
    seeds 0..``seeds``-1, on the search's data split. Report accuracy mean +- std, the
    estimated (and, with ``measure``, measured) latency, memory and params, and the
    fastest arch whose mean val accuracy is within 1 point of the baseline's. Runs are
    cached in ``retrain.jsonl``; the result is ``retrain.json`` and a report section."""
    from nasctl.arch import Arch
    from nasctl.contrastive import load_data
    from nasctl.errors import NasctlError
    from nasctl.latency.api import load_estimator
    from nasctl.search.results import collect, measure_latencies
    from nasctl.zeroshot.evaluate import append_jsonl, read_jsonl

    if top < 1 or seeds < 1 or (epochs is not None and epochs < 1):
        raise NasctlError("--top, --seeds and --epochs must be >= 1")
    res = collect(cfg)
    if res.baseline is None or res.baseline.arch is None:
        raise NasctlError(f"{cfg.out}: the run has no completed baseline trial to compare against")
    picks = [res.baseline, *best_scored(res, top, baseline=False)]
    budget = replace(cfg.budget.pretrain, epochs=epochs or cfg.budget.pretrain.epochs, time_budget_s=None, steps=None)
    key = {
        "data": cfg.data,
        "split_seed": cfg.seed,
        "loss": budget.loss,
        "epochs": budget.epochs,
        "batch_size": budget.batch_size,
    }
    cache_path = Path(cfg.out) / RETRAIN_CACHE
    cache = {(r["arch_id"], r["seed"]): r for r in read_jsonl(cache_path) if r.get("budget") == key}
    data: dict[tuple[int, int], Any] = {}
    rows = []
    for r in picks:
        arch = Arch.from_string(r.arch)
        shape = (arch.resolution, arch.in_channels)
        runs = []
        for seed in range(seeds):
            if (arch.id, seed) not in cache:
                if shape not in data:
                    data[shape] = load_data(cfg.data, arch.resolution, arch.in_channels, seed=cfg.seed)
                if progress:
                    progress({"event": "retrain", "trial": r.number, "seed": seed, "arch": r.arch})
                run = retrain(arch, data[shape], budget, (seed,))["runs"][0]
                rec = {"arch_id": arch.id, "budget": key, **run}
                append_jsonl(cache_path, rec)
                cache[(arch.id, seed)] = rec
            runs.append({k: cache[(arch.id, seed)][k] for k in ("seed", "accuracy", "test_accuracy", "seconds")})
        rows.append(
            {
                "trial": r.number,
                "baseline": r.baseline,
                "arch": r.arch,
                "arch_id": r.arch_id,
                "search_score": r.score(res.objective),
                "latency_ms": r.latency_ms,
                "memory_mb": r.memory_mb,
                "params": r.params,
                "measured_latency_ms": None,
                **summarize(runs),
            }
        )
    if measure and not load_estimator(cfg.estimator).device.get("simulated"):
        measured = measure_latencies({f"t{row['trial']}": Arch.from_string(row["arch"]) for row in rows})
        for row in rows:
            row["measured_latency_ms"] = measured[f"t{row['trial']}"]
    out = {
        "budget": {**key, "seeds": list(range(seeds)), "time_budget_s": None},
        "objective": res.objective,
        "rows": rows,
        "best_within_1_point": fair_best(rows),
    }
    (Path(cfg.out) / RETRAIN_FILE).write_text(json.dumps(out, indent=2) + "\n")
    return out


def fair_best(rows: list[dict], max_drop_points: float = 1.0) -> dict[str, Any] | None:
    """The fastest retrained arch whose mean val accuracy is within ``max_drop_points`` of
    the baseline's (measured latency where every one was measured, else estimated)."""
    base = next(r for r in rows if r["baseline"])
    ok = [
        r for r in rows if not r["baseline"] and 100 * (base["accuracy_mean"] - r["accuracy_mean"]) <= max_drop_points
    ]
    if not ok:
        return None
    measured = all(r["measured_latency_ms"] is not None for r in [base, *ok])
    lat = "measured_latency_ms" if measured else "latency_ms"
    best = min(ok, key=lambda r: r[lat])
    return {
        "trial": best["trial"],
        "arch_id": best["arch_id"],
        "latency_key": lat,
        "latency_ms": best[lat],
        "baseline_latency_ms": base[lat],
        "latency_change_pct": 100 * (best[lat] / base[lat] - 1),
        "accuracy_mean": best["accuracy_mean"],
        "accuracy_std": best["accuracy_std"],
        "baseline_accuracy_mean": base["accuracy_mean"],
        "baseline_accuracy_std": base["accuracy_std"],
        "accuracy_change_points": 100 * (best["accuracy_mean"] - base["accuracy_mean"]),
    }
