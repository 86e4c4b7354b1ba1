"""nasctl: hardware-aware neural-architecture search from the command line and from Python.

The public API (imported on first use, so ``import nasctl`` stays light)::

    import nasctl

    space = nasctl.SearchSpace.load("search_spaces/mobilenetv2_32.yaml")
    arch = space.baseline()                                  # an nasctl.Arch
    est = nasctl.estimate(arch, estimator="cpu")             # an nasctl.Estimate
    print(est.latency_ms, est.params, est.peak_activation_bytes)
    result = nasctl.search(space, strategy="multishot", trials=6, out="runs/x")
    print([r.arch for r in result.pareto])                   # nasctl.TrialRecord each

* ``SearchSpace``, ``Arch``: spaces (YAML) and the archs they hold;
* ``estimate(model_or_arch, estimator="cpu") -> Estimate``: latency_ms, params,
  peak_activation_bytes, kernels, warnings;
* ``pretrain(arch, ...) -> dict``: contrastive pretraining + linear probe;
* ``pretrain_two_tower(arch, ...) -> dict``: an image-text two-tower model, evaluated;
* ``search(space, strategy=..., ...) -> SearchResult`` (``strategy="zeroshot", proxy=...``
  for a training-free search);
* ``proxy_eval(space, archs=N, ...) -> dict``: how well each zero-shot score ranks the
  space's archs against training; ``PROXIES``, ``register_proxy``: the scores;
* ``train_supernet(space, out, ...) -> dict``: a weight-sharing supernet trained once, for
  ``search(space, strategy="singleshot", supernet=out)``;
* ``STRATEGIES``, ``register_strategy``, ``Scorer``, ``Strategy``, ``TrialRecord``: the search framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Arch": "nasctl.arch",
    "SearchSpace": "nasctl.space",
    "NasctlError": "nasctl.errors",
    "Estimate": "nasctl.latency.api",
    "estimate": "nasctl.api",
    "pretrain": "nasctl.api",
    "pretrain_two_tower": "nasctl.api",
    "SearchResult": "nasctl.search.results",
    "SearchConfig": "nasctl.search.config",
    "TrialRecord": "nasctl.search.base",
    "Scorer": "nasctl.search.base",
    "Strategy": "nasctl.search.base",
    "STRATEGIES": "nasctl.search.base",
    "register_strategy": "nasctl.search.base",
    "proxy_eval": "nasctl.api",
    "train_supernet": "nasctl.api",
    "PROXIES": "nasctl.zeroshot.proxies",
    "register_proxy": "nasctl.zeroshot.proxies",
}
__all__ = [
    "PROXIES",
    "STRATEGIES",
    "Arch",
    "Estimate",
    "NasctlError",
    "Scorer",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "Strategy",
    "TrialRecord",
    "__version__",
    "estimate",
    "pretrain",
    "pretrain_two_tower",
    "proxy_eval",
    "train_supernet",
    "register_proxy",
    "register_strategy",
    "search",
]

if TYPE_CHECKING:
    from nasctl.api import estimate, pretrain, pretrain_two_tower, proxy_eval, search, train_supernet  # noqa: F811
    from nasctl.arch import Arch
    from nasctl.errors import NasctlError
    from nasctl.latency.api import Estimate
    from nasctl.search.base import STRATEGIES, Scorer, Strategy, TrialRecord, register_strategy
    from nasctl.search.config import SearchConfig
    from nasctl.search.results import SearchResult
    from nasctl.space import SearchSpace
    from nasctl.zeroshot.proxies import PROXIES, register_proxy


def __getattr__(name: str) -> Any:
    if name == "search":  # the nasctl.search package, callable: it runs nasctl.api.search
        return importlib.import_module("nasctl.search")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        if name == "STRATEGIES":
            importlib.import_module("nasctl.search.strategies")  # registers the shipped ones
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nasctl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
