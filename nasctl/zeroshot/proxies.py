"""Zero-shot trainability scores: each a pure function of (model, batch, seed).

A score reads a freshly initialised ``Network`` (the embedding head, built with a fixed
init seed by the caller) and a ``ProxyBatch``; it sets the model's mode itself (the
``bn`` each ``Proxy`` states) and returns its raw value, higher = predicted better.
Scores with several parts (AZ-NAS) return them all; ``combine`` puts them together.

Our choices, where the papers leave room (each also on the function):

* activation codes (NASWOT, SWAP) are ``output > 0`` of every activation module (ReLU,
  ReLU6, Hardswish, SiLU: all positive exactly where their input is);
* losses: with labels, cross-entropy of a linear classifier (seeded) on the pooled
  backbone features; without labels, NT-Xent (temperature 0.2) of the embedding head
  on two augmented views of the batch;
* SynFlow replaces every activation by the identity (with |w| weights and an all-ones
  input the ReLU is the identity anyway; ReLU6 would clip at 6 and zero the gradient),
  runs in float64 with BatchNorm in eval mode, and reports log of the sum;
* SWAP counts distinct sample-wise activation patterns: each neuron's binary code over
  the batch is one pattern, counted once over the whole network (the unregularised
  form: no size prior);
* MeCo uses every activation's output, the channel x channel Pearson correlation over
  (samples x positions), a constant channel counting as uncorrelated;
* AZ-NAS reads the stem and every block's output: expressivity (sum of the entropies of
  the normalised covariance eigenvalues), progressivity (their smallest increase from a
  block to the next), trainability (mean of 2 - s - 1/s, s = |J^T v| / |v| for a
  Rademacher v at the block's output) and complexity (FLOPs), combined by rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nasctl.nn.blocks.modules import ACTIVATIONS

if TYPE_CHECKING:
    from nasctl.contrastive.data import ImageData

ACT_TYPES = tuple(ACTIVATIONS.values())
TEMPERATURE = 0.2


@dataclass
class ProxyBatch:
    """One batch a score reads: images, labels (None: unlabelled data), two augmented views."""

    x: Tensor
    y: Tensor | None
    views: tuple[Tensor, Tensor]
    num_classes: int

    @property
    def labelled(self) -> bool:
        return self.y is not None


def make_batch(data: ImageData, size: int, seed: int) -> ProxyBatch:
    """``size`` train-split images drawn with ``seed`` (and their two augmented views)."""
    from nasctl.contrastive.augment import AugmentConfig, two_views

    gen = torch.Generator().manual_seed(seed)
    train = torch.from_numpy(data.train)
    idx = train[torch.randperm(len(train), generator=gen)[: min(size, len(train))]]
    x = data.x[idx]
    aug = AugmentConfig(flip=data.allows_flip)
    views = two_views(x, aug, gen)
    y = torch.as_tensor(data.y[idx.numpy()], dtype=torch.long) if data.labelled else None
    return ProxyBatch(x, y, views, max(2, len(data.classes)))


class Batches:
    """The ``ProxyBatch`` of each input shape an arch of a space can take, loaded once:
    ``size`` train-split images of ``data`` (split seed ``split_seed``) drawn with ``seed``."""

    def __init__(self, data: str, size: int, seed: int, split_seed: int = 0):
        self.data, self.size, self.seed, self.split_seed = data, size, seed, split_seed
        self._cache: dict[tuple[int, int], ProxyBatch] = {}

    def for_arch(self, arch) -> ProxyBatch:
        from nasctl.contrastive import load_data

        key = (arch.resolution, arch.in_channels)
        if key not in self._cache:
            images = load_data(self.data, arch.resolution, arch.in_channels, seed=self.split_seed)
            self._cache[key] = make_batch(images, self.size, self.seed)
        return self._cache[key]

    @property
    def labelled(self) -> bool | None:
        """Whether the loaded data has labels (None before any batch is loaded)."""
        return next(iter(self._cache.values())).labelled if self._cache else None


@dataclass(frozen=True)
class Proxy:
    """A registered score. ``uses_labels``: reads labels when the data has them (else the
    contrastive loss); ``forward_only``: no backward pass; ``parts``: the raw values ``fn``
    returns (one: the score itself); ``ranked``: combined by rank against a reference
    sample of the space (``combine``)."""

    name: str
    fn: Callable[[nn.Module, ProxyBatch, int], dict[str, float]]
    summary: str
    bn: str  # "train" (batch statistics) or "eval"
    uses_labels: bool = False
    forward_only: bool = False
    parts: tuple[str, ...] = ()
    ranked: bool = False
    needs_model: bool = True  # False: read from the arch alone (params, flops)
    reads: str = "images"  # its input: the batch's images, "ones" (SynFlow), "noise" (AZ-NAS)

    def __post_init__(self):
        if not self.parts:
            object.__setattr__(self, "parts", (self.name,))


PROXIES: dict[str, Proxy] = {}


def register_proxy(name: str, summary: str, bn: str = "train", **kw) -> Callable:
    """Decorator: make ``fn(model, batch, seed) -> float | dict`` the score ``name``."""

    def deco(fn: Callable) -> Callable:
        def wrapped(model, batch, seed):
            out = fn(model, batch, seed)
            return out if isinstance(out, dict) else {name: float(out)}

        PROXIES[name] = Proxy(name, wrapped, summary, bn, **kw)
        return fn

    return deco


# ------------------------------------------------------------------------------ helpers
def _activation_outputs(model: nn.Module, x: Tensor, read: Callable[[Tensor], Tensor] | None = None) -> list[Tensor]:
    """Forward ``x`` through the backbone; ``read`` of the output of every activation
    module, taken as it is produced (default: a copy; activations work in place)."""
    outs: list[Tensor] = []
    read = read or (lambda o: o.clone())
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: outs.append(read(o.detach())))
        for m in model.modules()
        if isinstance(m, ACT_TYPES)
    ]
    try:
        with torch.inference_mode():
            model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """The conv and linear weights (the layers the gradient scores sum over)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def task_loss(model: nn.Module, batch: ProxyBatch, seed: int, x: Tensor | None = None, y: Tensor | None = None):
    """Cross-entropy of a seeded linear classifier on the pooled features (labelled data),
    else NT-Xent of the embedding head on the two views."""
    from nasctl.contrastive.losses import nt_xent

    if batch.labelled:
        x = batch.x if x is None else x
        y = batch.y if y is None else y
        feats = model.forward_features(x)
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(batch.num_classes, feats.shape[1], generator=g) / math.sqrt(feats.shape[1])
        return nn.functional.cross_entropy(feats @ w.T, y)
    v1, v2 = batch.views if x is None else x
    return nt_xent(model(v1), model(v2), TEMPERATURE)


