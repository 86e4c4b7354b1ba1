"""The study every strategy runs in: storage, constraints, resume, workers.

A trial: the strategy's sampler proposes flat parameters -> the space resolves them to an
Arch -> the estimator costs it (latency, memory) and the budgets are set as constraints ->
a feasible arch is scored by the strategy's scorer (an arch reached again through other
parameters reuses its twin's score) -> the values go back to the study, and everything
the outputs show is kept as the trial's user attributes (read back as ``TrialRecord``).

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
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nasctl.errors import NasctlError
from nasctl.search.base import get_strategy
from nasctl.search.config import SearchConfig
from nasctl.search.objectives import arch_cost

# heartbeats and the stale-trial callback are what make resume work; Optuna flags them experimental
warnings.filterwarnings("ignore", message=r".*[Hh]eartbeat.*|.*fail_stale_trials.*")

HEARTBEAT_S = 5
GRACE_S = 15
POLL_S = 2.0
JOURNAL = "journal:///"


def make_storage(url: str):
    """An Optuna storage for ``url``: an RDB one with heartbeats (``sqlite:///``,
    ``postgresql://``, ``mysql://``) or a journal file (``journal:///PATH``: an append-only
    log, far faster per write than SQLite, for cheap trials). Bad or unreachable URLs
    raise NasctlError."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith(JOURNAL):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:  # an unreadable log
            raise NasctlError(f"cannot open storage {url}: {_first_line(exc)}") from None
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
        first = _first_line(exc)
        if isinstance(exc, ImportError) or "Failed to import DB access module" in first:
            raise NasctlError(
                f"storage {_redact(url)} needs its database driver "
                "(postgresql: pip install 'nasctl[postgres]'; mysql: pip install pymysql)"
            ) from None
        raise NasctlError(f"cannot open storage {_redact(url)}: {first}") from None


def check_journal(path: Path) -> None:
    """A journal log must be JSON lines. A last line cut short (a write killed mid-way) is
    cut off, so the next write starts a line of its own; any other bad line is an error
    (NasctlError) before anything is written."""
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    for i, line in enumerate(data[:end].splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            raise NasctlError(f"{path}: not an Optuna journal (line {i} is not JSON); use another --out") from None
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    sampler = get_strategy(cfg.strategy).sampler(cfg, seed)
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
    """The objective every strategy shares: params -> Arch -> cost (+ constraints) ->
    [score] -> values. The strategy gives the scorer; the rest is the same for all."""

    def __init__(self, cfg: SearchConfig, on_progress: Callable[[dict], None] | None = None, worker: int = 0):
        from nasctl.latency.api import load_estimator
        from nasctl.space import SearchSpace

        self.cfg, self.worker = cfg, worker
        self.space = searched_space(cfg, SearchSpace.load(cfg.space_file))
        self.params = self.space.parameters()
        self.estimator = load_estimator(cfg.estimator)
        self.scorer = get_strategy(cfg.strategy).scorer(cfg, self.space)
        self.on_progress = on_progress

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
        scorer = self.scorer
        metrics: dict[str, Any]
        if not feasible:
            metrics = {scorer.objective: scorer.worst}
            trial.set_user_attr("trained", False)
        else:
            prev = _scored_twin(trial.study, arch.id, trial.number)
            if prev is not None:  # the same arch from other parameters: reuse, don't score again
                metrics = {k: prev.user_attrs[k] for k in scorer.metrics if k in prev.user_attrs}
                trial.set_user_attr("duplicate_of", prev.number)
            else:
                if self.on_progress:
                    self.on_progress(
                        {
                            "event": "train",
                            "trial": trial.number,
                            "arch": arch.to_string(),
                            "verb": getattr(scorer, "verb", "training"),
                        }
                    )
                metrics = self._score(trial, arch)
            trial.set_user_attr("trained", True)
        for k, v in metrics.items():
            trial.set_user_attr(k, v)
        objective = scorer.objective
        return [float(metrics[objective]) if n == objective else float(cost[n]) for n in self.cfg.objectives.names]

    def _score(self, trial, arch) -> dict[str, Any]:
        """Score one arch. Any exception leaves its traceback in the trial (``error``);
        one the scorer does not list as recoverable is also marked ``bug`` and stops the search."""
        try:
            return self.scorer(arch, self._train_progress(trial.number))
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt):
                trial.set_user_attr("error", traceback.format_exc())
                if not isinstance(exc, self.scorer.recoverable):
                    trial.set_user_attr("bug", True)
            raise

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


def _scored_twin(study, arch_id: str, number: int):
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

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, cfg.workers)))
    if batch_size(cfg):
        run_batched(cfg, on_progress, deadline)
        return
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
        study.optimize(evaluator, n_trials=1, catch=evaluator.scorer.recoverable)
        if on_progress:
            on_progress({"event": "done", "counts": trial_counts(study)})


