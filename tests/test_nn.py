import numpy as np
import pytest
import torch
from torch import nn

from nasctl.errors import NasctlError
from nasctl.nn import IBN, FusedIBN, arch_cost, build_model
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE, SHIPPED


def _torch_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs counted from the real forward pass with hooks (independent of nasctl.nn.profile)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        model(x)
    return total


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("head", ["classifier", "embedding", "features"])
def test_counts_match_torch(path, head):
    space = SearchSpace.load(path)
    for seed in range(3):
        arch = space.sample(seed)
        if head == "classifier" and arch.num_classes is None or head == "embedding" and arch.embedding_dim is None:
            continue
        model = build_model(arch, head=head).eval()
        cost = arch_cost(arch, head)
        assert cost.params == sum(p.numel() for p in model.parameters())
        x = torch.zeros(1, arch.in_channels, arch.resolution, arch.resolution)
        assert cost.macs == _torch_macs(model, x)
        assert cost.flops == 2 * cost.macs


def test_output_shapes():
    arch = SearchSpace.load(DEFAULT_SPACE).sample(3)
    x = torch.randn(2, 3, arch.resolution, arch.resolution)
    assert build_model(arch, "classifier")(x).shape == (2, arch.num_classes)
    assert build_model(arch, "embedding")(x).shape == (2, arch.embedding_dim)
    assert build_model(arch, "features")(x).shape == (2, arch.feature_channels)


def test_blocks_follow_the_arch():
    arch = SearchSpace.load(DEFAULT_SPACE).sample(5)
    model = build_model(arch)
    assert len(model.blocks) == len(arch.blocks)
    for spec, block in zip(arch.blocks, model.blocks, strict=True):
        assert isinstance(block, IBN if spec.kind == "ibn" else FusedIBN)
        assert block.residual == spec.residual


def test_ibn_structure_and_residual():
    ibn = IBN(16, 16, kernel=5, expansion=6, stride=1)
    dw = ibn.depthwise[0]
    assert dw.groups == 96 and dw.kernel_size == (5, 5)
    assert ibn.residual
    # residual: with a zeroed projection (and BN bias 0) the block is the identity
    nn.init.zeros_(ibn.project[0].weight)
    ibn.eval()
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(ibn(x), x)


def test_fused_ibn_structure():
    f = FusedIBN(16, 32, kernel=3, expansion=4, stride=2)
    assert f.expand[0].groups == 1 and f.expand[0].out_channels == 64 and f.expand[0].stride == (2, 2)
    assert not f.residual
    assert f(torch.randn(1, 16, 8, 8)).shape == (1, 32, 4, 4)
    single = FusedIBN(16, 16, kernel=3, expansion=1, stride=1)
    assert isinstance(single.project, nn.Identity) and single.residual


def test_seeded_build_is_deterministic():
    arch = SearchSpace.load(DEFAULT_SPACE).sample(0)
    a, b = build_model(arch, seed=7), build_model(arch, seed=7)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_bad_head():
    arch = SearchSpace.load(SHIPPED[0]).sample(0)
    with pytest.raises(NasctlError, match="unknown head"):
        build_model(arch, head="segmentation")


def test_fused_costs_more_flops_than_ibn():
    """The premise of the search: fused-IBN has more FLOPs than IBN at the same shape."""
    space = SearchSpace.load(DEFAULT_SPACE)
    params = space.baseline_params()
    base = arch_cost(space.resolve(params)).macs
    fused = arch_cost(space.resolve({k: ("fused_ibn" if k.endswith(".kind") else v) for k, v in params.items()})).macs
    assert fused > 2 * base
    assert np.isfinite(base)
