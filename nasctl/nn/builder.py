"""``Arch -> nn.Module``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.nn.blocks import IBN, ConvBNAct, FusedIBN

HEADS = ("classifier", "embedding", "features")


class Network(nn.Module):
    """stem -> blocks -> [1x1 head conv] -> global average pool -> head.

    ``head``: ``classifier`` (linear layer to ``num_classes``), ``embedding`` (2-layer MLP
    projection head to ``embedding_dim``, SimCLR style) or ``features`` (the pooled
    backbone features, as a linear probe sees them).
    """

    def __init__(self, arch: Arch, head: str = "classifier"):
        super().__init__()
        if head not in HEADS:
            raise NasctlError(f"unknown head {head!r} (expected one of: {', '.join(HEADS)})")
        if head == "classifier" and arch.num_classes is None:
            raise NasctlError("this arch has no num_classes; use head 'embedding' or 'features'")
        if head == "embedding" and arch.embedding_dim is None:
            raise NasctlError("this arch has no embedding_dim; use head 'classifier' or 'features'")
        self.arch, self.head_kind = arch, head
        act = arch.activation
        self.stem = ConvBNAct(arch.in_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride, act=act)
        blocks = []
        for b in arch.blocks:
            cls = IBN if b.kind == "ibn" else FusedIBN
            blocks.append(cls(b.in_channels, b.out_channels, b.kernel, b.expansion, b.stride, act=act))
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = (
            ConvBNAct(arch.blocks[-1].out_channels, arch.head_channels, 1, act=act)
            if arch.head_channels
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        feat = arch.feature_channels
        if head == "classifier":
            self.head = nn.Linear(feat, arch.num_classes)
        elif head == "embedding":
            self.head = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(inplace=True), nn.Linear(feat, arch.embedding_dim))
        else:
            self.head = nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.head_conv(self.blocks(self.stem(x)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


def build_model(arch: Arch, head: str = "classifier", seed: int | None = None) -> Network:
    if seed is not None:
        torch.manual_seed(seed)
    return Network(arch, head)
