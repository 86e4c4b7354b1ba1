"""ORT == torch for several sampled archs of every shipped space, covering both block
kinds, both strides, residual and not."""

import onnx
import pytest

from nasctl.errors import NasctlError
from nasctl.nn import build_model
from nasctl.nn.export import export_onnx, ort_session, randomize_batchnorm, verify_onnx
from nasctl.space import SearchSpace
from tests.conftest import SHIPPED

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_onnxruntime_matches_torch(path, tmp_path):
    space = SearchSpace.load(path)
    archs = [space.baseline()] + [space.sample(s) for s in SEEDS]
    seen = set()
    for i, arch in enumerate(archs):
        head = "classifier" if arch.num_classes else "embedding"
        model = randomize_batchnorm(build_model(arch, head, seed=i), seed=i)
        onnx_path = export_onnx(model, tmp_path / f"{arch.id}.onnx")
        proto = onnx.load(str(onnx_path))
        onnx.checker.check_model(proto)
        assert proto.opset_import[0].version >= 17
        diff = verify_onnx(onnx_path, model, batch_size=2, seed=i)
        assert diff < 1e-4, (arch.to_string(), diff)
        for b in arch.blocks:
            seen.add((b.kind, b.stride, b.residual))
    kinds = {k for k, _, _ in seen}
    strides = {s for _, s, _ in seen}
    residual = {r for _, _, r in seen}
    assert kinds == {"ibn", "fused_ibn"} and strides == {1, 2} and residual == {True, False}, seen


def test_export_rejects_old_opset(tmp_path):
    arch = SearchSpace.load(SHIPPED[0]).sample(0)
    with pytest.raises(NasctlError, match="opset"):
        export_onnx(arch, tmp_path / "m.onnx", opset=13)


def test_corrupt_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(NasctlError, match="onnxruntime cannot load"):
        ort_session(bad)
