"""The kernel IR on transformer graphs: MACs of token-wise linears and of attention's
activation-by-activation MatMuls, LayerNorm / Softmax / GELU kernels, and the estimate's
warnings summarised one per cause."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.latency.api import estimate_onnx
from nasctl.latency.estimator import LatencyEstimator
from nasctl.latency.features import OP_GROUP
from nasctl.latency.kernels import BYTES_PER_ELEMENT, _Graph, kernels_from_graph, kernels_from_onnx, load_onnx
from nasctl.nn.export import export_module
from nasctl.resources import shipped_estimator

runner = CliRunner()

TOKENS, D_MODEL, HEADS, FF, LAYERS = 16, 64, 4, 128, 2


def transformer_macs(tokens: int, d: int, heads: int, ff: int, layers: int) -> int:
    """Multiply-accumulates of a (post-norm) transformer encoder on ``tokens`` tokens, batch 1:
    per layer the Q, K and V projections (tokens x d -> 3d), the attention scores Q.K^T
    (heads x tokens x tokens, each a dot product of d / heads), attention times V (the same
    count), the output projection (d -> d) and the two feed-forward linears (d -> ff -> d).
    Elementwise work (biases, scaling, softmax, LayerNorm, residual adds, the activation)
    counts no MACs."""
    head_dim = d // heads
    qkv = tokens * d * 3 * d
    scores = heads * tokens * tokens * head_dim
    attn_v = heads * tokens * tokens * head_dim
    out_proj = tokens * d * d
    feed_forward = tokens * d * ff + tokens * ff * d
    return layers * (qkv + scores + attn_v + out_proj + feed_forward)


@contextmanager
def _mha_slow_path():
    """torch's fused fast path of nn.MultiheadAttention (eval, no grad) has no ONNX export:
    use the composite ops for the export."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _encoder(activation: str = "relu") -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, HEADS, dim_feedforward=FF, dropout=0.0, activation=activation, batch_first=True
    )
    return nn.TransformerEncoder(layer, num_layers=LAYERS, enable_nested_tensor=False)


@pytest.fixture(scope="module", params=[True, False], ids=["dynamic-batch", "fixed-batch"])
def encoder_onnx(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tr") / "encoder.onnx"
    with _mha_slow_path():
        export_module(_encoder(), (1, TOKENS, D_MODEL), path, dynamic_batch=request.param)
    return path


def test_encoder_macs_match_the_analytic_count(encoder_onnx):
    g = _Graph(load_onnx(encoder_onnx))
    ks = kernels_from_graph(g)
    expected = transformer_macs(TOKENS, D_MODEL, HEADS, FF, LAYERS)
    assert expected == 1_114_112
    assert sum(k.macs for k in ks) == expected
    by_op: dict[str, list] = {}
    for k in ks:
        by_op.setdefault(k.op, []).append(k)
    # per layer: QKV, output projection, two FF linears; scores and attn.V; two norms; one softmax
    assert len(by_op["fc"]) == 4 * LAYERS and len(by_op["matmul"]) == 2 * LAYERS
    assert len(by_op["norm"]) == 2 * LAYERS and len(by_op["softmax"]) == LAYERS
    assert "unknown" not in by_op
    head_dim = D_MODEL // HEADS  # = TOKENS: Q, K^T, V, the scores are all heads x 16 x 16
    for k in by_op["matmul"]:  # batch: the heads; M (hw), K (cin), N (cout): 16
        assert (k.batch, k.hw, k.cin, k.cout) == (HEADS, TOKENS, head_dim, TOKENS)
        assert k.macs == HEADS * TOKENS * TOKENS * head_dim and k.params == 0
        assert k.bytes == BYTES_PER_ELEMENT * 3 * HEADS * TOKENS * head_dim  # A, B and the output
    assert {k.batch for k in by_op["fc"]} == {TOKENS}
    # the weights: every parameter of the torch model, once (shared equal tensors included)
    torch_params = sum(p.numel() for p in _encoder().parameters())
    assert sum(k.params for k in ks) == torch_params
    # every kernel's element counts are those of its real tensors (no empty or batch-mangled shapes)
    nodes = {n.name: n for n in g.nodes}
    for k in ks:
        first, last = nodes[k.nodes[0]], nodes[k.nodes[-1]]
        out = last.output[0]
        assert k.out_elements == math.prod(g.shape[out]) > 0, (k.op, k.name)
        x = next(i for i in first.input if i and not g.is_static(i))
        assert k.in_elements == math.prod(g.shape[x]) > 0, (k.op, k.name)
        assert k.bytes > 0


def test_linear_over_tokens_counts_every_token(tmp_path):
    path = export_module(nn.Linear(D_MODEL, 32), (1, TOKENS, D_MODEL), tmp_path / "linear.onnx")
    (k,) = kernels_from_onnx(path)
    assert k.op == "fc" and k.macs == TOKENS * D_MODEL * 32 and k.batch == TOKENS
    assert k.params == D_MODEL * 32 + 32
    assert k.bytes == BYTES_PER_ELEMENT * (TOKENS * D_MODEL + TOKENS * 32 + D_MODEL * 32 + 32)


def _matmul_model(a_shape: tuple[int, ...], b_shape: tuple[int, ...], weight_b: bool = False):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))
    inputs, inits = [a], []
    if weight_b:
        inits.append(numpy_helper.from_array(np.ones(b_shape, np.float32), "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
        "mm",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "a_shape, b_shape, weight_b, op, macs, batch",
    [
        ((2, 3, 5, 4), (4, 6), True, "fc", 2 * 3 * 5 * 4 * 6, 30),  # a linear over 30 rows
        ((3, 1, 5, 4), (1, 2, 4, 6), False, "matmul", 3 * 2 * 5 * 4 * 6, 6),  # leading dims broadcast
        ((5, 4), (4, 6), False, "matmul", 5 * 4 * 6, 1),  # two 2-D activations
        ((4,), (4, 6), False, "matmul", 4 * 6, 1),  # a vector times a matrix
        ((2, 5, 4), (2, 4, 6), True, "matmul", 2 * 5 * 4 * 6, 2),  # batched weights
    ],
)
def test_matmul_macs_with_batch_dims_and_broadcasting(a_shape, b_shape, weight_b, op, macs, batch):
    (k,) = kernels_from_onnx(_matmul_model(a_shape, b_shape, weight_b))
    assert (k.op, k.macs, k.batch) == (op, macs, batch)
    b_elements = math.prod(b_shape)
    out_elements = macs // a_shape[-1]
    assert k.out_elements == out_elements
    assert k.params == (b_elements if weight_b else 0)
    assert k.bytes == BYTES_PER_ELEMENT * (math.prod(a_shape) + b_elements + out_elements)


class _MlpBlock(nn.Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.fc, self.act, self.norm = nn.Linear(D_MODEL, D_MODEL), nn.GELU(approximate), nn.LayerNorm(D_MODEL)

    def forward(self, x):
        return self.norm(self.act(self.fc(x)))


@pytest.mark.parametrize(
    "approximate, opset",
    [("none", 17), ("tanh", 17), ("none", 14)],
    ids=["erf-gelu", "tanh-gelu", "opset14-written-out-layernorm"],
)
def test_written_out_gelu_and_layernorm_are_single_kernels(tmp_path, approximate, opset):
    """torch writes GELU out with Erf (or Tanh) below opset 20, and LayerNorm out with
    ReduceMean / Sub / Pow / ... below opset 17: each is one kernel, as onnxruntime fuses them."""
    path = export_module(_MlpBlock(approximate), (1, TOKENS, D_MODEL), tmp_path / "mlp.onnx", opset=opset)
    ks = kernels_from_onnx(path)
    assert [(k.op, k.act) for k in ks] == [("fc", "gelu"), ("norm", "")]
    assert ks[0].macs == TOKENS * D_MODEL * D_MODEL
    assert ks[1].params == 2 * D_MODEL and ks[1].out_elements == TOKENS * D_MODEL


def test_a_residual_around_a_written_out_gelu_stays_an_add():
    """x + gelu(x): the GELU's nodes are one act kernel; the residual Add, which also reads
    x, is not part of it."""
    consts = {"sqrt2": 1.4142135, "one": 1.0, "half": 0.5}
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["f"]),
        helper.make_node("Mul", ["x", "f"], ["g"]),
        helper.make_node("Mul", ["g", "half"], ["gelu"]),
        helper.make_node("Add", ["x", "gelu"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gelu_residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, D_MODEL])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(v, np.float32), name) for name, v in consts.items()],
    )
    ks = kernels_from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [(k.op, k.act, len(k.nodes)) for k in ks] == [("act", "gelu", 5), ("add", "", 1)]
    assert ks[1].n_inputs == 2


