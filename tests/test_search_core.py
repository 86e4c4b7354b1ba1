"""The search framework: a strategy is one class registered in one place and runs through
the shared core (study, constraints, records, outputs); errors inside a trial; options
that do nothing are refused; the public API."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

import nasctl
from nasctl.cli import app
from nasctl.errors import NasctlError
from nasctl.search import (
    STRATEGIES,
    Column,
    Scorer,
    Strategy,
    make_config,
    prepare,
    register_strategy,
    run_search,
    write_outputs,
)
from nasctl.search.study import Evaluator, open_study
from tests.conftest import DEFAULT_SPACE, ROOT

runner = CliRunner()


class SmallIsGood:
    """A cheap stand-in scorer: fewer parameters score higher. It fails, on purpose, on
    archs whose id starts with a chosen hex digit (``fail_on``), with ``error``."""

    objective = "score"
    label = "1 / (1 + params / 1e5)"
    worst = 0.0
    columns = (Column("score", "score"),)
    metrics = ("score", "calls")
    recoverable = (FloatingPointError,)
    fail_on: tuple[str, type[Exception]] | None = None

    def __call__(self, arch, progress=None):
        if self.fail_on and arch.id.startswith(self.fail_on[0]):
            raise self.fail_on[1](f"planted failure on {arch.id}")
        params = sum(b.in_channels * b.out_channels for b in arch.blocks)
        return {"score": 1.0 / (1.0 + params / 1e5), "calls": 1}


@pytest.fixture
def toy_strategy():
    @register_strategy
    class Toy:
        name = "toy"
        summary = "random proposals scored by size (a test strategy)"
        scorer_type = SmallIsGood

        def validate(self, cfg, space):
            if cfg.data != "digits":
                raise NasctlError("toy takes no data")

        def sampler(self, cfg, seed):
            return optuna.samplers.RandomSampler(seed=seed)

        def scorer(self, cfg, space):
            return SmallIsGood()

    yield Toy
    STRATEGIES.pop("toy")
    SmallIsGood.fail_on = None


def test_a_registered_strategy_runs_through_the_shared_core(tmp_path, toy_strategy):
    assert isinstance(toy_strategy(), Strategy) and isinstance(SmallIsGood(), Scorer)
    cfg = make_config(DEFAULT_SPACE, strategy="toy", out=tmp_path / "run", trials=6, latency_budget_ms=0.45)
    assert cfg.objectives.names == ("score", "latency_ms")  # the strategy's score by default
    prepare(cfg)
    run_search(cfg, prepared=True)
    res = write_outputs(cfg, measure=False)
    assert res.counts["complete"] == 6 and res.baseline is not None and res.baseline.number == 0
    for f in ("trials.csv", "pareto.json", "pareto.png", "report.md", "search.json"):
        assert (tmp_path / "run" / f).is_file(), f
    with open(tmp_path / "run" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and "score" in rows[0] and "accuracy" not in rows[0]
    scored = [r for r in res.complete if r.trained]
    assert scored and all(r.latency_ms <= 0.45 for r in scored)  # the shared constraint held
    assert all(r.feasible is False and r.score("score") == 0.0 for r in res.complete if r.latency_ms > 0.45)
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert {p["number"] for p in pareto["pareto"]} == {r.number for r in res.pareto}
    assert all("score" in p for p in pareto["pareto"])
    assert "| score |" in (tmp_path / "run" / "report.md").read_text()


def test_unknown_strategy_lists_the_registered_ones(tmp_path, toy_strategy):
    r = runner.invoke(app, ["search", str(DEFAULT_SPACE), "--strategy", "nope", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "unknown strategy 'nope'" in r.output and "multishot:" in r.output and "toy:" in r.output


def test_the_score_objective_must_be_the_strategys(tmp_path, toy_strategy):
    cfg = make_config(DEFAULT_SPACE, strategy="toy", out=tmp_path / "run", objectives="accuracy,latency_ms")
    with pytest.raises(NasctlError, match="unknown objective 'accuracy' for the toy strategy"):
        prepare(cfg)


def test_population_with_the_random_sampler_is_refused(tmp_path):
    r = runner.invoke(
        app, ["search", str(DEFAULT_SPACE), "--sampler", "random", "--population", "4", "--out", str(tmp_path / "r")]
    )
    assert r.exit_code == 2 and "random sampler has none" in r.output, r.output


def _run_one(tmp_path, params_seed=0):
    cfg = make_config(DEFAULT_SPACE, strategy="toy", out=tmp_path / "run", trials=1)
    prepare(cfg)
    study = open_study(cfg)
    return cfg, study


def test_a_recoverable_error_is_a_failed_trial_with_its_traceback(tmp_path, toy_strategy):
    cfg, study = _run_one(tmp_path)
    arch_id = nasctl.SearchSpace.load(DEFAULT_SPACE).baseline().id
    SmallIsGood.fail_on = (arch_id[0], FloatingPointError)
    study.optimize(Evaluator(cfg), n_trials=1, catch=SmallIsGood.recoverable)
    t = study.trials[0]
    assert t.state.name == "FAIL"
    assert "FloatingPointError: planted failure" in t.user_attrs["error"] and "bug" not in t.user_attrs
    res = write_outputs(cfg, measure=False)
    assert res.records[0].error and "planted failure" in (tmp_path / "run" / "report.md").read_text()


def test_a_bug_in_a_scorer_stops_the_search_and_is_marked(tmp_path, toy_strategy):
    cfg, study = _run_one(tmp_path)
    arch_id = nasctl.SearchSpace.load(DEFAULT_SPACE).baseline().id
    SmallIsGood.fail_on = (arch_id[0], KeyError)  # not recoverable: nasctl's own bug
    with pytest.raises(KeyError):
        run_search(cfg, prepared=True)
    t = open_study(cfg).trials[0]
    assert t.state.name == "FAIL" and t.user_attrs["bug"] is True
    assert "Traceback" in t.user_attrs["error"] and "KeyError" in t.user_attrs["error"]


def test_multishot_catches_only_what_data_or_divergence_produce():
    from nasctl.contrastive import TrainingDiverged

    scorer = nasctl.STRATEGIES["multishot"].scorer_type
    assert scorer.recoverable == (TrainingDiverged,)


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has a Python example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, executed as written (from the checkout root, as a
    reader would after `make install`), on a run folder of this test's own."""
    code = _readme_python()
    monkeypatch.chdir(ROOT)
    code = code.replace('"runs/api-demo"', repr(str(tmp_path / "api-demo")))
    assert str(tmp_path) in code, "the example writes its search to runs/api-demo"
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    est, result = namespace["est"], namespace["result"]
    assert isinstance(est, nasctl.Estimate) and est.latency_ms > 0 and est.params > 0 and est.kernels
    assert isinstance(result, nasctl.SearchResult) and result.pareto
    assert (tmp_path / "api-demo" / "report.md").is_file()


