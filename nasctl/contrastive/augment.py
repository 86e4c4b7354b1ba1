"""Batched augmentations for small images (one ``grid_sample`` per batch, fast on a CPU).

Each sample draws its own random resized crop, small rotation and shear, optional
horizontal flip, brightness/contrast jitter, optional grey-scaling and Gaussian noise.
The geometric part is one affine map per sample, applied by a single ``grid_sample``.
Randomness comes from an explicit ``torch.Generator``, so a seed fixes every view.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    min_scale: float = 0.3  # random resized crop: area fraction in [min_scale, 1]
    max_aspect: float = 4 / 3  # aspect ratio in [1/max_aspect, max_aspect] (log-uniform)
    rotation_deg: float = 15.0  # small affine: rotation in [-r, r]
    shear_deg: float = 10.0  # and shear in [-s, s]
    # horizontal flips; None: as the data allows (``ImageData.allows_flip``: off for digits,
    # a flipped 2 is not a 2), which ``pretrain`` settles before augmenting
    flip: bool | None = None
    jitter_p: float = 0.8  # probability of brightness/contrast jitter
    brightness: float = 0.4  # factor in [1-b, 1+b]
    contrast: float = 0.4  # factor in [1-c, 1+c] around each image's mean
    grayscale_p: float = 0.2  # colour images only
    noise_std: float = 0.05  # Gaussian noise, std drawn per sample in [0, noise_std]

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def affine_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """n x 2 x 3 maps from output to input coordinates (``affine_grid`` convention)."""
    area = _uniform(n, cfg.min_scale, 1.0, gen)
    log_r = _uniform(n, -math.log(cfg.max_aspect), math.log(cfg.max_aspect), gen)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a fraction of the image
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=gen) - 1) * (1 - w)  # the crop stays inside the image
    cy = (2 * torch.rand(n, generator=gen) - 1) * (1 - h)
    rot = torch.deg2rad(_uniform(n, -cfg.rotation_deg, cfg.rotation_deg, gen))
    shear = torch.tan(torch.deg2rad(_uniform(n, -cfg.shear_deg, cfg.shear_deg, gen)))
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # A = R @ Sh @ diag(w * flip, h): scale to the crop, shear, rotate; then translate.
    a00, a01 = w * flip, shear * h
    a10, a11 = torch.zeros(n), h
    theta = torch.empty(n, 2, 3)
    theta[:, 0, 0] = cos * a00 - sin * a10
    theta[:, 0, 1] = cos * a01 - sin * a11
    theta[:, 1, 0] = sin * a00 + cos * a10
    theta[:, 1, 1] = sin * a01 + cos * a11
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return theta


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """One random view of each image of ``x`` (N x C x H x W in [0, 1])."""
    n, c = x.shape[:2]
    dev = x.device  # the draws come from ``gen`` (CPU) and are applied where x is
    theta = affine_params(n, cfg, gen).to(dev)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    jit = (torch.rand(n, generator=gen) < cfg.jitter_p).float().view(n, 1, 1, 1)
    bright = (1 + jit * _uniform(n, -cfg.brightness, cfg.brightness, gen).view(n, 1, 1, 1)).to(dev)
    contrast = (1 + jit * _uniform(n, -cfg.contrast, cfg.contrast, gen).view(n, 1, 1, 1)).to(dev)
    out = out * bright
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    if c == 3 and cfg.grayscale_p > 0:
        grey = (torch.rand(n, generator=gen) < cfg.grayscale_p).view(n, 1, 1, 1).to(dev)
        out = torch.where(grey, out.mean(dim=1, keepdim=True).expand_as(out), out)
    if cfg.noise_std > 0:
        std = _uniform(n, 0.0, cfg.noise_std, gen).view(n, 1, 1, 1)
        out = out + (std * torch.randn(out.shape, generator=gen)).to(dev)
    return out.clamp(0.0, 1.0)


def two_views(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views of each image (the positive pairs)."""
    both = augment(torch.cat([x, x]), cfg, gen)
    return both[: len(x)], both[len(x) :]
