"""Contrastive losses: NT-Xent (SimCLR), DCL, SogCLR and the decomposable Gamma-augmented loss.

Notation: 2N views z (two per sample), similarities
``s_ij = cos(z_i, z_j) / t``. For anchor i, ``s_i+`` is its positive (the other view of the
same sample) and its negatives are the other 2N - 2 views; ``Zbatch_i`` is the minibatch
mean of ``exp(s_ij)`` over those negatives.

* ``ntxent``: ``l_i = -s_i+ + log sum_{k != i} exp(s_ik)`` (the positive is in the sum); the
  log of a minibatch sum makes its gradient a biased estimate of the full-data gradient
  when batches are small.
* ``dcl`` (decoupled): ``l_i = -s_i+ + log Zbatch_i``, the positive left out. Its full-data
  loss is ``L_i = -s_i+ + log Z_i`` with ``Z_i = E_neg[exp(s_ij)]``, the loss the next two
  target; its minibatch gradient is biased in the same way as NT-Xent's.
* ``gamma`` (decomposable): since ``1/Z = int_0^inf exp(-u Z) du``, ``L`` is the marginal
  of a joint in (theta, u) with ``u_i | theta ~ Gamma(1, rate Z_i)``. Stochastic EM:
  E-step, draw ``u_i ~ Gamma(a, rate a * Zhat_i)`` (mean ``1/Zhat_i``; ``a = 1`` is the exact
  identity, a larger ``a`` less noise) from a per-sample running estimate ``Zhat_i`` kept
  across steps; M-step, minimise ``mean_i(-s_i+ + u_i * Zbatch_i)``, which is linear in
  ``Zbatch_i`` and therefore unbiased for fixed u.
* ``sogclr``: the same M-step with deterministic ``u_i = 1 / Zhat_i`` (the Gamma draws
  replaced by their mean), so ``gamma`` against ``sogclr`` isolates the Gamma noise and
  ``sogclr`` against ``dcl`` the running estimate.

Every loss returns ``(loss_to_minimise, monitor)``, where ``monitor`` is the same number
for all (the mean of ``-s_i+ + log Zbatch_i``, DCL's loss), so curves are comparable.

Numerics: with ``t`` small, ``exp(s)`` overflows float32 (``s`` reaches ``1/t``; above
about 88.7 for ``t`` below about 0.0113). Everything is therefore computed in log space:
``log Zbatch`` is a log-sum-exp over the negatives (other entries masked at ``-inf``),
``Zhat`` is stored as ``log Zhat``, ``u`` is drawn as ``log u``, and the M-step term
``u_i * Zbatch_i = exp(log u_i + log Zbatch_i)`` is a ratio of order one. The loss and its
gradient are the same as the linear-space formulas wherever those are finite.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("gamma", "sogclr", "dcl", "ntxent")


def similarities(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """2N x 2N cosine similarities / t of the views [z1; z2]."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    return z @ z.T / temperature


def _pairs(n: int, device=None) -> tuple[Tensor, Tensor]:
    """Index of each view's positive, and a mask of its negatives (not itself, not its positive)."""
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(device)
    neg = ~torch.eye(2 * n, dtype=torch.bool, device=device)
    neg[torch.arange(2 * n), pos] = False
    return pos, neg


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.2) -> Tensor:
    """SimCLR's NT-Xent over the 2N views (mean over anchors)."""
    s = similarities(z1, z2, temperature)
    n = z1.shape[0]
    s = s.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=s.device), float("-inf"))
    pos, _ = _pairs(n, s.device)
    return F.cross_entropy(s, pos)


def positive_and_log_partition(s: Tensor) -> tuple[Tensor, Tensor]:
    """Per anchor: ``s_i+`` and ``log Zbatch_i``, the log of the mean of ``exp(s_ij)`` over
    its 2N - 2 negatives (a log-sum-exp: finite at any temperature)."""
    n = s.shape[0] // 2
    pos, neg = _pairs(n, s.device)
    s_pos = s[torch.arange(2 * n, device=s.device), pos]
    log_z_batch = torch.logsumexp(s.masked_fill(~neg, float("-inf")), dim=1) - math.log(2 * n - 2)
    return s_pos, log_z_batch


def positive_and_partition(s: Tensor) -> tuple[Tensor, Tensor]:
    """Per anchor: ``s_i+`` and the minibatch partition estimate ``Zbatch_i`` (mean of
    ``exp(s_ij)`` over its 2N - 2 negatives). Linear scale: it overflows for small
    temperatures, where ``positive_and_log_partition`` does not."""
    s_pos, log_z_batch = positive_and_log_partition(s)
    return s_pos, torch.exp(log_z_batch)


def m_step_loss(s_pos: Tensor, z_batch: Tensor, u: Tensor) -> Tensor:
    """The M-step objective ``mean_i(-s_i+ + u_i * Zbatch_i)`` for fixed auxiliary weights u."""
    return (-s_pos + u.detach() * z_batch).mean()


