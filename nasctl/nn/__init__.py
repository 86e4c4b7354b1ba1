"""Networks from an ``Arch``: the lowering (layer specs, block kinds, counting) and the
torch models built from it (blocks, builder, ONNX export).

Importing this package imports no torch (``nasctl.nn.lower``, ``nasctl.nn.profile`` and
``nasctl.nn.blocks`` stay torch-free); the names below load their module on first use.
"""

from __future__ import annotations

from importlib import import_module

_HOMES = {
    "IBN": "nasctl.nn.blocks",
    "ConvBNAct": "nasctl.nn.blocks",
    "FusedIBN": "nasctl.nn.blocks",
    "HEADS": "nasctl.nn.lower",
    "LayerSpec": "nasctl.nn.layers",
    "Network": "nasctl.nn.builder",
    "build_model": "nasctl.nn.builder",
    "ArchCost": "nasctl.nn.profile",
    "arch_cost": "nasctl.nn.profile",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
