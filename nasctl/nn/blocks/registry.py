"""The block-kind registry (torch-free).

A block kind is its lowering: a function ``(in_ch, out_ch, kernel, expansion, stride,
act, *, hw=1, **options) -> list[LayerSpec]`` that states the block's layers, named
locally (``expand``, ``depthwise``, ...), for an ``hw`` x ``hw`` input. Everything else
follows from it: ``nasctl.nn.lower`` places the layers in an arch, the profile counts
them, the kernel IR is made of them and the torch module (``nasctl.nn.blocks.Block``)
is built from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from nasctl.nn.layers import LayerSpec

Lowering = Callable[..., list[LayerSpec]]


@dataclass(frozen=True)
class BlockType:
    """A registered block kind. ``slots``: layer names every block of this kind answers
    to, in order; its torch module holds an identity, in its place, for each one a given
    block leaves out (so that ``block.project`` exists even where there is no project
    conv)."""

    name: str
    lower: Lowering
    slots: tuple[str, ...] = ()
    token: str = ""  # the kind's word in an arch string (``fused_k3_e4_c32_s2``); default: the name


BLOCKS: dict[str, BlockType] = {}


def register(name: str, slots: tuple[str, ...] = (), token: str | None = None) -> Callable[[Lowering], Lowering]:
    """Decorator: register a lowering function as the block kind ``name`` (written
    ``token`` in arch strings; default ``name``)."""
    token = token or name
    if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*", token):
        raise ValueError(f"block token {token!r}: lower-case words joined by '_' (no digits after '_')")

    def add(lower: Lowering) -> Lowering:
        if name in BLOCKS:
            raise ValueError(f"block kind {name!r} is already registered")
        if any(b.token == token for b in BLOCKS.values()):
            raise ValueError(f"block token {token!r} is already taken")
        BLOCKS[name] = BlockType(name, lower, tuple(slots), token)
        return lower

    return add


def kind_of_token(token: str) -> str | None:
    """The block kind written ``token`` in arch strings (None: no such kind)."""
    return next((b.name for b in BLOCKS.values() if b.token == token), None)
