"""Multishot search: Optuna's NSGA-II proposes archs, each is trained briefly and scored by
a linear probe (``TrainedAccuracy``). ``--sampler random`` is the baseline a search should
beat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasctl.errors import NasctlError
from nasctl.search.base import register_strategy
from nasctl.search.scorers.trained import TrainedAccuracy

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

SAMPLERS = ("nsga2", "random")
DEFAULT_POPULATION = 8


@register_strategy
class Multishot:
    name = "multishot"
    summary = "NSGA-II proposes archs, each trained briefly and scored by a linear probe"
    scorer_type = TrainedAccuracy
    default_trials = 20

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        if cfg.sampler not in SAMPLERS:
            raise NasctlError(f"unknown sampler {cfg.sampler!r} (expected nsga2 or random)")
        if cfg.sampler == "random" and cfg.population_size is not None:
            raise NasctlError("--population sets the NSGA-II population; the random sampler has none")
        if cfg.population_size is not None and cfg.population_size < 2:
            raise NasctlError(f"--population must be >= 2 (got {cfg.population_size})")
        if cfg.proxy is not None:
            raise NasctlError("--proxy picks the zeroshot strategy's score; multishot trains each arch")
        if cfg.supernet or cfg.finetune:
            raise NasctlError("--supernet and --finetune belong to --strategy singleshot")
        TrainedAccuracy.from_config(cfg).check(space)

    def sampler(self, cfg: SearchConfig, seed: int):
        import optuna

        if cfg.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.NSGAIISampler(population_size=cfg.population_size or DEFAULT_POPULATION, seed=seed)

    def scorer(self, cfg: SearchConfig, space: SearchSpace) -> TrainedAccuracy:
        return TrainedAccuracy.from_config(cfg)
