"""Curation (latency steps found without being told P), refinement (never slower, never
over budget) and the hybrid strategy, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.curate import curate
from nasctl.errors import NasctlError
from nasctl.latency.api import estimate_archs, load_estimator
from nasctl.latency.estimator import LatencyEstimator, read_measurements
from nasctl.latency.measure import measure
from nasctl.refine import SHRINK_MOVES, latency_step, refine
from nasctl.search.objectives import memory_mb
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE, SPACES_DIR, UNCURATED_SPACE

runner = CliRunner()
SPACE_224 = SPACES_DIR / "mobilenetv2_224.yaml"


@pytest.fixture(scope="module")
def p24_estimator(tmp_path_factory):
    """An estimator of a P=24 simulated chip, from `measure --device sim-npu --parallelism
    24` (600 networks, about 15 s) and a fit: no estimator feature names 24 (they pad to 8, 16 and 32)."""
    d = tmp_path_factory.mktemp("p24")
    measure(d / "m.csv", device="sim-npu", parallelism=24, time_budget=300, max_networks=600, seed=3)
    est = LatencyEstimator().fit(read_measurements([d / "m.csv"]), folds=0)
    path = est.save(d / "p24.json.gz")
    return str(path)


def test_stage_widths_round_up_to_the_listed_counts(tiny_space_dict):
    d = json.loads(json.dumps(tiny_space_dict))
    d["stages"][1]["widths"] = [12, 24]
    sp = SearchSpace.from_dict(d)
    # base 16 x 0.5 = 8 -> 12, 16 -> 24, 24 x 0.5 = 12 -> 12, 24 -> 24
    assert [sp.stage_channels(1, c, m) for c in (16, 24) for m in (0.5, 1.0)] == [12, 24, 12, 24]
    assert sp.stage_channels(1, 48, 1.0) == 24  # above every width: the largest
    assert sp.stage_channels(0, 8, 0.5) == sp.channels(8, 0.5)  # a stage without widths: the space's rule
    assert {b.out_channels for a in sp.samples(30, seed=1) for b in a.blocks[1:]} <= {12, 24}
    again = SearchSpace.loads(sp.to_yaml())
    assert again == sp
    for a in sp.samples(10, seed=2):
        assert sp.resolve(sp.encode(a)) == a
    d["stages"][1]["widths"] = [12, 12]
    with pytest.raises(NasctlError, match="widths"):
        SearchSpace.from_dict(d)


@pytest.mark.parametrize("p", [16, 24, 32])
def test_curate_finds_the_simulated_chips_step_without_being_told(p, request):
    est = load_estimator(request.getfixturevalue("p24_estimator") if p == 24 else f"sim-npu-p{p}")
    space = SearchSpace.load(SPACE_224)
    r = curate(space, est)
    assert r.steps.found and r.steps.period == p and r.steps.phase == 0, r.steps
    assert r.curated.spec.parallelism == p
    for sr in r.stages:
        assert sr.widths and all(w % p == 0 for w in sr.widths), (sr.name, sr.widths)
        lo, hi = sr.lo, sr.hi
        assert all(lo <= w <= hi for w in sr.widths) or len(sr.widths) == 1
    # the curated space's stages take only those widths
    for a in r.curated.samples(20, seed=0):
        assert all(b.out_channels % p == 0 for b in a.blocks)
    # a right edge: one channel more is slower on the simulated chip (the estimator's view)
    s = r.stages[3]
    w = s.widths[len(s.widths) // 2]
    base = space.baseline()
    from nasctl.curate import stage_slices, with_stage

    blocks = stage_slices(space, space.baseline_params())[3]
    lat = estimate_archs([with_stage(base, blocks, w, "fused_ibn"), with_stage(base, blocks, w + 1, "fused_ibn")], est)
    assert lat["latency_ms"][1] > lat["latency_ms"][0]


def test_curate_command_writes_the_space_and_the_plot(tmp_path):
    out = tmp_path / "curated.yaml"
    r = runner.invoke(app, ["curate", str(SPACE_224), "--estimator", "sim-npu-p16", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["steps"]["period"] == 16 and data["parallelism"]["after"] == 16
    assert out.is_file() and out.with_suffix(".png").is_file()
    sp = SearchSpace.load(out)
    assert [list(st.widths or []) for st in sp.spec.stages] == [s["widths"] for s in data["stages"]]
    r = runner.invoke(app, ["space", str(out), "--json"])
    assert r.exit_code == 0, r.output
    for args in (
        ["curate", str(tmp_path / "missing.yaml")],
        ["curate", str(SPACE_224), "--estimator", str(tmp_path / "nope.json.gz")],
        ["curate", str(SPACE_224), "--out", str(tmp_path / "x.txt")],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error:"), r.output


def _over(cost, lat_budget, mem_budget) -> bool:
    return (lat_budget is not None and cost.latency_ms > lat_budget) or (
        mem_budget is not None and cost.memory_mb > mem_budget
    )


def test_refine_is_never_slower_nor_over_budget():
    """A property over sampled starting archs, with and without budgets (from the
    uncurated space: widths off the step, so `align` has work)."""
    est = load_estimator("sim-npu-p16")
    space = SearchSpace.load(UNCURATED_SPACE)
    step = latency_step(space.baseline(), est)
    assert step.period == 16
    rng = np.random.default_rng(0)
    archs = space.samples(8, seed=5)
    costs = estimate_archs(archs, est)
    refused = 0
    moves_seen: set[str] = set()
    for i, a in enumerate(archs):
        lat0 = float(costs["latency_ms"][i])
        mem0 = memory_mb(int(costs["params"][i]), int(costs["peak_activation_bytes"][i]))
        lat_b = mem_b = None
        if i % 3 == 1:
            lat_b = lat0 * float(rng.uniform(0.7, 0.95))
        if i % 3 == 2:
            mem_b = mem0 * float(rng.uniform(0.5, 0.9))
        try:
            r = refine(a, est, space=space, latency_budget_ms=lat_b, memory_budget_mb=mem_b, step=step)
        except NasctlError as exc:
            assert "cannot meet the budgets" in str(exc)
            refused += 1
            continue
        moves_seen |= {s.move for s in r.steps[1:]}
        first, last = r.start.cost, r.final.cost
        assert abs(first.latency_ms - lat0) < 1e-9
        assert last.latency_ms <= first.latency_ms
        assert not _over(last, lat_b, mem_b)
        for prev, cur in zip(r.steps, r.steps[1:], strict=False):
            assert cur.cost.latency_ms <= prev.cost.latency_ms or _over(prev.cost, lat_b, mem_b)
            if cur.move in SHRINK_MOVES:  # capacity is removed only for a missed budget
                assert _over(prev.cost, lat_b, mem_b), (cur.move, cur.detail)
            else:
                assert cur.cost.params >= prev.cost.params or cur.move == "fuse"
        if lat_b is None and mem_b is None:
            assert all(s.move not in SHRINK_MOVES for s in r.steps)
    assert refused == 0  # every budget here is reachable
    # --allow-shrink: a capacity-removing move only where it cuts a larger share of the
    # latency than of the params
    r = refine(archs[0], est, space=space, allow_shrink=True, step=step)
    shrunk = [(p, c) for p, c in zip(r.steps, r.steps[1:], strict=False) if c.move in SHRINK_MOVES]
    assert shrunk
    for p, c in shrunk:
        assert 1 - c.cost.latency_ms / p.cost.latency_ms > 1 - c.cost.params / p.cost.params
    assert {"align", "fuse", "even"} <= moves_seen and moves_seen & set(SHRINK_MOVES)
    with pytest.raises(NasctlError, match="cannot meet the budgets"):
        refine(space.baseline(), est, space=space, latency_budget_ms=0.01, step=step)


def test_refine_command_end_to_end(tmp_path, small_digits):
    out = tmp_path / "refined"
    args = ["refine", "baseline", "--space", str(DEFAULT_SPACE), "--estimator", "sim-npu-p16", "--out", str(out)]
    r = runner.invoke(
        app, [*args, "--evaluate", "--data", str(small_digits), "--epochs", "1", "--seeds", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["latency_cut_pct"] > 10 and rep["steps"][0]["move"] == "start"
    assert {s["move"] for s in rep["steps"][1:]} <= {"fuse", "align", "even"}
    for f in ("arch.json", "model.onnx", "refine.json"):
        assert (out / f).is_file(), f
    ev = rep["evaluation"]
    assert 0 <= ev["start"]["accuracy_mean"] <= 1 and 0 <= ev["refined"]["accuracy_mean"] <= 1
    r = runner.invoke(app, args + ["--latency-budget", "0.001"])
    assert r.exit_code == 2 and "cannot meet the budgets" in r.output and r.output.count("\n") == 1
    r = runner.invoke(app, ["refine", "baseline", "--estimator", "sim-npu-p16"])
    assert r.exit_code == 2 and "--space" in r.output
    r = runner.invoke(app, ["refine", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and r.output.count("\n") == 1


def test_hybrid_screens_then_trains_the_best_and_resumes(tmp_path, small_digits):
    out = tmp_path / "hy"
    args = ["search", str(DEFAULT_SPACE), "--strategy", "hybrid", "--screen", "24", "--trials", "3"]
    args += ["--epochs", "1", "--trial-seconds", "2", "--data", str(small_digits), "--out", str(out), "--no-measure"]
    args += ["--estimator", "sim-npu-p16", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    screen = json.loads((out / "screen.json").read_text())
    assert screen["screened"] <= 24 and screen["feasible"] >= 2
    from nasctl.search import load_config
    from nasctl.search.study import open_study

    trials = open_study(load_config(out)).get_trials(deepcopy=False)
    assert [t.user_attrs.get("screened") for t in trials] == [None, 1, 2]
    rows = {r["arch"]: r for r in screen["rows"] if r["feasible"]}

    def dominated(a: str) -> bool:
        x = rows[a]
        return any(
            y["score"] >= x["score"]
            and y["latency_ms"] <= x["latency_ms"]
            and (y["score"], y["latency_ms"]) != (x["score"], x["latency_ms"])
            for y in rows.values()
        )

    front = [a for a in rows if not dominated(a)]
    assert set(screen["ranked"][: len(front)]) == set(front)  # the non-dominated come first
    ranked = [a for a in screen["ranked"] if a != SearchSpace.load(DEFAULT_SPACE).baseline().to_string()]
    assert [t.user_attrs["arch"] for t in trials[1:]] == ranked[:2]
    report = (out / "report.md").read_text()
    assert "## Zero-shot screening" in report and "| screen rank |" in report
    stamp = (out / "screen.json").stat().st_mtime_ns
    r = runner.invoke(app, args)  # the same command again: resumes
    assert r.exit_code == 0, r.output
    assert (out / "screen.json").stat().st_mtime_ns == stamp
    assert len(open_study(load_config(out)).get_trials(deepcopy=False)) == 3  # nothing enqueued twice
    r = runner.invoke(app, ["search", str(DEFAULT_SPACE), "--screen", "10", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "--screen belongs to --strategy hybrid" in r.output
