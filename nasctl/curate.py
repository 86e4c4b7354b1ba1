"""Automatic space curation: find the target's latency steps with the estimator and keep
only the channel counts at the right edge of each plateau.

A parallel chip computes channels in groups of P, so a stage's latency is flat from
``kP + 1`` to ``(k + 1)P`` channels and jumps just after: the last count of each plateau
(the right edge) gives the most channels for that latency. ``curate`` finds the steps
without being told P:

1. **Sweep.** For each stage, the space's baseline with that stage's width set to every
   count from ``ceil(base / 2)`` to ``2 * base + 1`` (step 1), once with every block of the
   stage an IBN and once a fused-IBN; the estimator predicts each network (no hardware).
2. **Period.** Each curve is divided by its mean and a quadratic trend is taken out (the
   smooth growth with channels). For every period ``P`` (2 to ``max_period``) and phase
   ``r``, a staircase that rises just after each ``c = r (mod P)`` (net of the same trend)
   is fitted to each curve's residual; the share of the residual variance it explains is
   summed over curves (both kinds, every stage). The best ``(P, r)`` whose staircase rises
   is the target's step. Its significance is the share of 200 shuffles of each curve's
   residuals whose best (P, r) explains as much (a permutation test over the same search).
   The quadratic trend matters: a straight one leaves the curves' curvature, which a
   staircase of one or two wide steps (a large P) then claims.
3. **Widths.** Each stage keeps the counts ``c = r (mod P)`` within ``[base / 2, 2 base]``
   (at least the first one above ``base / 2``), written as the stage's ``widths`` list;
   the detected ``P`` becomes the space's ``parallelism`` (stem and head round to it).

When the permutation test finds no step (p above ``alpha``), the latency grows smoothly
with channels on this target: the result says so and the space is left as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.latency.api import estimate_archs
from nasctl.latency.estimator import LatencyEstimator
from nasctl.space import SearchSpace

KINDS = ("ibn", "fused_ibn")


@dataclass
class Curve:
    """Estimated latency of the baseline with one stage's width swept, one block kind."""

    stage: int  # 0-based
    kind: str
    channels: np.ndarray  # int, consecutive
    latency_ms: np.ndarray
    resolution: int | None = None

    def jumps(self) -> tuple[np.ndarray, np.ndarray]:
        """(c, latency(c + 1) - latency(c)) for each swept c but the last."""
        return self.channels[:-1], np.diff(self.latency_ms)


@dataclass
class Steps:
    """The detected latency step: right edges at ``c = phase (mod period)``."""

    period: int | None
    phase: int | None
    strength: float  # residual variance the staircase explains, summed over curves
    p_value: float
    step_pct: float | None = None  # mean jump at an edge, in % of the latency there
    slope_pct: float | None = None  # mean jump elsewhere (per channel), same unit

    @property
    def found(self) -> bool:
        return self.period is not None

    def edges(self, lo: int, hi: int) -> list[int]:
        """Right edges within ``[lo, hi]``; at least the first one at or above ``lo``."""
        if not self.found:
            return []
        assert self.period is not None and self.phase is not None
        first = lo + (self.phase - lo) % self.period
        out = list(range(first, hi + 1, self.period))
        return out or [first]

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "period": self.period,
            "phase": self.phase,
            "strength": round(self.strength, 3),
            "p_value": self.p_value,
            "step_pct": None if self.step_pct is None else round(self.step_pct, 3),
            "slope_pct": None if self.slope_pct is None else round(self.slope_pct, 4),
        }


@dataclass
class StageResult:
    index: int
    name: str
    base: int
    lo: int
    hi: int
    widths: list[int]
    baseline_channels: int
    curated_channels: int  # the baseline's channels in the curated space

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "base": self.base,
            "range": [self.lo, self.hi],
            "widths": self.widths,
            "baseline_channels": self.baseline_channels,
            "curated_channels": self.curated_channels,
        }


@dataclass
class CurateResult:
    space: SearchSpace  # the input
    curated: SearchSpace  # the output (the input when no step was found)
    steps: Steps
    stages: list[StageResult]
    curves: list[Curve] = field(repr=False)
    baseline_ms: float = 0.0
    curated_baseline_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space.name,
            "source": self.space.source,
            "steps": self.steps.to_dict(),
            "parallelism": {"before": self.space.spec.parallelism, "after": self.curated.spec.parallelism},
            "stages": [s.to_dict() for s in self.stages],
            "baseline_ms": self.baseline_ms,
            "curated_baseline_ms": self.curated_baseline_ms,
        }


