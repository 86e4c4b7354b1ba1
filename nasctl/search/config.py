"""A search's settings (``SearchConfig``), built once from options for the CLI and the
Python API alike, and saved in the run folder (``search.json``) so a run can resume."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasctl.errors import NasctlError
from nasctl.search.objectives import Objectives
from nasctl.search.scorers.trained import TrialBudget

CONFIG_FILE = "search.json"
DEFAULT_TRIALS = 20  # for a strategy that names no ``default_trials``
# settings that must match when a run resumes an existing study
STUDY_KEYS = (
    "space_file",
    "strategy",
    "objectives",
    "estimator",
    "data",
    "budget",
    "sampler",
    "proxy",
    "proxy_batch",
    "supernet",
    "supernet_epochs",
    "screen",
    "two_tower",
)


@dataclass
class SearchConfig:
    space_file: str
    out: str = "runs/search"
    strategy: str = "multishot"
    objectives: Objectives = field(default_factory=Objectives)
    budget: TrialBudget = field(default_factory=TrialBudget)
    estimator: str = "cpu"
    data: str = "digits"
    trials: int | None = 20
    time_budget_s: float | None = None
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    population_size: int | None = None  # NSGA-II only (None: the sampler's default for the space)
    top_k: int = 3
    sampler: str = "nsga2"  # or "random": the baseline a search should beat
    proxy: str | None = None  # zeroshot: a registered score or vote:A,B (None: the default)
    proxy_batch: int = 16  # zeroshot: images each score reads
    reference_size: int = 64  # zeroshot: archs a ranked score (vote, aznas) ranks against
    supernet: str | None = None  # singleshot: a trained supernet checkpoint (None: the run trains its own)
    supernet_epochs: int = 40  # singleshot: epochs of the run's own supernet
    finetune: int = 0  # singleshot: retrain the top K stand-alone after the search
    retrain: int = 0  # retrain the baseline and the top K under one budget over 3 seeds after the search
    screen: int | None = None  # hybrid: candidates screened zero-shot (None: the strategy's default)
    # image-text two-tower task models (regulariser weights, TwoTowerConfig fields), None: image-only;
    # the accuracy objective is then zero-shot classification by caption prompts on val
    two_tower: dict | None = None

    @property
    def storage_url(self) -> str:
        """The storage given, else a file in the run folder: SQLite, or a journal log for a
        strategy that writes its cheap trials in batches (``Strategy.batch``)."""
        if self.storage:
            return self.storage
        from nasctl.search.base import get_strategy

        if getattr(get_strategy(self.strategy), "batch", 0):
            return f"journal:///{Path(self.out).resolve() / 'study.log'}"
        return f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def name(self) -> str:
        return self.study_name or f"{Path(self.space_file).stem}-{self.strategy}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "space_file": str(self.space_file),
            "out": str(self.out),
            "strategy": self.strategy,
            "objectives": self.objectives.to_dict(),
            "budget": self.budget.to_dict(),
            "estimator": self.estimator,
            "data": self.data,
            "trials": self.trials,
            "time_budget_s": self.time_budget_s,
            "seed": self.seed,
            "storage": self.storage_url,
            "study_name": self.name,
            "workers": self.workers,
            "population_size": self.population_size,
            "top_k": self.top_k,
            "sampler": self.sampler,
            "proxy": self.proxy,
            "proxy_batch": self.proxy_batch,
            "reference_size": self.reference_size,
            "supernet": self.supernet,
            "supernet_epochs": self.supernet_epochs,
            "finetune": self.finetune,
            "retrain": self.retrain,
            "screen": self.screen,
            "two_tower": self.two_tower,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        from nasctl.contrastive import AugmentConfig, PretrainConfig

        b = dict(d["budget"])
        b["augment"] = AugmentConfig(**b.get("augment", {}))
        return cls(
            space_file=d["space_file"],
            out=d["out"],
            strategy=d["strategy"],
            objectives=Objectives(**d["objectives"]),
            budget=TrialBudget(PretrainConfig(**b)),
            estimator=d["estimator"],
            data=d["data"],
            trials=d["trials"],
            time_budget_s=d["time_budget_s"],
            seed=d["seed"],
            storage=d["storage"],
            study_name=d["study_name"],
            workers=d["workers"],
            population_size=d["population_size"],
            top_k=d["top_k"],
            sampler=d.get("sampler", "nsga2"),
            proxy=d.get("proxy"),
            proxy_batch=d.get("proxy_batch", 16),
            reference_size=d.get("reference_size", 64),
            supernet=d.get("supernet"),
            supernet_epochs=d.get("supernet_epochs", 40),
            finetune=d.get("finetune", 0),
            retrain=d.get("retrain", 0),
            screen=d.get("screen"),
            two_tower=d.get("two_tower"),
        )

    def save(self) -> Path:
        out = Path(self.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def check_resumable(self) -> None:
        """A run folder that already holds this study must have been made with the same settings."""
        saved = Path(self.out) / CONFIG_FILE
        if not saved.is_file():
            return
        try:
            old = json.loads(saved.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NasctlError(f"{saved}: not a nasctl search config ({exc})") from None
        new = json.loads(json.dumps(self.to_dict()))  # tuples -> lists, as saved
        for d in (old, new):  # a study may be resumed, or shared, on another device
            d.get("budget", {}).pop("device", None)
        for key in (
            "proxy",
            "proxy_batch",
            "supernet",
            "supernet_epochs",
            "screen",
            "two_tower",
        ):  # older run folders had the defaults
            old.setdefault(key, getattr(SearchConfig, key))
        diff = [k for k in STUDY_KEYS if old.get(k) != new.get(k)]
        if diff and old.get("study_name") == self.name and old.get("storage") == self.storage_url:
            raise NasctlError(
                f"{self.out} holds a search with other settings ({', '.join(diff)}); "
                "re-run it with the same options, or use another --out or --study-name"
            )


def load_config(out: str | Path) -> SearchConfig:
    """The settings saved in a run folder (its ``out`` set to where the folder is now)."""
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise NasctlError(f"{out}: not a search run folder (no {CONFIG_FILE})")
    try:
        cfg = SearchConfig.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise NasctlError(f"{path}: not a nasctl search config ({exc})") from None
    cfg.out = str(out)
    return cfg


def make_config(
    space_file: str | Path,
    *,
    strategy: str = "multishot",
    out: str | Path = "runs/search",
    trials: int | None = None,
    time_budget_s: float | None = None,
    estimator: str = "cpu",
    objectives: str | tuple[str, ...] | None = None,
    latency_budget_ms: float | None = None,
    memory_budget_mb: float | None = None,
    data: str = "digits",
    loss: str = "gamma",
    epochs: int = 3,
    trial_seconds: float | None = 30.0,
    batch_size: int = 32,
    train_device: str = "cpu",
    population: int | None = None,
    sampler: str = "nsga2",
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    top: int = 3,
    proxy: str | None = None,
    proxy_batch: int = 16,
    reference_size: int = 64,
    supernet: str | Path | None = None,
    supernet_epochs: int = 40,
    finetune: int = 0,
    retrain: int = 0,
    screen: int | None = None,
    two_tower: bool | dict | None = None,
) -> SearchConfig:
    """A ``SearchConfig`` from the options ``nasctl search`` takes (same names, same defaults).

    ``objectives``: the score and some costs, comma-separated or a tuple; default: the
    strategy's score and ``latency_ms``. ``trials``: default the strategy's
    (``default_trials``) unless ``time_budget_s`` alone bounds the run. ``two_tower``:
    True, or the regulariser weights (``{"separation": 1.0, ...}``), to search the image
    tower of an image-text model (``data`` then defaults to ``pairs:digits``)."""
    from nasctl.contrastive import PretrainConfig
    from nasctl.search.base import get_strategy

    if trials is None and time_budget_s is None:  # the strategy's default
        trials = getattr(get_strategy(strategy), "default_trials", DEFAULT_TRIALS)
    if objectives is None:
        objectives = (get_strategy(strategy).scorer_type.objective, "latency_ms")
    elif isinstance(objectives, str):
        objectives = tuple(o.strip() for o in objectives.split(",") if o.strip())
    return SearchConfig(
        space_file=str(space_file),
        out=str(out),
        strategy=strategy,
        objectives=Objectives(tuple(objectives), latency_budget_ms, memory_budget_mb),
        budget=TrialBudget(
            PretrainConfig(
                loss=loss,
                epochs=epochs,
                batch_size=batch_size,
                time_budget_s=trial_seconds,
                seed=seed,
                device=train_device,
            )
        ),
        estimator=estimator,
        data="pairs:digits" if two_tower and data == "digits" else data,
        trials=trials,
        time_budget_s=time_budget_s,
        seed=seed,
        storage=storage,
        study_name=study_name,
        workers=workers,
        population_size=population,
        top_k=top,
        sampler=sampler,
        proxy=proxy,
        proxy_batch=proxy_batch,
        reference_size=reference_size,
        supernet=str(supernet) if supernet else None,
        supernet_epochs=supernet_epochs,
        finetune=finetune,
        retrain=retrain,
        screen=screen,
        two_tower=None if not two_tower else ({} if two_tower is True else dict(two_tower)),
    )
