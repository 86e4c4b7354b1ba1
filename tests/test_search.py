"""`nasctl search` (multishot) and `nasctl report`: real tiny searches end to end, resume
(also after SIGKILL), constraints, and bad input."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.contrastive import PretrainConfig
from nasctl.latency.api import estimate_archs, load_estimator
from nasctl.search import Objectives, SearchConfig, TrialBudget
from nasctl.search.results import collect
from nasctl.search.study import Evaluator, open_study
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE

runner = CliRunner()


@pytest.fixture(scope="module")
def small_data(small_digits):
    """240 real digits (8x8) as a .npz: quick trials."""
    return small_digits


def _search_args(out, data, trials=2, *extra):
    return [
        "search",
        str(DEFAULT_SPACE),
        "--trials",
        str(trials),
        "--epochs",
        "1",
        "--trial-seconds",
        "2",
        "--data",
        str(data),
        "--out",
        str(out),
        *extra,
    ]


def _states(out):
    with open(out / "trials.csv") as f:
        return [r["state"] for r in csv.DictReader(f)]


def test_search_end_to_end_then_resume_and_report(tmp_path, small_data):
    out = tmp_path / "run"
    r = runner.invoke(app, [*_search_args(out, small_data, 2), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    for f in ("study.db", "search.json", "trials.csv", "pareto.json", "pareto.png", "report.md"):
        assert (out / f).is_file(), f
    assert _states(out) == ["COMPLETE", "COMPLETE"]
    assert summary["baseline"]["number"] == 0 and summary["baseline"]["arch"] == (
        SearchSpace.load(DEFAULT_SPACE).baseline().to_string()
    )
    assert summary["pareto"] and all(p["measured_latency_ms"] > 0 for p in summary["pareto"])
    assert summary["baseline"]["measured_latency_ms"] > 0
    winners = sorted(p.name for p in (out / "winners").iterdir())
    assert winners and all(w.startswith("rank") for w in winners)
    first = {t.number: t.user_attrs["arch_id"] for t in _study(out).get_trials()}

    # resume: one more trial only (on another device: where a study runs is not what it is)
    r = runner.invoke(app, [*_search_args(out, small_data, 3), "--no-measure", "--train-device", "auto"])
    assert r.exit_code == 0, r.output
    trials = _study(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert {t.number: t.user_attrs["arch_id"] for t in trials[:2]} == first

    (out / "report.md").unlink()
    r = runner.invoke(app, ["report", str(out), "--no-measure"])
    assert r.exit_code == 0, r.output
    assert "Pareto set" in (out / "report.md").read_text()


def _study(out):
    cfg = json.loads((out / "search.json").read_text())
    return optuna.load_study(study_name=cfg["study_name"], storage=cfg["storage"])


def _cfg(tmp_path, data, **kw) -> SearchConfig:
    budget = TrialBudget(PretrainConfig(epochs=1, time_budget_s=2.0))
    return SearchConfig(str(DEFAULT_SPACE), out=str(tmp_path / "run"), data=str(data), budget=budget, **kw)


def test_over_budget_candidates_are_infeasible_and_not_trained(tmp_path, small_data):
    space = SearchSpace.load(DEFAULT_SPACE)
    cands = [space.sample_params(i) for i in range(40)]
    lat = estimate_archs([space.resolve(p) for p in cands], load_estimator("cpu"))["latency_ms"]
    cfg = _cfg(tmp_path, small_data, objectives=Objectives(latency_budget_ms=float(np.median(lat))), trials=1)
    study = open_study(cfg)
    study.enqueue_trial(cands[int(np.argmax(lat))])
    study.optimize(Evaluator(cfg), n_trials=1)
    t = study.trials[0]
    assert t.user_attrs["feasible"] is False and t.user_attrs["trained"] is False
    assert t.values[0] == 0.0 and t.constraints["latency"] > 0
    assert "train_seconds" not in t.user_attrs


def test_duplicate_arch_reuses_the_trained_trial(tmp_path, small_data):
    """Parameters that differ only past a stage's depth are the same arch: trained once."""
    space = SearchSpace.load(DEFAULT_SPACE)
    p = next(q for q in (space.sample_params(i) for i in range(100)) if q["s3.depth"] < 3)
    twin = dict(p)
    twin["s3.b3.kernel"] = 5 if p["s3.b3.kernel"] == 3 else 3
    cfg = _cfg(tmp_path, small_data, trials=2)
    study = open_study(cfg)
    study.enqueue_trial(p)
    study.enqueue_trial(twin)
    study.optimize(Evaluator(cfg), n_trials=2)
    a, b = study.trials
    assert a.params != b.params and a.user_attrs["arch_id"] == b.user_attrs["arch_id"]
    assert "duplicate_of" not in a.user_attrs and b.user_attrs["duplicate_of"] == 0
    assert b.values == a.values
    assert [r.number for r in collect(cfg, study).pareto] == [0]  # one arch, listed once