def test_warnings_are_one_per_cause(encoder_onnx):
    """Kernels without a latency model and kernels outside the training ranges give one
    warning each cause, with the kernel count and share of the time, not one per kernel."""
    est = LatencyEstimator.load(shipped_estimator("sim-npu-p16"))
    for group in ("fc", "matmul", "norm"):  # no model for these: the roofline for them
        est.boosters.pop(group, None)
        est.quantiles.pop(group, None)
    r = estimate_onnx(encoder_onnx, est)
    rows = r.warning_rows
    assert r.warnings == [row["warning"] for row in rows] == est.warnings(r.kernels)
    roofline = [row for row in rows if row["warning"].startswith("roofline estimate (no latency model)")]
    assert len(roofline) == 1
    without = [i for i, k in enumerate(r.kernels) if OP_GROUP.get(k.op, "unknown") not in est.boosters]
    assert roofline[0]["kernels"] == len(without) >= 4 * LAYERS + 2 * LAYERS + 3 * LAYERS
    assert "fc" in roofline[0]["warning"] and "matmul" in roofline[0]["warning"]
    share = r.kernel_ms[without].sum() / r.kernel_ms.sum()
    assert roofline[0]["share"] == pytest.approx(share)
    assert f"{share:.0%} of the estimated time" in roofline[0]["warning"]
    causes = [
        "no model" if "no latency model" in w else "unrecognised op" if "does not recognise" in w else "range"
        for w in r.warnings
    ]
    assert len(causes) == len(set(causes))  # one warning per cause
    assert all(w.startswith(("roofline estimate", "features outside the training range")) for w in r.warnings)


def test_cli_estimate_prints_warnings_as_one_table(encoder_onnx):
    args = ["estimate", str(encoder_onnx), "--estimator", "sim-npu-p16"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["flops"] == 2 * transformer_macs(TOKENS, D_MODEL, HEADS, FF, LAYERS)
    assert out["warnings"] and all(isinstance(w, str) for w in out["warnings"])
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "share of estimate" in r.output and "warning:" not in r.output
    assert r.output.count("features outside the training range") <= 1
