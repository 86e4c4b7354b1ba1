"""Measurement on a noisy machine (adaptive repeats, the reference network, the noise
figure), the derived kernel features, and ``measure --quick`` (adapting an estimator)."""

import csv
import json
import time
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.latency import measure as measure_mod
from nasctl.latency.adapt import corrections, expected_error
from nasctl.latency.api import estimate_onnx
from nasctl.latency.estimator import (
    LatencyEstimator,
    MeasurementTable,
    accuracy_metrics,
    profiler_node_cost,
    read_measurements,
)
from nasctl.latency.features import DERIVED, FEATURES, OP_CODES, network_weights, with_derived
from nasctl.latency.kernels import kernels_from_arch
from nasctl.latency.measure import NoiseMonitor, measure, median_ci, timed_runs
from nasctl.nn.export import export_onnx
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE

runner = CliRunner()


class _FakeSession:
    """``run`` busy-waits for the next of ``durations_ms`` (cycled)."""

    def __init__(self, durations_ms):
        self.durations, self.calls = list(durations_ms), 0

    def run(self, *_):
        d = self.durations[self.calls % len(self.durations)] / 1e3
        self.calls += 1
        end = time.perf_counter() + d
        while time.perf_counter() < end:
            pass


def test_median_ci_is_distribution_free():
    assert median_ci(np.ones(50)) == 0.0
    assert median_ci(np.ones(3)) == float("inf")  # too few runs to say
    rng = np.random.default_rng(0)
    wide = median_ci(1 + rng.exponential(1.0, 200))
    narrow = median_ci(1 + rng.exponential(0.01, 200))
    assert narrow < 0.01 < wide
    # an outlier does not move it (order statistics, not the standard deviation)
    x = 1 + rng.exponential(0.01, 200)
    assert median_ci(np.append(x, 1e6)) == pytest.approx(median_ci(x), rel=0.2)


def test_repeats_adapt_to_the_noise():
    steady = _FakeSession([0.3])
    assert len(timed_runs(steady, {}, target_ci=0.05, max_runs=200)) == 10  # known at once
    noisy = _FakeSession([0.2, 0.2, 1.5, 0.3, 2.5, 0.2, 0.9])
    runs = timed_runs(noisy, {}, target_ci=0.01, max_runs=60, max_s=10)
    assert len(runs) == 60  # never converges: the cap stops it
    runs = timed_runs(_FakeSession([0.2, 3.0, 0.2, 0.4]), {}, target_ci=0.01, max_runs=10_000, max_s=0.05)
    assert 10 <= len(runs) < 10_000  # the time cap too


def _monitor(bursts):
    m = NoiseMonitor.__new__(NoiseMonitor)
    m.bursts, m.pairs = list(bursts), []
    return m


def test_noise_figures_and_unsteady_networks():
    quiet = _monitor([1.0, 1.01, 0.99, 1.0, 1.02, 0.98] * 3).figure()
    assert quiet["noise_pct"] < 2.5 and quiet["bursts"] == 18
    loud = _monitor([1.0, 1.6, 0.9, 1.3, 1.0, 2.0, 1.1, 0.95, 1.4, 1.0]).figure()
    assert loud["noise_pct"] > 20
    m = _monitor([1.0] * 9)
    assert m.around(1.0, 1.3) == (pytest.approx(1.15), True)  # the speed changed meanwhile
    assert m.around(1.3, 1.35) == (pytest.approx(1.325), False)  # slow, but steady: rescaled
    assert m.figure()["short_term_pct"] == pytest.approx(100 * (0.3 / 1.15 + 0.05 / 1.325) / 2)


@pytest.fixture
def space_only(monkeypatch):
    """Measure only samples of the default space (small, fast networks)."""
    monkeypatch.setattr(measure_mod, "STREAM_SHARES", {"space": 1.0, "random": 0.0, "zoo": 0.0})
    return [DEFAULT_SPACE]


