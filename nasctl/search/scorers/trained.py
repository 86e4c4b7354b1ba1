"""The trained-accuracy scorer: pretrain contrastively under the trial budget, then score
the frozen backbone by a linear probe on the validation split (the test split is kept for
reports)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nasctl.contrastive import ImageData, PretrainConfig, TrainingDiverged, load_data, pretrain_and_evaluate
from nasctl.errors import NasctlError
from nasctl.search.base import Column, Progress

if TYPE_CHECKING:
    from nasctl.arch import Arch
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace


@dataclass
class TrialBudget:
    """How each feasible candidate is trained."""

    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(epochs=3, time_budget_s=30.0))

    def to_dict(self) -> dict:
        return self.pretrain.to_dict()


class TrainedAccuracy:
    """Score = linear-probe accuracy on the validation split after a short contrastive
    pretraining (``TrialBudget``). A run whose loss diverges is a failed trial."""

    objective = "accuracy"
    label = "linear-probe accuracy, val"
    worst = 0.0
    columns = (Column("accuracy", "val acc", "pct"), Column("test_accuracy", "test acc", "pct"))
    metrics = (
        "accuracy",
        "test_accuracy",
        "knn_val_accuracy",
        "train_seconds",
        "eval_seconds",
        "epochs_done",
        "final_loss",
    )
    recoverable = (TrainingDiverged,)
    verb = "training"  # what the live view says a trial is doing

    def __init__(self, data: str, budget: TrialBudget, seed: int = 0):
        self.data, self.budget, self.seed = data, budget, seed
        self._data: dict[tuple[int, int], ImageData] = {}

    @staticmethod
    def describe(cfg: SearchConfig) -> str:
        """How a trial is scored, for the report."""
        p = cfg.budget.pretrain
        return (
            f"per-trial training: {p.loss} loss, batch {p.batch_size}, <= {p.epochs} epochs, "
            f"<= {p.time_budget_s or '–'} s; accuracy = linear probe on the validation split"
        )

    @classmethod
    def from_config(cls, cfg: SearchConfig) -> TrainedAccuracy:
        return cls(cfg.data, cfg.budget, cfg.seed)

    def check(self, space: SearchSpace) -> None:
        """Fail early on what would fail every trial: the budget, the head, unlabelled data."""
        self.budget.pretrain.validate()
        base = space.baseline()
        if base.embedding_dim is None:
            raise NasctlError(f"{space.source}: output.embedding_dim is required for contrastive pretraining")
        if not self.data_for(base).labelled:
            raise NasctlError(f"{self.data}: the data has no labels (y); the accuracy objective needs them")

    def data_for(self, arch: Arch) -> ImageData:
        key = (arch.resolution, arch.in_channels)
        if key not in self._data:
            self._data[key] = load_data(self.data, arch.resolution, arch.in_channels, seed=self.seed)
        return self._data[key]

    def __call__(self, arch: Arch, progress: Progress | None = None) -> dict[str, Any]:
        _, m = pretrain_and_evaluate(arch, self.data_for(arch), self.budget.pretrain, progress)
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
