"""`nasctl retrain`: a run's baseline and winners retrained under one budget over seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nasctl.space import SearchSpace


def _row(trial, acc, lat, baseline=False, measured=None):
    return {
        "trial": trial,
        "arch_id": f"a{trial}",
        "baseline": baseline,
        "accuracy_mean": acc,
        "accuracy_std": 0.01,
        "latency_ms": lat,
        "measured_latency_ms": measured,
    }


def test_fair_best_is_the_fastest_within_one_point_of_the_baselines_mean():
    from nasctl.search.retrain import fair_best

    rows = [_row(0, 0.90, 1.0, True), _row(1, 0.895, 0.5), _row(2, 0.85, 0.2), _row(3, 0.91, 0.7)]
    best = fair_best(rows)
    assert best["trial"] == 1 and best["latency_key"] == "latency_ms"
    assert best["latency_change_pct"] == pytest.approx(-50.0)
    assert best["accuracy_change_points"] == pytest.approx(-0.5)
    # measured latency decides only when every compared arch was measured
    rows = [_row(0, 0.90, 1.0, True, 2.0), _row(1, 0.895, 0.5, measured=1.9), _row(3, 0.91, 0.7, measured=0.5)]
    assert fair_best(rows)["trial"] == 3 and fair_best(rows)["latency_key"] == "measured_latency_ms"
    assert fair_best([_row(0, 0.90, 1.0, True), _row(2, 0.85, 0.2)]) is None


def test_retrain_a_run_over_seeds_caches_and_reports(tiny_space_dict, tmp_path):
    import torch
    from typer.testing import CliRunner

    import nasctl
    from nasctl.cli import app

    torch.set_num_threads(1)
    d = dict(tiny_space_dict)
    d["output"] = {"classes": 4, "embedding_dim": 16}
    space_file = SearchSpace.from_dict(d).save(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    nasctl.search(
        str(space_file),
        trials=3,
        epochs=1,
        trial_seconds=5,
        out=str(run),
        estimator="sim-npu-p16",
        measure=False,
        batch_size=64,
    )
    args = ["retrain", str(run), "--top", "1", "--epochs", "1", "--seeds", "2", "--no-measure"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads((run / "retrain.json").read_text())
    assert out["budget"]["epochs"] == 1 and out["budget"]["seeds"] == [0, 1]
    base, win = out["rows"]
    assert base["baseline"] and not win["baseline"]
    for row in (base, win):
        accs = [x["accuracy"] for x in row["runs"]]
        assert [x["seed"] for x in row["runs"]] == [0, 1]
        assert row["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert row["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    fb = out["best_within_1_point"]
    assert fb is None or 100 * (base["accuracy_mean"] - fb["accuracy_mean"]) <= 1
    report = (run / "report.md").read_text()
    assert report.count("## Retrained under one budget") == 1
    assert report.index("## Retrained under one budget") < report.index("Files:")
    n_runs = len((run / "retrain.jsonl").read_text().splitlines())
    assert n_runs == 4
    r = CliRunner().invoke(app, [*args, "--json"])  # cached: no new training, one section still
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows"] == out["rows"]
    assert len((run / "retrain.jsonl").read_text().splitlines()) == n_runs
    assert (run / "report.md").read_text().count("## Retrained under one budget") == 1
    r = CliRunner().invoke(app, ["report", str(run), "--no-measure"])  # a re-rendered report keeps it
    assert r.exit_code == 0 and "## Retrained under one budget" in (run / "report.md").read_text()
