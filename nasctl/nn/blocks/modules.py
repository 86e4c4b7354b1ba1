"""Torch modules of the lowered layers and block kinds, timm style: each constructor
states the module's whole shape.

``Block`` builds any registered block kind from its lowering (one child per LayerSpec,
named as the spec); ``IBN`` and ``FusedIBN`` are the two shipped kinds under their own
names, with their usual defaults.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from nasctl.nn.blocks.registry import BLOCKS
from nasctl.nn.layers import LayerSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "silu": nn.SiLU,
}


def make_activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    return ACTIVATIONS[name](inplace=True)


class ConvBNAct(nn.Sequential):
    """kxk conv (no bias, 'same' padding) -> BatchNorm -> activation (None: linear)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: str | None = "relu6"
    ):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            make_activation(act),
        )
        self.in_ch, self.out_ch, self.kernel, self.stride, self.groups = in_ch, out_ch, kernel, stride, groups


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 conv to ``squeeze`` -> ``act`` -> 1x1 conv back -> ``gate``
    (``sigmoid`` or ``hsigmoid``) -> multiply the input."""

    def __init__(self, c: int, squeeze: int, act: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.act = make_activation(act)
        self.expand = nn.Conv2d(squeeze, c, 1)
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def layer_module(spec: LayerSpec) -> nn.Module:
    """The torch module of one conv or SE LayerSpec."""
    if spec.op == "conv" and spec.bn:
        return ConvBNAct(spec.cin, spec.cout, spec.kernel, spec.stride, spec.groups, act=spec.act)
    if spec.op == "se":
        return SqueezeExcite(spec.cin, spec.hidden, spec.act or "relu", spec.gate or "sigmoid")
    raise ValueError(f"layer {spec.name!r}: no block module for op {spec.op!r}")


def _with_slots(names: list[str], slots: tuple[str, ...]) -> list[str]:
    """``names`` with each slot they lack inserted before the first later slot they hold."""
    out = list(names)
    for i, slot in enumerate(slots):
        if slot not in out:
            later = [j for j, name in enumerate(out) if name in slots[i + 1 :]]
            out.insert(later[0] if later else len(out), slot)
    return out


class Block(nn.Module):
    """One block of the registered kind ``kind``, built from its lowering: a child per
    LayerSpec (``layer_module``, named as the spec) and an identity for each slot of the
    kind the block leaves out, run in order, plus the block's input when the lowering
    marks it residual. A subclass declared ``class X(Block, kind=...)`` is that kind's
    named module, which ``block_module`` returns."""

    named: ClassVar[dict[str, type[Block]]] = {}

    def __init_subclass__(cls, kind: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            Block.named[kind] = cls

    def __init__(
        self, kind: str, in_ch: int, out_ch: int, kernel: int, expansion: int, stride: int, act: str, **options
    ):
        super().__init__()
        block_type = BLOCKS[kind]
        layers = {s.name: s for s in block_type.lower(in_ch, out_ch, kernel, expansion, stride, act, **options)}
        for name in _with_slots(list(layers), block_type.slots):
            self.add_module(name, layer_module(layers[name]) if name in layers else nn.Identity())
        self.kind = kind
        self.residual = any(s.residual for s in layers.values())

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.children():
            y = layer(y)
        return x + y if self.residual else y


class IBN(Block, kind="ibn"):
    """Inverted bottleneck (MobileNetV2): 1x1 expand -> kxk depthwise -> [SE] -> 1x1
    linear project, residual when stride 1 and in == out. Expansion 1 drops the expand
    conv. ``options``: ``mid``, ``se``, ``se_act``, ``se_gate`` (see the ``ibn`` kind)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        expansion: int = 6,
        stride: int = 1,
        act: str = "relu6",
        **options,
    ):
        super().__init__("ibn", in_ch, out_ch, kernel, expansion, stride, act, **options)


class FusedIBN(Block, kind="fused_ibn"):
    """Fused inverted bottleneck (EfficientNetV2 Fused-MBConv): kxk dense expand -> [SE]
    -> 1x1 linear project, residual when stride 1 and in == out. Expansion 1 is a single
    kxk conv with BN and activation unless ``mid`` is given. ``options``: ``mid``, ``se``,
    ``se_act``, ``se_gate`` (see the ``fused_ibn`` kind)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        expansion: int = 4,
        stride: int = 1,
        act: str = "relu6",
        **options,
    ):
        super().__init__("fused_ibn", in_ch, out_ch, kernel, expansion, stride, act, **options)


def block_module(
    kind: str, in_ch: int, out_ch: int, kernel: int, expansion: int, stride: int, act: str, **options
) -> Block:
    """The torch module of one block of a registered kind: the kind's named class if it
    has one, else a plain ``Block``."""
    named = Block.named.get(kind)
    if named is not None:
        return named(in_ch, out_ch, kernel, expansion, stride, act, **options)
    return Block(kind, in_ch, out_ch, kernel, expansion, stride, act, **options)