def stage_slices(space: SearchSpace, params: dict[str, Any]) -> list[slice]:
    """Block index range of each stage in ``space.resolve(params)``."""
    out, start = [], 0
    full = space.parameters(include_fixed=True)
    for i in range(1, len(space.spec.stages) + 1):
        depth = params.get(f"s{i}.depth", full[f"s{i}.depth"][0])
        out.append(slice(start, start + depth))
        start += depth
    return out


def with_stage(arch: Arch, blocks: slice, channels: int, kind: str | None = None) -> Arch:
    """``arch`` with the blocks in ``blocks`` widened (or narrowed) to ``channels`` outputs
    (the next block's input follows), optionally all of block kind ``kind``."""
    bl = list(arch.blocks)
    for j in range(blocks.start, blocks.stop):
        update: dict[str, Any] = {"out_channels": channels}
        if j > blocks.start:
            update["in_channels"] = channels
        if kind is not None:
            update["kind"] = kind
        bl[j] = bl[j].model_copy(update=update)
    if blocks.stop < len(bl):
        bl[blocks.stop] = bl[blocks.stop].model_copy(update={"in_channels": channels})
    return Arch.model_validate({**arch.model_dump(), "blocks": tuple(bl)})


def stage_range(base: int) -> tuple[int, int]:
    """The sweep's range for a stage of base width ``base``: 0.5x to 2x."""
    return max(1, math.ceil(base / 2)), 2 * base


def sweep(
    space: SearchSpace, estimator: LatencyEstimator, head: str = "classifier", resolutions: list[int] | None = None
) -> list[Curve]:
    """Latency curves of the baseline with each stage's width swept over its range (plus
    one count, to see the jump after the last), once per block kind the stage offers, at
    the baseline's resolution (or at each of ``resolutions``)."""
    params = space.baseline_params()
    base = space.baseline()
    curves = []
    for res in resolutions or [base.resolution]:
        arch = base.model_copy(update={"resolution": res})
        for i, (st, blocks) in enumerate(zip(space.spec.stages, stage_slices(space, params), strict=True)):
            lo, hi = stage_range(st.channels[0])
            cs = np.arange(lo, hi + 2)
            for kind in [k for k in KINDS if k in st.kind] or [None]:
                archs = [with_stage(arch, blocks, int(c), kind) for c in cs]
                lat = estimate_archs(archs, estimator, head)["latency_ms"]
                curves.append(Curve(i, kind or st.kind[0], cs, np.asarray(lat, dtype=float), res))
    return curves


