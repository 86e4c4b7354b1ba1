"""Kernel IR, simulator, memory, estimator and the measure / fit / estimate commands."""

import csv
import gzip
import json

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from nasctl import zoo
from nasctl.cli import app
from nasctl.errors import NasctlError
from nasctl.latency.api import estimate_archs, estimate_onnx
from nasctl.latency.estimator import LatencyEstimator, MeasurementTable, accuracy_metrics, read_measurements
from nasctl.latency.features import FEATURES, kernel_row
from nasctl.latency.kernels import Kernel, _Graph, kernels_from_arch, kernels_from_graph, kernels_from_onnx, load_onnx
from nasctl.latency.measure import CSV_COLUMNS, measure
from nasctl.latency.memory import memory_from_arch, memory_from_graph, memory_from_onnx
from nasctl.latency.simulator import SimNPU
from nasctl.nn.blocks import ConvBNAct
from nasctl.nn.export import export_module, export_onnx
from nasctl.space import SearchSpace
from nasctl.zoo import FireModule, ResBlock, ShuffleBlock, SqueezeExcite
from tests.conftest import DEFAULT_SPACE, SHIPPED

runner = CliRunner()
# zoo models whose ONNX holds SE + SiLU, Clip, a runtime-shaped channel shuffle
ZOO_SAMPLE = ("efficientnet_b0", "mobilenet_v2", "shufflenet_v2")


@pytest.fixture(scope="module")
def sim_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "sim.csv"
    measure(path, device="sim-npu", time_budget=60, max_networks=40, seed=3)
    return path


@pytest.fixture(scope="module")
def sim_estimator(sim_csv, tmp_path_factory):
    est = LatencyEstimator().fit(read_measurements([sim_csv]), folds=2, quantiles=True)
    path = tmp_path_factory.mktemp("est") / "sim.json"
    est.save(path)
    return path


# ---------------------------------------------------------------- kernel IR
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_both_ir_paths_agree(path, tmp_path):
    space = SearchSpace.load(path)
    for seed in range(3):
        arch = space.sample(seed) if seed else space.baseline()
        heads = ["classifier", "features"] + (["embedding"] if arch.embedding_dim else [])
        for head in heads:
            onnx_path = export_onnx(arch, tmp_path / f"{seed}{head}.onnx", head=head)
            from_arch = kernels_from_arch(arch, head)
            from_onnx = kernels_from_onnx(onnx_path)
            assert [k.key() for k in from_arch] == [k.key() for k in from_onnx]
            # and memory agrees too
            assert memory_from_arch(arch, from_arch) == memory_from_onnx(onnx_path, from_onnx)


def test_conv_absorbs_bn_activation_and_residual(tmp_path):
    arch = SearchSpace.load(DEFAULT_SPACE).baseline()
    ks = kernels_from_onnx(export_onnx(arch, tmp_path / "b.onnx"))
    assert {k.op for k in ks} == {"conv", "dwconv", "gap", "reshape", "fc"}
    assert all(k.act == "relu6" for k in ks if k.op == "dwconv")
    assert sum(k.residual for k in ks) == sum(b.residual for b in arch.blocks)


