"""Search spaces: a YAML file of choices -> validated ``SearchSpace`` -> ``Arch``.

The YAML schema is documented in ``search_spaces/README.md``. In short: input resolution
choices, the hardware parallelism factor P, a global depth-multiplier choice list that
scales every stage's channels, stages (depth choices, base channels, stride, per-block
choices of kind / kernel / expansion), a stem, a head and an output.

Curation is a property of the space: with ``align_channels: true`` every channel count is
``base * depth_multiplier`` rounded to a multiple of P; with ``false`` it is only rounded
to an integer (an uncurated space, to compare against).

The space owns its encoding; nothing else knows the parameter names:

* ``SearchSpace.parameters()`` -- the *flat encoding* for Optuna: ``{name: [choices]}``
  holding every block position up to each stage's largest depth, so every parameter is
  present in every trial (positions beyond the chosen depth are ignored);
* ``SearchSpace.resolve(params) -> Arch`` (decode), ``SearchSpace.encode(arch) -> params``
  (its inverse, for an arch the space holds) and ``SearchSpace.sample(rng) -> Arch``;
* ``SearchSpace.full_params(params)`` -- every position filled, as a sampler must see them;
* ``SearchSpace.size()`` -- how many distinct choice combinations the space holds;
* ``SearchSpace.to_yaml()`` / ``save(path)`` -- the space written back as YAML.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from nasctl.arch import Activation, Arch, Block, BlockKind
from nasctl.channels import align_channels
from nasctl.errors import NasctlError, from_validation_error

ParamValue = int | float | str


def _as_list(v: Any) -> Any:
    """Let a YAML scalar stand for a one-element choice list."""
    return v if isinstance(v, list) else [v]


def _unique(v: list) -> list:
    if len(set(v)) != len(v):
        dup = next(x for x in v if v.count(x) > 1)
        raise ValueError(f"lists {dup!r} twice")
    return v


def _odd(v: list[int]) -> list[int]:
    for k in v:
        if k % 2 == 0:
            raise ValueError(f"kernel sizes must be odd (got {k})")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    resolution: list[PositiveInt] = Field(min_length=1)
    channels: PositiveInt = 3

    _list = field_validator("resolution", mode="before")(_as_list)
    _uniq = field_validator("resolution")(_unique)


class StemSpec(_Strict):
    channels: PositiveInt
    kernel: PositiveInt = 3
    stride: Literal[1, 2] = 1
    scale: bool = Field(True, description="scale the stem's channels by the depth multiplier")

    @field_validator("kernel")
    @classmethod
    def _odd_kernel(cls, v: int) -> int:
        return _odd([v])[0]


class StageBaseline(_Strict):
    depth: PositiveInt | None = None
    channels: PositiveInt | None = None
    kind: BlockKind | None = None
    kernel: PositiveInt | None = None
    expansion: PositiveInt | None = None


class StageSpec(_Strict):
    name: str | None = None
    depth: list[PositiveInt] = Field(min_length=1, description="number-of-blocks choices")
    channels: list[PositiveInt] = Field(min_length=1, description="base channel choices")
    widths: list[PositiveInt] | None = Field(
        None,
        min_length=1,
        description="explicit channel counts the stage may take (a curated space): base x depth "
        "multiplier rounds up to the next listed width instead of to a multiple of P",
    )
    stride: Literal[1, 2] = 1
    kind: list[BlockKind] = Field(default_factory=lambda: ["ibn"], min_length=1)
    kernel: list[PositiveInt] = Field(default_factory=lambda: [3], min_length=1)
    expansion: list[PositiveInt] = Field(default_factory=lambda: [6], min_length=1)
    baseline: StageBaseline = Field(default_factory=StageBaseline)

    _list = field_validator("depth", "channels", "kind", "kernel", "expansion", mode="before")(_as_list)
    _uniq = field_validator("depth", "channels", "kind", "kernel", "expansion", "widths")(_unique)
    _oddk = field_validator("kernel")(_odd)

    @model_validator(mode="after")
    def _baseline_in_choices(self) -> StageSpec:
        for key in ("depth", "channels", "kind", "kernel", "expansion"):
            value = getattr(self.baseline, key)
            if value is not None and value not in getattr(self, key):
                raise ValueError(f"baseline.{key} {value!r} is not among the {key} choices {getattr(self, key)}")
        return self


class HeadSpec(_Strict):
    channels: NonNegativeInt = Field(description="1x1 conv width before pooling; 0 for none")
    scale: bool = Field(False, description="scale by max(1, depth multiplier), as MobileNetV2 does")


class OutputSpec(_Strict):
    classes: PositiveInt | None = None
    embedding_dim: PositiveInt | None = None

    @model_validator(mode="after")
    def _some(self) -> OutputSpec:
        if self.classes is None and self.embedding_dim is None:
            raise ValueError("output needs classes or embedding_dim (or both)")
        return self


class GlobalBaseline(_Strict):
    resolution: PositiveInt | None = None
    depth_multiplier: PositiveFloat | None = None


class SpaceSpec(_Strict):
    name: str
    description: str = ""
    input: InputSpec
    parallelism: PositiveInt = Field(description="hardware parallelism factor P")
    align_channels: bool = Field(True, description="round channels to multiples of P (curated)")
    activation: Activation = "relu6"
    depth_multiplier: list[PositiveFloat] = Field(default_factory=lambda: [1.0], min_length=1)
    stem: StemSpec
    stages: list[StageSpec] = Field(min_length=1)
    head: HeadSpec
    output: OutputSpec
    baseline: GlobalBaseline = Field(default_factory=GlobalBaseline)

    _list = field_validator("depth_multiplier", mode="before")(_as_list)
    _uniq = field_validator("depth_multiplier")(_unique)

    @model_validator(mode="after")
    def _baseline_in_choices(self) -> SpaceSpec:
        b = self.baseline
        if b.resolution is not None and b.resolution not in self.input.resolution:
            raise ValueError(f"baseline.resolution {b.resolution} is not among {self.input.resolution}")
        if b.depth_multiplier is not None and b.depth_multiplier not in self.depth_multiplier:
            raise ValueError(f"baseline.depth_multiplier {b.depth_multiplier} is not among {self.depth_multiplier}")
        return self


def _yaml_line(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its deepest existing parent)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


class SearchSpace:
    """A validated search space. Build with ``SearchSpace.load(path)`` or ``from_dict``."""

    def __init__(self, spec: SpaceSpec, source: str = "<space>"):
        self.spec = spec
        self.source = source
        self._params = self._build_parameters()

    # ---- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """A space from a YAML file, or a shipped space by name (``mobilenetv2_32``)."""
        path = Path(path)
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            from nasctl.resources import shipped_spaces

            shipped = {p.stem: p for p in shipped_spaces()}
            if path.name not in shipped:
                raise NasctlError(f"{path}: no such search-space file or shipped space ({', '.join(shipped)})")
            path = shipped[path.name]
        if not path.exists():
            raise NasctlError(f"{path}: no such search-space file")
        if not path.is_file():
            raise NasctlError(f"{path}: is not a file")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise NasctlError(f"{path}: cannot read ({exc})") from None
        return cls.loads(text, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<space>", yaml_root: yaml.Node | None = None) -> SearchSpace:
        if not isinstance(data, dict):
            raise NasctlError(f"{source}: a search space must be a YAML mapping (got {type(data).__name__})")
        try:
            spec = SpaceSpec.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, source, lambda loc: _yaml_line(yaml_root, loc)) from None
        return cls(spec, source)

    @classmethod
    def loads(cls, text: str, source: str = "<space>") -> SearchSpace:
        """A space from YAML text (what ``to_yaml`` writes)."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark else source
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise NasctlError(f"{where}: malformed YAML: {problem}") from None
        return cls.from_dict(data, source=source, yaml_root=root)

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data, in the YAML schema (defaults left out)."""
        return self.spec.model_dump(mode="json", exclude_defaults=True)

    def to_yaml(self) -> str:
        """The space as YAML that ``SearchSpace.loads`` (or ``load``) reads back to an equal space."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    def with_resolution(self, resolution: int) -> SearchSpace:
        """This space with its input resolution fixed to ``resolution`` (one of its choices):
        the space a supernet trained at that resolution holds."""
        if resolution not in self.spec.input.resolution:
            raise NasctlError(f"{self.source}: resolution {resolution} is not among {list(self.spec.input.resolution)}")
        d = self.to_dict()
        d["input"]["resolution"] = [resolution]
        d.get("baseline", {}).pop("resolution", None)
        return SearchSpace.from_dict(d, source=self.source)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.spec == other.spec

    __hash__ = None  # type: ignore[assignment]

    # ---- channels --------------------------------------------------------------------
    def channels(self, base: int, multiplier: float = 1.0) -> int:
        """The space's channel rule for the stem and head (stages: ``stage_channels``)."""
        value = base * multiplier
        if self.spec.align_channels:
            return align_channels(value, self.spec.parallelism)
        return max(1, int(round(value)))

    def stage_channels(self, stage: int, base: int, multiplier: float = 1.0) -> int:
        """Channels of stage ``stage`` (0-based): with the stage's explicit ``widths`` (a
        curated space), ``base * multiplier`` rounded up to the next listed width (the
        largest when above them all); without, the space's rule (``channels``)."""
        widths = self.spec.stages[stage].widths
        if not widths:
            return self.channels(base, multiplier)
        value = max(1, int(round(base * multiplier)))
        return next((w for w in sorted(widths) if w >= value), max(widths))

    # ---- flat encoding ---------------------------------------------------------------
    def _build_parameters(self) -> dict[str, list[ParamValue]]:
        s = self.spec
        params: dict[str, list[ParamValue]] = {
            "resolution": list(s.input.resolution),
            "depth_multiplier": list(s.depth_multiplier),
        }
        for i, st in enumerate(s.stages, 1):
            params[f"s{i}.depth"] = list(st.depth)
            params[f"s{i}.channels"] = list(st.channels)
            for j in range(1, max(st.depth) + 1):
                params[f"s{i}.b{j}.kind"] = list(st.kind)
                params[f"s{i}.b{j}.kernel"] = list(st.kernel)
                params[f"s{i}.b{j}.expansion"] = list(st.expansion)
        return params

    def parameters(self, include_fixed: bool = False) -> dict[str, list[ParamValue]]:
        """Flat encoding: ``{name: choices}``. Fixed (single-choice) ones only on request."""
        return {k: list(v) for k, v in self._params.items() if include_fixed or len(v) > 1}

    def sample_params(self, rng: np.random.Generator | int | None = None) -> dict[str, ParamValue]:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return {k: v[int(rng.integers(len(v)))] for k, v in self._params.items() if len(v) > 1}

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        return self.resolve(self.sample_params(rng))

    def samples(self, n: int, seed: int | None = 0, fixed: Mapping[str, Any] | None = None) -> list[Arch]:
        """``n`` archs drawn in turn from one generator seeded with ``seed``; ``fixed``
        parameters (e.g. ``{"resolution": 32}``) replace their draws, which are still made,
        so the other parameters are those of the unfixed stream."""
        rng = np.random.default_rng(seed)
        return [self.resolve({**self.sample_params(rng), **(fixed or {})}) for _ in range(n)]

    def sample_small_params(self, rng: np.random.Generator, p_small: float = 0.7) -> dict[str, ParamValue]:
        """A random choice pushed towards the small end: the resolution, the depth
        multiplier and each stage's depth and channels take their smallest choice with
        probability ``p_small`` each."""
        p = self.sample_params(rng)
        for name, choices in self.parameters().items():
            if self._sizes_network(name) and rng.random() < p_small:
                p[name] = min(choices)
        return p

    def smallest_params(self, kind: int = 0) -> dict[str, ParamValue]:
        """Every size choice (resolution, multiplier, depths, channels, kernels, expansions)
        at its smallest; every block of the ``kind``-th listed block kind (0 first, -1 last)."""
        return {
            n: (min(c) if self._sizes_network(n) or n.endswith((".kernel", ".expansion")) else c[kind])
            for n, c in self.parameters().items()
        }

    @staticmethod
    def _sizes_network(name: str) -> bool:
        return name in ("resolution", "depth_multiplier") or name.endswith((".depth", ".channels"))

    def full_params(self, params: Mapping[str, Any]) -> dict[str, ParamValue]:
        """``params`` with every searched parameter present (block positions past a stage's
        depth take their first choice): what a sampler must see for an enqueued arch."""
        full = dict(params)
        for name, choices in self.parameters().items():
            full.setdefault(name, choices[0])
        return full

    def encode(self, arch: Arch) -> dict[str, ParamValue]:
        """The flat parameters that ``resolve`` turns into ``arch`` (all positions filled,
        see ``full_params``). Raises ``NasctlError`` when the space does not hold ``arch``."""
        s = self.spec
        fixed = (
            arch.in_channels == s.input.channels
            and arch.activation == s.activation
            and arch.stem_kernel == s.stem.kernel
            and arch.stem_stride == s.stem.stride
            and arch.num_classes == s.output.classes
            and arch.embedding_dim == s.output.embedding_dim
            and arch.resolution in s.input.resolution
        )
        if fixed:
            for mult in s.depth_multiplier:
                params = self._encode_blocks(arch, mult)
                if params is not None:
                    params.update(resolution=arch.resolution, depth_multiplier=mult)
                    full = self.full_params({k: v for k, v in params.items() if len(self._params[k]) > 1})
                    if self.resolve(full) == arch:
                        return full
        raise NasctlError(f"{self.source}: the space does not hold arch {arch.id} ({arch.to_string()})")

    def _encode_blocks(self, arch: Arch, mult: float) -> dict[str, ParamValue] | None:
        """Stage depths and channels (and each block's choices) that rebuild ``arch.blocks``
        at depth multiplier ``mult``: a depth-first search over the stages' depth choices."""
        s = self.spec
        if arch.stem_channels != self.channels(s.stem.channels, mult if s.stem.scale else 1.0):
            return None

        def walk(i: int, start: int) -> dict | None:
            if i == len(s.stages):
                return {} if start == len(arch.blocks) else None
            st = s.stages[i]
            for depth in sorted(st.depth):
                blocks = arch.blocks[start : start + depth]
                if len(blocks) < depth or any(b.out_channels != blocks[0].out_channels for b in blocks):
                    continue
                base = next((c for c in st.channels if self.stage_channels(i, c, mult) == blocks[0].out_channels), None)
                ok = base is not None and all(
                    b.kind in st.kind
                    and b.kernel in st.kernel
                    and b.expansion in st.expansion
                    and b.stride == (st.stride if j == 0 else 1)
                    for j, b in enumerate(blocks)
                )
                rest = walk(i + 1, start + depth) if ok else None
                if rest is not None:
                    d = {f"s{i + 1}.depth": depth, f"s{i + 1}.channels": base}
                    for j, b in enumerate(blocks, 1):
                        d.update({f"s{i + 1}.b{j}.kind": b.kind, f"s{i + 1}.b{j}.kernel": b.kernel})
                        d[f"s{i + 1}.b{j}.expansion"] = b.expansion
                    return d | rest
            return None

        return walk(0, 0)

    def _value(self, params: Mapping[str, Any], name: str) -> Any:
        choices = self._params[name]
        if name not in params:
            if len(choices) == 1:
                return choices[0]
            raise NasctlError(f"{self.source}: parameter {name!r} is missing (choices: {choices})")
        value = params[name]
        if value not in choices:
            raise NasctlError(f"{self.source}: parameter {name!r} = {value!r} is not among {choices}")
        # keep the space's own type (YAML int vs float)
        return choices[choices.index(value)]

    def resolve(self, params: Mapping[str, Any]) -> Arch:
        """Flat parameters -> Arch. Unused block positions are ignored."""
        s = self.spec
        res = self._value(params, "resolution")
        mult = self._value(params, "depth_multiplier")
        stem_c = self.channels(s.stem.channels, mult if s.stem.scale else 1.0)
        blocks: list[Block] = []
        prev = stem_c
        for i, st in enumerate(s.stages, 1):
            depth = self._value(params, f"s{i}.depth")
            out_c = self.stage_channels(i - 1, self._value(params, f"s{i}.channels"), mult)
            for j in range(1, depth + 1):
                blocks.append(
                    Block.model_construct(
                        kind=self._value(params, f"s{i}.b{j}.kind"),
                        kernel=self._value(params, f"s{i}.b{j}.kernel"),
                        expansion=self._value(params, f"s{i}.b{j}.expansion"),
                        in_channels=prev,
                        out_channels=out_c,
                        stride=st.stride if j == 1 else 1,
                    )
                )
                prev = out_c
        head_c = 0
        if s.head.channels:
            head_c = self.channels(s.head.channels, max(1.0, mult) if s.head.scale else 1.0)
        return Arch(
            resolution=res,
            in_channels=s.input.channels,
            activation=s.activation,
            stem_channels=stem_c,
            stem_kernel=s.stem.kernel,
            stem_stride=s.stem.stride,
            blocks=tuple(blocks),
            head_channels=head_c,
            num_classes=s.output.classes,
            embedding_dim=s.output.embedding_dim,
        )

    # ---- baseline --------------------------------------------------------------------
    def baseline_params(self) -> dict[str, ParamValue]:
        """The MobileNetV2-style baseline: all IBN, kernel 3, expansion 6, deepest stages,
        depth multiplier 1.0, largest resolution (each where the space offers it; a stage's
        or the space's ``baseline:`` entry overrides)."""
        s = self.spec

        def prefer(choices: list, wanted: Any, fallback: Any) -> Any:
            return wanted if wanted in choices else fallback

        mults = s.depth_multiplier
        p: dict[str, ParamValue] = {
            "resolution": s.baseline.resolution or max(s.input.resolution),
            "depth_multiplier": s.baseline.depth_multiplier
            or prefer(mults, 1.0, min(mults, key=lambda m: abs(m - 1.0))),
        }
        for i, st in enumerate(s.stages, 1):
            b = st.baseline
            p[f"s{i}.depth"] = b.depth or max(st.depth)
            p[f"s{i}.channels"] = b.channels or st.channels[0]
            for j in range(1, max(st.depth) + 1):
                p[f"s{i}.b{j}.kind"] = b.kind or prefer(st.kind, "ibn", st.kind[0])
                p[f"s{i}.b{j}.kernel"] = b.kernel or prefer(st.kernel, 3, min(st.kernel))
                p[f"s{i}.b{j}.expansion"] = b.expansion or prefer(st.expansion, 6, max(st.expansion))
        return {k: v for k, v in p.items() if len(self._params[k]) > 1}

    def baseline(self) -> Arch:
        return self.resolve(self.baseline_params())

    # ---- size ------------------------------------------------------------------------
    def size(self) -> int:
        """Number of distinct choice combinations (unused block positions not counted)."""
        s = self.spec
        total = len(s.input.resolution) * len(s.depth_multiplier)
        for st in s.stages:
            per_block = len(st.kind) * len(st.kernel) * len(st.expansion)
            total *= len(st.channels) * sum(per_block**d for d in st.depth)
        return total

    def enumerate_params(self) -> Iterator[dict[str, ParamValue]]:
        """Every distinct choice combination (for small spaces and tests); ``size()`` long."""
        s = self.spec
        per_stage: list[list[dict]] = []
        for i, st in enumerate(s.stages, 1):
            options = []
            for depth, ch in itertools.product(st.depth, st.channels):
                per_block = list(itertools.product(st.kind, st.kernel, st.expansion))
                for combo in itertools.product(per_block, repeat=depth):
                    d = {f"s{i}.depth": depth, f"s{i}.channels": ch}
                    for j in range(1, max(st.depth) + 1):
                        kind, k, e = combo[j - 1] if j <= depth else (st.kind[0], st.kernel[0], st.expansion[0])
                        d.update({f"s{i}.b{j}.kind": kind, f"s{i}.b{j}.kernel": k, f"s{i}.b{j}.expansion": e})
                    options.append(d)
            per_stage.append(options)
        for res, mult in itertools.product(s.input.resolution, s.depth_multiplier):
            for parts in itertools.product(*per_stage):
                d: dict[str, ParamValue] = {"resolution": res, "depth_multiplier": mult}
                for part in parts:
                    d.update(part)
                yield {k: v for k, v in d.items() if len(self._params[k]) > 1}

    # ---- description -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    def summary(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": s.name,
            "description": s.description,
            "source": self.source,
            "parallelism": s.parallelism,
            "align_channels": s.align_channels,
            "resolution": list(s.input.resolution),
            "input_channels": s.input.channels,
            "depth_multiplier": list(s.depth_multiplier),
            "activation": s.activation,
            "stages": [
                {
                    "name": st.name or f"s{i}",
                    "depth": list(st.depth),
                    "channels": list(st.channels),
                    "resolved_channels": sorted(
                        {self.stage_channels(i - 1, c, m) for c in st.channels for m in s.depth_multiplier}
                    ),
                    **({"widths": sorted(st.widths)} if st.widths else {}),
                    "stride": st.stride,
                    "kind": list(st.kind),
                    "kernel": list(st.kernel),
                    "expansion": list(st.expansion),
                }
                for i, st in enumerate(s.stages, 1)
            ],
            "head_channels": s.head.channels,
            "output": s.output.model_dump(),
            "size": self.size(),
            "log10_size": round(math.log10(self.size()), 2),
            "num_parameters": len(self.parameters()),
        }
