"""Standard CNN architectures, written from scratch from their papers' layer tables.

They serve the latency benchmark (well-known families that the estimator never saw in
its training data) and the ONNX parser's coverage tests (the real operator mix):

* ``mobilenet_v2``: MobileNetV2 1.0 (Sandler et al. 2018), inverted residuals, ReLU6.
* ``mobilenet_v3_large`` / ``mobilenet_v3_small`` (Howard et al. 2019): SE with
  hard-sigmoid, hard-swish.
* ``mnasnet_a1`` (Tan et al. 2019): MBConv with SE, ReLU.
* ``efficientnet_b0`` (Tan & Le 2019): MBConv, SE, SiLU.
* ``shufflenet_v2``: ShuffleNetV2 1.0x (Ma et al. 2018): channel split, concat, shuffle.
* ``resnet18`` / ``resnet50`` (He et al. 2016): 7x7 stem, max pool, basic and
  bottleneck blocks, residual add followed by ReLU.
* ``squeezenet``: SqueezeNet 1.1 (Iandola et al. 2016): fire modules with concat.
* ``vgg_small``: plain 3x3 conv stacks with max pooling, then three linear layers.
* ``resnext50_32x4d`` (Xie et al. 2017): ResNet-50 with grouped 3x3 bottlenecks (32
  groups of 4 channels in the first stage).
* ``regnetx_400mf``: RegNetX-400MF (Radosavovic et al. 2020): X blocks (1x1, grouped 3x3
  of group width 16, 1x1; bottleneck ratio 1), no max pool.
* ``googlenet``: GoogLeNet / Inception v1 (Szegedy et al. 2015) as torchvision has it: no
  auxiliary heads, BN after each conv, 3x3 in the "5x5" branch; four-branch concat.
* ``densenet121`` (Huang et al. 2017): dense blocks (pre-activation BN-ReLU-1x1-BN-ReLU-3x3,
  concatenated to the input) and transitions with 2x2 average pooling.

Every factory takes ``num_classes`` and ``width``, a channel multiplier whose results are
rounded to multiples of 8 (``nasctl.channels.align_channels``; grouped convs: to multiples
of their group width). ``ZOO`` maps names to factories; ``FAMILIES`` groups the names for
leave-one-family-out evaluation (``family_of``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from nasctl.channels import align_channels
from nasctl.nn.blocks import IBN, ConvBNAct
from nasctl.nn.blocks import SqueezeExcite as SqueezeExcite  # the SE the zoo's IBNs hold, importable from here


class Classifier(nn.Module):
    """features -> global average pool -> flatten -> head."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.pool, self.head = features, nn.AdaptiveAvgPool2d(1), head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


# ------------------------------------------------------------------------ MobileNetV2
def mobilenet_v2(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    c = align_channels(32 * width, 8)
    layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act="relu6")]
    for t, ch, n, s in table:
        out = align_channels(ch * width, 8)
        for i in range(n):
            layers.append(IBN(c, out, 3, t, s if i == 0 else 1, "relu6"))
            c = out
    last = align_channels(1280 * max(1.0, width), 8)
    layers.append(ConvBNAct(c, last, 1, act="relu6"))
    return Classifier(nn.Sequential(*layers), nn.Linear(last, num_classes))


# ------------------------------------------------------------------------ MobileNetV3
_V3_LARGE = [  # kernel, expansion size, out, SE, activation, stride
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
]
_V3_SMALL = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
]


def _mobilenet_v3(table: list, last: int, hidden: int, num_classes: int, width: float) -> nn.Module:
    c = align_channels(16 * width, 8)
    layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act="hswish")]
    for k, exp, out, se, act, s in table:
        mid, out = align_channels(exp * width, 8), align_channels(out * width, 8)
        squeeze = align_channels(mid / 4, 8) if se else 0
        layers.append(IBN(c, out, k, stride=s, act=act, mid=mid, se=squeeze, se_act="relu", se_gate="hsigmoid"))
        c = out
    last_c = align_channels(last * width, 8)
    layers.append(ConvBNAct(c, last_c, 1, act="hswish"))
    head = nn.Sequential(nn.Linear(last_c, hidden), nn.Hardswish(inplace=True), nn.Linear(hidden, num_classes))
    return Classifier(nn.Sequential(*layers), head)


