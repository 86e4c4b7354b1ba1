"""Losses of two-tower (image-text) contrastive models: symmetric InfoNCE and the three
modality-structure regularisers.

Every function takes raw embeddings (one row per item of the batch) and normalises them
itself, so a caller never has to remember to. The formulas are nasctl's own derivation
from the description of latent modality structures for multimodal contrastive learning
(CVPR 2023); where the description left a choice, the choice is named in the docstring.

* ``symmetric_infonce`` (CLIP): the mean of the image-to-text and the text-to-image
  cross-entropies of ``V W^T / t``, the positives on the diagonal.
* Deep feature separation: ``orthogonality`` (mean squared cosine between each item's
  shared and specific parts) plus an intra-modal NT-Xent on two views of the specific part
  (``nasctl.contrastive.losses.nt_xent``).
* ``bridge_loss`` (Brownian bridge): an augmented view is pulled toward the point at a
  random time t on the path from the item's image embedding to its text embedding,
  scaled by the bridge's variance ``t (1 - t) sigma^2``.
* ``geometry_loss`` (geometric consistency): the image batch's similarity matrix matches
  the text batch's, and the cross-modal similarity matrix is symmetric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BRIDGE_EPS", "bridge_loss", "geometry_loss", "orthogonality", "symmetric_infonce"]

# Added to the bridge's 2 sigma_t^2: near t = 0 or 1 the variance vanishes and the pull
# would be unbounded; with 0.1 the largest weight is 10x the distance (ours).
BRIDGE_EPS = 0.1


def symmetric_infonce(v: Tensor, w: Tensor, temperature: Tensor | float) -> Tensor:
    """``(CE(V W^T / t, I) + CE(W V^T / t, I)) / 2`` over the batch: item i's image and
    text are each other's positive, every other item of the batch a negative."""
    v, w = F.normalize(v, dim=1), F.normalize(w, dim=1)
    logits = v @ w.T / temperature
    target = torch.arange(len(v), device=v.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def orthogonality(shared: Tensor, specific: Tensor) -> Tensor:
    """``mean_i (s_i . p_i)^2`` with both parts normalised: 0 when every item's specific
    part is orthogonal to its shared part, 1 when they are parallel."""
    cos = (F.normalize(shared, dim=1) * F.normalize(specific, dim=1)).sum(1)
    return (cos**2).mean()


def bridge_loss(a: Tensor, v: Tensor, w: Tensor, t: Tensor, sigma2: float = 1.0, eps: float = BRIDGE_EPS) -> Tensor:
    """``mean_i ||a_i - m_i||^2 / (2 sigma_t^2 + eps)``, where ``m_i = normalise((1 - t_i)
    v_i + t_i w_i)`` is the bridge point between item i's image embedding ``v_i`` and text
    embedding ``w_i`` at time ``t_i`` and ``sigma_t^2 = t_i (1 - t_i) sigma2`` the bridge's
    variance there; ``a_i`` is an augmented view's embedding (either modality). All
    normalised. Gradients flow into ``a``, ``v`` and ``w`` alike (ours: the bridge is a
    constraint on the whole structure, not a fixed target)."""
    a, v, w = F.normalize(a, dim=1), F.normalize(v, dim=1), F.normalize(w, dim=1)
    t = t.to(a.dtype).view(-1, 1)
    m = F.normalize((1 - t) * v + t * w, dim=1)
    var = (t * (1 - t)).view(-1) * sigma2
    return (((a - m) ** 2).sum(1) / (2 * var + eps)).mean()


def geometry_loss(v: Tensor, w: Tensor) -> Tensor:
    """``||S_vv - S_ww||_F^2 / B^2 + ||S_vw - S_vw^T||_F^2 / B^2`` with ``S_vv = V V^T``,
    ``S_ww = W W^T``, ``S_vw = V W^T`` over the batch (rows normalised)."""
    v, w = F.normalize(v, dim=1), F.normalize(w, dim=1)
    b2 = float(len(v)) ** 2
    s_vw = v @ w.T
    return ((v @ v.T - w @ w.T) ** 2).sum() / b2 + ((s_vw - s_vw.T) ** 2).sum() / b2
