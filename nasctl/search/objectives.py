"""What a search optimises, shared by every strategy.

The objectives are one score (maximised; named by the strategy's scorer, e.g.
``accuracy``) and some costs (minimised). A candidate ``Arch`` is costed without hardware:
latency from the estimator, and memory from the kernel IR (``params`` and
``peak_activation_bytes``; ``memory_mb`` is the float32 weights plus the peak activations,
the footprint a device must hold). Budgets are constraints (value <= 0 is feasible); an
infeasible candidate is not scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.latency.api import estimate_arch, estimate_archs
from nasctl.latency.estimator import LatencyEstimator
from nasctl.space import SearchSpace

COSTS = {
    "latency_ms": "minimize",
    "peak_activation_bytes": "minimize",
    "params": "minimize",
    "memory_mb": "minimize",
}


@dataclass
class Objectives:
    """``names``: the score objective and some costs, in the study's order."""

    names: tuple[str, ...] = ("accuracy", "latency_ms")
    latency_budget_ms: float | None = None
    memory_budget_mb: float | None = None

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        scores = [n for n in self.names if n not in COSTS]
        if len(scores) > 1:
            raise NasctlError(
                f"unknown objective {scores[1]!r} (expected one score, e.g. accuracy, and some of: {', '.join(COSTS)})"
            )
        if not scores:
            raise NasctlError(f"the objectives must include a score, e.g. accuracy (got {', '.join(self.names)})")
        if len(set(self.names)) != len(self.names):
            raise NasctlError(f"an objective is listed twice: {', '.join(self.names)}")
        for name, value in (("latency budget", self.latency_budget_ms), ("memory budget", self.memory_budget_mb)):
            if value is not None and not value > 0:
                raise NasctlError(f"{name} must be > 0 (got {value})")

    @property
    def score(self) -> str:
        """The score objective's name (the one that is not a cost)."""
        return next(n for n in self.names if n not in COSTS)

    @property
    def directions(self) -> list[str]:
        return [COSTS.get(n, "maximize") for n in self.names]

    def check_score(self, objective: str, strategy: str) -> None:
        if self.score != objective:
            raise NasctlError(
                f"unknown objective {self.score!r} for the {strategy} strategy (it scores {objective}; "
                f"costs: {', '.join(COSTS)})"
            )

    def violations(self, cost: dict[str, float]) -> dict[str, float]:
        """Constraint values (<= 0 feasible), relative to the budgets."""
        v = {}
        if self.latency_budget_ms is not None:
            v["latency"] = cost["latency_ms"] / self.latency_budget_ms - 1.0
        if self.memory_budget_mb is not None:
            v["memory"] = cost["memory_mb"] / self.memory_budget_mb - 1.0
        return v

    def check_budgets(self, space: SearchSpace, estimator: LatencyEstimator) -> None:
        """Refuse budgets below the cheapest arch of the space: nothing would be feasible."""
        if self.latency_budget_ms is None and self.memory_budget_mb is None:
            return
        floor = space_floor(space, estimator)
        for budget, key, unit, what in (
            (self.latency_budget_ms, "latency_ms", "ms", "latency budget"),
            (self.memory_budget_mb, "memory_mb", "MB", "memory budget"),
        ):
            value, arch = floor[key]
            if budget is not None and budget < value:
                raise NasctlError(
                    f"{what} {budget:g} {unit} is below the {'fastest' if unit == 'ms' else 'smallest'} arch of "
                    f"the space ({value:.3f} {unit} estimated, {arch.id}); nothing would be feasible"
                )

    def to_dict(self) -> dict:
        return asdict(self)


def arch_cost(arch: Arch, estimator: LatencyEstimator) -> dict[str, float]:
    """Estimated latency and memory of ``arch`` (classifier head: what deploys)."""
    est = estimate_arch(arch, estimator)
    return {
        "latency_ms": float(est.latency_ms),
        "params": int(est.params),
        "peak_activation_bytes": int(est.peak_activation_bytes),
        "memory_mb": memory_mb(est.params, est.peak_activation_bytes),
        "flops": 2 * int(est.macs),  # as nn.profile counts them: 2 x the kernels' MACs
    }


def memory_mb(params: int, peak_activation_bytes: int) -> float:
    """Float32 weights plus peak activations, in MiB: the footprint a device must hold."""
    return (4 * params + peak_activation_bytes) / 2**20


def space_floor(space: SearchSpace, estimator: LatencyEstimator, samples: int = 2000, seed: int = 0) -> dict:
    """The lowest estimated ``latency_ms`` and ``memory_mb`` in the space, each as
    ``(value, arch)``, over the baseline, the all-smallest choices (either block kind) and
    ``samples`` random archs pushed towards the small end: a check that a budget leaves
    something feasible."""
    rng = np.random.default_rng(seed)
    archs = [space.baseline(), space.resolve(space.smallest_params(0)), space.resolve(space.smallest_params(-1))]
    archs += [space.resolve(space.sample_small_params(rng)) for _ in range(samples)]
    est = estimate_archs(archs, estimator)
    mem = [memory_mb(int(n), int(b)) for n, b in zip(est["params"], est["peak_activation_bytes"], strict=True)]
    i, j = int(np.argmin(est["latency_ms"])), int(np.argmin(mem))
    return {"latency_ms": (float(est["latency_ms"][i]), archs[i]), "memory_mb": (mem[j], archs[j])}
