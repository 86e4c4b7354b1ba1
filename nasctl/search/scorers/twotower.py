"""The two-tower scorer: train an image-text model whose image tower is the candidate, then
score it by zero-shot classification (caption prompts) on the validation split."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nasctl.contrastive.pretrain import TrainingDiverged
from nasctl.errors import NasctlError
from nasctl.search.base import Column, Progress

if TYPE_CHECKING:
    from nasctl.arch import Arch
    from nasctl.contrastive.paired import PairedData
    from nasctl.contrastive.twotower import TwoTowerConfig
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace


class TwoTowerAccuracy:
    """Score = zero-shot classification accuracy on the validation split (each image gets
    the class whose caption prompts' mean embedding is nearest) after a short two-tower
    training under the trial budget (epochs, seconds, batch size of ``--epochs``,
    ``--trial-seconds``, ``--batch-size``) with the run's regularisers. Retrieval R@1 is
    recorded beside it. A run whose loss diverges is a failed trial."""

    objective = "accuracy"
    label = "zero-shot accuracy (caption prompts), val"
    worst = 0.0
    columns = (
        Column("accuracy", "val zero-shot", "pct"),
        Column("test_accuracy", "test zero-shot", "pct"),
        Column("image_to_text_r1", "i->t R@1", "pct"),
    )
    metrics = (
        "accuracy",
        "test_accuracy",
        "image_to_text_r1",
        "text_to_image_r1",
        "train_seconds",
        "eval_seconds",
        "epochs_done",
        "final_loss",
    )
    recoverable = (TrainingDiverged,)
    verb = "training"

    def __init__(self, data: str, config: TwoTowerConfig):
        self.data, self.config = data, config
        self._data: dict[tuple[int, int], PairedData] = {}

    @staticmethod
    def two_tower_config(cfg: SearchConfig) -> TwoTowerConfig:
        """The trial's training settings: the search's budget and the run's regulariser weights."""
        from nasctl.contrastive.twotower import TwoTowerConfig

        p = cfg.budget.pretrain
        extra = dict(cfg.two_tower or {})
        unknown = sorted(set(extra) - set(TwoTowerConfig.__dataclass_fields__))
        if unknown:
            raise NasctlError(f"unknown two-tower option {unknown[0]!r}")
        base = TwoTowerConfig(
            epochs=p.epochs,
            steps=p.steps,
            batch_size=p.batch_size,
            lr=p.lr,
            time_budget_s=p.time_budget_s,
            seed=p.seed,
            device=p.device,
        )  # the two-tower image augmentations (milder than single-image pretraining's)
        return replace(base, **extra).validate()

    @staticmethod
    def describe(cfg: SearchConfig) -> str:
        t = TwoTowerAccuracy.two_tower_config(cfg)
        return (
            f"per-trial training: two-tower {t.variant}, batch {t.batch_size}, <= {t.epochs} epochs, "
            f"<= {t.time_budget_s or '–'} s; accuracy = zero-shot classification by caption prompts, validation split"
        )

    @classmethod
    def from_config(cls, cfg: SearchConfig) -> TwoTowerAccuracy:
        return cls(cfg.data, cls.two_tower_config(cfg))

    def check(self, space: SearchSpace) -> None:
        """Fail early on what would fail every trial: data without class prompts."""
        data = self.data_for(space.baseline())
        if data.y is None or data.prompt_tokens() is None:
            raise NasctlError(
                f"{self.data}: zero-shot accuracy needs labelled pairs whose class names are caption words "
                "(class prompts); the search has no accuracy objective without them"
            )

    def data_for(self, arch: Arch) -> PairedData:
        from nasctl.contrastive.paired import load_paired

        key = (arch.resolution, arch.in_channels)
        if key not in self._data:
            self._data[key] = load_paired(self.data, arch.resolution, arch.in_channels, seed=self.config.seed)
        return self._data[key]

    def __call__(self, arch: Arch, progress: Progress | None = None) -> dict[str, Any]:
        from nasctl.contrastive.twotower import train_and_evaluate

        _, m = train_and_evaluate(arch, self.data_for(arch), self.config, progress, probes=False)
        acc = m.get("zero_shot_val_accuracy")
        if acc is None or not math.isfinite(acc):
            raise NasctlError("no zero-shot accuracy: the pairs have no class prompts")
        r = m["retrieval"]
        return {
            "accuracy": float(acc),
            "test_accuracy": float(m["zero_shot_accuracy"]),
            "image_to_text_r1": r["image_to_text_r@1"],
            "text_to_image_r1": r["text_to_image_r@1"],
            "train_seconds": float(m["train_seconds"]),
            "eval_seconds": float(m["eval_seconds"]),
            "epochs_done": float(m["epochs_done"]),
            "final_loss": m["final_loss"],
        }
