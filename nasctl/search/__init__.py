"""Search strategies over a space: objectives, the multishot (NSGA-II) strategy, results."""

from nasctl.search.multishot import SearchConfig, load_config, run_search
from nasctl.search.objectives import Objectives, TrialBudget
from nasctl.search.results import SearchResults, collect, write_outputs

__all__ = [
    "Objectives",
    "SearchConfig",
    "SearchResults",
    "TrialBudget",
    "collect",
    "load_config",
    "run_search",
    "write_outputs",
]