def mobilenet_v3_large(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    return _mobilenet_v3(_V3_LARGE, 960, 1280, num_classes, width)


def mobilenet_v3_small(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    return _mobilenet_v3(_V3_SMALL, 576, 1024, num_classes, width)


# ------------------------------------------------------------------------ MnasNet-A1, EfficientNet-B0
def _mbconv_net(
    stem: int, table: list, act: str, se_act: str, se_ratio: float, last: int, num_classes: int, width: float
) -> nn.Module:
    c = align_channels(stem * width, 8)
    layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act=act)]
    for e, k, s, ch, n, se in table:
        out = align_channels(ch * width, 8)
        for i in range(n):
            squeeze = max(1, int(c * se_ratio)) if se else 0
            layers.append(IBN(c, out, k, e, s if i == 0 else 1, act, se=squeeze, se_act=se_act, se_gate="sigmoid"))
            c = out
    last_c = align_channels(last * max(1.0, width), 8)
    layers.append(ConvBNAct(c, last_c, 1, act=act))
    return Classifier(nn.Sequential(*layers), nn.Linear(last_c, num_classes))


def mnasnet_a1(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    # the first block is a separable conv: depthwise 3x3 then 1x1 to 16 (an MBConv with expansion 1)
    table = [
        (1, 3, 1, 16, 1, False),
        (6, 3, 2, 24, 2, False),
        (3, 5, 2, 40, 3, True),
        (6, 3, 2, 80, 4, False),
        (6, 3, 1, 112, 2, True),
        (6, 5, 2, 160, 3, True),
        (6, 3, 1, 320, 1, False),
    ]
    return _mbconv_net(32, table, "relu", "relu", 0.25, 1280, num_classes, width)


def efficientnet_b0(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    table = [
        (1, 3, 1, 16, 1, True),
        (6, 3, 2, 24, 2, True),
        (6, 5, 2, 40, 2, True),
        (6, 3, 2, 80, 3, True),
        (6, 5, 1, 112, 3, True),
        (6, 5, 2, 192, 4, True),
        (6, 3, 1, 320, 1, True),
    ]
    return _mbconv_net(32, table, "silu", "silu", 0.25, 1280, num_classes, width)


# ------------------------------------------------------------------------ ShuffleNetV2
def _shuffle(x: Tensor, groups: int = 2) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels and transforms one half; stride 2
    transforms both copies of the input. Then concat and channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                ConvBNAct(cin, cin, kernel, 2, groups=cin, act=None), ConvBNAct(cin, half, 1, act="relu")
            )
        b_in = cin if stride == 2 else half
        self.branch2 = nn.Sequential(
            ConvBNAct(b_in, half, 1, act="relu"),
            ConvBNAct(half, half, kernel, stride, groups=half, act=None),
            ConvBNAct(half, half, 1, act="relu"),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _shuffle(out)


def shufflenet_v2(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    c = 24
    layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act="relu"), nn.MaxPool2d(3, 2, 1)]
    for repeats, ch in zip((4, 8, 4), (116, 232, 464), strict=True):
        out = align_channels(ch * width, 4) // 2 * 2
        for i in range(repeats):
            layers.append(ShuffleBlock(c, out, 2 if i == 0 else 1))
            c = out
    last = align_channels(1024 * max(1.0, width), 8)
    layers.append(ConvBNAct(c, last, 1, act="relu"))
    return Classifier(nn.Sequential(*layers), nn.Linear(last, num_classes))


# ------------------------------------------------------------------------ ResNet, ResNeXt, RegNetX
class ResBlock(nn.Module):
    """ResNet basic block (two 3x3) or bottleneck (1x1 to ``mid``, 3x3 with stride and
    ``groups``, 1x1 to ``cout``); the shortcut is a 1x1 stride-s conv-BN when the shape
    changes; ReLU after the add. With ``groups`` > 1 the bottleneck is ResNeXt's block and
    RegNet's X block (``mid`` = ``cout``: bottleneck ratio 1)."""

    def __init__(self, cin: int, cout: int, stride: int, bottleneck: bool, mid: int | None = None, groups: int = 1):
        super().__init__()
        if bottleneck:
            mid = mid or cout // 4
            self.body = nn.Sequential(
                ConvBNAct(cin, mid, 1, act="relu"),
                ConvBNAct(mid, mid, 3, stride, groups=groups, act="relu"),
                ConvBNAct(mid, cout, 1, act=None),
            )
        else:
            self.body = nn.Sequential(ConvBNAct(cin, cout, 3, stride, act="relu"), ConvBNAct(cout, cout, 3, act=None))
        self.short = ConvBNAct(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.short(x))


def _resnet(
    depths: tuple[int, ...], bottleneck: bool, num_classes: int, width: float, groups: int = 1, mid_base: int = 0
) -> nn.Module:
    """ResNet / ResNeXt: 7x7 stem, max pool, four stages (stride 2 from the second, on the
    3x3 as torchvision's "v1.5" has it). ``mid_base``: the bottleneck width of the first
    stage (ResNeXt; default out / 4), doubled each stage and rounded to ``groups``."""
    c = align_channels(64 * width, 8)
    layers: list[nn.Module] = [ConvBNAct(3, c, 7, 2, act="relu"), nn.MaxPool2d(3, 2, 1)]
    for i, n in enumerate(depths):
        out = align_channels(64 * 2**i * width, 8) * (4 if bottleneck else 1)
        mid = align_channels(mid_base * 2**i * width, max(8, groups)) if mid_base else None
        for j in range(n):
            layers.append(ResBlock(c, out, 2 if (j == 0 and i > 0) else 1, bottleneck, mid, groups))
            c = out
    return Classifier(nn.Sequential(*layers), nn.Linear(c, num_classes))


def resnet18(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    return _resnet((2, 2, 2, 2), False, num_classes, width)


def resnet50(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    return _resnet((3, 4, 6, 3), True, num_classes, width)


def resnext50_32x4d(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """ResNeXt-50 32x4d (Xie et al. 2017): ResNet-50 with a 3x3 of 32 groups of 4 channels
    (bottleneck widths 128-256-512-1024, twice ResNet-50's)."""
    return _resnet((3, 4, 6, 3), True, num_classes, width, groups=32, mid_base=128)


def regnetx_400mf(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """RegNetX-400MF (Radosavovic et al. 2020): 3x3 stride-2 stem of 32, four stages of X
    blocks (depths 1, 2, 7, 12; widths 32, 64, 160, 384; group width 16; bottleneck
    ratio 1), each stage starting with stride 2; no max pool. Scaled widths are rounded to
    a multiple of the group width (pycls's compatibility rule); below 16 one group."""
    c = align_channels(32 * width, 8)
    layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act="relu")]
    for n, w in zip((1, 2, 7, 12), (32, 64, 160, 384), strict=True):
        out = align_channels(w * width, 8)
        group_width = min(16, out)
        out = align_channels(out, group_width)
        for j in range(n):
            layers.append(ResBlock(c, out, 2 if j == 0 else 1, True, mid=out, groups=out // group_width))
            c = out
    return Classifier(nn.Sequential(*layers), nn.Linear(c, num_classes))


# ------------------------------------------------------------------------ SqueezeNet 1.1, VGG
class FireModule(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU(inplace=True))
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        s = self.squeeze(x)
        return torch.cat((self.e1(s), self.e3(s)), dim=1)


def squeezenet(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    def w(c: int) -> int:
        return align_channels(c * width, 8)

    features = nn.Sequential(
        nn.Conv2d(3, w(64), 3, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        FireModule(w(64), w(16), w(64)),
        FireModule(2 * w(64), w(16), w(64)),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        FireModule(2 * w(64), w(32), w(128)),
        FireModule(2 * w(128), w(32), w(128)),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        FireModule(2 * w(128), w(48), w(192)),
        FireModule(2 * w(192), w(48), w(192)),
        FireModule(2 * w(192), w(64), w(256)),
        FireModule(2 * w(256), w(64), w(256)),
        nn.Conv2d(2 * w(256), num_classes, 1),
        nn.ReLU(inplace=True),
    )
    return Classifier(features, nn.Identity())


def vgg_small(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = align_channels(int(v) * width, 8)
            layers.append(ConvBNAct(c, out, 3, act="relu"))
            c = out
    head = nn.Sequential(
        nn.Linear(c, 1024),
        nn.ReLU(inplace=True),
        nn.Linear(1024, 1024),
        nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    )
    return Classifier(nn.Sequential(*layers), head)


# ------------------------------------------------------------------------ GoogLeNet
class Inception(nn.Module):
    """Inception v1 module: four branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> ``k5`` x ``k5``
    (the paper's 5x5; torchvision and most implementations use 3x3, as ``googlenet`` does);
    3x3 max pool stride 1 -> 1x1. Every conv is conv-BN-ReLU."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int, k5: int = 3):
        super().__init__()
        self.b1 = ConvBNAct(cin, c1, 1, act="relu")
        self.b2 = nn.Sequential(ConvBNAct(cin, c3r, 1, act="relu"), ConvBNAct(c3r, c3, 3, act="relu"))
        self.b3 = nn.Sequential(ConvBNAct(cin, c5r, 1, act="relu"), ConvBNAct(c5r, c5, k5, act="relu"))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvBNAct(cin, pool_proj, 1, act="relu"))
        self.out_ch = c1 + c3 + c5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.b1(x), self.b2(x), self.b3(x), self.b4(x)), dim=1)


_GOOGLENET = [  # 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj; "M": 3x3 s2 max pool
    (64, 96, 128, 16, 32, 32),  # 3a
    (128, 128, 192, 32, 96, 64),  # 3b
    "M",
    (192, 96, 208, 16, 48, 64),  # 4a
    (160, 112, 224, 24, 64, 64),  # 4b
    (128, 128, 256, 24, 64, 64),  # 4c
    (112, 144, 288, 32, 64, 64),  # 4d
    (256, 160, 320, 32, 128, 128),  # 4e
    "M",
    (256, 160, 320, 32, 128, 128),  # 5a
    (384, 192, 384, 48, 128, 128),  # 5b
]


def googlenet(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """GoogLeNet / Inception v1 (Szegedy et al. 2015) without the auxiliary heads and the
    LRN layers, with BatchNorm after every conv and 3x3 in the "5x5" branch (torchvision's
    variant); max pools with ceil mode (the Caffe model's rounding)."""

    def w(c: int) -> int:
        return align_channels(c * width, 8)

    layers: list[nn.Module] = [
        ConvBNAct(3, w(64), 7, 2, act="relu"),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        ConvBNAct(w(64), w(64), 1, act="relu"),
        ConvBNAct(w(64), w(192), 3, act="relu"),
        nn.MaxPool2d(3, 2, ceil_mode=True),
    ]
    c = w(192)
    for row in _GOOGLENET:
        if row == "M":
            layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            continue
        block = Inception(c, *(w(v) for v in row))
        layers.append(block)
        c = block.out_ch
    return Classifier(nn.Sequential(*layers), nn.Linear(c, num_classes))


# ------------------------------------------------------------------------ DenseNet
class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-1x1 conv to ``bn_size`` x growth, BN-ReLU-3x3 conv to
    ``growth``, concatenated to the input (pre-activation: the BNs stand alone in ONNX)."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        mid = bn_size * growth
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((x, self.body(x)), dim=1)


def _transition(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2)
    )


def densenet121(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """DenseNet-121 (Huang et al. 2017; DenseNet-BC, growth 32, bottleneck 4 x growth,
    compression 0.5): 7x7 stem, max pool, dense blocks of 6, 12, 24, 16 layers with
    transitions (BN-ReLU-1x1-2x2 average pool) between them, final BN-ReLU."""
    growth = align_channels(32 * width, 8)
    c = align_channels(64 * width, 8)
    layers: list[nn.Module] = [ConvBNAct(3, c, 7, 2, act="relu"), nn.MaxPool2d(3, 2, 1)]
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(DenseLayer(c, growth))
            c += growth
        if i < 3:
            layers.append(_transition(c, c // 2))
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
    return Classifier(nn.Sequential(*layers), nn.Linear(c, num_classes))


ZOO: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mnasnet_a1": mnasnet_a1,
    "efficientnet_b0": efficientnet_b0,
    "shufflenet_v2": shufflenet_v2,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnext50_32x4d": resnext50_32x4d,
    "regnetx_400mf": regnetx_400mf,
    "squeezenet": squeezenet,
    "vgg_small": vgg_small,
    "googlenet": googlenet,
    "densenet121": densenet121,
}

# Families for leave-one-family-out evaluation: models that share their characteristic
# block (RegNetX and ResNeXt both are grouped-conv bottleneck nets) form one family.
FAMILIES: dict[str, list[str]] = {
    "mobilenet_v2": ["mobilenet_v2"],
    "mobilenet_v3": ["mobilenet_v3_large", "mobilenet_v3_small"],
    "mnasnet": ["mnasnet_a1"],
    "efficientnet": ["efficientnet_b0"],
    "shufflenet": ["shufflenet_v2"],
    "resnet": ["resnet18", "resnet50"],
    "resnext_regnet": ["resnext50_32x4d", "regnetx_400mf"],
    "squeezenet": ["squeezenet"],
    "vgg": ["vgg_small"],
    "inception": ["googlenet"],
    "densenet": ["densenet121"],
}
_FAMILY_OF = {model: family for family, models in FAMILIES.items() for model in models}


def family_of(name: str) -> str:
    """The family of zoo model ``name`` (a key of ``FAMILIES``)."""
    if name not in _FAMILY_OF:
        raise ValueError(f"unknown zoo model {name!r} (known: {', '.join(sorted(ZOO))})")
    return _FAMILY_OF[name]


def build(name: str, num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r} (known: {', '.join(sorted(ZOO))})")
    return ZOO[name](num_classes=num_classes, width=width)


def prepared(name: str, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """The model ``export`` writes: seeded weights, non-trivial BN statistics, eval mode."""
    from nasctl.nn.export import randomize_batchnorm

    torch.manual_seed(0)
    return randomize_batchnorm(build(name, num_classes, width), seed=0).eval()


def export(
    name: str, path: str | Path, resolution: int = 224, width: float = 1.0, batch_size: int = 1, opset: int = 17
) -> Path:
    """Export ``prepared(name, width)`` to ONNX (input ``input``, N x 3 x R x R)."""
    from nasctl.nn.export import export_module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_module(prepared(name, width), (batch_size, 3, resolution, resolution), path, opset)
