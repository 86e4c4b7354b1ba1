"""ONNX export of an ``Arch`` (or a built model), checked and verified with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.nn.builder import Network, build_model

DEFAULT_OPSET = 17


def export_onnx(
    model_or_arch: Network | Arch,
    path: str | Path,
    head: str = "classifier",
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``path`` (opset >= 17), run ``onnx.checker`` on it and return the path.

    The input is named ``input`` (N x C x H x W, float32), the output ``output``.
    """
    if opset < 17:
        raise NasctlError(f"opset {opset} is too old: nasctl exports opset >= 17")
    model = model_or_arch if isinstance(model_or_arch, nn.Module) else build_model(model_or_arch, head, seed)
    arch = model.arch
    shape = (batch_size, arch.in_channels, arch.resolution, arch.resolution)
    return export_module(model, shape, path, opset, dynamic_batch, doc=f"nasctl arch {arch.id}: {arch.to_string()}")


def export_module(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    doc: str = "",
) -> Path:
    """Export any single-input torch module (eval mode) and check the file."""
    import onnx

    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(*input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
        )
    proto = onnx.load(str(path))
    if doc:
        proto.doc_string = doc
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def ort_session(path: str | Path, threads: int = 1, optimize: bool = True):
    """An onnxruntime CPU session; bad files raise NasctlError."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own, untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasctlError(f"{path}: onnxruntime cannot load this model ({first})") from None


def verify_onnx(path: str | Path, model: Network, batch_size: int = 2, seed: int = 0) -> float:
    """Run the ONNX file with onnxruntime and the torch model on the same random input;
    return the largest absolute difference of the outputs."""
    arch = model.arch
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, arch.in_channels, arch.resolution, arch.resolution)).astype(np.float32)
    sess = ort_session(path)
    (ort_out,) = sess.run(None, {"input": x})
    with torch.no_grad():
        torch_out = model.eval()(torch.from_numpy(x)).numpy()
    if ort_out.shape != torch_out.shape:
        raise AssertionError(f"ONNX output shape {ort_out.shape} != torch {torch_out.shape}")
    return float(np.max(np.abs(ort_out - torch_out)))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training would,
    so that export checks exercise BN folding (fresh BN layers are the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model
