"""Analytical cost of an ``Arch``: every conv/linear layer with its shapes, params, MACs.

No torch needed: this is fast enough to run inside a search loop, and a test holds it to
the counts of the built torch model. FLOPs are reported as ``2 * MACs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nasctl.arch import Arch


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    in_hw: int
    out_hw: int
    params: int
    macs: int


@dataclass
class ArchCost:
    params: int
    macs: int
    layers: list[Layer] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def conv_out(hw: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same' padding (kernel // 2)."""
    return (hw + 2 * (kernel // 2) - kernel) // stride + 1


def _conv(name: str, cin: int, cout: int, k: int, s: int, g: int, hw: int, bn: bool = True) -> Layer:
    out = conv_out(hw, k, s)
    weights = cin // g * cout * k * k
    return Layer(name, "conv", cin, cout, k, s, g, hw, out, weights + (2 * cout if bn else 0), weights * out * out)


def arch_layers(arch: Arch, head: str = "classifier") -> list[Layer]:
    """Every weighted layer of ``build_model(arch, head)`` in execution order."""
    hw = arch.resolution
    layers = [_conv("stem", arch.in_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride, 1, hw)]
    hw = layers[-1].out_hw
    for i, b in enumerate(arch.blocks):
        pre = f"blocks.{i}"
        if b.kind == "ibn":
            mid = b.mid_channels
            if b.expansion != 1:
                layers.append(_conv(f"{pre}.expand", b.in_channels, mid, 1, 1, 1, hw))
            layers.append(_conv(f"{pre}.depthwise", mid, mid, b.kernel, b.stride, mid, hw))
            hw = layers[-1].out_hw
            layers.append(_conv(f"{pre}.project", mid, b.out_channels, 1, 1, 1, hw))
        elif b.expansion == 1:
            layers.append(_conv(f"{pre}.expand", b.in_channels, b.out_channels, b.kernel, b.stride, 1, hw))
            hw = layers[-1].out_hw
        else:
            mid = b.mid_channels
            layers.append(_conv(f"{pre}.expand", b.in_channels, mid, b.kernel, b.stride, 1, hw))
            hw = layers[-1].out_hw
            layers.append(_conv(f"{pre}.project", mid, b.out_channels, 1, 1, 1, hw))
    if arch.head_channels:
        layers.append(_conv("head_conv", arch.blocks[-1].out_channels, arch.head_channels, 1, 1, 1, hw))
    feat = arch.feature_channels
    if head == "classifier" and arch.num_classes:
        layers.append(
            Layer(
                "head",
                "linear",
                feat,
                arch.num_classes,
                1,
                1,
                1,
                1,
                1,
                feat * arch.num_classes + arch.num_classes,
                feat * arch.num_classes,
            )
        )
    elif head == "embedding" and arch.embedding_dim:
        layers.append(Layer("head.0", "linear", feat, feat, 1, 1, 1, 1, 1, feat * feat + feat, feat * feat))
        e = arch.embedding_dim
        layers.append(Layer("head.2", "linear", feat, e, 1, 1, 1, 1, 1, feat * e + e, feat * e))
    return layers


def arch_cost(arch: Arch, head: str = "classifier") -> ArchCost:
    layers = arch_layers(arch, head)
    return ArchCost(sum(la.params for la in layers), sum(la.macs for la in layers), layers)