class _Coverage(nn.Module):
    """A net with the zoo's operators: SE (hard-sigmoid), hard-swish, SiLU, shuffle,
    concat, split, max / avg pool, grouped conv, residual + ReLU, a 2-layer classifier."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act="hswish")
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.se_block = nn.Sequential(ConvBNAct(16, 32, 1, act="silu"), SqueezeExcite(32, 8, "relu", "hsigmoid"))
        self.shuffle = ShuffleBlock(32, 32, 1)
        self.fire = FireModule(32, 8, 16)
        self.gconv = ConvBNAct(32, 32, 3, 1, groups=4, act="relu")
        self.basic = ResBlock(32, 32, 1, bottleneck=False)
        self.avg = nn.AvgPool2d(2, 2)
        self.head = nn.Sequential(nn.Linear(32, 64), nn.Hardswish(), nn.Linear(64, 10))

    def forward(self, x):
        x = self.basic(self.gconv(self.fire(self.shuffle(self.se_block(self.pool(self.stem(x)))))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.avg(x), 1), 1))


def test_onnx_coverage_of_common_operators(tmp_path):
    path = export_module(_Coverage(), (1, 3, 64, 64), tmp_path / "cov.onnx")
    ks = kernels_from_onnx(path)
    ops = {k.op for k in ks}
    assert {"conv", "dwconv", "gconv", "maxpool", "avgpool", "se", "shuffle", "concat", "split", "gap", "fc"} <= ops
    assert "unknown" not in ops
    acts = {k.act for k in ks}
    assert {"hswish", "silu", "relu"} <= acts
    se = next(k for k in ks if k.op == "se")
    assert se.hidden == 8 and se.in_shape == (32, 16, 16)
    assert any(k.residual and k.act == "relu" for k in ks)  # ResNet: conv + add + relu in one kernel


def _handmade_model():
    """Initializers read as values next to weights: Conv (a weight) -> Clip(0, 6) with
    initializer bounds -> Pad -> Resize (scales) -> Slice -> Mul by a large constant ->
    Reshape (shape initializer) -> MatMul (a weight). Built with onnx.helper: no torch."""
    rng = np.random.default_rng(0)
    values = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "starts": np.array([0, 0], np.int64),
        "ends": np.array([16, 16], np.int64),
        "axes": np.array([2, 3], np.int64),
        "big": rng.standard_normal((1, 8, 16, 16)).astype(np.float32),
        "flat": np.array([1, -1], np.int64),
        "fc": rng.standard_normal((2048, 10)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["a"]),
        helper.make_node("Pad", ["a", "pads"], ["p"]),
        helper.make_node("Resize", ["p", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("Slice", ["r", "starts", "ends", "axes"], ["s"]),
        helper.make_node("Mul", ["s", "big"], ["m"]),
        helper.make_node("Reshape", ["m", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, name) for name, v in values.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_inference_without_weights_changes_nothing(tmp_path):
    """The fast path (shape inference on a copy without the weights, constants converted
    only when read as values) gives exactly the kernels, names, shapes and memory of
    shape inference over the whole model."""
    models = [zoo.export(n, tmp_path / f"{n}.onnx", resolution=32, width=0.25) for n in ZOO_SAMPLE]
    models += [export_module(_Coverage(), (1, 3, 64, 64), tmp_path / "cov.onnx"), _handmade_model()]
    for path_or_model in models:
        model = load_onnx(path_or_model)
        fast, full = _Graph(model), _Graph(model, full_inference=True)
        assert fast.shape == full.shape and fast.is_float == full.is_float
        ks_fast, ks_full = kernels_from_graph(fast), kernels_from_graph(full)
        assert [(k.key(), k.batch, k.onnx_op, k.name, k.nodes, k.tensors) for k in ks_fast] == [
            (k.key(), k.batch, k.onnx_op, k.name, k.nodes, k.tensors) for k in ks_full
        ]
        assert memory_from_graph(fast, ks_fast) == memory_from_graph(full, ks_full)
        # weights are read by shape only: just the small value tensors became numpy arrays
        assert all(a.size <= 64 for a in fast.const._arrays.values())
    ks = kernels_from_graph(_Graph(_handmade_model()))
    assert [k.op for k in ks] == ["conv", "pad", "unknown", "split", "mul", "reshape", "fc"]
    assert ks[0].act == "relu6" and ks[2].out_shape == (8, 20, 20) and ks[3].out_shape == (8, 16, 16)


def test_unknown_op_gets_roofline_estimate_and_warning(tmp_path, sim_estimator):
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ConvBNAct(3, 16, 3, act="relu")

        def forward(self, x):
            return nn.functional.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")

    path = export_module(Up(), (1, 3, 32, 32), tmp_path / "up.onnx")
    est = LatencyEstimator.load(sim_estimator)
    r = estimate_onnx(path, est)
    unknown = [(k, t) for k, t in zip(r.kernels, r.kernel_ms, strict=True) if k.op == "unknown"]
    assert unknown and all(t > 0 for _, t in unknown)
    assert any("Resize" in w and "roofline" in w for w in r.warnings)


# ---------------------------------------------------------------- simulator
def _conv(cin, cout, k=3, hw=32, groups=1, op="conv"):
    return Kernel(
        op,
        (cin, hw, hw),
        (cout, hw, hw),
        k,
        1,
        groups,
        macs=cin // groups * cout * k * k * hw * hw,
        params=cin // groups * cout * k * k,
    )


def test_simulator_depthwise_uses_one_pth_of_the_array():
    sim = SimNPU(parallelism=16, bandwidth_gbs=1e6, overhead_us=0)
    dense = sim.cycles(_conv(64, 64))
    dw = sim.cycles(_conv(64, 64, groups=64, op="dwconv"))
    # dense does 64x more MACs in only 4x the cycles of depthwise: per cycle depthwise does 1/P of the work
    assert dense == 4 * dw
    assert (_conv(64, 64).macs / dense) / (_conv(64, 64, groups=64, op="dwconv").macs / dw) == 16


def test_simulator_wastes_cycles_off_multiples_of_p():
    sim = SimNPU(parallelism=16)
    assert sim.cycles(_conv(17, 32)) == sim.cycles(_conv(32, 32))
    assert sim.cycles(_conv(16, 32)) * 2 == sim.cycles(_conv(17, 32))


def test_simulator_is_deterministic_and_labelled(tmp_path):
    """What ``measure --device sim-npu`` promises: the documented analytical model, not a
    timing (a kernel's latency is the roofline worked out by hand below; the same seed gives
    the same CSV byte for byte), and labelled simulated everywhere (every row, the sidecar)."""
    sim = SimNPU(parallelism=16, clock_ghz=1.0, bandwidth_gbs=25.6, overhead_us=2.0)
    # compute-bound: 3x3 conv 32->32 at 32x32: 32*32 px * 9 taps * ceil(32/16) * ceil(32/16)
    # = 36864 cycles = 36.864 us at 1 GHz; it moves 4 B * (32768 in + 32768 out + 9216 weights)
    # = 299008 B = 11.68 us at 25.6 GB/s; + 2 us launch overhead
    assert sim.latency_ms(_conv(32, 32)) == pytest.approx((36.864 + 2.0) / 1e3, rel=1e-9)
    # memory-bound: ReLU over 64x32x32: ceil(65536 / 16) = 4096 cycles = 4.096 us of compute;
    # 4 B * (65536 in + 65536 out) = 524288 B = 20.48 us; + 2 us
    relu = Kernel("act", (64, 32, 32), (64, 32, 32), act="relu")
    assert sim.latency_ms(relu) == pytest.approx((20.48 + 2.0) / 1e3, rel=1e-9)

    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        meta = measure(tmp_path / f"{name}.csv", device="sim-npu", time_budget=60, max_networks=4, seed=seed)
        assert meta["device"]["simulated"] is True and meta["device"]["device"] == "sim-npu"
        side = json.loads((tmp_path / f"{name}.meta.json").read_text())
        assert side["device"]["simulated"] is True
        runs[name] = (tmp_path / f"{name}.csv").read_bytes()
    assert runs["a"] == runs["b"]  # same seed, same figures: nothing was timed
    assert runs["a"] != runs["c"]  # (another seed, other networks: the comparison has teeth)
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert {r["source"] for r in rows} == {"simulated"}, {r["source"] for r in rows}
    assert all(float(r["latency_std_ms"]) == 0 and r["n_repeats"] == "1" for r in rows)
    # a network's row is the sum of its kernels' simulated latencies
    for r in (r for r in rows if r["op"] == "model"):
        kernels = [float(k["latency_ms"]) for k in rows if k["model_id"] == r["model_id"] and k["op"] != "model"]
        assert float(r["latency_ms"]) == pytest.approx(sum(kernels), rel=1e-9)


def test_fusing_early_blocks_pays_off_on_the_npu():
    """The seed's finding, in shape: fused IBN in the early, narrow stages is faster on a
    parallel array than IBN, although it has more FLOPs."""
    space = SearchSpace.load(DEFAULT_SPACE.parent / "mobilenetv2_224.yaml")
    params = space.baseline_params()
    base = space.resolve(params)
    early = {
        k: ("fused_ibn" if k.endswith(".kind") and k.split(".")[0] in ("s1", "s2", "s3") else v)
        for k, v in params.items()
    }
    fused = space.resolve(early)
    sim = SimNPU(32)
    assert sum(k.macs for k in kernels_from_arch(fused)) > sum(k.macs for k in kernels_from_arch(base))
    assert sim.model_latency_ms(kernels_from_arch(fused)) < sim.model_latency_ms(kernels_from_arch(base))


# ---------------------------------------------------------------- estimator
def test_estimator_round_trip_is_json_not_pickle(sim_estimator, tmp_path):
    text = sim_estimator.read_text()
    data = json.loads(text)
    assert data["schema"] == "nasctl.estimator/1"
    assert all(m.startswith("tree") for m in data["models"].values())
    assert "cv" in data and "ranges" in data and data["device"]["simulated"] is True
    est = LatencyEstimator.load(sim_estimator)
    est.save(tmp_path / "again.json")
    again = LatencyEstimator.load(tmp_path / "again.json")
    ks = kernels_from_arch(SearchSpace.load(DEFAULT_SPACE).sample(11))
    assert est.predict(ks) == pytest.approx(again.predict(ks), rel=1e-12)
    band_lo = est.predict_kernels(ks, "q10").sum()
    band_hi = est.predict_kernels(ks, "q90").sum()
    assert band_lo < band_hi


def test_estimator_learns_the_simulator(sim_estimator):
    est = LatencyEstimator.load(sim_estimator)
    space = SearchSpace.load(DEFAULT_SPACE)
    archs = [space.sample(s) for s in range(100, 140)]
    pred = estimate_archs(archs, est)["latency_ms"]
    true = np.array([SimNPU(16).model_latency_ms(kernels_from_arch(a)) for a in archs])
    m = accuracy_metrics(pred, true)
    assert m["mape"] < 10 and m["spearman"] > 0.9, m
    # the CV report weighs each kernel type: its median time and share of all kernel time
    cv = est.meta["cv"]
    assert sum(c["time_share"] for c in cv.values()) == pytest.approx(1.0, abs=0.02)
    assert cv["conv"]["time_share"] > cv["gap"]["time_share"] and cv["conv"]["median_ms"] > 0
    assert cv["conv"]["mae_ms"] > 0


def test_estimator_scales_kernels_beyond_its_training_range():
    """A conv 4x wider than any measured one (16x the MACs): the group's fitted analytic
    baseline carries the estimate up, where trees alone stay at their largest leaf."""
    rng = np.random.default_rng(0)

    def conv(c: int, hw: int) -> Kernel:
        return Kernel("conv", (c, hw, hw), (c, hw, hw), kernel=3, macs=9 * c * c * hw * hw, params=9 * c * c)

    def truth(k: Kernel) -> float:  # ms: a fixed cost plus MACs at a fixed rate
        return 0.01 + 2e-7 * k.macs

    train = [
        conv(int(c), int(hw)) for c, hw in zip(rng.integers(8, 65, 300), rng.choice([8, 16, 32], 300), strict=True)
    ]
    X = np.array([[kernel_row(k)[f] for f in FEATURES] for k in train], dtype=float)
    y = np.array([truth(k) for k in train]) * np.exp(rng.normal(0.0, 0.02, len(train)))
    est = LatencyEstimator().fit(MeasurementTable(["conv"] * len(train), X, y), folds=0)
    inside, beyond = conv(48, 16), conv(256, 32)
    assert est.predict_kernels([inside])[0] == pytest.approx(truth(inside), rel=0.1)
    assert est.predict_kernels([beyond])[0] == pytest.approx(truth(beyond), rel=0.25)


def test_estimator_load_errors(tmp_path, sim_estimator):
    with pytest.raises(NasctlError, match="no such estimator"):
        LatencyEstimator.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("garbage")
    with pytest.raises(NasctlError, match="not an estimator file"):
        LatencyEstimator.load(bad)
    bad.write_text(json.dumps({"schema": "nasctl.arch/1"}))
    with pytest.raises(NasctlError, match="not an estimator file"):
        LatencyEstimator.load(bad)
    data = json.loads(sim_estimator.read_text())
    data["schema"] = "nasctl.estimator/9"
    bad.write_text(json.dumps(data))
    with pytest.raises(NasctlError, match="not supported"):
        LatencyEstimator.load(bad)
    data["schema"] = "nasctl.estimator/1"
    data["baselines"] = {"conv": {"const": "x"}}
    bad.write_text(json.dumps(data))
    with pytest.raises(NasctlError, match="corrupt estimator baselines"):
        LatencyEstimator.load(bad)


def test_estimator_save_formats(sim_estimator, tmp_path):
    """.json, .json.gz and .xz hold the same estimator; the compressed ones are smaller,
    and saving a loaded estimator again gives the same bytes."""
    est = LatencyEstimator.load(sim_estimator)
    ks = kernels_from_arch(SearchSpace.load(DEFAULT_SPACE).sample(5))
    paths = [est.save(tmp_path / name) for name in ("e.json", "e.json.gz", "e.json.xz")]
    data = json.loads(paths[0].read_text())
    assert not any("split_gain=" in m or "tree_sizes=" in m for m in data["models"].values())
    assert max(p.stat().st_size for p in paths[1:]) < paths[0].stat().st_size / 2
    for path in paths:
        again = LatencyEstimator.load(path)
        assert again.meta == est.meta
        for q in (None, "q10", "q90"):
            assert np.array_equal(again.predict_kernels(ks, q), est.predict_kernels(ks, q))
    assert LatencyEstimator.load(paths[1]).save(tmp_path / "again.json.gz").read_bytes() == paths[1].read_bytes()


def test_compressed_estimator_load_errors(tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(NasctlError, match="not an estimator file"):
        LatencyEstimator.load(bad)
    bad.write_bytes(gzip.compress(b"garbage")[:-6])
    with pytest.raises(NasctlError, match="corrupt compressed estimator file"):
        LatencyEstimator.load(bad)


def _failing_export(every: int):
    """export_module that raises on every ``every``-th call."""
    calls = [0]

    def export(net, shape, path):
        calls[0] += 1
        if calls[0] % every == 0:
            raise RuntimeError(f"unsupported operator #{calls[0]}\nsecond line")
        return export_module(net, shape, path)

    return export


def test_measure_counts_failed_exports(tmp_path, monkeypatch):
    monkeypatch.setattr("nasctl.latency.measure.export_module", _failing_export(3))
    out = tmp_path / "m.csv"
    with pytest.warns(RuntimeWarning, match=r"4 of 12 networks failed to export"):
        meta = measure(out, device="sim-npu", mode="kernels", time_budget=60, max_networks=12)
    assert meta["networks"] == 8 and meta["failed_networks"] == 4
    assert meta["failure_reasons"][0] == "RuntimeError: unsupported operator #3"
    assert len(meta["failure_reasons"]) <= 5
    assert json.loads(out.with_suffix(".meta.json").read_text())["failed_networks"] == 4


def test_measure_fails_when_every_export_fails(tmp_path, monkeypatch):
    monkeypatch.setattr("nasctl.latency.measure.export_module", _failing_export(1))
    out = tmp_path / "m.csv"
    with pytest.raises(NasctlError, match="all 6 networks tried failed to export") as info:
        measure(out, device="sim-npu", mode="kernels", time_budget=60, max_networks=6)
    assert "\n" not in str(info.value) and not out.exists()
    with pytest.raises(NasctlError, match="all 20 networks tried failed"):  # stops early without max_networks
        measure(out, device="sim-npu", mode="kernels", time_budget=600)


def _write_csv(path, rows, columns=CSV_COLUMNS):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def test_measurement_csv_errors(tmp_path, sim_csv):
    rows = list(csv.DictReader(sim_csv.open()))[:30]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(NasctlError, match="empty CSV"):
        read_measurements([empty])
    with pytest.raises(NasctlError, match="no measurement rows"):
        read_measurements([_write_csv(tmp_path / "header.csv", [])])
    cols = [c for c in CSV_COLUMNS if c != "cin"]
    with pytest.raises(NasctlError, match="missing column: cin"):
        read_measurements([_write_csv(tmp_path / "cols.csv", rows, cols)])
    for value, fragment in (
        ("nan", "NaN"),
        ("0", "must be positive"),
        ("-1", "must be positive"),
        ("x", "not a number"),
    ):
        bad = [dict(r) for r in rows]
        bad[5]["latency_ms"] = value
        with pytest.raises(NasctlError, match=fragment):
            read_measurements([_write_csv(tmp_path / "bad.csv", bad)])
    bad = [dict(r) for r in rows]
    bad[3]["macs"] = "nan"
    with pytest.raises(NasctlError, match="macs is NaN"):
        read_measurements([_write_csv(tmp_path / "bad.csv", bad)])
    bad[3]["macs"], bad[4]["n_nodes"] = "1", "two"
    with pytest.raises(NasctlError, match="n_nodes is not a number"):
        read_measurements([_write_csv(tmp_path / "bad.csv", bad)])
    old = read_measurements([_write_csv(tmp_path / "old.csv", rows, [c for c in CSV_COLUMNS if c != "n_nodes"])])
    assert np.isnan(old.node_counts()).all()  # CSVs from before node counts: read, counts unknown


# ---------------------------------------------------------------- CLI
def test_cli_measure_fit_estimate_end_to_end(tmp_path):
    """The real user workflow on this CPU, tiny: measure (onnxruntime) -> fit -> estimate."""
    csv_path = tmp_path / "cpu.csv"
    r = runner.invoke(app, ["measure", "--device", "cpu", "--time-budget", "12", "--out", str(csv_path), "--json"])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.output)
    assert meta["rows"] > 20 and meta["device"]["runtime"].startswith("onnxruntime")
    assert json.loads(csv_path.with_suffix(".meta.json").read_text())["device"]["threads"] == 1
    lat = [float(row["latency_ms"]) for row in csv.DictReader(csv_path.open())]
    assert min(lat) > 0
    est_path = tmp_path / "cpu.json"
    r = runner.invoke(app, ["fit-estimator", str(csv_path), "--out", str(est_path), "--folds", "2"])
    assert r.exit_code == 0, r.output
    assert "cross-validation" in r.output and "median" in r.output
    assert "whole network =" in r.output  # the per-network overhead, fitted on the measured networks
    onnx_path = export_onnx(SearchSpace.load(DEFAULT_SPACE).sample(0), tmp_path / "m.onnx")
    r = runner.invoke(app, ["estimate", str(onnx_path), "--estimator", str(est_path), "--json", "--measure"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    for key in ("latency_ms", "params", "peak_activation_bytes", "kernels", "warnings", "measured_ms"):
        assert key in out
    assert out["latency_ms"] > 0 and out["params"] > 0 and out["peak_activation_bytes"] > 0
    r = runner.invoke(app, ["estimate", str(onnx_path), "--estimator", str(est_path)])
    assert r.exit_code == 0 and "latency:" in r.output


def test_cli_estimate_arch_with_sim_estimator(sim_estimator, tmp_path):
    arch = SearchSpace.load(DEFAULT_SPACE).sample(2)
    r = runner.invoke(app, ["estimate", arch.to_string(), "--estimator", str(sim_estimator), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["estimator"]["device"]["simulated"] is True


@pytest.mark.parametrize("case", ["missing_onnx", "corrupt_onnx", "wrong_estimator", "missing_estimator"])
def test_cli_estimate_bad_input(tmp_path, sim_estimator, case):
    onnx_path = tmp_path / "m.onnx"
    est = str(sim_estimator)
    if case == "missing_onnx":
        target, fragment = str(tmp_path / "none.onnx"), "no such ONNX file"
    elif case == "corrupt_onnx":
        onnx_path.write_bytes(b"\x00\x01not a model")
        target, fragment = str(onnx_path), "not a readable ONNX model"
    else:
        export_onnx(SearchSpace.load(DEFAULT_SPACE).sample(0), onnx_path)
        target = str(onnx_path)
        if case == "wrong_estimator":
            est = str(DEFAULT_SPACE)
            fragment = "not an estimator file"
        else:
            est, fragment = str(tmp_path / "none.json"), "no such estimator file"
    r = runner.invoke(app, ["estimate", target, "--estimator", est])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in r.output


@pytest.mark.parametrize("case", ["empty", "missing_columns", "nan"])
def test_cli_fit_estimator_bad_input(tmp_path, sim_csv, case):
    rows = list(csv.DictReader(sim_csv.open()))[:30]
    path = tmp_path / "m.csv"
    if case == "empty":
        path.write_text("")
    elif case == "missing_columns":
        _write_csv(path, rows, [c for c in CSV_COLUMNS if c not in ("hw", "latency_ms")])
    else:
        rows[2]["latency_ms"] = "nan"
        _write_csv(path, rows)
    r = runner.invoke(app, ["fit-estimator", str(path), "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_measure_bad_device(tmp_path):
    r = runner.invoke(app, ["measure", "--device", "tpu", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "unknown device" in r.output


def test_estimate_warns_when_the_estimator_was_measured_on_another_machine(monkeypatch):
    """A real-device estimator measured on another CPU model (or onnxruntime) says so in one
    warning, first; a matching machine and a simulated device get none."""
    import nasctl.latency.estimator as estimator_module
    from nasctl.api import estimate
    from nasctl.latency.estimator import machine_mismatch

    here = {"cpu": "Vendor CPU 1", "cpu_id": "V/6/1/1", "runtime": "onnxruntime 1.0"}
    same = {"device": "cpu", "simulated": False, "cpu": "Vendor CPU 1", "runtime": "onnxruntime 1.0"}
    assert machine_mismatch(same, here) is None
    assert "CPU 'Vendor CPU 2'" in machine_mismatch({**same, "cpu": "Vendor CPU 2"}, here)
    assert "onnxruntime 0.9" in machine_mismatch({**same, "runtime": "onnxruntime 0.9"}, here)
    generic = {**here, "cpu": "", "cpu_id": "V/6/1/2"}  # a virtual machine's generic name: the ids decide
    assert "CPU id" in machine_mismatch({**same, "cpu": "", "cpu_id": "V/6/1/1"}, generic)
    # an estimator that recorded only a VM's generic name (the shipped cpu one: "AMD EPYC")
    # cannot be told from another model of that name: it warns; a model number decides alone
    vm_here = {**here, "cpu": "AMD EPYC", "cpu_id": "AuthenticAMD/26/2/1"}
    assert "many models share" in machine_mismatch({**same, "cpu": "AMD EPYC"}, vm_here)
    assert machine_mismatch({**same, "cpu": "AMD EPYC", "cpu_id": "AuthenticAMD/26/2/1"}, vm_here) is None
    assert machine_mismatch({**same, "cpu": "AMD EPYC 7763"}, {**vm_here, "cpu": "AMD EPYC 7763"}) is None
    assert machine_mismatch({"device": "sim-npu", "simulated": True}, here) is None

    arch = SearchSpace.load(DEFAULT_SPACE).baseline()
    monkeypatch.setattr(estimator_module, "machine_info", lambda: {"cpu": "Imaginary CPU 9000"})
    warned = estimate(arch, "cpu").warnings
    assert warned and "another machine" in warned[0] and "Imaginary CPU 9000" in warned[0]
    assert not any("another machine" in w for w in estimate(arch, "sim-npu-p16").warnings)
