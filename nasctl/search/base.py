"""The search framework's three concepts and their registry.

* A ``Strategy`` proposes archs: it chooses the Optuna sampler and the ``Scorer``, and
  checks its own options. Registered by name with ``register_strategy``.
* A ``Scorer`` says how good one arch is (the score objective, maximised): trained
  accuracy today; zero-cost proxies or a supernet's inherited accuracy plug in the same way.
* A ``TrialRecord`` is one trial as every output shows it (``trials.csv``,
  ``pareto.json``, ``report.md``, the live view), read back from the study.

The study (storage, constraints, resume, workers) and the results (Pareto set, winners,
report) are shared by every strategy and know nothing of their insides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from nasctl.errors import NasctlError

if TYPE_CHECKING:
    from nasctl.arch import Arch
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

Progress = Callable[[dict], None]


@dataclass(frozen=True)
class Column:
    """One scorer metric as the outputs show it: ``key`` in the record, a short table
    ``label`` and a format (``pct``: a fraction shown as a percentage; ``num``: 3 decimals;
    ``g``: 4 significant digits)."""

    key: str
    label: str
    fmt: str = "num"

    def render(self, value: Any) -> str:
        if value is None:
            return "–"
        if self.fmt == "g":
            return f"{value:.4g}"
        return f"{100 * value:.1f}%" if self.fmt == "pct" else f"{value:.3f}"


@runtime_checkable
class Scorer(Protocol):
    """How good an arch is. ``objective`` names the score (maximised) in the study and in
    every output; ``__call__`` returns a dict holding at least that key.

    ``recoverable`` lists the exceptions that a user's data or a diverging run produce:
    a trial that raises one is recorded as FAIL (with its traceback) and the search goes
    on. Any other exception is a bug and stops the search."""

    objective: ClassVar[str]
    label: ClassVar[str]  # axis label of the score, e.g. "linear-probe accuracy, val"
    worst: ClassVar[float]  # what an infeasible (not scored) arch reports
    columns: ClassVar[tuple[Column, ...]]  # metrics shown in tables; the first is the score
    metrics: ClassVar[tuple[str, ...]]  # every key the scorer records (trials.csv, reuse by twins)
    recoverable: ClassVar[tuple[type[BaseException], ...]]
    # Optional: ``verb`` (what a trial is doing while scored, for the live view; absent:
    # "training") and ``describe(cfg) -> str`` (a staticmethod: how a trial is scored, one
    # line of the report).

    def __call__(self, arch: Arch, progress: Progress | None = None) -> dict[str, Any]: ...


@runtime_checkable
class Strategy(Protocol):
    """A search family: which sampler proposes archs and which scorer scores them."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help and the error listing strategies
    scorer_type: ClassVar[type]  # the Scorer class (its objective, columns, ... describe outputs)
    # Optional class attributes:
    # ``default_trials``: trials when neither --trials nor --time-budget is given (absent: 20);
    # ``batch``: trials a lone worker runs in memory between writes to the storage, for
    # trials cheaper than a storage round trip (absent: every trial goes straight to it).
    # Optional methods: ``search_space(cfg, space) -> SearchSpace``, the space it searches
    # (absent: the space file's); ``setup(cfg, space, progress)``, work done once before
    # the first trial (singleshot trains its supernet there; hybrid screens zero-shot and
    # enqueues the best); ``report_section(result) -> list[str]``, the strategy's own
    # lines of report.md (hybrid: its screen).

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        """Check the strategy's own options and inputs (raise NasctlError), before any work."""

    def sampler(self, cfg: SearchConfig, seed: int) -> Any:
        """The Optuna sampler for one worker (``seed`` already offset per worker and resume)."""

    def scorer(self, cfg: SearchConfig, space: SearchSpace) -> Scorer:
        """The scorer one worker uses (may hold data or a trained supernet)."""


STRATEGIES: dict[str, type] = {}


def register_strategy(cls: type) -> type:
    """Class decorator: make a strategy available as ``--strategy NAME``."""
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    from nasctl.search import strategies  # noqa: F401  (registers the shipped strategies)

    if name not in STRATEGIES:
        listing = "; ".join(f"{n}: {c.summary}" for n, c in sorted(STRATEGIES.items()))
        raise NasctlError(f"unknown strategy {name!r} (registered: {listing})")
    return STRATEGIES[name]()


def scorer_type_of(cfg: SearchConfig) -> type:
    """The Scorer class a search's outputs describe: the strategy's, or the two-tower
    scorer when the search trains image-text models (``--two-tower``)."""
    if getattr(cfg, "two_tower", None) is not None:
        from nasctl.search.scorers.twotower import TwoTowerAccuracy

        return TwoTowerAccuracy
    return get_strategy(cfg.strategy).scorer_type


@dataclass
class TrialRecord:
    """One trial, as the outputs show it. ``metrics`` holds what the scorer recorded
    (its objective first); costs are the estimator's; ``error`` is the traceback of a
    trial that failed."""

    number: int
    state: str
    arch: str | None = None
    arch_id: str | None = None
    baseline: bool = False
    feasible: bool | None = None
    trained: bool | None = None  # scored (an infeasible arch is not)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    memory_mb: float | None = None
    params: int | None = None
    peak_activation_bytes: int | None = None
    flops: int | None = None
    duplicate_of: int | None = None
    worker: int | None = None
    seconds: float | None = None
    error: str | None = None
    measured_latency_ms: float | None = None
    files: list[str] = field(default_factory=list)

    COSTS: ClassVar[tuple[str, ...]] = ("latency_ms", "memory_mb", "params", "peak_activation_bytes", "flops")

    @classmethod
    def from_trial(cls, t: Any, metric_keys: tuple[str, ...]) -> TrialRecord:
        """Read an Optuna ``FrozenTrial`` (its user attributes) back into a record."""
        a = t.user_attrs
        seconds = None
        if t.datetime_complete and t.datetime_start:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        return cls(
            number=t.number,
            state=t.state.name,
            arch=a.get("arch"),
            arch_id=a.get("arch_id"),
            baseline=bool(a.get("baseline", False)),
            feasible=a.get("feasible"),
            trained=a.get("trained"),
            metrics={k: a[k] for k in metric_keys if k in a},
            **{k: a.get(k) for k in cls.COSTS},
            duplicate_of=a.get("duplicate_of"),
            worker=a.get("worker"),
            seconds=seconds,
            error=a.get("error"),
        )

    def score(self, objective: str) -> float | None:
        return self.metrics.get(objective)

    def to_dict(self) -> dict[str, Any]:
        """Flat: the scorer's metrics sit beside the costs (``accuracy``, ``latency_ms``, ...)."""
        d = asdict(self)
        metrics = d.pop("metrics")
        if not d["files"]:
            d.pop("files")
        if d["measured_latency_ms"] is None:
            d.pop("measured_latency_ms")
        return {**{k: d[k] for k in ("number", "state", "baseline", "feasible", "trained")}, **metrics, **d}
