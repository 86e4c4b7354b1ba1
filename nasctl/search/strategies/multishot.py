"""Multishot search: Optuna's NSGA-II proposes archs, each is trained briefly and scored by
a linear probe (``TrainedAccuracy``). ``--sampler random`` is the baseline a search should
beat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasctl.errors import NasctlError
from nasctl.search.base import register_strategy
from nasctl.search.scorers.trained import TrainedAccuracy
from nasctl.search.strategies.samplers import check_sampler, make_sampler

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

DEFAULT_POPULATION = 8


@register_strategy
class Multishot:
    name = "multishot"
    summary = "NSGA-II proposes archs, each trained briefly and scored by a linear probe"
    scorer_type = TrainedAccuracy
    default_trials = 20

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        check_sampler(cfg)
        if cfg.screen is not None:
            raise NasctlError("--screen belongs to --strategy hybrid")
        if cfg.population_size is not None and cfg.population_size < 2:
            raise NasctlError(f"--population must be >= 2 (got {cfg.population_size})")
        if cfg.proxy is not None:
            raise NasctlError("--proxy picks the zeroshot strategy's score; multishot trains each arch")
        if cfg.supernet or cfg.finetune:
            raise NasctlError("--supernet and --finetune belong to --strategy singleshot")
        if cfg.two_tower is not None:
            from nasctl.search.scorers.twotower import TwoTowerAccuracy

            if cfg.retrain:
                raise NasctlError("--retrain retrains image-only models; it does not apply with --two-tower yet")
            TwoTowerAccuracy.from_config(cfg).check(space)
            return
        TrainedAccuracy.from_config(cfg).check(space)

    def sampler(self, cfg: SearchConfig, seed: int):
        return make_sampler(cfg, seed, DEFAULT_POPULATION)

    def scorer(self, cfg: SearchConfig, space: SearchSpace):
        if cfg.two_tower is not None:
            from nasctl.search.scorers.twotower import TwoTowerAccuracy

            return TwoTowerAccuracy.from_config(cfg)
        return TrainedAccuracy.from_config(cfg)