def _gradients(model: nn.Module, batch: ProxyBatch, seed: int, part: slice | None = None) -> list[Tensor | None]:
    ws = _weights(model)
    model.zero_grad(set_to_none=True)
    if part is None:
        loss = task_loss(model, batch, seed)
    elif batch.labelled:
        loss = task_loss(model, batch, seed, batch.x[part], batch.y[part])
    else:
        loss = task_loss(model, batch, seed, (batch.views[0][part], batch.views[1][part]))
    loss.backward()
    return [None if w.grad is None else w.grad.detach().clone() for w in ws]


# ------------------------------------------------------------------------------- scores
@register_proxy("naswot", "log|det K| of the batch's binary activation codes (Mellor et al.)", forward_only=True)
def naswot(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    """K = sum over activations of c c^T + (1-c)(1-c)^T; score = log |det K| (slogdet).
    Computed as (N + s s^T) / 2 with s = 2c - 1 in {-1, 1}: one exact float32 product
    per activation (its N < 2^24 neurons per sample)."""
    model.train()
    n = batch.x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)
    for c in _activation_outputs(model, batch.x, lambda o: o.reshape(n, -1) > 0):
        s = c.float() * 2 - 1
        k += ((s @ s.T).double() + s.shape[1]) / 2
    return float(torch.linalg.slogdet(k)[1])


