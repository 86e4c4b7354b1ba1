"""The ``fused_ibn`` block kind: the fused inverted bottleneck (EfficientNetV2 Fused-MBConv).

kxk dense expand -> [squeeze-excite] -> 1x1 linear project, residual when stride 1 and
in == out. Expansion 1 is a single kxk conv with BN and activation (as in
EfficientNetV2), unless an explicit middle width asks for the expand + project pair.
"""

from __future__ import annotations

from nasctl.nn.blocks.registry import register
from nasctl.nn.layers import LayerSpec, close_block, conv, squeeze_excite


@register("fused_ibn", slots=("expand", "project"), token="fused")
def lower(
    in_ch: int,
    out_ch: int,
    kernel: int,
    expansion: int,
    stride: int,
    act: str,
    *,
    hw: int = 1,
    mid: int | None = None,
    se: int = 0,
    se_act: str = "relu",
    se_gate: str = "sigmoid",
) -> list[LayerSpec]:
    """``mid``: an explicit middle width (default ``in_ch * expansion``); given, the block
    always has the expand and the project conv. ``se``: the squeeze width of an SE after
    the expand conv (0: none), with activation ``se_act`` and gate ``se_gate``."""
    single = mid is None and expansion == 1
    width = out_ch if single else (in_ch * expansion if mid is None else mid)
    layers = [conv("expand", in_ch, width, kernel, stride, act=act, hw=hw)]
    hw = layers[-1].out_hw
    if se:
        layers.append(squeeze_excite("se", width, se, se_act, se_gate, hw))
    if not single:
        layers.append(conv("project", width, out_ch, 1, act=None, hw=hw))
    return close_block(layers, in_ch, out_ch, stride)