def m_step_loss_log(s_pos: Tensor, log_z_batch: Tensor, log_u: Tensor) -> Tensor:
    """``m_step_loss`` from ``log Zbatch`` and ``log u``: the same value and gradient,
    with ``u_i * Zbatch_i`` formed as ``exp(log u_i + log Zbatch_i)`` (of order one)."""
    return (-s_pos + torch.exp(log_u.detach() + log_z_batch)).mean()


def _gamma_draws(shape: float, size: tuple[int, ...], generator) -> np.ndarray:
    if isinstance(generator, torch.Generator):
        generator = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return generator.standard_gamma(float(shape), size=size)


def sample_u(z_hat: Tensor, shape: float, generator: torch.Generator | np.random.Generator | None = None) -> Tensor:
    """E-step: ``u_i ~ Gamma(shape a, rate a * Zhat_i)``, so ``E[u_i] = 1 / Zhat_i``.

    torch's Gamma sampler takes no generator, so a seeded draw goes through NumPy's
    (a ``torch.Generator`` seeds one on the fly; pass a ``np.random.Generator`` to keep one)."""
    if generator is None:
        return torch.distributions.Gamma(torch.full_like(z_hat, float(shape)), float(shape) * z_hat).sample()
    g = _gamma_draws(shape, tuple(z_hat.shape), generator)
    return torch.from_numpy(g).to(z_hat) / (float(shape) * z_hat)


def sample_log_u(
    log_z_hat: Tensor, shape: float, generator: torch.Generator | np.random.Generator | None = None
) -> Tensor:
    """``log u`` for ``u ~ Gamma(shape a, rate a * Zhat)`` given ``log Zhat`` (the same draws
    as ``sample_u`` from the same generator state)."""
    if generator is None:
        g = torch.distributions.Gamma(torch.full_like(log_z_hat, float(shape)), float(shape)).sample()
        log_g = torch.log(g.clamp_min(torch.finfo(g.dtype).tiny))
    else:
        g = _gamma_draws(shape, tuple(log_z_hat.shape), generator)
        log_g = torch.from_numpy(np.log(np.maximum(g, np.finfo(np.float64).tiny))).to(log_z_hat)
    return log_g - math.log(float(shape)) - log_z_hat


class NTXentLoss(nn.Module):
    name = "ntxent"

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor | None = None) -> tuple[Tensor, float]:
        loss = nt_xent(z1, z2, self.temperature)
        with torch.no_grad():
            s_pos, log_z_batch = positive_and_log_partition(similarities(z1, z2, self.temperature))
            monitor = float((-s_pos + log_z_batch).mean())
        return loss, monitor


class DCLLoss(nn.Module):
    """Decoupled contrastive loss: ``mean_i(-s_i+ + log Zbatch_i)``, NT-Xent with the
    positive left out of the partition (``Zbatch_i`` is the mean of ``exp(s_ij)`` over the
    2N - 2 negatives; a mean or a sum differ by a constant). It is the plug-in minibatch
    estimate of the full-data loss that ``gamma`` and ``sogclr`` target, so it separates
    decoupling from the correction of the minibatch bias."""

    name = "dcl"

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor | None = None) -> tuple[Tensor, float]:
        s_pos, log_z_batch = positive_and_log_partition(similarities(z1, z2, self.temperature))
        loss = (-s_pos + log_z_batch).mean()
        return loss, float(loss.detach())


