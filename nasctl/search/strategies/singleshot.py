"""Single-shot search: one weight-sharing supernet trained once, then NSGA-II over its
subnets, each scored by the weights it inherits (``InheritedAccuracy``).

``--supernet CKPT`` searches a supernet trained by ``nasctl supernet train``; without it
the run trains its own (``supernet.npz`` in the run folder, resumed like the study) before
the first trial. The search runs at the supernet's resolution: the space's other input
resolutions are not searched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasctl.errors import NasctlError
from nasctl.search.base import register_strategy
from nasctl.search.scorers.supernet import InheritedAccuracy, supernet_path
from nasctl.search.strategies.samplers import check_sampler, make_sampler

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

DEFAULT_POPULATION = 24


def supernet_config(cfg: SearchConfig):
    """How a run trains its own supernet (``--supernet-epochs``, the trial batch size, the
    training device)."""
    from nasctl.singleshot.train import SupernetConfig

    p = cfg.budget.pretrain
    return SupernetConfig(data=cfg.data, epochs=cfg.supernet_epochs, seed=cfg.seed, device=p.device)


@register_strategy
class Singleshot:
    name = "singleshot"
    summary = "one weight-sharing supernet trained once; NSGA-II over its subnets scored by inherited weights"
    scorer_type = InheritedAccuracy
    default_trials = 200

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        check_sampler(cfg)
        if cfg.screen is not None:
            raise NasctlError("--screen belongs to --strategy hybrid")
        if cfg.proxy is not None:
            raise NasctlError("--proxy picks the zeroshot strategy's score; singleshot scores by inherited weights")
        if cfg.supernet:
            from nasctl.singleshot.train import read_checkpoint
            from nasctl.space import SearchSpace

            meta, _ = read_checkpoint(cfg.supernet, tensors=False)
            held = SearchSpace.loads(meta["space_yaml"], source=cfg.supernet)
            if held != space:
                raise NasctlError(
                    f"{cfg.supernet}: a supernet of another space ({meta.get('space_name')!r}), not {space.source}"
                )
            if not meta.get("finished"):
                raise NasctlError(
                    f"{cfg.supernet}: trained to step {meta['step']} of {meta['total_steps']}; finish it with the "
                    "same `nasctl supernet train` command first"
                )
        else:
            from nasctl.nn.supernet import Supernet

            supernet_config(cfg).validate()
            Supernet(self.search_space(cfg, space))  # a space the supernet cannot hold fails here
        if cfg.finetune < 0:
            raise NasctlError(f"--finetune must be >= 0 (got {cfg.finetune})")

    def search_space(self, cfg: SearchConfig, space: SearchSpace) -> SearchSpace:
        """The space at the supernet's resolution."""
        if cfg.supernet:
            from nasctl.singleshot.train import read_checkpoint

            resolution = read_checkpoint(cfg.supernet, tensors=False)[0]["config"]["resolution"]
        else:
            resolution = max(space.spec.input.resolution)
        return space.with_resolution(resolution)

    def setup(self, cfg: SearchConfig, space: SearchSpace, progress=None) -> None:
        """Train (or resume) the run's own supernet when no ``--supernet`` was given."""
        if cfg.supernet:
            return
        from nasctl.singleshot.train import read_checkpoint, train_supernet

        path = supernet_path(cfg)
        if path.exists() and read_checkpoint(path, tensors=False)[0].get("finished"):
            return

        def show(p: dict) -> None:
            if progress:
                progress({"event": "supernet", **p})

        train_supernet(space, supernet_config(cfg), path, progress=show)

    def sampler(self, cfg: SearchConfig, seed: int):
        return make_sampler(cfg, seed, DEFAULT_POPULATION)

    def scorer(self, cfg: SearchConfig, space: SearchSpace) -> InheritedAccuracy:
        return InheritedAccuracy.from_config(cfg)
