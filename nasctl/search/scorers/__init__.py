"""Scorers: how good an arch is (see ``nasctl.search.base.Scorer``)."""

from nasctl.search.scorers.trained import TrainedAccuracy, TrialBudget

__all__ = ["TrainedAccuracy", "TrialBudget"]
