"""Search over a space: a small framework every strategy plugs into.

``base`` (Strategy, Scorer, TrialRecord, the registry), ``config`` (SearchConfig),
``objectives`` (score + costs, budgets), ``study`` (storage, constraints, resume,
workers), ``results`` (Pareto set, winners, report), ``strategies/`` and ``scorers/``.

This package is also the public ``nasctl.search(space, strategy=..., ...)``: calling it
runs ``nasctl.api.search``. (Python makes ``nasctl.search`` this subpackage once it is
imported, so the function and the package share the name by the package being callable.)
"""

import sys
import types

from nasctl.search.base import (
    STRATEGIES,
    Column,
    Scorer,
    Strategy,
    TrialRecord,
    get_strategy,
    register_strategy,
)
from nasctl.search.config import SearchConfig, load_config, make_config
from nasctl.search.objectives import Objectives
from nasctl.search.results import SearchResult, collect, write_outputs
from nasctl.search.scorers import TrainedAccuracy, TrialBudget
from nasctl.search.study import prepare, run_search

__all__ = [
    "STRATEGIES",
    "Column",
    "Objectives",
    "Scorer",
    "SearchConfig",
    "SearchResult",
    "Strategy",
    "TrainedAccuracy",
    "TrialBudget",
    "TrialRecord",
    "collect",
    "get_strategy",
    "load_config",
    "make_config",
    "prepare",
    "register_strategy",
    "run_search",
    "write_outputs",
]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from nasctl.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
