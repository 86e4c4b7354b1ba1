"""Retraining archs stand-alone under one identical budget, over seeds.

``retrain(arch, data, config, seeds, initial)`` pretrains ``arch`` once per seed with the
task pipeline (contrastive pretraining, then the linear probe) under ``config``'s epochs
with no time cap, from a seeded initialisation or from given weights, and returns each
run's accuracies. ``finetune_winners`` is ``search --finetune K`` for a singleshot run:
its K best-scored Pareto archs retrained from the weights they inherit and from scratch,
beside their inherited accuracy, written to ``finetune.json`` (the report shows it).
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
    acc = np.array([r["accuracy"] for r in runs])
    test = np.array([r["test_accuracy"] for r in runs])
    return {
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "test_accuracy_mean": float(test.mean()),
        "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        "runs": runs,
    }


def winners_to_finetune(cfg: SearchConfig, res) -> list:
    """The ``cfg.finetune`` best-scored Pareto archs."""
    return sorted((r for r in res.pareto if r.trained), key=lambda r: -r.score(res.objective))[: cfg.finetune]


def finetune_winners(cfg: SearchConfig, res, progress=None) -> dict[str, Any]:
    """Retrain the ``cfg.finetune`` best-scored Pareto archs of a singleshot run from their
    inherited weights and from scratch (``cfg.budget.pretrain``'s epochs, loss and batch,
    no time cap; seed ``cfg.seed``); write and return ``finetune.json``."""
    from nasctl.arch import Arch
    from nasctl.contrastive import load_data
    from nasctl.search.scorers.supernet import InheritedAccuracy

    scorer = InheritedAccuracy.from_config(cfg)
    net, _ = scorer.load()
    from nasctl.singleshot.train import SPLIT_SEED

    data = load_data(cfg.data, net.resolution, net.space.spec.input.channels, seed=SPLIT_SEED)
    top = winners_to_finetune(cfg, res)
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
    res = collect(cfg)
    top = winners_to_finetune(cfg, res)
    path = Path(cfg.out) / FINETUNE_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if [w["trial"] for w in old.get("winners", [])] == [r.number for r in top]:
            return old
    return finetune_winners(cfg, res, progress)
