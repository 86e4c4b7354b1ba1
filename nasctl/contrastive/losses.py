"""Contrastive losses: NT-Xent (SimCLR) and the decomposable Gamma-augmented loss.

Notation: 2N views z (two per sample), similarities
``s_ij = cos(z_i, z_j) / t``. For anchor i, ``s_i+`` is its positive (the other view of the
same sample) and its negatives are the other 2N - 2 views.

* NT-Xent: ``l_i = -s_i+ + log sum_{k != i} exp(s_ik)``; the log of a minibatch sum makes
  its gradient a biased estimate of the full-data gradient when batches are small.
* Gamma (decomposable): the full-data loss is ``L_i = -s_i+ + log Z_i`` with
  ``Z_i = E_neg[exp(s_ij)]``. Since ``1/Z = int_0^inf exp(-u Z) du``, the loss is the
  marginal of a joint in (theta, u) with ``u_i | theta ~ Gamma(1, rate Z_i)``. Stochastic EM:
  E-step, draw ``u_i ~ Gamma(a, rate a * Zhat_i)`` (mean ``1/Zhat_i``; ``a = 1`` is the exact
  identity, a larger ``a`` less noise) from a per-sample running estimate ``Zhat_i`` kept
  across steps; M-step, minimise ``mean_i(-s_i+ + u_i * Zbatch_i)``, which is linear in the
  minibatch mean ``Zbatch_i`` and therefore unbiased for fixed u.

Both losses return ``(loss_to_minimise, monitor)``, where ``monitor`` is the same number
for both (the mean of ``-s_i+ + log Zbatch_i``), so curves are comparable.

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

LOSSES = ("gamma", "ntxent")


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


class GammaLoss(nn.Module):
    """The decomposable contrastive loss with Gamma auxiliary weights.

    ``n_samples``: dataset size (``Zhat`` is indexed by dataset sample, one estimate shared
    by the sample's two views, which are interchangeable augmentations); ``shape``: the
    Gamma shape a; ``momentum``: the moving-average rate of ``Zhat``
    (``Zhat <- (1 - m) Zhat + m Zbatch``). ``u`` is drawn from the estimate held *before*
    this batch, so it is independent of this batch's ``Zbatch``; a sample seen for the
    first time starts from the batch's mean ``Zbatch`` over all anchors.
    """

    name = "gamma"

    def __init__(
        self,
        n_samples: int,
        temperature: float = 0.2,
        shape: float = 1.0,
        momentum: float = 0.5,
        generator: torch.Generator | None = None,
        drift_correction: bool = False,
    ):
        super().__init__()
        self.drift_correction = drift_correction
        if shape <= 0:
            raise ValueError(f"gamma shape must be > 0 (got {shape})")
        if not 0 < momentum <= 1:
            raise ValueError(f"gamma momentum must be in (0, 1] (got {momentum})")
        self.temperature, self.shape, self.momentum = temperature, shape, momentum
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        self.rng = np.random.default_rng(seed)
        self.register_buffer("log_z_hat", torch.zeros(n_samples))  # log Zhat: finite at any temperature
        self.register_buffer("seen", torch.zeros(n_samples, dtype=torch.bool))

    @property
    def z_hat(self) -> Tensor:
        """The per-sample partition estimates ``Zhat`` (a copy; stored as ``log_z_hat``)."""
        return torch.exp(self.log_z_hat)

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor | None = None) -> tuple[Tensor, float]:
        if index is None:
            raise ValueError("GammaLoss needs the dataset index of each sample")
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
                # batch-wide drift. It collapses with tiny batches and heavy-tailed Z
                # (bench/contrastive_synthetic.py: 0/10 runs reach the optimum, 8/10 without).
                log_drift = torch.logsumexp(per_sample[seen], 0) - torch.logsumexp(prior[seen], 0)  # ratio of means
                prior = torch.where(seen, prior + log_drift, prior)
            log_u = sample_log_u(torch.cat([prior, prior]), self.shape, self.rng)
            m = self.momentum
            moved = per_sample if m == 1 else torch.logaddexp(math.log(1 - m) + prior, math.log(m) + per_sample)
            self.log_z_hat[index] = torch.where(seen, moved, per_sample)
            self.seen[index] = True
            monitor = float((-s_pos + lzb).mean())
        return m_step_loss_log(s_pos, log_z_batch, log_u), monitor


def make_loss(
    name: str,
    n_samples: int,
    temperature: float = 0.2,
    gamma_shape: float = 1.0,
    gamma_momentum: float = 0.5,
    generator: torch.Generator | None = None,
) -> nn.Module:
    if name == "ntxent":
        return NTXentLoss(temperature)
    if name == "gamma":
        return GammaLoss(n_samples, temperature, gamma_shape, gamma_momentum, generator)
    raise ValueError(f"unknown loss {name!r} (expected one of: {', '.join(LOSSES)})")
