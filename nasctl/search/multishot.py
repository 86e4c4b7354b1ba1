"""Multishot search: Optuna's NSGA-II proposes archs, each is costed and trained briefly.

The study lives in an Optuna RDB storage (SQLite in the run folder by default; PostgreSQL
or MySQL for workers on many machines). Everything a run needs to resume is there: a run
re-started with the same command counts the finished trials and runs only the rest.
Trials left RUNNING by a killed worker are found by their stale heartbeat, marked failed
and re-queued with the same parameters (``RetryHeartbeatStaleTrialCallback``).

Every parameter of the flat encoding is suggested in every trial (NSGA-II samples only the
intersection space); block positions past a stage's depth are ignored by ``resolve``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasctl.errors import NasctlError
from nasctl.search.objectives import INFEASIBLE_ACCURACY, Objectives, TrialBudget, arch_cost, score

# heartbeats and the stale-trial callback are what make resume work; Optuna flags them experimental
warnings.filterwarnings("ignore", message=r".*[Hh]eartbeat.*|.*fail_stale_trials.*")

HEARTBEAT_S = 5
GRACE_S = 15
POLL_S = 2.0
CONFIG_FILE = "search.json"
# settings that must match when a run resumes an existing study
_STUDY_KEYS = ("space_file", "strategy", "objectives", "estimator", "data", "budget", "sampler")


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
    population_size: int = 8
    top_k: int = 3
    sampler: str = "nsga2"  # or "random": the baseline a search should beat

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

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
        )


def load_config(out: str | Path) -> SearchConfig:
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise NasctlError(f"{out}: not a search run folder (no {CONFIG_FILE})")
    try:
        return SearchConfig.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise NasctlError(f"{path}: not a nasctl search config ({exc})") from None


def make_storage(url: str):
    """An Optuna RDB storage with heartbeats; bad or unreachable URLs raise NasctlError."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
        )
    except Exception as exc:  # sqlalchemy/driver errors of every kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError) or "Failed to import DB access module" in first:
            raise NasctlError(
                f"storage {_redact(url)} needs its database driver "
                "(postgresql: pip install 'nasctl[postgres]'; mysql: pip install pymysql)"
            ) from None
        raise NasctlError(f"cannot open storage {_redact(url)}: {first}") from None


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def open_study(cfg: SearchConfig, worker: int = 0, storage=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or make_storage(cfg.storage_url)
    # A resumed run must not replay the draws of the first one: the seed moves on with the
    # number of trials already in the study (deterministic given the study's history).
    try:
        done = len(optuna.load_study(study_name=cfg.name, storage=storage).get_trials(deepcopy=False))
    except KeyError:  # a new study
        done = 0
    seed = cfg.seed + 1000 * worker + 7919 * done
    if cfg.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.name,
        directions=cfg.objectives.directions,
        sampler=sampler,
        load_if_exists=True,
    )
    want = [d.upper() for d in cfg.objectives.directions]
    have = [d.name for d in study.directions]
    if have != want:
        raise NasctlError(
            f"study {cfg.name!r} in {_redact(cfg.storage_url)} optimises {len(have)} objectives "
            f"({', '.join(have)}), not {', '.join(cfg.objectives.names)}; use another --study-name or --out"
        )
    return study


def trial_counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    c = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        c[t.state.name.lower()] += 1
    return c