def _has_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "extra, message, blocked",
    [
        pytest.param(["--strategy", "zeroshot-magic"], "unknown strategy", (), id="strategy"),
        # storage that cannot be opened, whatever extras are installed: sqlite's driver is in the
        # standard library, and the "database file" is a folder ({tmp} is the test's own)
        pytest.param(["--storage", "sqlite:///{tmp}"], "cannot open storage", (), id="sqlite-folder"),
        pytest.param(
            ["--storage", "postgresql://nasctl@127.0.0.1:9/nodb"],
            "cannot open storage",
            (),
            marks=pytest.mark.skipif(
                not _has_module("psycopg"), reason="the postgres extra (psycopg) is not installed"
            ),
            id="postgres-unreachable",
        ),
        # a missing driver, whatever is installed: its import is blocked (None in sys.modules)
        pytest.param(
            ["--storage", "postgresql://nasctl@127.0.0.1:9/nodb"],
            "needs its database driver",
            ("psycopg", "psycopg2"),
            id="postgres-no-driver",
        ),
        pytest.param(["--storage", "mysql://u@127.0.0.1:9/x"], "needs its database driver", ("MySQLdb",), id="mysql"),
        pytest.param(["--latency-budget", "0.001"], "below the fastest arch", (), id="latency-budget"),
        pytest.param(["--memory-budget", "0.01"], "below the smallest arch", (), id="memory-budget"),
        pytest.param(["--estimator", "missing.json"], "missing.json", (), id="estimator"),
        pytest.param(["--objectives", "accuracy,speed"], "unknown objective", (), id="objectives"),
    ],
)
def test_bad_search_input_exits_2(tmp_path, small_data, monkeypatch, extra, message, blocked):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    r = runner.invoke(app, [*_search_args(tmp_path / "run", small_data), *extra])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a search run folder" in r.output


@pytest.mark.slow
def test_sigkill_halfway_then_rerun_ends_with_exact_trial_count(tmp_path, small_data):
    """The acceptance scenario, small: kill -9 during a trial, re-run the same command, and
    the study ends with exactly the requested number of complete trials."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "nasctl", *_search_args(out, small_data, 4, "--no-measure", "--json")]
    args[args.index("--trial-seconds") + 1] = "4"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = out / "study.db"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until trial 2 is under way (0 and 1 complete)
        time.sleep(0.5)
        if not db.is_file():
            continue
        try:
            with sqlite3.connect(db) as con:
                states = [s for (s,) in con.execute("select state from trials order by number")]
                running_params = con.execute(
                    "select count(*) from trial_params p join trials t on p.trial_id = t.trial_id "
                    "where t.state = 'RUNNING'"
                ).fetchone()[0]
        except sqlite3.OperationalError:
            continue
        if states.count("COMPLETE") >= 2 and running_params:
            break
    else:
        proc.kill()
        pytest.fail("the search did not get to its third trial in time")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = _study(out).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    assert [t.state.name for t in trials].count("FAIL") == 1  # the killed one, failed by its stale heartbeat
    killed = next(t for t in trials if t.state.name == "FAIL")
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == killed.number]
    assert retried and killed.params.items() <= retried[0].params.items()  # re-run with its parameters
    assert len({t.user_attrs["arch_id"] for t in complete}) == 4  # a resumed sampler does not replay


@pytest.fixture(scope="module")
def postgres():
    from tests.pg import PostgresServer

    server = PostgresServer()
    why = server.start()
    if why:
        server.stop()
        pytest.skip(f"no PostgreSQL server could be started: {why}")
    yield server.url
    server.stop()


@pytest.mark.slow
def test_two_workers_on_postgres_run_every_trial_exactly_once(tmp_path, small_data, postgres):
    """Two workers on one PostgreSQL study: the study ends with exactly the requested number
    of COMPLETE trials, nothing is left RUNNING, and no arch is trained twice. "Exactly once"
    as ``nasctl.search.study`` means it: a worker that starts a trial past the target stops
    before any work (PRUNED, ``surplus``, no parameters drawn); an arch reached again is not
    trained again but reuses its trained twin (``duplicate_of``); the enqueued baseline is
    taken by one worker only."""
    out = tmp_path / "run"
    args = [*_search_args(out, small_data, 4), "--storage", postgres, "--workers", "2", "--no-measure", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="mobilenetv2_32-multishot", storage=postgres)
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert all(s in ("COMPLETE", "PRUNED") for s in states), states  # none left RUNNING (nor failed)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4, states  # the target, not one more
    for t in trials:
        if t.state.name == "PRUNED":  # surplus: stopped before it drew parameters or trained
            assert t.user_attrs.get("surplus") and not t.params and "arch_id" not in t.user_attrs, t.number
    # every complete trial was costed and scored: trained here or reusing a trained twin
    assert all(t.user_attrs["feasible"] and t.user_attrs["trained"] for t in complete)  # no budgets in this run
    by_number = {t.number: t for t in complete}
    trained = [t for t in complete if "duplicate_of" not in t.user_attrs]
    arch_ids = [t.user_attrs["arch_id"] for t in trained]
    assert len(set(arch_ids)) == len(arch_ids), arch_ids  # no arch trained by both workers
    assert len({tuple(sorted(t.params.items())) for t in trained}) == len(trained)  # nor one parameter set
    for t in complete:
        if "duplicate_of" in t.user_attrs:
            twin = by_number[t.user_attrs["duplicate_of"]]
            assert "duplicate_of" not in twin.user_attrs and twin.user_attrs["arch_id"] == t.user_attrs["arch_id"]
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]  # the baseline ran once
    workers = {t.user_attrs["worker"] for t in complete}
    assert workers == {0, 1}, workers  # both workers did trials


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # the orphan is made with ask()
def test_a_trial_orphaned_before_its_first_heartbeat_is_failed(tmp_path, small_data):
    from nasctl.search.study import fail_orphans

    study = open_study(_cfg(tmp_path, small_data))
    orphan = study.ask()  # RUNNING, no parameters, no heartbeat: as if killed right here
    assert fail_orphans(study, grace_s=60) == []  # too young to judge
    assert fail_orphans(study, grace_s=0) == [orphan.number]
    assert study.trials[0].state.name == "FAIL"