@register_proxy("swap", "distinct sample-wise activation patterns over the batch (SWAP)", forward_only=True)
def swap(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    """Each neuron's binary code over the batch is one pattern; the number of distinct
    patterns over the whole network."""
    model.train()
    n = batch.x.shape[0]
    codes = _activation_outputs(model, batch.x, lambda o: o.reshape(n, -1) > 0)
    if n <= 52:  # each pattern packed into one exact float64 (a sum of distinct powers of 2)
        w = torch.pow(2.0, torch.arange(n, dtype=torch.float64))
        keys = torch.cat([w @ c.double() for c in codes])
        return float(torch.unique(keys).numel())
    pats = torch.cat(codes, dim=1).T  # neurons x samples
    return float(torch.unique(pats, dim=0).shape[0])


@register_proxy(
    "meco", "sum over activations of the smallest eigenvalue of the channel correlation (MeCo)", forward_only=True
)
def meco(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    model.train()
    total = 0.0
    for o in _activation_outputs(model, batch.x):
        c = o.shape[1]
        if c < 2:
            continue
        f = o.transpose(0, 1).reshape(c, -1).double()
        f = f - f.mean(1, keepdim=True)
        norm = f.norm(dim=1, keepdim=True)
        live = norm.squeeze(1) > 0
        f = torch.where(live[:, None], f / norm.clamp_min(1e-300), torch.zeros_like(f))
        corr = f @ f.T
        corr.diagonal().copy_(torch.ones(c, dtype=torch.float64))  # a constant channel: uncorrelated
        total += float(torch.linalg.eigvalsh(corr)[0])
    return total


@register_proxy("synflow", "log sum |w dR/dw| of the positive linearised net (Tanaka et al.)", bn="eval", reads="ones")
def synflow(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    model.eval()
    for m in list(model.modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, ACT_TYPES):
                setattr(m, cname, nn.Identity())
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad(set_to_none=True)
    x = torch.ones((1, *batch.x.shape[1:]), dtype=torch.float64)
    model(x).sum().backward()
    with torch.no_grad():
        total = sum(float((w * w.grad).abs().sum()) for w in _weights(model) if w.grad is not None)
    return math.log(total) if total > 0 else float("-inf")


@register_proxy("grad_norm", "sum of the layers' gradient norms of the loss", uses_labels=True)
def grad_norm(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    model.train()
    return sum(float(g.norm()) for g in _gradients(model, batch, seed) if g is not None)


@register_proxy("snip", "sum |w dL/dw| (SNIP saliency)", uses_labels=True)
def snip(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    model.train()
    grads = _gradients(model, batch, seed)
    return sum(
        float((w.detach() * g).abs().sum()) for w, g in zip(_weights(model), grads, strict=True) if g is not None
    )


@register_proxy("zico", "sum over layers of log sum_w mean|g|/std(g), two half-batches (ZiCo)", uses_labels=True)
def zico(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    """Gradients of two half-batches; per weight the mean |g| over std g; per layer the log
    of their sum (weights with zero spread skipped)."""
    model.train()
    n = batch.x.shape[0]
    if n < 4:
        raise ValueError("zico needs a batch of at least 4 (two halves of 2)")
    h = n // 2
    a = _gradients(model, batch, seed, slice(0, h))
    b = _gradients(model, batch, seed, slice(h, 2 * h))
    total = 0.0
    for ga, gb in zip(a, b, strict=True):
        if ga is None or gb is None:
            continue
        g = torch.stack([ga, gb]).double()
        if not torch.isfinite(g).all():
            return float("nan")  # not a zero spread to skip: the network is broken
        std = g.std(0)
        ok = std > 0
        if ok.any():
            s = float((g.abs().mean(0)[ok] / std[ok]).sum())
            if s > 0:
                total += math.log(s)
    return total


@register_proxy(
    "aznas",
    "AZ-NAS: expressivity, progressivity, trainability, complexity ranked and summed",
    parts=("expressivity", "progressivity", "trainability", "complexity"),
    ranked=True,
    reads="noise",
)
def aznas(model: nn.Module, batch: ProxyBatch, seed: int) -> dict[str, float]:
    model.train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch.x.shape, generator=g)
    stages = [model.stem, *model.blocks]
    ins, outs = [], []
    h = x
    for m in stages:
        h_in = h.detach().requires_grad_(True)
        h = m(h_in)
        ins.append(h_in)
        outs.append(h)
    ent = [_spectral_entropy(o.detach()) for o in outs]
    train = []
    for h_in, h_out in zip(ins[1:], outs[1:], strict=True):  # the blocks (the stem's input is the image)
        v = (torch.randint(0, 2, h_out.shape, generator=g) * 2 - 1).to(h_out.dtype)
        (gi,) = torch.autograd.grad(h_out, h_in, v)
        s = float(gi.norm() / v.norm())
        train.append(2 - s - 1 / s if s > 0 else float("-inf"))
    steps = [b - a for a, b in zip(ent, ent[1:], strict=False)]
    from nasctl.nn.profile import arch_cost

    return {
        "expressivity": float(sum(ent)),
        "progressivity": float(min(steps)) if steps else 0.0,
        "trainability": float(sum(train) / len(train)) if train else 0.0,
        "complexity": float(arch_cost(model.arch, "features").flops),
    }


def _spectral_entropy(f: Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance of a feature map."""
    c = f.shape[1]
    z = f.transpose(0, 1).reshape(c, -1).double()
    z = z - z.mean(1, keepdim=True)
    cov = z @ z.T / max(1, z.shape[1] - 1)
    lam = torch.linalg.eigvalsh(cov).clamp_min(0)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


# baselines: read from the arch, no model
@register_proxy("params", "parameter count (a baseline)", forward_only=True, needs_model=False)
def params(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    from nasctl.nn.profile import arch_cost

    return float(arch_cost(model.arch, "features").params)


@register_proxy("flops", "FLOPs at the arch's resolution (a baseline)", forward_only=True, needs_model=False)
def flops(model: nn.Module, batch: ProxyBatch, seed: int) -> float:
    from nasctl.nn.profile import arch_cost

    return float(arch_cost(model.arch, "features").flops)


# ----------------------------------------------------------------------- ranks and votes
def percentile(value: float, reference: list[float]) -> float:
    """Where ``value`` falls in ``reference``, in (0, 1): (below + half the ties + 1/2) /
    (n + 1). Non-finite values rank lowest."""
    if not math.isfinite(value):
        return 0.5 / (len(reference) + 1)
    below = sum(1 for r in reference if math.isfinite(r) and r < value)
    ties = sum(1 for r in reference if r == value)
    return (below + 0.5 * ties + 0.5) / (len(reference) + 1)


def combine(name: str, raw: dict[str, float], reference: dict[str, list[float]]) -> float:
    """The score of a ranked proxy (AZ-NAS: sum of log percentiles of its parts; complexity
    counts as higher = better, as the paper ranks it) from its raw parts and the reference
    sample's."""
    return float(sum(math.log(percentile(raw[p], reference[p])) for p in PROXIES[name].parts))


def vote(raw: dict[str, float], reference: dict[str, list[float]], members: list[str]) -> float:
    """Rank vote: mean percentile of each member's score within the reference sample."""
    return float(sum(percentile(raw[m], reference[m]) for m in members) / len(members))


def resolve(spec: str) -> list[str]:
    """``NAME`` or ``vote:A,B,C`` -> the registered proxies it needs (raises ValueError)."""
    spec = spec.strip()
    names = [n.strip() for n in spec[5:].split(",") if n.strip()] if spec.startswith("vote:") else [spec]
    if spec.startswith("vote:") and len(names) < 2:
        raise ValueError(f"{spec!r}: a vote needs at least two scores (vote:A,B)")
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r} (registered: {', '.join(PROXIES)})")
    if len(set(names)) != len(names):
        raise ValueError(f"{spec!r} names a score twice")
    return names


def is_ranked(spec: str) -> bool:
    """Whether ``spec``'s value depends on a reference sample (a vote, or a ranked proxy)."""
    names = resolve(spec)
    return spec.strip().startswith("vote:") or any(PROXIES[n].ranked for n in names)


def member_value(name: str, raw: dict[str, float], reference: dict[str, list[float]] | None) -> float:
    """One registered proxy's score from raw parts (a ranked one needs the reference)."""
    p = PROXIES[name]
    if p.ranked:
        if reference is None:
            raise ValueError(f"{name} ranks against a reference sample; none given")
        return combine(name, raw, reference)
    return raw[name]


def score_value(spec: str, raw: dict[str, float], reference: dict[str, list[float]] | None) -> float:
    """The value of ``NAME`` or ``vote:A,B,C`` from raw parts."""
    names = resolve(spec)
    if not spec.strip().startswith("vote:"):
        return member_value(names[0], raw, reference)
    if reference is None:
        raise ValueError("a vote ranks against a reference sample; none given")
    ref_vals = {n: reference_values(n, reference) for n in names}
    return vote({n: member_value(n, raw, reference) for n in names}, ref_vals, names)


def reference_values(name: str, reference: dict[str, list[float]]) -> list[float]:
    """One proxy's score for every arch of the reference sample."""
    p = PROXIES[name]
    if not p.ranked:
        return list(reference[name])
    n = len(reference[p.parts[0]])
    return [combine(name, {k: reference[k][i] for k in p.parts}, reference) for i in range(n)]


class _ArchOnly:
    """What a score that reads the arch alone gets instead of a model."""

    def __init__(self, arch):
        self.arch = arch


def compute(name: str, arch, batch: ProxyBatch, seed: int) -> dict[str, float]:
    """One proxy's raw parts for ``arch``, on a model freshly initialised with ``seed``
    (the embedding head, or the pooled features where the arch has no embedding;
    non-finite values are returned as they are: the caller decides)."""
    from nasctl.nn.builder import build_model

    p = PROXIES[name]
    head = "embedding" if arch.embedding_dim is not None else "features"
    model = build_model(arch, head=head, seed=seed) if p.needs_model else _ArchOnly(arch)
    torch.manual_seed(seed)
    return p.fn(model, batch, seed)


def compute_or_nan(name: str, arch, batch: ProxyBatch, seed: int) -> tuple[dict[str, float], str | None]:
    """``compute``, with a failure of torch's linear algebra on a NaN or degenerate matrix
    turned into NaN parts and the reason (a broken network, not a bug)."""
    try:
        return compute(name, arch, batch, seed), None
    except (FloatingPointError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        return dict.fromkeys(PROXIES[name].parts, float("nan")), f"{type(exc).__name__}: {first}"