class Evaluator:
    """The objective: params -> Arch -> cost (+ constraints) -> [training] -> values."""

    def __init__(self, cfg: SearchConfig, on_progress: Callable[[dict], None] | None = None, worker: int = 0):
        from nasctl.latency.api import load_estimator
        from nasctl.space import SearchSpace

        self.cfg, self.worker = cfg, worker
        self.space = SearchSpace.load(cfg.space_file)
        self.params = self.space.parameters()
        self.estimator = load_estimator(cfg.estimator)
        self._data: dict[tuple[int, int], Any] = {}
        self.on_progress = on_progress

    def data_for(self, arch):
        key = (arch.resolution, arch.in_channels)
        if key not in self._data:
            from nasctl.contrastive import load_data

            self._data[key] = load_data(self.cfg.data, arch.resolution, arch.in_channels, seed=self.cfg.seed)
        return self._data[key]

    def __call__(self, trial) -> list[float]:
        self._check_not_surplus(trial)
        params = {name: trial.suggest_categorical(name, choices) for name, choices in self.params.items()}
        arch = self.space.resolve(params)
        cost = arch_cost(arch, self.estimator)
        violations = self.cfg.objectives.violations(cost)
        for key, value in violations.items():
            trial.set_constraint(key, value)
        feasible = all(v <= 0 for v in violations.values())
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("arch", arch.to_string())
        trial.set_user_attr("arch_id", arch.id)
        for k, v in cost.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("feasible", feasible)
        metrics: dict[str, Any]
        if not feasible:
            metrics = {"accuracy": INFEASIBLE_ACCURACY}
            trial.set_user_attr("trained", False)
        else:
            prev = _trained_twin(trial.study, arch.id, trial.number)
            if prev is not None:  # the same arch from other parameters: reuse, don't retrain
                metrics = {k: prev.user_attrs[k] for k in _METRIC_KEYS if k in prev.user_attrs}
                trial.set_user_attr("duplicate_of", prev.number)
            else:
                if self.on_progress:
                    self.on_progress({"event": "train", "trial": trial.number, "arch": arch.to_string()})
                metrics = score(arch, self.data_for(arch), self.cfg.budget, self._train_progress(trial.number))
            trial.set_user_attr("trained", True)
        for k, v in metrics.items():
            trial.set_user_attr(k, v)
        return [float(metrics["accuracy"]) if n == "accuracy" else float(cost[n]) for n in self.cfg.objectives.names]

    def _check_not_surplus(self, trial) -> None:
        """With several workers, two can start the last trial at once: the one with the
        higher number finds the target already taken by trials ahead of it and stops
        (PRUNED, attribute ``surplus``) before any work, so no trial runs twice."""
        import optuna
        from optuna.trial import TrialState

        if self.cfg.trials is None:
            return
        ahead = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(1 for t in ahead if t.number < trial.number) >= self.cfg.trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the study already has its trials")

    def _train_progress(self, number: int):
        if self.on_progress is None:
            return None

        def progress(p: dict) -> None:
            self.on_progress({"event": "step", "trial": number, **p})

        return progress


_METRIC_KEYS = (
    "accuracy",
    "test_accuracy",
    "knn_val_accuracy",
    "train_seconds",
    "eval_seconds",
    "epochs_done",
    "final_loss",
)


def _trained_twin(study, arch_id: str, number: int):
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.user_attrs.get("arch_id") == arch_id and t.user_attrs.get("trained"):
            return t
    return None


def run_worker(
    cfg: SearchConfig,
    worker: int = 0,
    on_progress: Callable[[dict], None] | None = None,
    deadline: float | None = None,
) -> None:
    """Run trials until the study holds ``cfg.trials`` complete ones (or the deadline)."""
    import torch
    from optuna.storages import fail_stale_trials

    from nasctl.contrastive import TrainingDiverged

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, cfg.workers)))
    study = open_study(cfg, worker)
    evaluator = Evaluator(cfg, on_progress, worker)
    while True:
        fail_stale_trials(study)
        fail_orphans(study)
        c = trial_counts(study)
        if cfg.trials is not None and c["complete"] >= cfg.trials:
            break
        if deadline is not None and time.time() >= deadline:
            break
        if cfg.trials is not None and c["complete"] + c["running"] >= cfg.trials:
            if on_progress:
                on_progress({"event": "wait", "running": c["running"]})
            time.sleep(POLL_S)  # the last trials run elsewhere (or are stale: wait for their heartbeat)
            continue
        study.optimize(evaluator, n_trials=1, catch=(TrainingDiverged, RuntimeError, ValueError, FloatingPointError))
        if on_progress:
            on_progress({"event": "done", "counts": trial_counts(study)})


