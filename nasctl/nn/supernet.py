"""A weight-sharing supernet holding every arch of a ``SearchSpace`` at one resolution.

Per block position (stage, index in the stage, up to the stage's largest depth) the
supernet holds one branch per block kind of the stage, with separate weights (an IBN's
depthwise kernel and a fused-IBN's dense kernel cannot share a tensor):

* ``ibn``: 1x1 expand -> kxk depthwise -> 1x1 project;
* ``fused_ibn``: kxk dense expand -> 1x1 project, and, where the stage offers expansion 1,
  the single kxk conv that a fused-IBN of expansion 1 is (its own weight: it maps the
  input to the output width directly).

Each weight is allocated at its largest shape and sliced per subnet (Once-for-All):

* elastic kernel: a kxk kernel is the centre crop of the largest kernel;
* elastic expansion and width: a layer with ``cin`` inputs and ``cout`` outputs uses
  ``weight[:cout, :cin]``, its BatchNorm the first ``cout`` entries of each of its
  tensors (running statistics included). ``sort_channels`` orders each expanded middle
  width by importance (the L1 norm of the project weights that read it), so a small
  expansion keeps the channels that matter most; it is function-preserving for every
  subnet whose expansion is the largest. The residual streams between blocks are not
  reordered: a narrower width keeps their first channels, which the sandwich rule trains
  hardest (the smallest subnet uses only them);
* elastic depth: a stage of depth d runs its first d positions;
* depth multiplier: scales the widths as the space's channel rule says.

``supernet(x, arch)`` runs the path of ``arch``; ``supernet.subnet(arch)`` builds the
ordinary ``Network`` of ``arch`` (``nasctl.nn.build_model``) holding the inherited
weights, the stand-alone model that is scored, exported and fine-tuned.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.nn.blocks.modules import make_activation
from nasctl.nn.builder import Network, build_model

SUPPORTED_KINDS = ("ibn", "fused_ibn")
SUBNET_HEADS = ("embedding", "features")


def _prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


class DynamicConvBN(nn.Module):
    """kxk conv (no bias, 'same' padding) -> BatchNorm -> activation, allocated at its
    largest shape and run at any smaller one (``forward(x, cout, kernel)``; the input
    width is ``x``'s). A depthwise layer has as many outputs as inputs."""

    def __init__(
        self, max_in: int, max_out: int, kernel: int, stride: int = 1, depthwise: bool = False, act: str | None = None
    ):
        super().__init__()
        self.depthwise, self.stride, self.act_name = depthwise, stride, act
        groups = max_out if depthwise else 1
        self.conv = nn.Conv2d(
            max_out if depthwise else max_in, max_out, kernel, stride, kernel // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(max_out)
        self.act = make_activation(act)

    def weight(self, cout: int, cin: int, kernel: int) -> Tensor:
        w = self.conv.weight[:cout] if self.depthwise else self.conv.weight[:cout, :cin]
        big = w.shape[-1]
        if kernel > big:
            raise NasctlError(f"kernel {kernel} is larger than the supernet's {big}")
        o = (big - kernel) // 2
        return w[:, :, o : o + kernel, o : o + kernel]

    def forward(self, x: Tensor, cout: int, kernel: int) -> Tensor:
        cin = x.shape[1]
        if self.depthwise:
            cout = cin
        y = F.conv2d(x, self.weight(cout, cin, kernel), None, self.stride, kernel // 2, 1, cin if self.depthwise else 1)
        bn = self.bn
        y = F.batch_norm(
            y,
            bn.running_mean[:cout],
            bn.running_var[:cout],
            bn.weight[:cout],
            bn.bias[:cout],
            self.training,
            bn.momentum if bn.momentum is not None else 0.1,
            bn.eps,
        )
        return self.act(y)

    def state(self, cout: int, cin: int, kernel: int) -> dict[str, Tensor]:
        """The state dict of the ``ConvBNAct`` this layer is at that shape."""
        bn = self.bn
        return {
            "0.weight": self.weight(cout, cin, kernel),
            "1.weight": bn.weight[:cout],
            "1.bias": bn.bias[:cout],
            "1.running_mean": bn.running_mean[:cout],
            "1.running_var": bn.running_var[:cout],
            "1.num_batches_tracked": bn.num_batches_tracked,
        }

    def permute_out(self, perm: Tensor) -> None:
        """Reorder the output channels (and the BatchNorm's) by ``perm`` (a permutation of
        the largest width)."""
        with torch.no_grad():
            self.conv.weight.copy_(self.conv.weight[perm])
            for t in (self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var):
                t.copy_(t[perm])

    def permute_in(self, perm: Tensor) -> None:
        with torch.no_grad():
            self.conv.weight.copy_(self.conv.weight[:, perm])


class DynamicIBN(nn.Module):
    """The IBN branch of one block position: 1x1 expand -> kxk depthwise -> 1x1 project."""

    def __init__(self, max_in: int, max_out: int, kernel: int, expansions: list[int], stride: int, act: str):
        super().__init__()
        self.stride, self.expansions = stride, sorted(expansions)
        mid = max_in * max(expansions)
        self.expand = DynamicConvBN(max_in, mid, 1, act=act) if max(expansions) > 1 else None
        self.depthwise = DynamicConvBN(mid, mid, kernel, stride, depthwise=True, act=act)
        self.project = DynamicConvBN(mid, max_out, 1, act=None)

    def forward(self, x: Tensor, kernel: int, expansion: int, cout: int) -> Tensor:
        cin = x.shape[1]
        mid = cin * expansion
        h = self.expand(x, mid, 1) if mid != cin else x
        y = self.project(self.depthwise(h, mid, kernel), cout, 1)
        return x + y if self.stride == 1 and cin == cout else y

    def state(self, cin: int, cout: int, kernel: int, expansion: int) -> dict[str, Tensor]:
        mid = cin * expansion
        out = _prefixed("depthwise", self.depthwise.state(mid, mid, kernel))
        out |= _prefixed("project", self.project.state(cout, mid, 1))
        if mid != cin:
            out |= _prefixed("expand", self.expand.state(mid, cin, 1))
        return out

    def sort_channels(self) -> None:
        """Order the middle channels by the L1 norm of the project weights reading them.
        Only where every expansion is above 1: with expansion 1 the depthwise conv reads
        the block's input channels directly, whose order is not this block's to change."""
        if self.expand is None or 1 in self.expansions:
            return
        perm = self.project.conv.weight.detach().abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        self.expand.permute_out(perm)
        self.depthwise.permute_out(perm)
        self.project.permute_in(perm)


class DynamicFusedIBN(nn.Module):
    """The fused-IBN branch of one block position: kxk dense expand -> 1x1 project, and
    the single kxk conv of expansion 1 (a weight of its own) where the stage offers it."""

    def __init__(self, max_in: int, max_out: int, kernel: int, expansions: list[int], stride: int, act: str):
        super().__init__()
        self.stride = stride
        big = max(expansions)
        self.expand = DynamicConvBN(max_in, max_in * big, kernel, stride, act=act) if big > 1 else None
        self.project = DynamicConvBN(max_in * big, max_out, 1, act=None) if big > 1 else None
        self.single = DynamicConvBN(max_in, max_out, kernel, stride, act=act) if 1 in expansions else None

    def forward(self, x: Tensor, kernel: int, expansion: int, cout: int) -> Tensor:
        cin = x.shape[1]
        if expansion == 1:
            y = self.single(x, cout, kernel)
        else:
            y = self.project(self.expand(x, cin * expansion, kernel), cout, 1)
        return x + y if self.stride == 1 and cin == cout else y

    def state(self, cin: int, cout: int, kernel: int, expansion: int) -> dict[str, Tensor]:
        if expansion == 1:
            return _prefixed("expand", self.single.state(cout, cin, kernel))
        mid = cin * expansion
        return _prefixed("expand", self.expand.state(mid, cin, kernel)) | _prefixed(
            "project", self.project.state(cout, mid, 1)
        )

    def sort_channels(self) -> None:
        if self.expand is None:
            return
        perm = self.project.conv.weight.detach().abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        self.expand.permute_out(perm)
        self.project.permute_in(perm)


BRANCHES = {"ibn": DynamicIBN, "fused_ibn": DynamicFusedIBN}


class DynamicLinear(nn.Linear):
    def forward_at(self, x: Tensor, cout: int) -> Tensor:
        return F.linear(x, self.weight[:cout, : x.shape[1]], self.bias[:cout])


class Supernet(nn.Module):
    """Every arch of ``space`` at input ``resolution`` (default: the space's largest), with
    the contrastive projection head (``embedding``: linear -> ReLU -> linear, as
    ``Network``'s). See the module docstring for how weights are shared."""

    def __init__(self, space, resolution: int | None = None):
        super().__init__()
        s = space.spec
        self.space = space
        self.resolution = resolution or max(s.input.resolution)
        if self.resolution not in s.input.resolution:
            raise NasctlError(f"resolution {self.resolution} is not among the space's {list(s.input.resolution)}")
        if s.output.embedding_dim is None:
            raise NasctlError(f"{space.source}: output.embedding_dim is required to train a supernet contrastively")
        for i, st in enumerate(s.stages, 1):
            other = [k for k in st.kind if k not in SUPPORTED_KINDS]
            if other:
                raise NasctlError(f"stage {i}: the supernet holds ibn and fused_ibn blocks, not {other[0]!r}")
        mults = s.depth_multiplier
        act = s.activation
        stem_max = max(space.channels(s.stem.channels, m if s.stem.scale else 1.0) for m in mults)
        self.stem = DynamicConvBN(s.input.channels, stem_max, s.stem.kernel, s.stem.stride, act=act)
        self.positions = nn.ModuleList()
        prev = stem_max
        for i, st in enumerate(s.stages):
            out_max = max(space.stage_channels(i, c, m) for c in st.channels for m in mults)
            stage = nn.ModuleList()
            for j in range(max(st.depth)):
                cin = prev if j == 0 else out_max
                stride = st.stride if j == 0 else 1
                stage.append(
                    nn.ModuleDict(
                        {k: BRANCHES[k](cin, out_max, max(st.kernel), list(st.expansion), stride, act) for k in st.kind}
                    )
                )
            self.positions.append(stage)
            prev = out_max
        self.head_max = 0
        if s.head.channels:
            self.head_max = max(space.channels(s.head.channels, max(1.0, m) if s.head.scale else 1.0) for m in mults)
            self.head_conv = DynamicConvBN(prev, self.head_max, 1, act=act)
            prev = self.head_max
        self.feature_max = prev
        self.embedding_dim = s.output.embedding_dim
        self.head0 = DynamicLinear(prev, prev)
        self.head2 = DynamicLinear(prev, self.embedding_dim)
        self._paths: dict[str, list[tuple[int, int, Any]]] = {}

    # ---- paths -------------------------------------------------------------------------
    def path(self, arch: Arch) -> list[tuple[int, int, Any]]:
        """``(stage, position, block)`` for each block of ``arch``. Raises ``NasctlError``
        when the supernet does not hold ``arch``."""
        key = arch.to_string()
        if key not in self._paths:
            if arch.resolution != self.resolution:
                raise NasctlError(
                    f"arch {arch.id} takes {arch.resolution}x{arch.resolution} images; this supernet "
                    f"was built for {self.resolution}x{self.resolution}"
                )
            params = self.space.encode(arch)
            out, i = [], 0
            for si in range(len(self.space.spec.stages)):
                for j in range(int(params.get(f"s{si + 1}.depth", self.space.spec.stages[si].depth[0]))):
                    out.append((si, j, arch.blocks[i]))
                    i += 1
            if len(self._paths) > 4096:
                self._paths.clear()
            self._paths[key] = out
        return self._paths[key]

    def forward_features(self, x: Tensor, arch: Arch) -> Tensor:
        path = self.path(arch)
        x = self.stem(x, arch.stem_channels, self.space.spec.stem.kernel)
        for si, j, b in path:
            x = self.positions[si][j][b.kind](x, b.kernel, b.expansion, b.out_channels)
        if arch.head_channels:
            x = self.head_conv(x, arch.head_channels, 1)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        f = self.forward_features(x, arch)
        c = f.shape[1]
        return self.head2.forward_at(F.relu(self.head0.forward_at(f, c)), self.embedding_dim)

    # ---- stand-alone subnets -----------------------------------------------------------
    def subnet_state(self, arch: Arch, head: str = "embedding") -> dict[str, Tensor]:
        """The state dict of ``build_model(arch, head)`` holding the inherited weights
        (views of the supernet's tensors; ``subnet`` copies them)."""
        path = self.path(arch)
        s = self.space.spec
        state = _prefixed("stem", self.stem.state(arch.stem_channels, arch.in_channels, s.stem.kernel))
        for i, (si, j, b) in enumerate(path):
            branch = self.positions[si][j][b.kind]
            state |= _prefixed(f"blocks.{i}", branch.state(b.in_channels, b.out_channels, b.kernel, b.expansion))
        if arch.head_channels:
            state |= _prefixed("head_conv", self.head_conv.state(arch.head_channels, arch.blocks[-1].out_channels, 1))
        if head == "embedding":
            c = arch.feature_channels
            state |= {
                "head.0.weight": self.head0.weight[:c, :c],
                "head.0.bias": self.head0.bias[:c],
                "head.2.weight": self.head2.weight[:, :c],
                "head.2.bias": self.head2.bias,
            }
        return state

    def subnet(self, arch: Arch, head: str = "embedding") -> Network:
        """The stand-alone ``Network`` of ``arch`` (``head``: ``embedding`` or ``features``)
        with the inherited weights and BatchNorm statistics, on the supernet's device."""
        if head not in SUBNET_HEADS:
            raise NasctlError(f"a subnet's head is one of {', '.join(SUBNET_HEADS)} (got {head!r})")
        net = build_model(arch, head=head)
        state = {k: v.detach().clone() for k, v in self.subnet_state(arch, head).items()}
        net.load_state_dict(state, strict=True)
        return net.to(self.stem.conv.weight.device)

    def sort_channels(self) -> None:
        """Order every branch's middle channels by importance (see the module docstring)."""
        for stage in self.positions:
            for position in stage:
                for branch in position.values():
                    branch.sort_channels()

    # ---- the sandwich's ends -----------------------------------------------------------
    def largest(self, kind: str | None = None) -> Arch:
        """The largest subnet: every size choice at its largest, every block of ``kind``
        (default: the kind that gives the most parameters, fused-IBN where offered)."""
        return self.space.resolve(self._extreme(max, kind or "fused_ibn"))

    def smallest(self, kind: str | None = None) -> Arch:
        """The smallest subnet: every size choice at its smallest, every block of ``kind``
        (default: IBN where offered)."""
        return self.space.resolve(self._extreme(min, kind or "ibn"))

    def _extreme(self, pick, kind: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, choices in self.space.parameters().items():
            if name == "resolution":
                params[name] = self.resolution
            elif name.endswith(".kind"):
                params[name] = kind if kind in choices else choices[0]
            else:
                params[name] = pick(choices)
        return params

    def sample(self, rng) -> Arch:
        """A subnet drawn uniformly (each flat parameter uniformly) at the supernet's resolution."""
        return self.space.resolve({**self.space.sample_params(rng), "resolution": self.resolution})
