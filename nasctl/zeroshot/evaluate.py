"""``proxy-eval``: does a zero-shot score rank archs of *this* space as training does?

N archs are drawn uniformly from the space (each flat parameter uniformly, a fixed
sampling seed, so a larger N extends the same list). Each is trained with the search's
task-model pipeline (contrastive pretraining, then a linear probe scored on the val
split) under one fixed budget in epochs, once per training seed; every score is computed
for each. Kendall tau and Spearman rho of each score against the accuracy (mean over
seeds), and the precision of its top 10%, say how well it ranks; ``params`` and
``flops`` are the baselines a score must beat, and the tau of one training seed's
accuracies against another's is the ceiling no score can pass.

Everything is cached in the output folder as JSON lines (``trained.jsonl``,
``scores.jsonl``), one line per finished training or score, so a killed run loses at
most the item in flight and a re-run with a larger ``--archs`` adds archs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.errors import NasctlError

TRAIN_FILE = "trained.jsonl"
SCORE_FILE = "scores.jsonl"
RESULT_FILE = "proxy_eval.json"
PLOT_FILE = "proxy_eval.png"
SPLIT_SEED = 0  # the data split is the same for every training seed: only training varies
TOP_FRACTION = 0.10

Progress = Callable[[dict], None]


@dataclass
class EvalConfig:
    """What ``proxy-eval`` trains and scores. ``proxies`` empty: every registered score."""

    space_file: str
    out: str = "runs/proxy-eval"
    archs: int = 20
    seeds: tuple[int, ...] = (0,)
    epochs: int = 3
    batch_size: int = 64
    loss: str = "gamma"
    data: str = "digits"
    sample_seed: int = 0
    proxies: tuple[str, ...] = field(default_factory=tuple)
    proxy_batch: int = 32
    proxy_seed: int = 0
    device: str = "cpu"

    def pretrain_config(self, seed: int):
        from nasctl.contrastive import PretrainConfig

        return PretrainConfig(
            loss=self.loss,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=seed,
            time_budget_s=None,
            device=self.device,
        )

    def train_key(self) -> dict[str, Any]:
        """What makes two trainings of one arch and seed the same (the cache key's budget)."""
        return {
            "data": self.data,
            "split_seed": SPLIT_SEED,
            "loss": self.loss,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"], d["proxies"] = list(self.seeds), list(self.proxies)
        return d


def read_jsonl(path: Path) -> list[dict]:
    """The records of a cache file; a line cut short by a killed run is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def append_jsonl(path: Path, record: dict) -> None:
    """One record, written whole in one call (appends from several processes stay whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def sample_archs(space, n: int, seed: int) -> list:
    """The first ``n`` archs of the space's uniform sample stream ``seed``."""
    return space.samples(n, seed=seed)


def trained(cfg: EvalConfig) -> dict[tuple[str, int], dict]:
    """Cached trainings under ``cfg``'s budget: ``{(arch_id, seed): record}``."""
    key = cfg.train_key()
    return {
        (r["arch_id"], int(r["seed"])): r
        for r in read_jsonl(Path(cfg.out) / TRAIN_FILE)
        if r.get("budget") == key and "val_accuracy" in r
    }


def train_archs(cfg: EvalConfig, archs: Iterable, progress: Progress | None = None) -> dict[tuple[str, int], dict]:
    """Train every (arch, seed) not in the cache yet, appending each as it finishes."""
    from nasctl.contrastive import TrainingDiverged, load_data, pretrain_and_evaluate

    done = trained(cfg)
    path = Path(cfg.out) / TRAIN_FILE
    data_cache: dict[tuple[int, int], Any] = {}
    for arch in archs:
        for seed in cfg.seeds:
            if (arch.id, seed) in done:
                continue
            k = (arch.resolution, arch.in_channels)
            if k not in data_cache:
                data_cache[k] = load_data(cfg.data, arch.resolution, arch.in_channels, seed=SPLIT_SEED)
            if progress:
                progress({"event": "train", "arch_id": arch.id, "seed": seed})
            rec: dict[str, Any] = {"arch_id": arch.id, "arch": arch.to_string(), "seed": seed, "budget": cfg.train_key()}
            t = time.perf_counter()
            try:
                _, m = pretrain_and_evaluate(arch, data_cache[k], cfg.pretrain_config(seed))
            except TrainingDiverged as exc:  # a diverging arch is a result: it trains badly
                rec.update(val_accuracy=None, test_accuracy=None, diverged=str(exc))
            else:
                val = m.get("linear_probe_val_accuracy")
                if val is None or not math.isfinite(val):
                    raise NasctlError(f"{cfg.data}: the data has no labels; proxy-eval needs labelled data")
                rec.update(val_accuracy=float(val), test_accuracy=float(m["linear_probe_accuracy"]))
            rec["seconds"] = round(time.perf_counter() - t, 2)
            append_jsonl(path, rec)
            done[(arch.id, seed)] = rec
            if progress:
                progress({"event": "trained", **rec})
    return done
