"""Random networks for latency measurement.

Kernels are timed *in context*: inside whole random networks, with onnxruntime's
profiler giving every node's time. Three sources of networks:

* samples of the shipped search spaces (at their own and at other resolutions);
* ``random_cnn(rng)``: networks assembled from a menu that covers the model zoo's
  operators and ranges, including dense / depthwise / grouped convs (kernel 1-7, stride
  1-2), IBN and fused-IBN blocks, SE with sigmoid or hard-sigmoid, ReLU / ReLU6 /
  hard-swish / SiLU, ResNet basic and bottleneck blocks, grouped-conv bottlenecks
  (ResNeXt / RegNet X blocks), ShuffleNet units (split, concat, channel shuffle),
  SqueezeNet fire modules and Inception modules (concat), max / average pooling, and
  1-3 fully connected layers. Channels range from 8 to 1024, resolutions from 32 to 224.
* ``zoo_variant(rng)``: a ``nasctl.zoo`` model of a random family at a random width and
  resolution, so that measured networks also hold real networks' block proportions. Its
  name (``zoo:<family>:<model>:w<width>:r<resolution>``) carries the family
  (``family_from_network_name``), for leave-one-family-out evaluation.

``single_kernel_net(rng)`` builds a one-layer network, for timing kernels in isolation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from nasctl import zoo
from nasctl.nn.blocks import IBN, ConvBNAct, FusedIBN, SqueezeExcite, make_activation
from nasctl.zoo import FireModule, Inception, ResBlock, ShuffleBlock

ACTS = ("relu", "relu6", "hswish", "silu")
RESOLUTIONS = (32, 48, 64, 96, 112, 128, 160, 192, 224)


def _ch(rng: np.random.Generator, lo: int = 8, hi: int = 1024) -> int:
    """Channel counts as the zoo has them: mostly multiples of 8, sometimes odd ones."""
    c = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return max(lo, int(round(c / 8) * 8) if rng.random() < 0.8 else int(round(c)))


class RandomNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.Sequential(*blocks), head
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


MAX_MACS = 6e8  # keeps one network's measurement to a few seconds

# random_cnn's block menu: the original ten kinds keep their relative weights (scaled by
# 0.88) and the grouped bottleneck and the Inception module get 0.06 each
_BASE_KINDS = {
    "mb": 0.32,  # two entries (0.22 + 0.1) in the original menu
    "fused": 0.1,
    "conv": 0.12,
    "dw": 0.08,
    "gconv": 0.05,
    "basic": 0.12,
    "shuffle": 0.07,
    "fire": 0.07,
    "pool": 0.07,
}
_NEW_KINDS = {"xblock": 0.06, "inception": 0.06}
KINDS = [*_BASE_KINDS, *_NEW_KINDS]
KIND_P = [p * (1 - sum(_NEW_KINDS.values())) for p in _BASE_KINDS.values()] + list(_NEW_KINDS.values())


def _channel_cap(hw: int) -> int:
    """Zoo-like: wide layers only at low resolution (about 1M activations a layer)."""
    return int(min(1024, max(32, 2**20 // max(1, hw * hw) // 8 * 8)))


def _block_macs(cin: int, cout: int, k: int, hw: int) -> float:
    """Rough cost of a menu block (an upper bound: a dense kxk conv at 4x width)."""
    return float(cin * cout * k * k * hw * hw) * 2


def random_cnn(rng: np.random.Generator) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """A random zoo-like CNN and its input shape (N, C, H, W)."""
    res = int(rng.choice(RESOLUTIONS))
    act = str(rng.choice(ACTS))
    c = _ch(rng, 8, 64)
    stem_k = int(rng.choice([3, 3, 5, 7]))
    stem: nn.Module = ConvBNAct(3, c, stem_k, 2 if res >= 64 else 1, act=act)
    hw = res // 2 if res >= 64 else res
    blocks: list[nn.Module] = []
    n_blocks = int(rng.integers(3, 14))
    macs = 0.0
    for _ in range(n_blocks):
        if macs > MAX_MACS:
            break
        s = 2 if (hw >= 8 and rng.random() < 0.3) else 1
        kind = rng.choice(KINDS, p=KIND_P)
        cap = _channel_cap(hw)
        cout = _ch(rng, 8, cap) if rng.random() < 0.5 else min(cap, max(8, int(c * rng.choice([1, 1, 1.5, 2]))))
        k = int(rng.choice([1, 3, 3, 5, 7])) if kind in ("conv", "dw", "gconv") else int(rng.choice([3, 3, 5, 7]))
        if kind in ("mb", "fused"):
            e = int(rng.choice([1, 2, 3, 4, 6]))
            if c * e > 2048:
                e = 1
            mid = c * e
            if kind == "fused":  # expand + project even at expansion 1
                blocks.append(FusedIBN(c, cout, k, e, s, act, mid=mid))
            else:
                se = rng.choice([None, "sigmoid", "hsigmoid"], p=[0.6, 0.2, 0.2])
                squeeze = max(8, mid // 4) if se else 0
                blocks.append(IBN(c, cout, k, e, s, act, se=squeeze, se_act="relu", se_gate=str(se or "sigmoid")))
        elif kind == "conv":
            blocks.append(ConvBNAct(c, cout, k, s, act=str(rng.choice(ACTS))))
        elif kind == "dw":
            cout = c
            dw_act = str(rng.choice(ACTS + ("",)))
            blocks.append(ConvBNAct(c, c, k, s, groups=c, act=dw_act or None))
        elif kind == "gconv":
            g = int(rng.choice([2, 4, 8]))
            c2 = max(g, c // g * g)
            cout = max(g, cout // g * g)
            if c2 != c:
                blocks.append(ConvBNAct(c, c2, 1, act="relu"))
            blocks.append(ConvBNAct(c2, cout, k, s, groups=g, act="relu"))
        elif kind == "basic":
            bottleneck = bool(rng.random() < 0.4)
            cout = max(32, cout // 4 * 4) if bottleneck else cout
            blocks.append(ResBlock(c, cout, s, bottleneck))
        elif kind == "xblock":  # ResNeXt / RegNet X: 1x1, grouped 3x3 (stride s), 1x1
            group_width = int(rng.choice([4, 8, 16, 16, 24, 32, 48, 64]))
            ratio = float(rng.choice([1.0, 1.0, 0.5, 0.25]))  # RegNetX: 1; ResNeXt: 0.5
            mid = max(group_width, int(round(cout * ratio / group_width)) * group_width)
            if mid > cap:
                mid = max(group_width, cap // group_width * group_width)
            blocks.append(ResBlock(c, cout, s, True, mid=mid, groups=mid // group_width))
            k = 3
        elif kind == "inception":  # four branches: 1x1; 1x1-3x3; 1x1-kxk; 3x3 max pool-1x1
            c1, c3, c5, pp = (max(8, int(round(f * cout / 8)) * 8) for f in rng.dirichlet([2.0, 3.0, 1.0, 1.0]))
            c3r = max(8, int(round(c3 * rng.uniform(0.5, 1.0) / 8)) * 8)
            c5r = max(8, int(round(c5 * rng.uniform(0.25, 0.75) / 8)) * 8)
            k = int(rng.choice([3, 3, 5]))
            block = Inception(c, c1, c3r, c3, c5r, c5, pp, k5=k)
            blocks.append(block)
            cout = block.out_ch
            s = 1
        elif kind == "shuffle":
            cout = c if c % 2 == 0 else c + 1
            if cout != c:
                blocks.append(ConvBNAct(c, cout, 1, act="relu"))
            blocks.append(ShuffleBlock(cout, cout, 1, k))
            s = 1
        elif kind == "fire":
            sq = max(8, _ch(rng, 8, 128))
            half = max(8, cout // 2)
            blocks.append(FireModule(c, sq, half))
            cout = 2 * half
            s = 1
        else:  # pool
            cout = c
            pk = int(rng.choice([2, 3]))
            pool = (
                nn.MaxPool2d(pk, 2, padding=pk // 2 if pk == 3 else 0)
                if rng.random() < 0.6
                else nn.AvgPool2d(pk, 2, padding=pk // 2 if pk == 3 else 0)
            )
            if hw < 8:
                continue
            blocks.append(pool)
            s = 2
        out_hw = max(1, (hw + s - 1) // s)
        macs += _block_macs(c, cout, k, out_hw)
        c = cout
        hw = out_hw
    if rng.random() < 0.6:
        last = _ch(rng, 128, min(1280, max(128, _channel_cap(hw))))
        blocks.append(ConvBNAct(c, last, 1, act=act))
        c = last
    n_fc = int(rng.choice([1, 1, 2, 3]))
    head: list[nn.Module] = []
    for i in range(n_fc):
        out = int(rng.choice([10, 100, 1000])) if i == n_fc - 1 else _ch(rng, 64, 2048)
        head.append(nn.Linear(c, out))
        if i < n_fc - 1:
            head.append(make_activation(str(rng.choice(["relu", "hswish"]))))
        c = out
    return RandomNet(stem, blocks, nn.Sequential(*head)), (1, 3, res, res)


def single_kernel_net(rng: np.random.Generator) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """One layer (conv / depthwise / fc / pool / SE) alone, for isolated kernel timing."""
    res = int(rng.choice((7, 14, 28, 56, 112, 224)))
    cin = _ch(rng, 8, _channel_cap(res))
    kind = rng.choice(["conv", "dw", "fc", "pool", "se"], p=[0.45, 0.25, 0.1, 0.1, 0.1])
    k = int(rng.choice([1, 3, 5, 7]))
    s = int(rng.choice([1, 2]))
    act = str(rng.choice(ACTS))
    if kind == "conv":
        layer: nn.Module = ConvBNAct(cin, _ch(rng, 8, _channel_cap(res)), k, s, act=act)
    elif kind == "dw":
        layer = ConvBNAct(cin, cin, max(3, k), s, groups=cin, act=act)
    elif kind == "fc":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, _ch(rng, 10, 2048))), (1, cin, 1, 1)
    elif kind == "pool":
        layer = nn.MaxPool2d(3, 2, 1) if rng.random() < 0.5 else nn.AvgPool2d(2, 2)
    else:
        layer = SqueezeExcite(cin, max(8, cin // 4), "relu", str(rng.choice(["sigmoid", "hsigmoid"])))
    return layer, (1, cin, res, res)


# ---------------------------------------------------------------------------------------
# zoo variants
# ---------------------------------------------------------------------------------------
ZOO_MAX_MACS = 3e9  # about 0.1-0.15 s a forward pass on one thread of a recent x86 core
ZOO_WIDTHS = (0.5, 1.5)  # the width range, drawn in steps of 0.05
ZOO_RESOLUTIONS = tuple(range(96, 225, 16))
_MAC_PROBE = 64  # MACs are counted at this resolution and scaled by (resolution / 64)^2


def conv_fc_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the conv and linear layers of ``model`` on a zero input of
    ``shape`` (one forward pass, eval mode, no gradient)."""
    total = 0

    def count(mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * math.prod(mod.kernel_size)
        else:
            total += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


@lru_cache(maxsize=512)
def _zoo_probe_macs(name: str, width: float) -> int:
    return conv_fc_macs(zoo.build(name, 1000, width), (1, 3, _MAC_PROBE, _MAC_PROBE))


def zoo_macs(name: str, width: float, resolution: int) -> float:
    """Conv and FC MACs of zoo model ``name`` at ``width`` and ``resolution``, from a probe
    at 64x64 scaled with the area (a slight overestimate for the fixed-size head and SE
    layers)."""
    return _zoo_probe_macs(name, round(width, 2)) * (resolution / _MAC_PROBE) ** 2


def fit_zoo_budget(name: str, width: float, resolution: int) -> tuple[float, int]:
    """(width, resolution) of zoo model ``name`` brought under ``ZOO_MAX_MACS``: first the
    resolution goes down (multiples of 16, to 96), then the width (steps of 0.05, to 0.5)."""
    lo = round(ZOO_WIDTHS[0] * 20)
    steps, res = round(width * 20), resolution
    while (macs := zoo_macs(name, steps / 20, res)) > ZOO_MAX_MACS:
        shrink = math.sqrt(ZOO_MAX_MACS / macs)
        if res > ZOO_RESOLUTIONS[0]:
            res = max(ZOO_RESOLUTIONS[0], min(res - 16, int(res * shrink) // 16 * 16))
        elif steps > lo:
            steps = max(lo, min(steps - 1, int(steps * shrink)))
        else:
            break
    return steps / 20, res


def zoo_variant_spec(rng: np.random.Generator) -> tuple[str, str, float, int]:
    """(family, model, width, resolution): ``zoo_variant``'s draw, without building."""
    family = str(rng.choice(sorted(zoo.FAMILIES)))
    name = str(rng.choice(zoo.FAMILIES[family]))
    lo, hi = (round(w * 20) for w in ZOO_WIDTHS)
    width = int(rng.integers(lo, hi + 1)) / 20
    width, res = fit_zoo_budget(name, width, int(rng.choice(ZOO_RESOLUTIONS)))
    return family, name, width, res


def zoo_variant(rng: np.random.Generator) -> tuple[str, nn.Module, tuple[int, int, int, int], str]:
    """(name, module, input shape, family): a zoo model of a random family (uniform over
    ``zoo.FAMILIES``, then over its models) at a random width (0.5-1.5, steps of 0.05) and
    resolution (96-224, multiples of 16), brought under ``ZOO_MAX_MACS`` by
    ``fit_zoo_budget``. The name is ``zoo:<family>:<model>:w<width>:r<resolution>``; the
    module is built as ``zoo.build`` builds it (1000 classes, default initialisation)."""
    family, name, width, res = zoo_variant_spec(rng)
    label = f"zoo:{family}:{name}:w{width:g}:r{res}"
    return label, zoo.build(name, 1000, width), (1, 3, res, res), family


def family_from_network_name(name: str) -> str | None:
    """The zoo family of a measured network's name: ``zoo:<family>:...`` (``zoo_variant``)
    or a bare zoo model name; None for anything else (random and search-space networks)."""
    if name.startswith("zoo:"):
        family = name.split(":")[1]
        return family if family in zoo.FAMILIES else None
    return zoo.family_of(name) if name in zoo.ZOO else None
