"""Expert-in-the-loop refinement: apply the moves a hardware expert makes by hand to a
given architecture, greedily, each kept only when the latency estimator says it helps and
the constraints hold.

A *stage* here is a run of consecutive blocks with the same output width whose blocks
after the first keep the resolution (what ``SearchSpace.resolve`` builds per stage).

Moves that keep or add capacity, used freely:

* ``fuse``: an IBN becomes a fused-IBN of the same kernel and expansion (the depthwise
  conv and the expand 1x1 replaced by one dense kxk conv): kept when it is faster;
* ``align``: a stage's width goes up to the right edge of the target's latency step (the
  most channels for the same latency): kept when it is not slower;
* ``even``: one step of channels moves from one stage to another (capacity evened out
  towards the stages where channels are cheap): kept when it is faster and the params do
  not drop.

Moves that only remove capacity (``drop`` a block, ``narrow`` a stage to the edge below,
and with a space, a lower ``multiplier``) are used only while a latency or memory budget
is missed, or with ``allow_shrink`` when they cut a larger share of the latency than of
the params. So refining is not shrinking to the smallest network.

Every kept move makes the network faster, or equally fast with more params; the result is
never slower than the start unless a budget forced it below (then it is faster still),
and never over a budget: when the budgets cannot be met, ``refine`` raises.

The latency step comes from the estimator (``nasctl.curate.detect_steps`` on sweeps of
this architecture's own stages); without a detectable step, ``align`` and ``even`` are
not offered and ``narrow`` steps by a quarter of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasctl.arch import Arch
from nasctl.curate import KINDS, Curve, Steps, detect_steps, with_stage
from nasctl.errors import NasctlError
from nasctl.latency.api import estimate_archs
from nasctl.latency.estimator import LatencyEstimator
from nasctl.search.objectives import memory_mb
from nasctl.space import SearchSpace

FREE_MOVES = ("fuse", "align", "even")
SHRINK_MOVES = ("drop", "narrow", "multiplier")


@dataclass
class Cost:
    latency_ms: float
    params: int
    peak_activation_bytes: int

    @property
    def memory_mb(self) -> float:
        return memory_mb(self.params, self.peak_activation_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "params": self.params,
            "peak_activation_bytes": self.peak_activation_bytes,
            "memory_mb": self.memory_mb,
        }


@dataclass
class Step:
    move: str  # "start" for the first row
    detail: str
    arch: Arch
    cost: Cost

    def to_dict(self) -> dict[str, Any]:
        return {"move": self.move, "detail": self.detail, "arch": self.arch.to_string(), **self.cost.to_dict()}


@dataclass
class RefineResult:
    steps: list[Step]
    step: Steps  # the detected latency step
    budgets: dict[str, float | None] = field(default_factory=dict)

    @property
    def start(self) -> Step:
        return self.steps[0]

    @property
    def final(self) -> Step:
        return self.steps[-1]

    def to_dict(self) -> dict[str, Any]:
        a, b = self.start.cost, self.final.cost
        return {
            "latency_step": self.step.to_dict(),
            "budgets": self.budgets,
            "steps": [s.to_dict() for s in self.steps],
            "latency_cut_pct": (1 - b.latency_ms / a.latency_ms) * 100,
            "params_change_pct": (b.params / a.params - 1) * 100,
            "memory_change_pct": (b.memory_mb / a.memory_mb - 1) * 100,
            "final_arch": self.final.arch.to_dict(),
        }


def stages_of(arch: Arch) -> list[slice]:
    """The arch's stages: runs of equal output width, later blocks at stride 1."""
    out, start = [], 0
    blocks = arch.blocks
    for j in range(1, len(blocks) + 1):
        if j == len(blocks) or blocks[j].out_channels != blocks[start].out_channels or blocks[j].stride != 1:
            out.append(slice(start, j))
            start = j
    return out


