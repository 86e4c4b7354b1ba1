"""The lowering: one statement of an arch's layers that the torch model, the profile and the
kernel IR all follow, and a block registry that a new kind joins without editing them."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.latency.kernels import kernels_from_arch, kernels_from_onnx
from nasctl.latency.memory import memory_from_arch, memory_from_onnx
from nasctl.nn.blocks import ACTIVATIONS, BLOCKS, Block, FusedIBN, register
from nasctl.nn.builder import build_model
from nasctl.nn.export import export_module, export_onnx
from nasctl.nn.layers import close_block, conv, squeeze_excite
from nasctl.nn.lower import lower
from nasctl.nn.profile import arch_cost, arch_layers
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE, ROOT, SHIPPED
from tests.test_nn import _torch_macs


def _archs():
    for path in SHIPPED:
        space = SearchSpace.load(path)
        yield from (space.baseline(), space.sample(1), space.sample(2))


def _heads(arch):
    return [h for h, ok in (("classifier", arch.num_classes), ("embedding", arch.embedding_dim), ("features", 1)) if ok]


def _torch_layers(model: nn.Module) -> list[tuple]:
    """(name, op, cin, cout, kernel, stride, groups, act) of every conv and linear of a
    Network, convs named after their ConvBNAct (``blocks.3.expand``, not ``.0``)."""
    named = dict(model.named_modules())
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent = name.rsplit(".", 1)[0]
            act = named[parent][2]
            act_name = next((a for a, cls in ACTIVATIONS.items() if type(act) is cls), None)
            out.append(
                (parent, "conv", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups, act_name)
            )
        elif isinstance(m, nn.Linear):
            out.append((name, "linear", m.in_features, m.out_features, 1, 1, 1, None))
    return out


def _spec_layers(arch, head) -> list[tuple]:
    return [
        (s.name, s.op, s.cin, s.cout, s.kernel, s.stride, s.groups, None if s.op == "linear" else s.act)
        for s in lower(arch, head)
        if s.op in ("conv", "linear")
    ]


def test_lowering_imports_without_torch():
    code = (
        "import sys, nasctl.nn.lower, nasctl.nn.profile, nasctl.nn.blocks, nasctl.latency.kernels; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("arch", list(_archs()), ids=lambda a: a.id)
def test_lowering_is_the_torch_model(arch):
    """Same convs and linears in the same order and shape, same params, same residual blocks."""
    for head in _heads(arch):
        model = build_model(arch, head)
        specs = lower(arch, head)
        assert _torch_layers(model) == _spec_layers(arch, head)
        assert sum(s.params for s in specs) == sum(p.numel() for p in model.parameters())
        residual = {s.block for s in specs if s.residual}
        assert residual == {i for i, b in enumerate(model.blocks) if b.residual}
        assert residual == {i for i, b in enumerate(arch.blocks) if b.residual}
        assert [s.name for s in specs if s.params] == [la.name for la in arch_layers(arch, head)]


def _module_path(node_name: str) -> str:
    """``/blocks/blocks.0/expand/expand.0/Conv`` -> ``blocks.0.expand.0``."""
    parts, path = node_name.split("/")[1:-1], []
    for prev, part in zip(["", *parts], parts, strict=False):
        path.append(part[len(prev) + 1 :] if prev and part.startswith(prev + ".") else part)
    return ".".join(path)


def test_arch_kernels_are_named_after_the_onnx_nodes_at_any_batch(tmp_path):
    """Beyond the key comparison of the two IR paths: the arch path's kernel names are the
    modules the ONNX nodes come from, and a fixed batch carries through."""
    for i, arch in enumerate(list(_archs())[::2]):
        onnx_path = export_onnx(arch, tmp_path / f"{i}.onnx", head="features", batch_size=3, dynamic_batch=False)
        from_arch = kernels_from_arch(arch, "features", batch=3)
        from_onnx = kernels_from_onnx(onnx_path)
        assert [(k.key(), k.batch) for k in from_arch] == [(k.key(), k.batch) for k in from_onnx]
        for ka, ko in zip(from_arch, from_onnx, strict=True):
            if ka.op in ("conv", "dwconv"):
                assert _module_path(ko.nodes[0]) == ka.name + ".0"
        assert memory_from_arch(arch, from_arch) == memory_from_onnx(onnx_path, from_onnx)


# ---------------------------------------------------------------- a new block kind
def _lower_sep(in_ch, out_ch, kernel, expansion, stride, act, *, hw=1):
    """A toy kind: kxk depthwise -> squeeze-excite -> 1x1 linear project (expansion unused)."""
    layers = [conv("depthwise", in_ch, in_ch, kernel, stride, groups=in_ch, act=act, hw=hw)]
    hw = layers[-1].out_hw
    layers += [squeeze_excite("se", in_ch, 8, "relu", "hsigmoid", hw), conv("project", in_ch, out_ch, 1, hw=hw)]
    return close_block(layers, in_ch, out_ch, stride)


@pytest.fixture
def sep_arch():
    """The default space's baseline with every other block of the toy kind ``sep``,
    registered here (and unregistered after)."""
    register("sep", token="sepconv")(_lower_sep)
    arch = SearchSpace.load(DEFAULT_SPACE).baseline()
    blocks = [b.model_dump() | ({"kind": "sep"} if i % 2 else {}) for i, b in enumerate(arch.blocks)]
    try:
        # validated like any arch, and its string form (with the kind's token) reads back
        sep = Arch.from_dict(arch.model_dump() | {"blocks": blocks})
        assert "sepconv_k3" in sep.to_string() and Arch.from_string(sep.to_string()) == sep
        yield sep
    finally:
        del BLOCKS["sep"]


def test_a_registered_block_kind_reaches_builder_profile_and_kernels(sep_arch, tmp_path):
    arch = sep_arch
    model = build_model(arch).eval()
    sep = [b for b in model.blocks if b.kind == "sep"]
    assert sep and all(type(b) is Block for b in sep)
    cost = arch_cost(arch)
    assert "blocks.1.se" in [la.name for la in cost.layers]
    assert cost.params == sum(p.numel() for p in model.parameters())
    x = torch.zeros(1, arch.in_channels, arch.resolution, arch.resolution)
    assert cost.macs == _torch_macs(model, x)
    onnx_path = export_module(model, tuple(x.shape), tmp_path / "sep.onnx")
    from_arch, from_onnx = kernels_from_arch(arch), kernels_from_onnx(onnx_path)
    assert "se" in {k.op for k in from_arch}
    assert [k.key() for k in from_arch] == [k.key() for k in from_onnx]
    assert memory_from_arch(arch, from_arch) == memory_from_onnx(onnx_path, from_onnx)


def test_a_kind_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register("ibn")(_lower_sep)
    with pytest.raises(ValueError, match="already taken"):
        register("other", token="fused")(_lower_sep)


def test_an_unregistered_kind_is_refused():
    arch = SearchSpace.load(DEFAULT_SPACE).baseline()
    blocks = [b.model_dump() | {"kind": "sep"} for b in arch.blocks]
    with pytest.raises(NasctlError, match="unknown block kind 'sep'"):
        Arch.from_dict(arch.model_dump() | {"blocks": blocks})


def test_fused_ibn_with_an_explicit_mid_keeps_expand_and_project():
    pair = FusedIBN(16, 24, kernel=3, expansion=1, stride=1, mid=16)
    assert pair.expand[0].out_channels == 16 and pair.project[0].in_channels == 16
    single = FusedIBN(16, 24, kernel=3, expansion=1, stride=1)
    assert single.expand[0].out_channels == 24 and isinstance(single.project, nn.Identity)
