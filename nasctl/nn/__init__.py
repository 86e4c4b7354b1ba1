"""Torch models built from an ``Arch``: blocks, builder, counting and ONNX export."""

from nasctl.nn.blocks import IBN, ConvBNAct, FusedIBN
from nasctl.nn.builder import HEADS, Network, build_model
from nasctl.nn.profile import ArchCost, arch_cost

__all__ = ["IBN", "ArchCost", "ConvBNAct", "FusedIBN", "HEADS", "Network", "arch_cost", "build_model"]
