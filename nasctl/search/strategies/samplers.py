"""The samplers the shipped strategies offer: NSGA-II (evolutionary) or random (the
baseline a search should beat), checked and built one way for all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasctl.errors import NasctlError

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig

SAMPLERS = ("nsga2", "random")


def check_sampler(cfg: SearchConfig) -> None:
    if cfg.sampler not in SAMPLERS:
        raise NasctlError(f"unknown sampler {cfg.sampler!r} (expected nsga2 or random)")
    if cfg.sampler == "random" and cfg.population_size is not None:
        raise NasctlError("--population sets the NSGA-II population; the random sampler has none")


def make_sampler(cfg: SearchConfig, seed: int, population: int):
    """``cfg.sampler`` seeded with ``seed``; NSGA-II with ``--population`` or ``population``."""
    import optuna

    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.NSGAIISampler(population_size=cfg.population_size or population, seed=seed)
