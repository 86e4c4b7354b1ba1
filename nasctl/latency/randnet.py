"""Random networks for latency measurement.

Kernels are timed *in context*: inside whole random networks, with onnxruntime's
profiler giving every node's time. Two sources of networks:

* samples of the shipped search spaces (at their own and at other resolutions);
* ``random_cnn(rng)``: networks assembled from a menu that covers the model zoo's
  operators and ranges, including dense / depthwise / grouped convs (kernel 1-7, stride
  1-2), IBN and fused-IBN blocks, SE with sigmoid or hard-sigmoid, ReLU / ReLU6 /
  hard-swish / SiLU, ResNet basic and bottleneck blocks, ShuffleNet units (split, concat,
  channel shuffle), SqueezeNet fire modules (concat), max / average pooling, and
  1-3 fully connected layers. Channels range from 8 to 1024, resolutions from 32 to 224.

``single_kernel_net(rng)`` builds a one-layer network, for timing kernels in isolation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from nasctl.nn.blocks import IBN, ConvBNAct, FusedIBN, SqueezeExcite, make_activation
from nasctl.zoo import FireModule, ResBlock, ShuffleBlock

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
        kind = rng.choice(
            ["mb", "mb", "fused", "conv", "dw", "gconv", "basic", "shuffle", "fire", "pool"],
            p=[0.22, 0.1, 0.1, 0.12, 0.08, 0.05, 0.12, 0.07, 0.07, 0.07],
        )
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