def test_measure_rescales_to_the_reference_speed_and_remeasures_unsteady_networks(tmp_path, monkeypatch, space_only):
    """A loud machine: after the three opening bursts, every other reference burst runs
    30% slow, so each network's speed changes during its measurement: it is measured
    again, its rows are rescaled by the run's median reference time over its bursts'
    mean, and the run warns with the noise figures."""
    real_burst = NoiseMonitor.burst
    calls = [0]

    def burst(self):
        calls[0] += 1
        real_burst(self)
        if calls[0] > 1:  # the opening three at the first's speed, then alternating
            self.bursts[-1] = self.bursts[0] * (1 + 0.3 * (calls[0] % 2) * (calls[0] > 3))
        return self.bursts[-1]

    monkeypatch.setattr(NoiseMonitor, "burst", burst)
    out = tmp_path / "m.csv"
    with pytest.warns(RuntimeWarning, match=r"this machine is noisy: .*\+-\d+\.\d% .*against a 5% target"):
        meta = measure(out, device="cpu", time_budget=60, max_networks=3, space_files=space_only)
    noise = meta["noise"]
    assert noise["remeasured_networks"] == 3 and noise["unsteady_networks"] == 3 and noise["too_noisy"]
    assert noise["bursts"] == 3 + 2 * 2 * 3 and noise["noise_pct"] > 5 and noise["short_term_pct"] > 20
    assert json.loads(out.with_suffix(".meta.json").read_text())["noise"] == noise
    rows = list(csv.DictReader(out.open()))
    speed = noise["rescaled_to_reference_ms"]
    for r in rows:
        factor = speed / float(r["reference_ms"])
        assert float(r["latency_ms"]) == pytest.approx(float(r["latency_raw_ms"]) * factor, rel=1e-9)
        assert float(r["latency_p10_ms"]) <= float(r["latency_p90_ms"])
    # bursts: three of b, then b and 1.3 b alternating: the median is b, each network's mean 1.15 b
    assert {round(speed / float(r["reference_ms"]), 4) for r in rows} == {round(1 / 1.15, 4)}
    assert len(read_measurements([out])) > 10
    # the profiled onnxruntime nodes: at least one per kernel row, the network's total on its row
    for m in {r["model_id"] for r in rows}:
        kernel_nodes = [int(r["n_nodes"]) for r in rows if r["model_id"] == m and r["op"] != "model"]
        (model,) = [r for r in rows if r["model_id"] == m and r["op"] == "model"]
        assert min(kernel_nodes) >= 1 and int(model["n_nodes"]) == sum(kernel_nodes)


