"""The ``ibn`` block kind: the inverted bottleneck (MobileNetV2).

1x1 expand -> kxk depthwise -> [squeeze-excite] -> 1x1 linear project, residual when
stride 1 and in == out. There is no expand conv when the middle width equals the input
width (expansion 1).
"""

from __future__ import annotations

from nasctl.nn.blocks.registry import register
from nasctl.nn.layers import LayerSpec, close_block, conv, squeeze_excite


@register("ibn", slots=("expand", "depthwise", "project"))
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
    """``mid``: the middle width (default ``in_ch * expansion``, which ``mid`` overrides);
    ``se``: the squeeze width of an SE after the depthwise conv (0: none), with activation
    ``se_act`` and gate ``se_gate``."""
    mid = in_ch * expansion if mid is None else mid
    layers = [conv("expand", in_ch, mid, 1, act=act, hw=hw)] if mid != in_ch else []
    layers.append(conv("depthwise", mid, mid, kernel, stride, groups=mid, act=act, hw=hw))
    hw = layers[-1].out_hw
    if se:
        layers.append(squeeze_excite("se", mid, se, se_act, se_gate, hw))
    layers.append(conv("project", mid, out_ch, 1, act=None, hw=hw))
    return close_block(layers, in_ch, out_ch, stride)