def fail_orphans(study, grace_s: float | None = None) -> list[int]:
    """Fail RUNNING trials that never got to their first heartbeat: a worker killed between
    creating a trial and starting its heartbeat leaves one with no parameters, which
    Optuna's stale-trial check never sees. (With parameters, a trial has a heartbeat.)"""
    from datetime import datetime

    from optuna.trial import TrialState

    grace = 2 * GRACE_S if grace_s is None else grace_s
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        age = (datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        if not t.params and age > grace:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            failed.append(t.number)
    return failed


def _worker_entry(cfg_dict: dict, worker: int, deadline: float | None) -> None:
    """Entry point of a spawned worker process (quiet; the parent renders)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent's Ctrl-C ends us; heartbeats recover the trial
    run_worker(SearchConfig.from_dict(cfg_dict), worker, None, deadline)


def prepare(cfg: SearchConfig) -> Any:
    """Validate everything before any work: space, estimator, data, budgets, storage; write
    the run config; enqueue the baseline into a new study. Returns the study."""
    from nasctl.contrastive import load_data
    from nasctl.latency.api import load_estimator
    from nasctl.search.objectives import space_floor
    from nasctl.space import SearchSpace

    if cfg.strategy != "multishot":
        raise NasctlError(f"unknown strategy {cfg.strategy!r} (available: multishot)")
    if cfg.sampler not in ("nsga2", "random"):
        raise NasctlError(f"unknown sampler {cfg.sampler!r} (expected nsga2 or random)")
    if cfg.trials is None and cfg.time_budget_s is None:
        raise NasctlError("give --trials N and/or --time-budget SECONDS")
    if cfg.trials is not None and cfg.trials < 1:
        raise NasctlError(f"--trials must be >= 1 (got {cfg.trials})")
    if cfg.workers < 1:
        raise NasctlError(f"--workers must be >= 1 (got {cfg.workers})")
    space = SearchSpace.load(cfg.space_file)
    estimator = load_estimator(cfg.estimator)
    cfg.budget.pretrain.validate()
    base = space.baseline()
    if base.embedding_dim is None:
        raise NasctlError(f"{cfg.space_file}: output.embedding_dim is required for contrastive pretraining")
    data = load_data(cfg.data, base.resolution, base.in_channels, seed=cfg.seed)
    if not data.labelled:
        raise NasctlError(f"{cfg.data}: the data has no labels (y); the accuracy objective needs them")
    ob = cfg.objectives
    if ob.latency_budget_ms is not None or ob.memory_budget_mb is not None:
        floor = space_floor(space, estimator)
        for budget, key, unit, what in (
            (ob.latency_budget_ms, "latency_ms", "ms", "latency budget"),
            (ob.memory_budget_mb, "memory_mb", "MB", "memory budget"),
        ):
            value, arch = floor[key]
            if budget is not None and budget < value:
                raise NasctlError(
                    f"{what} {budget:g} {unit} is below the {'fastest' if unit == 'ms' else 'smallest'} arch of "
                    f"the space ({value:.3f} {unit} estimated, {arch.id}); nothing would be feasible"
                )
    out = Path(cfg.out)
    saved = out / CONFIG_FILE
    if saved.is_file():
        old = json.loads(saved.read_text())
        new = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as saved
        for d in (old, new):  # a study may be resumed, or shared, on another device
            d.get("budget", {}).pop("device", None)
        diff = [k for k in _STUDY_KEYS if old.get(k) != new.get(k)]
        if diff and old.get("study_name") == cfg.name and old.get("storage") == cfg.storage_url:
            raise NasctlError(
                f"{out} holds a search with other settings ({', '.join(diff)}); "
                "re-run it with the same options, or use another --out or --study-name"
            )
    study = open_study(cfg)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(_full_params(space, space.baseline_params()), user_attrs={"baseline": True})
    return study


def _full_params(space, params: dict) -> dict:
    """Fill every flat parameter (positions past the depth too), so NSGA-II sees the baseline."""
    full = dict(params)
    for name, choices in space.parameters().items():
        if name not in full:
            full[name] = choices[0]
    return full


def run_search(
    cfg: SearchConfig, on_progress: Callable[[dict], None] | None = None, prepared: bool = False
) -> dict[str, Any]:
    """Prepare (unless done), run ``cfg.workers`` workers (this process is one), return trial
    counts. Ctrl-C propagates (KeyboardInterrupt) after the other workers are stopped."""
    import multiprocessing as mp

    if not prepared:
        prepare(cfg)
    deadline = time.time() + cfg.time_budget_s if cfg.time_budget_s else None
    procs = []
    ctx = mp.get_context("spawn")
    for w in range(1, cfg.workers):
        p = ctx.Process(target=_worker_entry, args=(cfg.to_dict(), w, deadline), daemon=False)
        p.start()
        procs.append(p)
    try:
        run_worker(cfg, 0, on_progress, deadline)
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    study = open_study(cfg)
    return trial_counts(study)
