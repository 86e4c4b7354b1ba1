"""Channel alignment: the one rounding rule for channel counts (no torch needed)."""

from __future__ import annotations


def align_channels(value: float, parallelism: int) -> int:
    """Round ``value`` to the nearest multiple of ``parallelism``, never below it and never
    more than 10% under ``value`` (MobileNet's ``make_divisible``)."""
    p = parallelism
    new = max(p, int(value + p / 2) // p * p)
    if new < 0.9 * value:
        new += p
    return new
