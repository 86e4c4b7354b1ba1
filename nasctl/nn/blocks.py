"""Building blocks, timm style: each constructor states the block's whole shape."""

from __future__ import annotations

from torch import Tensor, nn

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


class IBN(nn.Module):
    """Inverted bottleneck (MobileNetV2): 1x1 expand -> kxk depthwise -> 1x1 linear project,
    residual when stride 1 and in == out. Expansion 1 drops the expand conv."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, expansion: int = 6, stride: int = 1, act: str = "relu6"
    ):
        super().__init__()
        mid = in_ch * expansion
        self.expand = ConvBNAct(in_ch, mid, 1, act=act) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.project = ConvBNAct(mid, out_ch, 1, act=None)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class FusedIBN(nn.Module):
    """Fused inverted bottleneck (EfficientNetV2 Fused-MBConv): kxk dense expand -> 1x1
    linear project, residual when stride 1 and in == out. Expansion 1 is a single kxk
    conv with BN and activation (as in EfficientNetV2)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, expansion: int = 4, stride: int = 1, act: str = "relu6"
    ):
        super().__init__()
        if expansion == 1:
            self.expand = ConvBNAct(in_ch, out_ch, kernel, stride, act=act)
            self.project = nn.Identity()
        else:
            mid = in_ch * expansion
            self.expand = ConvBNAct(in_ch, mid, kernel, stride, act=act)
            self.project = ConvBNAct(mid, out_ch, 1, act=None)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.expand(x))
        return x + y if self.residual else y
