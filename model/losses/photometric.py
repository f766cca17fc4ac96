"""Photometric loss: 0.85 * DSSIM + 0.15 * L1, as in Monodepth and Flash3D, over valid pixels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

SSIM_WEIGHT = 0.85
C1, C2 = 0.01**2, 0.03**2


def dssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel structural dissimilarity ``(1 - SSIM) / 2`` on 3x3 windows, ``[B, C, H, W]``."""
    pad = lambda t: F.pad(t, (1, 1, 1, 1), mode="reflect")  # noqa: E731
    mu_x, mu_y = F.avg_pool2d(pad(x), 3, 1), F.avg_pool2d(pad(y), 3, 1)
    sigma_x = F.avg_pool2d(pad(x * x), 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(pad(y * y), 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(pad(x * y), 3, 1) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)) / (
        (mu_x**2 + mu_y**2 + C1) * (sigma_x + sigma_y + C2)
    )
    return ((1 - ssim) / 2).clamp(0, 1)


def photometric_error(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel ``0.85 * DSSIM + 0.15 * L1``, ``[B, 3, H, W]`` -> ``[B, 1, H, W]``."""
    per_pixel = SSIM_WEIGHT * dssim(pred, target).mean(1, keepdim=True)
    return per_pixel + (1 - SSIM_WEIGHT) * (pred - target).abs().mean(1, keepdim=True)


def photometric_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over ``mask`` (``[B, 1, H, W]``, 1 = supervised) of the per-pixel photometric error."""
    per_pixel = photometric_error(pred, target)
    if mask is None:
        return per_pixel.mean()
    return (per_pixel * mask).sum() / mask.sum().clamp(min=1.0)
