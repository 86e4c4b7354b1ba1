"""Hybrid search: zero-shot screening of many candidates, then multishot training of the
best of them, as one run with one report.

Before the first trial (``setup``), ``--screen N`` archs are drawn from the space; the
estimator prices each (latency, memory) and the over-budget ones are dropped; the rest are
scored at initialisation by ``--proxy`` (as ``--strategy zeroshot`` scores them). They are
ranked by non-dominated sorting on (proxy score up, the search's cost objectives down),
then within a front by NSGA-II's crowding distance (its extremes first, then the most
isolated, so the trained archs spread along the front). The first ``trials - 1`` (the
baseline is trial 0) are enqueued as the study's next trials: each is trained and
scored by a linear probe as a multishot trial. A run given more trials than the screen enqueued goes on with NSGA-II,
whose first population then holds the screened archs.

The screen is kept in the run folder (``screen.json``): a resumed run neither screens nor
enqueues again. The report's "Zero-shot screening" section says how many were screened,
what it cost, and how the proxy's order held up once trained (Kendall tau).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasctl.errors import NasctlError
from nasctl.search.base import register_strategy
from nasctl.search.scorers.trained import TrainedAccuracy
from nasctl.search.strategies.samplers import check_sampler, make_sampler

if TYPE_CHECKING:
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

SCREEN_FILE = "screen.json"
DEFAULT_SCREEN = 500
DEFAULT_ENQUEUED = 19  # screened archs trained when only --time-budget bounds the run
SCREEN_SEED = 7919  # the screen's draws: their own stream, offset by --seed
DEFAULT_POPULATION = 8


def nondominated_fronts(points: np.ndarray) -> np.ndarray:
    """Front index (0 = non-dominated) of each row of ``points``, every column minimised."""
    n = len(points)
    front = np.full(n, -1)
    left = np.arange(n)
    k = 0
    while len(left):
        p = points[left]
        dominated = np.array(
            [bool(np.any(np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1))) for i in range(len(left))]
        )
        front[left[~dominated]] = k
        left = left[dominated]
        k += 1
    return front


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row (one front): the extremes infinite, the
    others the normalised side lengths of the box their neighbours span."""
    n, m = points.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        d[order[0]] = d[order[-1]] = np.inf
        if span > 0:
            d[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return d


def _key(cfg: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    """What the screen depends on, as JSON reads it back (tuples become lists)."""
    key = {
        "screen": cfg.screen or DEFAULT_SCREEN,
        "proxy": cfg.proxy,
        "proxy_batch": cfg.proxy_batch,
        "seed": cfg.seed,
        "estimator": cfg.estimator,
        "objectives": cfg.objectives.to_dict(),
        "space": space.to_dict(),
    }
    return json.loads(json.dumps(key))


def screen(cfg: SearchConfig, space: SearchSpace, progress=None) -> dict[str, Any]:
    """Screen ``cfg.screen`` candidates zero-shot (or read the run folder's screen)."""
    from nasctl.latency.api import estimate_archs, load_estimator
    from nasctl.search.objectives import memory_mb
    from nasctl.search.scorers.proxy import ProxyScore

    path = Path(cfg.out) / SCREEN_FILE
    key = _key(cfg, space)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved.get("key") == key:
            return saved
    t0 = time.perf_counter()
    n = key["screen"]
    seen: set[str] = set()
    archs = []
    for a in space.samples(n, seed=SCREEN_SEED + cfg.seed):
        if a.id not in seen:
            seen.add(a.id)
            archs.append(a)
    est = estimate_archs(archs, load_estimator(cfg.estimator))
    scorer = ProxyScore.from_config(cfg, space)
    scorer.reference(progress)
    rows = []
    for i, a in enumerate(archs):
        params, peak = int(est["params"][i]), int(est["peak_activation_bytes"][i])
        cost = {"latency_ms": float(est["latency_ms"][i]), "params": params, "peak_activation_bytes": peak}
        cost["memory_mb"] = memory_mb(params, peak)
        feasible = all(v <= 0 for v in cfg.objectives.violations(cost).values())
        row: dict[str, Any] = {"arch": a.to_string(), "arch_id": a.id, "feasible": feasible, **cost, "score": None}
        if feasible:
            if progress:
                progress({"event": "screen", "done": i, "total": len(archs), "arch": a.to_string()})
            row["score"] = float(scorer(a)[ProxyScore.objective])
        rows.append(row)
    ok = [r for r in rows if r["feasible"]]
    if not ok:
        raise NasctlError(f"none of the {len(rows)} screened archs is within the budgets")
    costs = [c for c in cfg.objectives.names if c != TrainedAccuracy.objective]
    pts = np.array([[-r["score"]] + [r[c] for c in costs if c in r] for r in ok], dtype=float)
    fronts = nondominated_fronts(pts)
    spread = np.zeros(len(ok))
    for f in np.unique(fronts):
        idx = np.flatnonzero(fronts == f)
        spread[idx] = crowding(pts[idx])
    for r, f in zip(ok, fronts, strict=True):
        r["front"] = int(f)
    order = sorted(range(len(ok)), key=lambda i: (fronts[i], -spread[i], -ok[i]["score"]))
    ranked = [ok[i] for i in order]
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    out = {
        "key": key,
        "proxy": scorer.proxy,
        "screened": len(rows),
        "feasible": len(ok),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
        "ranked": [r["arch"] for r in ranked],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, path)
    return out


@register_strategy
class Hybrid:
    name = "hybrid"
    summary = "--screen N candidates scored zero-shot (--proxy), the best of them trained as multishot trials"
    scorer_type = TrainedAccuracy
    default_trials = 12

    def validate(self, cfg: SearchConfig, space: SearchSpace) -> None:
        from nasctl.search.scorers.proxy import ProxyScore

        check_sampler(cfg)
        if cfg.population_size is not None and cfg.population_size < 2:
            raise NasctlError(f"--population must be >= 2 (got {cfg.population_size})")
        if cfg.supernet or cfg.finetune:
            raise NasctlError("--supernet and --finetune belong to --strategy singleshot")
        if cfg.screen is not None and cfg.screen < 1:
            raise NasctlError(f"--screen must be >= 1 (got {cfg.screen})")
        TrainedAccuracy.from_config(cfg).check(space)
        ProxyScore.from_config(cfg, space).check(space)

    def setup(self, cfg: SearchConfig, space: SearchSpace, progress=None) -> None:
        """Screen (or read the screen), then enqueue the best screened archs once."""
        from nasctl.search.study import open_study

        result = screen(cfg, space, progress)
        study = open_study(cfg)
        if any("screened" in t.user_attrs for t in study.get_trials(deepcopy=False)):
            return  # a resumed run: enqueued before
        k = (cfg.trials - 1) if cfg.trials is not None else DEFAULT_ENQUEUED
        rows = {r["arch"]: r for r in result["rows"]}
        baseline = space.baseline().to_string()
        from nasctl.arch import Arch

        picked = [a for a in result["ranked"] if a != baseline][: max(0, k)]
        for a in picked:
            r = rows[a]
            study.enqueue_trial(
                space.full_params(space.encode(Arch.from_string(a))),
                user_attrs={"screened": r["rank"], "screen_score": r["score"]},
            )

    def sampler(self, cfg: SearchConfig, seed: int):
        return make_sampler(cfg, seed, DEFAULT_POPULATION)

    def scorer(self, cfg: SearchConfig, space: SearchSpace) -> TrainedAccuracy:
        return TrainedAccuracy.from_config(cfg)

    @staticmethod
    def report_section(res) -> list[str]:
        return screen_section(res)


def screen_section(res) -> list[str]:
    """The report's zero-shot screening section (empty without a screen): what was
    screened, and the screened archs once trained beside their proxy scores."""
    path = res.out / SCREEN_FILE
    if not path.is_file():
        return []
    try:
        s = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    rows = {r["arch"]: r for r in s["rows"] if r.get("rank")}
    trained = [(rows[t.arch], t) for t in res.complete if t.trained and not t.baseline and t.arch in rows]
    trained.sort(key=lambda p: p[0]["rank"])
    lines = [
        "",
        "## Zero-shot screening",
        "",
        f"{s['screened']} archs drawn from the space, {s['feasible']} within the budgets, scored by "
        f"`{s['proxy']}` at initialisation in {s['seconds']:.1f} s. The best by non-dominated fronts of "
        "(score, costs) were trained as the trials after the baseline.",
    ]
    if len(trained) >= 4:
        from scipy.stats import kendalltau

        x = [r["score"] for r, _ in trained]
        y = [t.score(res.objective) for _, t in trained]
        tau = float(kendalltau(x, y).statistic)
        lines += [
            "",
            f"Kendall tau between the proxy score and the trained {res.objective} over the "
            f"{len(trained)} screened archs trained: {tau:.2f}.",
        ]
    if trained:
        lines += ["", f"| screen rank | proxy score | {res.objective} | latency ms | trial |", "|---|---|---|---|---|"]
        for r, t in trained:
            acc = t.score(res.objective)
            lines.append(
                f"| {r['rank']} | {r['score']:.4g} | {'–' if acc is None else f'{acc:.3f}'} | "
                f"{r['latency_ms']:.3f} | {t.number} |"
            )
    return lines