def _step_gains(curves: list[Curve], periods: range, shuffles: int, rng: np.random.Generator):
    """For every (period P, phase r): how much of each curve's departure from a quadratic
    trend a staircase with right edges at ``c = r (mod P)`` explains, as a share of that
    curve's residual variance, summed over curves; the same for ``shuffles`` shuffles of
    each curve's residuals (the null). Returns {P: (gain[r], null_gain[shuffle, r],
    height_sign[r])}."""
    prepared = []
    for cv in curves:
        c = cv.channels.astype(float)
        y = cv.latency_ms / float(np.mean(cv.latency_ms))
        A = np.stack([np.ones_like(c), c, (c - c.mean()) ** 2 / max(1.0, c.std()) ** 2], axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        res = y - A @ coef
        var = float(res @ res)
        if len(c) < 4 or var <= 0:
            continue
        null = np.stack([rng.permutation(res) for _ in range(shuffles)], axis=1) if shuffles else np.zeros((len(c), 0))
        proj = A @ np.linalg.pinv(A)  # onto the trend: the staircase is taken net of it
        prepared.append((cv.channels, res, null, var, proj))
    out = {}
    for p in periods:
        gain = np.zeros(p)
        null_gain = np.zeros((shuffles, p))
        sign = np.zeros(p)
        for ch, res, null, var, proj in prepared:
            # S[:, r] counts the edges at c' = r (mod p) below c: floor((c - r - 1) / p)
            S = np.floor((ch[:, None] - np.arange(p)[None, :] - 1) / p)
            S = S - proj @ S
            ss = np.einsum("ij,ij->j", S, S)
            ok = ss > 1e-9
            num = res @ S
            g = np.where(ok, num**2 / np.where(ok, ss, 1), 0.0) / var
            gain += g
            sign += np.where(ok, np.sign(num) * g, 0.0)
            if null.shape[1]:
                nn_ = null.T @ S
                null_gain += np.where(ok, nn_**2 / np.where(ok, ss, 1), 0.0) / var
        out[p] = (gain, null_gain, sign)
    return out


def detect_steps(
    curves: list[Curve], max_period: int = 64, alpha: float = 0.01, shuffles: int = 200, seed: int = 0
) -> Steps:
    """The target's latency step from the swept curves (see the module docstring)."""
    span = max((len(cv.channels) for cv in curves), default=0)
    if span < 8:
        return Steps(None, None, 0.0, 1.0)
    periods = range(2, max(3, min(max_period, span // 2) + 1))
    gains = _step_gains(curves, periods, shuffles, np.random.default_rng(seed))
    best, period, phase = -math.inf, 0, 0
    null_best = np.full(shuffles, -math.inf)
    for p, (gain, null_gain, sign) in gains.items():
        up = np.where(sign > 0, gain, -math.inf)  # steps up only
        r = int(np.argmax(up))
        if up[r] > best:
            best, period, phase = float(up[r]), p, r
        if shuffles:
            null_best = np.maximum(null_best, null_gain.max(axis=1))
    p_value = (int((null_best >= best).sum()) + 1) / (shuffles + 1)
    if p_value > alpha or period == 0:
        return Steps(None, None, best, p_value)
    at, other = [], []
    for cv in curves:
        cc, d = cv.jumps()
        rel = d / cv.latency_ms[:-1] * 100
        edge = cc % period == phase
        at.extend(rel[edge])
        other.extend(rel[~edge])
    return Steps(
        period, phase, best, p_value, float(np.mean(at)) if at else None, float(np.mean(other)) if other else None
    )


def curate(
    space: SearchSpace,
    estimator: LatencyEstimator,
    max_period: int = 64,
    alpha: float = 0.01,
    head: str = "classifier",
) -> CurateResult:
    """Sweep, detect the step, and build the curated space (see the module docstring)."""
    curves = sweep(space, estimator, head)
    steps = detect_steps(curves, max_period=max_period, alpha=alpha)
    stages = []
    data = space.to_dict()
    for i, st in enumerate(space.spec.stages):
        lo, hi = stage_range(st.channels[0])
        widths = steps.edges(lo, hi)
        if widths:
            data["stages"][i]["widths"] = widths
        stages.append(StageResult(i, st.name or f"s{i + 1}", st.channels[0], lo, hi, widths, 0, 0))
    if steps.found:
        data["parallelism"] = steps.period
        data["align_channels"] = True
        data["name"] = f"{space.name}-curated"
        note = (
            f"Curated by nasctl curate: latency steps every {steps.period} channels (estimator), "
            "widths at the right edges."
        )
        data["description"] = f"{space.spec.description} {note}".strip()
        try:
            curated = SearchSpace.from_dict(data, source=f"{space.source} (curated)")
        except NasctlError as exc:  # a baseline entry the new widths no longer reach
            raise NasctlError(f"cannot write the curated space: {exc}") from None
    else:
        curated = space
    base_arch, cur_arch = space.baseline(), curated.baseline()
    params = space.baseline_params()
    for sr, blocks in zip(stages, stage_slices(space, params), strict=True):
        sr.baseline_channels = base_arch.blocks[blocks.start].out_channels
        sr.curated_channels = cur_arch.blocks[blocks.start].out_channels
    lat = estimate_archs([base_arch, cur_arch], estimator, head)["latency_ms"]
    return CurateResult(space, curated, steps, stages, curves, float(lat[0]), float(lat[1]))


def plot(result: CurateResult, path: str | Path) -> Path:
    """Latency against channels per stage, both block kinds, the kept widths marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.stages)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = {"ibn": "tab:blue", "fused_ibn": "tab:orange"}
    for sr, ax in zip(result.stages, axes.flat, strict=False):
        for cv in (c for c in result.curves if c.stage == sr.index):
            ax.plot(cv.channels, cv.latency_ms, lw=1.2, color=colors.get(cv.kind), label=cv.kind)
            keep = np.isin(cv.channels, sr.widths)
            ax.plot(cv.channels[keep], cv.latency_ms[keep], "o", ms=5, color=colors.get(cv.kind))
        for w in sr.widths:
            ax.axvline(w, color="grey", lw=0.6, ls=":")
        ax.axvline(sr.base, color="black", lw=0.8, ls="--")
        kept = (
            ", ".join(map(str, sr.widths))
            if len(sr.widths) <= 6
            else f"{len(sr.widths)} widths, {sr.widths[0]}..{sr.widths[-1]}"
        )
        ax.set_title(f"{sr.name} (base {sr.base}): keep {kept or 'all'}", fontsize=9)
        ax.set_xlabel("channels")
        ax.set_ylabel("estimated latency (ms)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    s = result.steps
    title = f"{result.space.name}: " + (
        f"steps every {s.period} channels (edges at c = {s.phase} mod {s.period}, p = {s.p_value:.3f})"
        if s.found
        else f"no latency step found (p = {s.p_value:.2f})"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
