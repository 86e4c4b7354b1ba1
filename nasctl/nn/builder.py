"""``Arch -> nn.Module``, built from the lowering (``nasctl.nn.lower``) and the block registry."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.nn.blocks.modules import block_module, layer_module, make_activation
from nasctl.nn.layers import LayerSpec
from nasctl.nn.lower import HEADS, lower

__all__ = ["HEADS", "Network", "build_model"]


def _head(linears: list[LayerSpec]) -> nn.Module:
    """The head's linear layers, each followed by its activation (none: the identity)."""
    modules: list[nn.Module] = []
    for s in linears:
        modules.append(nn.Linear(s.cin, s.cout))
        if s.act:
            modules.append(make_activation(s.act))
    if not modules:
        return nn.Identity()
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


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
        layers = {s.name: s for s in lower(arch, head)}
        act = arch.activation
        self.stem = layer_module(layers["stem"])
        self.blocks = nn.Sequential(
            *(
                block_module(b.kind, b.in_channels, b.out_channels, b.kernel, b.expansion, b.stride, act)
                for b in arch.blocks
            )
        )
        self.head_conv = layer_module(layers["head_conv"]) if "head_conv" in layers else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _head([s for s in layers.values() if s.op == "linear"])

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.head_conv(self.blocks(self.stem(x)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


def build_model(arch: Arch, head: str = "classifier", seed: int | None = None) -> Network:
    if seed is not None:
        torch.manual_seed(seed)
    return Network(arch, head)
