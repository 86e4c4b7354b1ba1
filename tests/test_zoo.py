"""The standard-architecture zoo: published sizes, ONNX export, and full IR coverage."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nasctl import zoo
from nasctl.latency.kernels import kernels_from_onnx

PUBLISHED_PARAMS_M = {
    "mobilenet_v2": 3.5,
    "mobilenet_v3_large": 5.4,
    "mobilenet_v3_small": 2.5,
    "mnasnet_a1": 3.9,
    "efficientnet_b0": 5.3,
    "shufflenet_v2": 2.3,
    "resnet18": 11.7,
    "resnet50": 25.6,
    "squeezenet": 1.24,
}
EXPECTED_OPS = {
    "mobilenet_v3_large": {"HardSwish", "HardSigmoid"},
    "shufflenet_v2": {"Transpose", "Concat"},
    "efficientnet_b0": {"Sigmoid", "Mul"},
    "resnet18": {"MaxPool"},
    "squeezenet": {"Concat"},
}
EXPECTED_KERNELS = {
    "mobilenet_v3_large": {"se", "dwconv"},
    "shufflenet_v2": {"shuffle", "split", "concat"},
    "efficientnet_b0": {"se"},
    "resnet50": {"maxpool"},
    "squeezenet": {"concat", "maxpool"},
    "vgg_small": {"fc", "maxpool"},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_param_counts_match_the_papers(name):
    params = sum(p.numel() for p in zoo.build(name).parameters()) / 1e6
    assert abs(params / PUBLISHED_PARAMS_M[name] - 1) < 0.15, params


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_export_runs_in_onnxruntime_and_parses_fully(name, tmp_path):
    path = zoo.export(name, tmp_path / f"{name}.onnx", resolution=64, width=0.5)
    model = zoo.prepared(name, width=0.5)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == (1, 1000)
    assert np.max(np.abs(out - ref)) < 1e-3
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert EXPECTED_OPS.get(name, set()) <= ops
    kernels = kernels_from_onnx(path)
    assert not [k for k in kernels if k.op == "unknown"], "every zoo operator has a kernel type"
    assert EXPECTED_KERNELS.get(name, set()) <= {k.op for k in kernels}


def test_unknown_name():
    with pytest.raises(ValueError, match="known:"):
        zoo.build("alexnet")
