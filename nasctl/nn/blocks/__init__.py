"""Block kinds: the registry and one file per kind (torch-free), and their torch modules.

Importing this package imports no torch: the registry (``BLOCKS``, ``BlockType``,
``register``) and the kinds' lowerings are plain Python; the torch names (``IBN``,
``FusedIBN``, ``Block``, ``ConvBNAct``, ``SqueezeExcite``, ...) load on first use.

A new block kind is one file here holding its lowering under ``@register("name")``,
imported below.
"""

from __future__ import annotations

from nasctl.nn.blocks import fused_ibn, ibn  # noqa: F401  (each registers its kind)
from nasctl.nn.blocks.registry import BLOCKS, BlockType, register

_TORCH_NAMES = (
    "ACTIVATIONS",
    "Block",
    "ConvBNAct",
    "FusedIBN",
    "IBN",
    "SqueezeExcite",
    "block_module",
    "layer_module",
    "make_activation",
)

__all__ = ["BLOCKS", "BlockType", "register", *_TORCH_NAMES]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from nasctl.nn.blocks import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
