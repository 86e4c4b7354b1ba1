"""The lowering of an ``Arch``: the one statement of what an arch's layers are.

``lower(arch, head)`` lists every layer of the network in execution order as LayerSpecs:
the stem conv, each block's layers (from its kind in the block registry, named
``blocks.{i}.{layer}``), the optional 1x1 head conv, the global pool, the flatten and the
head's linear layers. The torch model, the profile (params, MACs) and the latency
estimator's kernel IR are all views of this list. Torch-free: fast enough for a search
loop.
"""

from __future__ import annotations

from nasctl.arch import Arch, Block
from nasctl.errors import NasctlError
from nasctl.nn.blocks.registry import BLOCKS
from nasctl.nn.layers import LayerSpec, conv, conv_out, flatten, global_pool, linear

HEADS = ("classifier", "embedding", "features")

__all__ = ["HEADS", "LayerSpec", "conv_out", "lower", "lower_block"]


def lower_block(block: Block, act: str, hw: int, index: int) -> list[LayerSpec]:
    """The layers of ``arch.blocks[index]`` on an ``hw`` x ``hw`` input, from its kind."""
    block_type = BLOCKS.get(block.kind)
    if block_type is None:
        raise NasctlError(f"unknown block kind {block.kind!r} (registered: {', '.join(sorted(BLOCKS))})")
    layers = block_type.lower(
        block.in_channels, block.out_channels, block.kernel, block.expansion, block.stride, act, hw=hw
    )
    return [la.replace(name=f"blocks.{index}.{la.name}", block=index) for la in layers]


def lower(arch: Arch, head: str = "classifier") -> list[LayerSpec]:
    """Every layer of ``build_model(arch, head)`` in execution order. ``head``:
    ``classifier`` (a linear layer; none when the arch has no ``num_classes``),
    ``embedding`` (linear -> ReLU -> linear; none without ``embedding_dim``) or
    ``features`` (no head layers)."""
    act = arch.activation
    layers = [
        conv(
            "stem",
            arch.in_channels,
            arch.stem_channels,
            arch.stem_kernel,
            arch.stem_stride,
            act=act,
            hw=arch.resolution,
        )
    ]
    for i, block in enumerate(arch.blocks):
        layers += lower_block(block, act, layers[-1].out_hw, i)
    c, hw = layers[-1].cout, layers[-1].out_hw
    if arch.head_channels:
        layers.append(conv("head_conv", c, arch.head_channels, 1, act=act, hw=hw))
        c = arch.head_channels
    layers += [global_pool("pool", c, hw), flatten("flatten", c)]
    if head == "classifier" and arch.num_classes:
        layers.append(linear("head", c, arch.num_classes))
    elif head == "embedding" and arch.embedding_dim:
        layers += [linear("head.0", c, c, act="relu"), linear("head.2", c, arch.embedding_dim)]
    return layers