def batch_size(cfg: SearchConfig) -> int:
    """Trials a worker runs in memory between two writes to the storage: the strategy's
    ``batch`` (cheap trials: a storage round trip per parameter would cost more than the
    trial) when one process runs the search, else 0 (every write goes to the storage)."""
    return int(getattr(get_strategy(cfg.strategy), "batch", 0)) if cfg.workers == 1 else 0


def run_batched(
    cfg: SearchConfig, on_progress: Callable[[dict], None] | None = None, deadline: float | None = None
) -> None:
    """One process, trials in an in-memory study that starts from the stored trials
    (resume) and writes every finished trial back in batches of ``batch_size(cfg)`` (and
    at the end, Ctrl-C included): a killed run loses at most the batch in flight. The
    stored study holds finished trials only, numbered as in memory."""
    import optuna
    from optuna.trial import TrialState

    stored = open_study(cfg)
    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    done = stored.get_trials(deepcopy=False, states=finished)
    mem = optuna.create_study(
        directions=cfg.objectives.directions,
        sampler=stored.sampler,
        study_name=cfg.name,
    )
    mem.add_trials(done)
    evaluator = Evaluator(cfg, on_progress, 0)
    if not done:
        space = evaluator.space
        mem.enqueue_trial(space.full_params(space.baseline_params()), user_attrs={"baseline": True})
    flushed = len(done)
    size = batch_size(cfg)

    def flush() -> None:
        nonlocal flushed
        new = [t for t in mem.get_trials(deepcopy=False, states=finished) if t.number >= flushed]
        if new:
            stored.add_trials(new)
            flushed = max(t.number for t in new) + 1

    try:
        c = trial_counts(mem)
        while True:
            if cfg.trials is not None and c["complete"] >= cfg.trials:
                break
            if deadline is not None and time.time() >= deadline:
                break
            mem.optimize(evaluator, n_trials=1, catch=evaluator.scorer.recoverable)
            c = trial_counts(mem)  # once per trial: the next round's check reads it too
            if on_progress:
                on_progress({"event": "tick", "counts": c})
            if sum(c[k] for k in ("complete", "fail", "pruned")) - flushed >= size:
                flush()
                if on_progress:
                    on_progress({"event": "done", "counts": c, "study": mem})
    finally:
        flush()


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
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
    return failed


def _worker_entry(cfg_dict: dict, worker: int, deadline: float | None) -> None:
    """Entry point of a spawned worker process (quiet; the parent renders)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent's Ctrl-C ends us; heartbeats recover the trial
    run_worker(SearchConfig.from_dict(cfg_dict), worker, None, deadline)


def searched_space(cfg: SearchConfig, space):
    """The space the strategy searches: the file's, or what its ``search_space`` hook makes
    of it (singleshot: the space at the supernet's resolution)."""
    hook = getattr(get_strategy(cfg.strategy), "search_space", None)
    return hook(cfg, space) if hook else space


def prepare(cfg: SearchConfig) -> Any:
    """Validate everything before any work: options, space, estimator, budgets, the
    strategy's own inputs, storage; write the run config; enqueue the baseline into a new
    study. Returns the study."""
    from nasctl.latency.api import load_estimator
    from nasctl.space import SearchSpace

    strategy = get_strategy(cfg.strategy)
    if cfg.trials is None and cfg.time_budget_s is None:
        raise NasctlError("give --trials N and/or --time-budget SECONDS")
    if cfg.trials is not None and cfg.trials < 1:
        raise NasctlError(f"--trials must be >= 1 (got {cfg.trials})")
    if cfg.workers < 1:
        raise NasctlError(f"--workers must be >= 1 (got {cfg.workers})")
    cfg.objectives.check_score(strategy.scorer_type.objective, strategy.name)
    if cfg.two_tower is not None and strategy.name != "multishot":
        raise NasctlError(f"--two-tower searches with --strategy multishot (not {strategy.name})")
    space = SearchSpace.load(cfg.space_file)
    estimator = load_estimator(cfg.estimator)
    strategy.validate(cfg, space)
    space = searched_space(cfg, space)
    cfg.objectives.check_budgets(space, estimator)
    cfg.check_resumable()
    study = open_study(cfg)
    cfg.save()
    if not study.get_trials(deepcopy=False) and not batch_size(cfg):  # a batched run enqueues it in memory
        study.enqueue_trial(space.full_params(space.baseline_params()), user_attrs={"baseline": True})
    return study


def run_search(
    cfg: SearchConfig, on_progress: Callable[[dict], None] | None = None, prepared: bool = False
) -> dict[str, Any]:
    """Prepare (unless done), run ``cfg.workers`` workers (this process is one), return trial
    counts. Ctrl-C propagates (KeyboardInterrupt) after the other workers are stopped."""
    import multiprocessing as mp

    if not prepared:
        prepare(cfg)
    setup = getattr(get_strategy(cfg.strategy), "setup", None)
    if setup is not None:  # work the whole run needs once, before any trial (singleshot: its supernet)
        from nasctl.space import SearchSpace

        setup(cfg, SearchSpace.load(cfg.space_file), on_progress)
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