def latency_step(arch: Arch, estimator: LatencyEstimator, head: str = "classifier", **kw: Any) -> Steps:
    """The target's latency step, from sweeps of this arch's stages (0.5x to 2x each, every
    block of the stage an IBN, then a fused-IBN), as ``nasctl curate`` sweeps a space."""
    curves = []
    for i, sl in enumerate(stages_of(arch)):
        c0 = arch.blocks[sl.start].out_channels
        cs = np.arange(max(1, math.ceil(c0 / 2)), 2 * c0 + 2)
        for kind in KINDS:
            archs = [with_stage(arch, sl, int(c), kind) for c in cs]
            curves.append(Curve(i, kind, cs, estimate_archs(archs, estimator, head)["latency_ms"]))
    return detect_steps(curves, **kw)


def _next_edge(c: int, step: Steps) -> int:
    assert step.period is not None and step.phase is not None
    return c + (step.phase - c) % step.period


def _prev_edge(c: int, step: Steps) -> int:
    """The right edge below ``c`` (``c`` itself excluded), at least 1."""
    assert step.period is not None and step.phase is not None
    e = c - 1 - (c - 1 - step.phase) % step.period
    return e if e >= 1 else 0


def _drop(arch: Arch, j: int) -> Arch:
    bl = list(arch.blocks)
    del bl[j]
    return Arch.model_validate({**arch.model_dump(), "blocks": tuple(bl)})


def free_moves(arch: Arch, step: Steps) -> list[tuple[str, str, Arch]]:
    out: list[tuple[str, str, Arch]] = []
    for j, b in enumerate(arch.blocks):
        if b.kind == "ibn":
            fused = list(arch.blocks)
            fused[j] = b.model_copy(update={"kind": "fused_ibn"})
            out.append(
                (
                    "fuse",
                    f"block {j + 1}: ibn -> fused_ibn",
                    Arch.model_validate({**arch.model_dump(), "blocks": tuple(fused)}),
                )
            )
    if not step.found:
        return out
    stages = stages_of(arch)
    widths = [arch.blocks[sl.start].out_channels for sl in stages]
    for i, (sl, c) in enumerate(zip(stages, widths, strict=True)):
        e = _next_edge(c, step)
        if e != c:
            out.append(("align", f"stage {i + 1}: {c} -> {e} channels", with_stage(arch, sl, e)))
    p = step.period
    assert p is not None
    for a, (sa, ca) in enumerate(zip(stages, widths, strict=True)):
        if ca - p < 1:
            continue
        for b, (sb, cb) in enumerate(zip(stages, widths, strict=True)):
            if a == b:
                continue
            moved = with_stage(with_stage(arch, sa, ca - p), sb, cb + p)
            out.append(("even", f"{p} channels from stage {a + 1} ({ca}) to stage {b + 1} ({cb})", moved))
    return out


