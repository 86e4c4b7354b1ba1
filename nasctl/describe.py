"""Plain-data descriptions of spaces and archs, for the CLI's tables and ``--json``."""

from __future__ import annotations

from typing import Any

import numpy as np

from nasctl.arch import Arch
from nasctl.nn.profile import arch_cost
from nasctl.space import SearchSpace


def arch_summary(arch: Arch, head: str = "classifier") -> dict[str, Any]:
    cost = arch_cost(arch, head)
    return {
        "id": arch.id,
        "arch": arch.to_string(),
        "resolution": arch.resolution,
        "blocks": len(arch.blocks),
        "fused_blocks": sum(b.kind == "fused_ibn" for b in arch.blocks),
        "params": cost.params,
        "macs": cost.macs,
        "flops": cost.flops,
    }


def _range(values: list[int]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "max": float(arr.max())}


def space_report(space: SearchSpace, samples: int = 5, stats_samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Summary of the space, its baseline, ``samples`` listed archs and the params/FLOPs
    spread over ``max(samples, stats_samples)`` sampled archs (same seed: the listed ones
    are the first of them)."""
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(max(samples, stats_samples))]
    costs = [arch_cost(a) for a in archs]
    channels = sorted({c for a in archs for c in a.channels})
    p = space.spec.parallelism
    report = space.summary()
    report.update(
        seed=seed,
        baseline=arch_summary(space.baseline()),
        samples=[arch_summary(a) for a in archs[:samples]],
        stats={
            "n": len(archs),
            "params": _range([c.params for c in costs]),
            "flops": _range([c.flops for c in costs]),
            "channels_seen": channels,
            "channels_off_parallelism": [c for c in channels if c % p],
        },
    )
    return report
