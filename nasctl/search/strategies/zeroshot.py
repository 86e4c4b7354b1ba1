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
from nasctl.search.strategies.samplers import check_sampler, make_sampler

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

DEFAULT_POPULATION = 50  # trials are cheap: a population as NSGA-II's authors use it


@register_strategy
class Zeroshot:
    name = "zeroshot"
    summary = "NSGA-II over a training-free score at initialisation (--proxy), thousands of trials"
    scorer_type = ProxyScore
    default_trials = 2000
    batch = 200  # trials run in memory between writes to the storage (a killed run loses at most these)

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        check_sampler(cfg)
        if cfg.screen is not None:
            raise NasctlError("--screen belongs to --strategy hybrid")
        if cfg.supernet or cfg.finetune:
            raise NasctlError("--supernet and --finetune belong to --strategy singleshot")
        ProxyScore.from_config(cfg, space).check(space)

    def sampler(self, cfg: SearchConfig, seed: int):
        return make_sampler(cfg, seed, DEFAULT_POPULATION)

    def scorer(self, cfg: SearchConfig, space: SearchSpace) -> ProxyScore:
        return ProxyScore.from_config(cfg, space)
