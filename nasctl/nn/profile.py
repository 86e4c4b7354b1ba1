"""Analytical cost of an ``Arch``: every weighted layer with its shapes, params, MACs.

A view of the lowering (``nasctl.nn.lower``), so no torch is needed: this is fast enough
to run inside a search loop, and a test holds it to the counts of the built torch model.
FLOPs are reported as ``2 * MACs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nasctl.arch import Arch
from nasctl.nn.layers import LayerSpec, conv_out
from nasctl.nn.lower import lower

__all__ = ["ArchCost", "Layer", "arch_cost", "arch_layers", "conv_out"]


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # "conv" | "se" | "linear"
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


def _layer(s: LayerSpec) -> Layer:
    return Layer(s.name, s.op, s.cin, s.cout, s.kernel, s.stride, s.groups, s.in_hw, s.out_hw, s.params, s.macs)


def arch_layers(arch: Arch, head: str = "classifier") -> list[Layer]:
    """Every weighted layer of ``build_model(arch, head)`` in execution order."""
    return [_layer(s) for s in lower(arch, head) if s.params]


def arch_cost(arch: Arch, head: str = "classifier") -> ArchCost:
    layers = arch_layers(arch, head)
    return ArchCost(sum(la.params for la in layers), sum(la.macs for la in layers), layers)