class PartitionEstimateLoss(nn.Module):
    """The M-step ``mean_i(-s_i+ + u_i * Zbatch_i)`` with weights ``u_i`` taken from a
    per-sample running estimate ``Zhat_i`` of the full-data partition ``Z_i``: the shared
    machinery of ``gamma`` (``u`` drawn) and ``sogclr`` (``u = 1 / Zhat``).

    ``n_samples``: dataset size (``Zhat`` is indexed by dataset sample, one estimate shared
    by the sample's two views, which are interchangeable augmentations); ``momentum``: the
    moving-average rate (``Zhat <- (1 - m) Zhat + m Zbatch``, with ``Zbatch`` the mean of
    the sample's two views' minibatch estimates). ``u`` comes from the estimate held
    *before* this batch, so it is independent of this batch's ``Zbatch``.

    Where the estimates start: ``init_estimates(log_z)`` sets every sample's estimate
    (``pretrain`` does, from a no-grad pass over the train split before the first step).
    Without it, a sample seen for the first time takes the current batch's mean
    ``Zbatch`` over all anchors as its prior, which is *not* independent of the batch.
    """

    name = ""

    def __init__(self, n_samples: int, temperature: float = 0.2, momentum: float = 0.5, drift_correction: bool = False):
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"{self.name} momentum must be in (0, 1] (got {momentum})")
        self.temperature, self.momentum, self.drift_correction = temperature, momentum, drift_correction
        self.register_buffer("log_z_hat", torch.zeros(n_samples))  # log Zhat: finite at any temperature
        self.register_buffer("seen", torch.zeros(n_samples, dtype=torch.bool))

    @property
    def z_hat(self) -> Tensor:
        """The per-sample partition estimates ``Zhat`` (a copy; stored as ``log_z_hat``)."""
        return torch.exp(self.log_z_hat)

    def init_estimates(self, log_z: Tensor) -> None:
        """Start every sample's estimate at ``log_z`` (one value per dataset sample)."""
        if log_z.shape != self.log_z_hat.shape:
            raise ValueError(f"init_estimates: {tuple(log_z.shape)} values for {len(self.log_z_hat)} samples")
        self.log_z_hat.copy_(log_z.to(self.log_z_hat))
        self.seen.fill_(True)

    def log_weights(self, log_prior: Tensor) -> Tensor:
        """``log u`` for the 2N anchors given the (repeated) ``log Zhat`` prior."""
        raise NotImplementedError

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor | None = None) -> tuple[Tensor, float]:
        if index is None:
            raise ValueError(f"{type(self).__name__} needs the dataset index of each sample")
        n = z1.shape[0]
        s = similarities(z1, z2, self.temperature)
        s_pos, log_z_batch = positive_and_log_partition(s)
        with torch.no_grad():
            lzb = log_z_batch.detach()
            seen = self.seen[index]
            per_sample = torch.logaddexp(lzb[:n], lzb[n:]) - math.log(2)  # log of the two views' mean
            first_prior = torch.logsumexp(lzb, dim=0) - math.log(2 * n)  # log of the batch mean
            prior = torch.where(seen, self.log_z_hat[index], first_prior)
            if self.drift_correction and bool(seen.any()):
                # Optional, off by default: rescale the (epoch-old) stored estimates by the
                # batch-wide drift. Not benchmarked now; an earlier synthetic benchmark saw it
                # collapse with 4-sample batches and heavy-tailed Z.
                log_drift = torch.logsumexp(per_sample[seen], 0) - torch.logsumexp(prior[seen], 0)  # ratio of means
                prior = torch.where(seen, prior + log_drift, prior)
            log_u = self.log_weights(torch.cat([prior, prior]))
            m = self.momentum
            moved = per_sample if m == 1 else torch.logaddexp(math.log(1 - m) + prior, math.log(m) + per_sample)
            self.log_z_hat[index] = torch.where(seen, moved, per_sample)
            self.seen[index] = True
            monitor = float((-s_pos + lzb).mean())
        return m_step_loss_log(s_pos, log_z_batch, log_u), monitor


class SogCLRLoss(PartitionEstimateLoss):
    """Deterministic weights ``u_i = 1 / Zhat_i``: the Gamma loss with its draws replaced by
    their mean, i.e. SogCLR's moving-average estimator of the partition. One difference from
    SogCLR as published: there the estimate is moved with the current batch before it is
    used; here the estimate held before the batch is used, exactly as ``gamma`` does, so
    ``sogclr`` against ``gamma`` isolates the Gamma noise."""

    name = "sogclr"

    def log_weights(self, log_prior: Tensor) -> Tensor:
        return -log_prior


class GammaLoss(PartitionEstimateLoss):
    """The decomposable contrastive loss with Gamma auxiliary weights: ``u_i ~ Gamma(shape
    a, rate a * Zhat_i)`` (mean ``1 / Zhat_i``; ``a = 1`` is the exact identity, a larger
    ``a`` less noise). See ``PartitionEstimateLoss`` for ``Zhat``.

    ``generator``: where the draws come from: an ``int`` seed or a ``np.random.Generator``
    (the draws then take nothing from any other stream, so a run with one seed sees the
    same batches and views whatever its loss), or a ``torch.Generator``, from which one
    number is taken to seed them. ``None``: unseeded.
    """

    name = "gamma"

    def __init__(
        self,
        n_samples: int,
        temperature: float = 0.2,
        shape: float = 1.0,
        momentum: float = 0.5,
        generator: int | np.random.Generator | torch.Generator | None = None,
        drift_correction: bool = False,
    ):
        if shape <= 0:
            raise ValueError(f"gamma shape must be > 0 (got {shape})")
        super().__init__(n_samples, temperature, momentum, drift_correction)
        self.shape = shape
        if isinstance(generator, torch.Generator):
            generator = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)

    def log_weights(self, log_prior: Tensor) -> Tensor:
        return sample_log_u(log_prior, self.shape, self.rng)


GAMMA_STREAM = 0x6A77  # the Gamma draws' own stream: np.random.default_rng([seed, GAMMA_STREAM])


def make_loss(
    name: str,
    n_samples: int,
    temperature: float = 0.2,
    gamma_shape: float = 1.0,
    gamma_momentum: float = 0.5,
    seed: int | None = None,
) -> nn.Module:
    """The loss ``name`` (one of ``LOSSES``). ``gamma_momentum`` is the estimate's rate for
    both ``gamma`` and ``sogclr``; ``seed`` seeds the Gamma draws' own stream."""
    if name == "ntxent":
        return NTXentLoss(temperature)
    if name == "dcl":
        return DCLLoss(temperature)
    if name == "sogclr":
        return SogCLRLoss(n_samples, temperature, gamma_momentum)
    if name == "gamma":
        rng = np.random.default_rng(None if seed is None else [seed, GAMMA_STREAM])
        return GammaLoss(n_samples, temperature, gamma_shape, gamma_momentum, rng)
    raise ValueError(f"unknown loss {name!r} (expected one of: {', '.join(LOSSES)})")