def shrink_moves(arch: Arch, step: Steps, space: SearchSpace | None) -> list[tuple[str, str, Arch]]:
    out: list[tuple[str, str, Arch]] = []
    for j, b in enumerate(arch.blocks):
        if b.residual:  # a residual block drops cleanly: its input and output widths match
            out.append(("drop", f"block {j + 1} ({b.kind} k{b.kernel} e{b.expansion})", _drop(arch, j)))
    for i, sl in enumerate(stages_of(arch)):
        c = arch.blocks[sl.start].out_channels
        e = _prev_edge(c, step) if step.found else max(1, c - max(1, c // 4))
        if 1 <= e < c:
            out.append(("narrow", f"stage {i + 1}: {c} -> {e} channels", with_stage(arch, sl, e)))
    if space is not None:
        try:
            params = space.encode(arch)
        except NasctlError:
            params = None
        if params is not None:
            mults = sorted(space.spec.depth_multiplier)
            k = mults.index(params["depth_multiplier"]) if "depth_multiplier" in params else 0
            if k > 0:
                lower = space.resolve({**params, "depth_multiplier": mults[k - 1]})
                out.append(("multiplier", f"depth multiplier {mults[k]} -> {mults[k - 1]}", lower))
    return out


def _costs(archs: list[Arch], estimator: LatencyEstimator, head: str) -> list[Cost]:
    if not archs:
        return []
    est = estimate_archs(archs, estimator, head)
    return [
        Cost(float(t), int(n), int(b))
        for t, n, b in zip(est["latency_ms"], est["params"], est["peak_activation_bytes"], strict=True)
    ]


def refine(
    arch: Arch,
    estimator: LatencyEstimator,
    space: SearchSpace | None = None,
    latency_budget_ms: float | None = None,
    memory_budget_mb: float | None = None,
    allow_shrink: bool = False,
    head: str = "classifier",
    max_steps: int = 200,
    step: Steps | None = None,
) -> RefineResult:
    """Refine ``arch`` greedily (see the module docstring). ``step``: the latency step, when
    already known (else detected from the arch's own sweeps)."""
    step = step if step is not None else latency_step(arch, estimator, head)
    cost = _costs([arch], estimator, head)[0]
    steps = [Step("start", "", arch, cost)]
    budgets = {"latency_ms": latency_budget_ms, "memory_mb": memory_budget_mb}

    def over(c: Cost) -> float:
        """How far over the budgets (sum of relative excesses; 0 when within)."""
        v = 0.0
        if latency_budget_ms is not None:
            v += max(0.0, c.latency_ms / latency_budget_ms - 1)
        if memory_budget_mb is not None:
            v += max(0.0, c.memory_mb / memory_budget_mb - 1)
        return v

    for _ in range(max_steps):
        cur = steps[-1]
        excess = over(cur.cost)
        moves = free_moves(cur.arch, step)
        costs = _costs([m[2] for m in moves], estimator, head)
        best = None
        for (move, detail, a), c in zip(moves, costs, strict=True):
            if over(c) > excess:  # never further over a budget (within one stays within)
                continue
            faster = c.latency_ms < cur.cost.latency_ms
            ok = {
                "fuse": faster,
                "align": c.latency_ms <= cur.cost.latency_ms and c.params > cur.cost.params,
                "even": faster and c.params >= cur.cost.params,
            }[move]
            if ok:
                key = (cur.cost.latency_ms - c.latency_ms, c.params)
                if best is None or key > best[0]:
                    best = (key, Step(move, detail, a, c))
        if best is None and (excess > 0 or allow_shrink):
            moves = shrink_moves(cur.arch, step, space)
            costs = _costs([m[2] for m in moves], estimator, head)
            for (move, detail, a), c in zip(moves, costs, strict=True):
                lat_cut = 1 - c.latency_ms / cur.cost.latency_ms
                par_cut = 1 - c.params / max(cur.cost.params, 1)
                if excess > 0:
                    gain = excess - over(c)  # budget excess removed, per params lost
                    if gain <= 0 or c.latency_ms > cur.cost.latency_ms:
                        continue
                    key = (gain / max(par_cut, 1e-6), 0)
                else:
                    if lat_cut <= max(par_cut, 0.0):
                        continue
                    key = (lat_cut - par_cut, 0)
                if best is None or key > best[0]:
                    best = (key, Step(move, detail, a, c))
        if best is None:
            break
        steps.append(best[1])
    if over(steps[-1].cost) > 0:
        c = steps[-1].cost
        raise NasctlError(
            f"cannot meet the budgets ({_budget_text(budgets)}): the smallest refinement reached "
            f"{c.latency_ms:.3f} ms, {c.memory_mb:.2f} MB"
        )
    return RefineResult(steps, step, budgets)


def _budget_text(budgets: dict[str, float | None]) -> str:
    parts = []
    if budgets.get("latency_ms") is not None:
        parts.append(f"latency {budgets['latency_ms']} ms")
    if budgets.get("memory_mb") is not None:
        parts.append(f"memory {budgets['memory_mb']} MB")
    return ", ".join(parts)
