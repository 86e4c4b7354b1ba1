"""Arch: one fully resolved network of a search space.

Every block's kind, kernel, expansion, channels and stride are explicit, so an Arch
builds a torch model, exports to ONNX and is costed without its search space.
Three equivalent forms:

* ``Arch.to_json()`` / ``Arch.from_json()`` -- the file format (``arch.json``);
* ``Arch.to_string()`` / ``Arch.from_string()`` -- a compact, readable form (timm style)::

      in_r32_c3 | act_relu6 | stem_k3_c16_s1 | ibn_k3_e1_c16_s1 | fused_k3_e4_c32_s2 | head_c256 | out_cls10_emb64

  A block token is ``{kind token}_k{kernel}_e{expansion}_c{out_channels}_s{stride}``
  (``ibn``, ``fused`` or another registered kind's token); its input channels are the
  previous token's output channels.
* ``Arch.id`` -- a stable short hash of the string form.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from nasctl.errors import NasctlError, from_validation_error
from nasctl.nn.blocks import BLOCKS
from nasctl.nn.blocks.registry import kind_of_token


def _registered_kind(kind: str) -> str:
    if kind not in BLOCKS:
        raise ValueError(f"unknown block kind {kind!r} (registered: {', '.join(sorted(BLOCKS))})")
    return kind


# a block kind is any kind in the block registry (``nasctl.nn.blocks``: ibn, fused_ibn, ...)
BlockKind = Annotated[str, AfterValidator(_registered_kind)]
Activation = Literal["relu", "relu6", "hswish", "silu"]
ARCH_SCHEMA = "nasctl.arch/1"


def _check_kernel(k: int) -> int:
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd (got {k})")
    return k


class Block(BaseModel):
    """One IBN or fused-IBN block, fully resolved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BlockKind
    kernel: PositiveInt
    expansion: PositiveInt
    in_channels: PositiveInt
    out_channels: PositiveInt
    stride: Literal[1, 2]

    @model_validator(mode="after")
    def _odd_kernel(self) -> Block:
        _check_kernel(self.kernel)
        return self

    @property
    def mid_channels(self) -> int:
        """Width after the expansion conv (equal to ``in_channels`` when expansion is 1)."""
        return self.in_channels * self.expansion

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def token(self) -> str:
        token = BLOCKS[self.kind].token
        return f"{token}_k{self.kernel}_e{self.expansion}_c{self.out_channels}_s{self.stride}"


class Arch(BaseModel):
    """A network: stem conv -> IBN/fused-IBN blocks -> 1x1 head conv -> pool -> output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: PositiveInt
    in_channels: PositiveInt = 3
    activation: Activation = "relu6"
    stem_channels: PositiveInt
    stem_kernel: PositiveInt = 3
    stem_stride: Literal[1, 2] = 1
    blocks: tuple[Block, ...] = Field(min_length=1)
    head_channels: int = Field(default=0, ge=0, description="0: no 1x1 head conv")
    num_classes: PositiveInt | None = None
    embedding_dim: PositiveInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Arch:
        _check_kernel(self.stem_kernel)
        prev = self.stem_channels
        for i, b in enumerate(self.blocks):
            if b.in_channels != prev:
                raise ValueError(
                    f"blocks[{i}].in_channels is {b.in_channels} but the previous layer outputs {prev} channels"
                )
            prev = b.out_channels
        if self.num_classes is None and self.embedding_dim is None:
            raise ValueError("an arch needs num_classes or embedding_dim (or both)")
        return self

    # ---- derived -------------------------------------------------------------------
    @property
    def feature_channels(self) -> int:
        """Width of the pooled backbone features (what a linear probe sees)."""
        return self.head_channels or self.blocks[-1].out_channels

    @property
    def channels(self) -> list[int]:
        """Every conv output width in order (stem, block outputs, head)."""
        out = [self.stem_channels] + [b.out_channels for b in self.blocks]
        return out + ([self.head_channels] if self.head_channels else [])

    @cached_property
    def id(self) -> str:
        return hashlib.sha256(self.to_string().encode()).hexdigest()[:12]

    # ---- string form ---------------------------------------------------------------
    def to_string(self) -> str:
        out = []
        if self.num_classes is not None:
            out.append(f"cls{self.num_classes}")
        if self.embedding_dim is not None:
            out.append(f"emb{self.embedding_dim}")
        tokens = [
            f"in_r{self.resolution}_c{self.in_channels}",
            f"act_{self.activation}",
            f"stem_k{self.stem_kernel}_c{self.stem_channels}_s{self.stem_stride}",
            *(b.token() for b in self.blocks),
            f"head_c{self.head_channels}",
            "out_" + "_".join(out),
        ]
        return " | ".join(tokens)

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str) -> Arch:
        tokens = [t.strip() for t in text.strip().split("|") if t.strip()]
        fields: dict = {}
        blocks: list[dict] = []
        prev: int | None = None
        for tok in tokens:
            if m := re.fullmatch(r"in_r(\d+)_c(\d+)", tok):
                fields["resolution"], fields["in_channels"] = int(m[1]), int(m[2])
            elif m := re.fullmatch(r"act_(\w+)", tok):
                fields["activation"] = m[1]
            elif m := re.fullmatch(r"stem_k(\d+)_c(\d+)_s(\d+)", tok):
                fields["stem_kernel"], fields["stem_channels"] = int(m[1]), int(m[2])
                fields["stem_stride"] = int(m[3])
                prev = int(m[2])
            elif (m := re.fullmatch(r"([a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*)_k(\d+)_e(\d+)_c(\d+)_s(\d+)", tok)) and (
                kind := kind_of_token(m[1])
            ):
                if prev is None:
                    raise NasctlError(f"arch string: block token {tok!r} comes before the stem token")
                blocks.append(
                    dict(
                        kind=kind,
                        kernel=int(m[2]),
                        expansion=int(m[3]),
                        in_channels=prev,
                        out_channels=int(m[4]),
                        stride=int(m[5]),
                    )
                )
                prev = int(m[4])
            elif m := re.fullmatch(r"head_c(\d+)", tok):
                fields["head_channels"] = int(m[1])
            elif m := re.fullmatch(r"out((?:_cls\d+)?)((?:_emb\d+)?)", tok):
                if m[1]:
                    fields["num_classes"] = int(m[1][4:])
                if m[2]:
                    fields["embedding_dim"] = int(m[2][4:])
            else:
                raise NasctlError(f"arch string: cannot read token {tok!r}")
        fields["blocks"] = blocks
        for required in ("resolution", "stem_channels"):
            if required not in fields:
                raise NasctlError(
                    f"arch string: missing the {'in_r..' if required == 'resolution' else 'stem_..'} token"
                )
        return cls.from_dict(fields, source="arch string")

    # ---- JSON form -----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"schema": ARCH_SCHEMA, "id": self.id, "arch": self.to_string()}
        d.update(self.model_dump(mode="json"))
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str = "arch") -> Arch:
        if not isinstance(data, dict):
            raise NasctlError(f"{source}: an arch must be a JSON object")
        data = dict(data)
        schema = data.pop("schema", ARCH_SCHEMA)
        if schema != ARCH_SCHEMA:
            raise NasctlError(f"{source}: unsupported arch schema {schema!r} (this nasctl reads {ARCH_SCHEMA})")
        data.pop("id", None)
        data.pop("arch", None)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, source) from None

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        path = Path(path)
        if not path.is_file():
            raise NasctlError(f"{path}: no such arch file")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NasctlError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))