def test_quiet_measure_does_not_warn(tmp_path, space_only, monkeypatch):
    monkeypatch.setattr(NoiseMonitor, "burst", lambda self: self.bursts.append(1.0) or 1.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        meta = measure(tmp_path / "m.csv", device="cpu", time_budget=60, max_networks=2, space_files=space_only)
    assert meta["noise"]["noise_pct"] == 0 and not meta["noise"]["too_noisy"]
    assert meta["noise"]["rescale_p10"] == meta["noise"]["rescale_p90"] == 1.0
    assert meta["noise"]["remeasured_networks"] == 0


def test_profiled_nodes_that_onnxruntime_rewrote_reach_their_kernels(tmp_path):
    """Nodes onnxruntime renames when it rewrites the graph are charged to the kernel they
    came from, not to the next one: a Gemm + ReLU fused (``fused X``), x * sigmoid(x)
    fused (``X/QuickGeluFusion/``) and a batch norm standing alone (``X_bn_nchwc``)."""
    import torch
    from torch import nn

    from nasctl.latency.kernels import kernels_from_onnx
    from nasctl.latency.measure import node_name_candidates, profile_kernels
    from nasctl.nn.export import export_module, randomize_batchnorm

    assert node_name_candidates("fused /head/Gemm_kernel_time")[0] == "/head/Gemm"
    assert "/a/act/Mul" in node_name_candidates("/a/act/Mul/QuickGeluFusion/_kernel_time")
    assert "/b/BN_output_0" in node_name_candidates("/b/BN_output_0_bn_nchwc_kernel_time")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.SiLU(),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    path = tmp_path / "net.onnx"
    export_module(randomize_batchnorm(net.eval(), 0), (1, 3, 32, 32), path)
    ks = kernels_from_onnx(path)
    med, _, _, unmatched, _, counts, _ = profile_kernels(path, ks, max_s=0.2, tmpdir=str(tmp_path))
    seen = [(k.op, k.act, int(c)) for k, c in zip(ks, counts, strict=True)]
    fcs = [i for i, k in enumerate(ks) if k.op == "fc"]
    assert len(fcs) == 2 and all(med[i] > 0 and counts[i] == 1 for i in fcs), seen
    # conv + SiLU: the conv and the fused activation; the batch norm, run as a conv with
    # the ReLU after it folded in (so the act kernel ran as no node of its own); the 1x1 conv
    assert [k.op for k in ks[:4]] == ["conv", "mul", "act", "conv"]
    assert list(counts[:4]) == [2, 1, 0, 1], seen
    assert unmatched < 0.5


def test_derived_features_name_the_op_and_memory_traffic():
    X = np.zeros((2, len(FEATURES)))
    col = {f: j for j, f in enumerate(FEATURES)}
    X[:, col["cin"]], X[:, col["cout"]], X[:, col["groups"]] = 64, 32, 4
    X[:, col["in_elements"]], X[:, col["out_elements"]], X[:, col["n_inputs"]] = 1000, 500, 2
    X[:, col["macs"]], X[:, col["bytes"]] = 8000, 4000
    D = with_derived(X, ["concat", "split"])[:, len(FEATURES) :]
    d = dict(zip(DERIVED, D[0], strict=True))
    assert d["op_code"] == OP_CODES["concat"] and D[1, DERIVED.index("op_code")] == OP_CODES["split"]
    assert d["act_bytes"] == 4 * (2 * 1000 + 500)
    assert d["intensity"] == 2.0 and d["macs_per_out"] == 16.0
    assert d["cin_per_group"] == 16 and d["cout_per_group"] == 8


# ---------------------------------------------------------------- measure --quick
def _scaled(table: MeasurementTable, factors: dict[str, float]) -> MeasurementTable:
    """The same networks on a 'machine' where each kernel type runs ``factors`` times as long."""
    f = np.array([factors.get(op, 1.2) for op in table.ops])
    y = table.y * f
    sums = {}
    for m, v in zip(table.model_ids, y, strict=True):
        sums[m] = sums.get(m, 0.0) + v
    rows = []
    for r in table.model_rows:
        ratio = r["latency_ms"] / r["kernel_sum_ms"]
        rows.append(r | {"kernel_sum_ms": sums[r["model_id"]], "latency_ms": ratio * sums[r["model_id"]]})
    return MeasurementTable(table.ops, table.X, y, rows, table.device, table.model_ids)


def test_quick_corrections_recover_another_machine(tmp_path, space_only):
    out = tmp_path / "sim.csv"
    measure(out, device="sim-npu", time_budget=60, max_networks=60, seed=5, space_files=space_only)
    table = read_measurements([out])
    est = LatencyEstimator().fit(table, folds=0)
    other = _scaled(table, {"conv": 1.6, "dwconv": 0.7})
    fitted = corrections(est, other)
    g = fitted["groups"]
    assert g["conv"]["shift"] == pytest.approx(np.log(1.6), abs=0.05)
    assert g["dwconv"]["shift"] == pytest.approx(np.log(0.7), abs=0.05)
    err = expected_error(est, other)
    assert err["networks"] >= 30
    assert err["unadapted"]["mape"] > 15 and err["adapted"]["mape"] < err["unadapted"]["mape"] / 3


def _profiled(table: MeasurementTable, cost_ms: float, seed: int = 0) -> MeasurementTable:
    """``table``'s networks as onnxruntime's profiler reports them: every kernel row holds
    1 or 2 nodes, in half the networks 1 to 8 (a shuffle network's shape arithmetic), and
    its time grows by ``cost_ms`` per node; the wall times (whole-model rows) are the
    kernels' own plus a runtime cost of ``cost_ms / 3`` per kernel."""
    rng = np.random.default_rng(seed)
    heavy = {m: rng.random() < 0.5 for m in sorted(set(table.model_ids))}
    nodes = np.array([1 + rng.integers(0, 8 if heavy[m] else 2) for m in table.model_ids], dtype=float)
    y = table.y + cost_ms * nodes
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for m, v, n in zip(table.model_ids, y, nodes, strict=True):
        sums[m], counts[m] = sums.get(m, 0.0) + v, counts.get(m, 0.0) + n
    rows = [
        r
        | {
            "kernel_sum_ms": sums[r["model_id"]],
            "n_nodes": counts[r["model_id"]],
            "latency_ms": r["latency_ms"] + cost_ms / 3 * r["n_kernels"],
        }
        for r in table.model_rows
    ]
    return MeasurementTable(table.ops, table.X, y, rows, table.device, table.model_ids, nodes)


def _network_mape(est: LatencyEstimator, table: MeasurementTable) -> float:
    ids = np.array(table.model_ids)
    pred, true = [], []
    for r in table.model_rows:
        idx = np.flatnonzero(ids == r["model_id"])
        ms = est.predict_rows([table.ops[i] for i in idx], table.X[idx])
        pred.append(float(est._total(ms.sum(), len(idx))))
        true.append(r["latency_ms"])
    return accuracy_metrics(np.array(pred), np.array(true))["mape"]


def test_the_profilers_per_node_cost_is_taken_off_kernel_times(tmp_path, space_only):
    """Networks whose kernels hold many profiled nodes read slow in the profiler and run
    at their kernels' own cost: the fit reads the per-node cost off the whole-model rows,
    learns kernel times without it, and estimates the networks' wall time; a fit blind to
    the node counts (CSVs from before they were recorded) cannot. ``--quick`` on the same
    machine then finds nothing to correct."""
    out = tmp_path / "sim.csv"
    measure(out, device="sim-npu", time_budget=60, max_networks=60, seed=5, space_files=space_only)
    table = read_measurements([out])
    cost = 0.5 * float(np.median(table.y))
    profiled = _profiled(table, cost)
    est = LatencyEstimator().fit(profiled, folds=0)
    assert est.meta["overhead"]["profiler"]["per_extra_node_ms"] == pytest.approx(cost, rel=0.05)
    blind = LatencyEstimator().fit(replace(profiled, nodes=None), folds=0)
    aware, unaware = _network_mape(est, profiled), _network_mape(blind, profiled)
    assert aware < 5 and unaware > 3 * aware, (aware, unaware)
    groups = corrections(est, profiled)["groups"]
    assert all(abs(g["shift"]) < 0.1 for g in groups.values() if g["n"] >= 20), groups
    few = replace(profiled, model_rows=profiled.model_rows[:10])
    assert profiler_node_cost(few) == {"per_extra_node_ms": 0.0, "n": 10}


def test_cli_measure_quick_adapts_the_shipped_estimator(tmp_path, monkeypatch):
    """The whole command on this CPU, with a tiny budget: an adapted estimator is
    written, describes this machine (estimate no longer warns), and keeps the original."""
    out = tmp_path / "here.json.gz"
    r = runner.invoke(app, ["measure", "--quick", "--time-budget", "8", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["networks"] >= 2 and report["seconds"] < 60 and "noise_pct" in report["noise"]
    est = LatencyEstimator.load(out)
    assert est.meta["adaptation"]["groups"]["*"]["n"] > 0
    assert est.meta["adapted_from"]["source"] == "cpu"
    onnx_path = export_onnx(SearchSpace.load(DEFAULT_SPACE).sample(0), tmp_path / "m.onnx")
    r = runner.invoke(app, ["estimate", str(onnx_path), "--estimator", str(out), "--json"])
    assert r.exit_code == 0, r.output
    out_json = json.loads(r.output)
    assert not any("another machine" in w for w in out_json["warnings"])
    assert out_json["estimator"]["adapted"]["from"] == "cpu"
    adapted = estimate_onnx(onnx_path, est).latency_ms
    plain = estimate_onnx(onnx_path, LatencyEstimator.load(_shipped())).latency_ms
    assert adapted != pytest.approx(plain, rel=1e-6)
    r = runner.invoke(app, ["measure", "--quick", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "--quick writes an estimator" in r.output
    r = runner.invoke(app, ["measure", "--quick", "--estimator", str(tmp_path / "none.json"), "--out", str(out)])
    assert r.exit_code == 2 and "no such estimator file" in r.output and "measuring" not in r.output


def _shipped():
    from nasctl.latency.api import estimator_path

    return estimator_path("cpu")


def test_estimate_measure_rescales_to_the_estimators_reference_speed(tmp_path, monkeypatch):
    """--measure also times the reference network: the measurement rescaled to the speed
    the estimator's rows were rescaled to is reported beside the raw one."""
    est = LatencyEstimator.load(_shipped())
    est.meta["device"] = est.meta["device"] | {"reference_ms": 1.5}
    path = est.save(tmp_path / "e.json")
    monkeypatch.setattr("nasctl.latency.measure.reference_time", lambda threads=1, bursts=3: 2.0)
    onnx_path = export_onnx(SearchSpace.load(DEFAULT_SPACE).sample(0), tmp_path / "m.onnx")
    r = runner.invoke(app, ["estimate", str(onnx_path), "--estimator", str(path), "--measure", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["reference_now_ms"] == 2.0 and out["reference_estimator_ms"] == 1.5
    assert out["measured_at_reference_speed_ms"] == pytest.approx(out["measured_ms"] * 0.75)
    expected = (out["latency_ms"] / (out["measured_ms"] * 0.75) - 1) * 100
    assert out["error_at_reference_speed_pct"] == pytest.approx(expected)
    r = runner.invoke(app, ["estimate", str(onnx_path), "--estimator", str(path), "--measure"])
    assert r.exit_code == 0 and "at the estimator's reference speed" in r.output and "0.75x as fast" in r.output


def test_the_networks_weight_size_is_a_feature(tmp_path, space_only):
    """A 'CPU' on which every kernel of a network with small weights runs 30% faster (its
    working set stays cached between runs): the same kernel costs different times in
    different networks, which the kernel's own features cannot tell apart. With the
    network's weight size as a feature the networks are predicted within a few percent;
    without it, not. The feature is each network's own in a batch, and survives a save."""
    out = tmp_path / "sim.csv"
    measure(out, device="sim-npu", time_budget=60, max_networks=80, seed=7, space_files=space_only)
    table = read_measurements([out])
    weights = network_weights(table.X, table.model_ids)
    small = weights < np.median(weights)
    y = table.y * np.where(small, 0.7, 1.0)
    sums: dict[str, float] = {}
    for m, v in zip(table.model_ids, y, strict=True):
        sums[m] = sums.get(m, 0.0) + v
    rows = [r | {"kernel_sum_ms": sums[r["model_id"]], "latency_ms": sums[r["model_id"]]} for r in table.model_rows]
    cached = MeasurementTable(table.ops, table.X, y, rows, table.device, table.model_ids)

    nets = sorted(set(table.model_ids))
    train, held = cached.subset(set(nets[::2])), cached.subset(set(nets[1::2]))
    aware = LatencyEstimator().fit(train, folds=0)
    blind = LatencyEstimator().fit(train, folds=0, context=False)
    assert aware.context and not blind.context
    assert _network_mape(aware, held) < 4 < 2 * 4 < _network_mape(blind, held)

    ids = sorted(set(table.model_ids), key=lambda m: weights[table.model_ids.index(m)])
    lo, hi = (np.flatnonzero(np.array(table.model_ids) == m) for m in (ids[0], ids[-1]))
    one = aware.predict_rows([table.ops[i] for i in lo], table.X[lo])
    both = aware.predict_rows(
        [table.ops[i] for i in [*lo, *hi]], table.X[[*lo, *hi]], networks=[ids[0]] * len(lo) + [ids[-1]] * len(hi)
    )
    assert np.allclose(both[: len(lo)], one)
    # kernel lists (estimate, search): a batch gives each network its own weight size
    space = SearchSpace.load(DEFAULT_SPACE)
    rng = np.random.default_rng(0)
    lists = [kernels_from_arch(space.sample(rng)) for _ in range(6)]
    alone = [float(aware._total(aware.predict_kernels(ks).sum(), len(ks))) for ks in lists]
    assert np.allclose(aware.predict_many(lists), alone)
    ks = lists[0]
    as_big = aware.predict_kernels(ks, nets=np.full(len(ks), 2**10.0))
    assert not np.allclose(as_big, aware.predict_kernels(ks))
    path = aware.save(tmp_path / "est.json.gz")
    again = LatencyEstimator.load(path)
    assert again.context and np.allclose(again.predict_rows([table.ops[i] for i in lo], table.X[lo]), one)
    assert np.allclose(again.predict_many(lists), alone)
