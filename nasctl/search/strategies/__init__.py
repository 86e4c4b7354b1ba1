"""The shipped search strategies. A new strategy is one module here, imported below so it
registers itself (``@register_strategy``)."""

from nasctl.search.strategies import hybrid, multishot, singleshot, zeroshot  # noqa: F401
