"""Zero-shot search: NSGA-II over (a training-free score up, estimated latency down).

No arch is trained: each is scored at initialisation by a proxy (``ProxyScore``), so
thousands of candidates take minutes on a CPU. Whether a proxy ranks archs as training
would on *this* space is what ``nasctl proxy-eval`` measures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasctl.errors import NasctlError
from nasctl.search.base import register_strategy
from nasctl.search.scorers.proxy import ProxyScore

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

SAMPLERS = ("nsga2", "random")
DEFAULT_POPULATION = 50  # trials are cheap: a population as NSGA-II's authors use it


@register_strategy
class Zeroshot:
    name = "zeroshot"
    summary = "NSGA-II over a training-free score at initialisation (--proxy), thousands of trials"
    scorer_type = ProxyScore
    default_trials = 2000
    batch = 200  # trials run in memory between writes to the storage (a killed run loses at most these)

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        if cfg.sampler not in SAMPLERS:
            raise NasctlError(f"unknown sampler {cfg.sampler!r} (expected nsga2 or random)")
        if cfg.sampler == "random" and cfg.population_size is not None:
            raise NasctlError("--population sets the NSGA-II population; the random sampler has none")
        if cfg.supernet or cfg.finetune:
            raise NasctlError("--supernet and --finetune belong to --strategy singleshot")
        ProxyScore.from_config(cfg, space).check(space)

    def sampler(self, cfg: SearchConfig, seed: int):
        import optuna

        if cfg.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.NSGAIISampler(population_size=cfg.population_size or DEFAULT_POPULATION, seed=seed)

    def scorer(self, cfg: SearchConfig, space: SearchSpace) -> ProxyScore:
        return ProxyScore.from_config(cfg, space)
