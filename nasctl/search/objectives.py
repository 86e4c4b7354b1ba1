"""What a search optimises and how one candidate is scored (shared by every strategy).

A candidate ``Arch`` is first costed without hardware: latency from the estimator, and
memory from the kernel IR (``params`` and ``peak_activation_bytes``; ``memory_mb`` is the
float32 weights plus the peak activations, the footprint a device must hold). Budgets are
constraints (value <= 0 is feasible); an infeasible candidate is not trained. A feasible
one is pretrained contrastively under the trial budget and scored by a linear probe on
the validation split (the test split is kept for reports).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nasctl.arch import Arch
from nasctl.contrastive import ImageData, PretrainConfig, pretrain_and_evaluate
from nasctl.errors import NasctlError
from nasctl.latency.api import estimate_arch
from nasctl.latency.estimator import LatencyEstimator
from nasctl.space import SearchSpace

DIRECTIONS = {
    "accuracy": "maximize",
    "latency_ms": "minimize",
    "peak_activation_bytes": "minimize",
    "params": "minimize",
    "memory_mb": "minimize",
}
INFEASIBLE_ACCURACY = 0.0  # what an untrained (over-budget) candidate reports


@dataclass
class Objectives:
    names: tuple[str, ...] = ("accuracy", "latency_ms")
    latency_budget_ms: float | None = None
    memory_budget_mb: float | None = None

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        unknown = [n for n in self.names if n not in DIRECTIONS]
        if unknown:
            raise NasctlError(f"unknown objective {unknown[0]!r} (expected some of: {', '.join(DIRECTIONS)})")
        if "accuracy" not in self.names:
            raise NasctlError("the objectives must include accuracy")
        if len(set(self.names)) != len(self.names):
            raise NasctlError(f"an objective is listed twice: {', '.join(self.names)}")
        for name, value in (("latency budget", self.latency_budget_ms), ("memory budget", self.memory_budget_mb)):
            if value is not None and not value > 0:
                raise NasctlError(f"{name} must be > 0 (got {value})")

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[n] for n in self.names]

    def violations(self, cost: dict[str, float]) -> dict[str, float]:
        """Constraint values (<= 0 feasible), relative to the budgets."""
        v = {}
        if self.latency_budget_ms is not None:
            v["latency"] = cost["latency_ms"] / self.latency_budget_ms - 1.0
        if self.memory_budget_mb is not None:
            v["memory"] = cost["memory_mb"] / self.memory_budget_mb - 1.0
        return v

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
    from nasctl.latency.api import estimate_archs

    rng = np.random.default_rng(seed)
    params = space.parameters()
    small = ("resolution", "depth_multiplier")
    small_suffixes = (".depth", ".channels", ".expansion", ".kernel")
    archs = [space.baseline()]
    for kind in (0, -1):  # every choice at its smallest, with the first or the last block kind
        archs.append(
            space.resolve(
                {n: (min(c) if n in small or n.endswith(small_suffixes) else c[kind]) for n, c in params.items()}
            )
        )
    for _ in range(samples):
        p = space.sample_params(rng)
        for name, choices in params.items():
            if (name in small or name.endswith((".depth", ".channels"))) and rng.random() < 0.7:
                p[name] = min(choices)
        archs.append(space.resolve(p))
    est = estimate_archs(archs, estimator)
    mem = [memory_mb(int(n), int(b)) for n, b in zip(est["params"], est["peak_activation_bytes"], strict=True)]
    i, j = int(np.argmin(est["latency_ms"])), int(np.argmin(mem))
    return {"latency_ms": (float(est["latency_ms"][i]), archs[i]), "memory_mb": (mem[j], archs[j])}


@dataclass
class TrialBudget:
    """How each feasible candidate is trained."""

    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(epochs=3, time_budget_s=30.0))

    def to_dict(self) -> dict:
        return self.pretrain.to_dict()


def score(arch: Arch, data: ImageData, budget: TrialBudget, progress=None) -> dict[str, Any]:
    """Pretrain + probe one candidate; the accuracy objective is the validation probe."""
    _, m = pretrain_and_evaluate(arch, data, budget.pretrain, progress)
    acc = m.get("linear_probe_val_accuracy")
    if acc is None or not math.isfinite(acc):
        raise NasctlError("the data has no labels: a search needs labelled data for its accuracy objective")
    return {
        "accuracy": float(acc),
        "test_accuracy": float(m["linear_probe_accuracy"]),
        "knn_val_accuracy": float(m["knn_val_accuracy"]),
        "train_seconds": float(m["train_seconds"]),
        "eval_seconds": float(m["eval_seconds"]),
        "epochs_done": float(m["epochs_done"]),
        "final_loss": m["final_loss"],
    }