def test_estimate_takes_an_arch_a_string_a_file_and_onnx(tmp_path):
    from nasctl.nn.export import export_onnx

    arch = nasctl.SearchSpace.load(DEFAULT_SPACE).sample(3)
    by_arch = nasctl.estimate(arch)
    assert nasctl.estimate(arch.to_string()).latency_ms == by_arch.latency_ms
    assert nasctl.estimate(arch.save(tmp_path / "a.json")).latency_ms == by_arch.latency_ms
    by_onnx = nasctl.estimate(export_onnx(arch, tmp_path / "a.onnx"))
    assert by_onnx.params == by_arch.params
    assert np.isclose(by_onnx.latency_ms, by_arch.latency_ms, rtol=1e-6)
    with pytest.raises(NasctlError):
        nasctl.estimate(tmp_path / "missing.onnx")


def test_import_nasctl_is_light():
    import subprocess
    import sys

    code = "import nasctl, sys; assert not {'torch', 'optuna'} & set(sys.modules); print(nasctl.__version__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(ROOT))
    assert r.returncode == 0, r.stderr


def test_nasctl_search_is_the_function_even_after_the_package_is_imported(tmp_path, toy_strategy):
    import nasctl.search.study  # noqa: F401  (Python binds nasctl.search to the subpackage)

    res = nasctl.search(DEFAULT_SPACE, strategy="toy", trials=2, out=tmp_path / "run", measure=False)
    assert isinstance(res, nasctl.SearchResult) and res.counts["complete"] == 2
