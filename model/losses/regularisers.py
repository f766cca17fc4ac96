"""Regularisers that keep Gaussians compact and close to their pixel's ray."""

from __future__ import annotations

from torch import Tensor


def scale_regulariser(scales: Tensor, depth: Tensor, focal: Tensor, max_pixels: float = 8.0) -> Tensor:
    """Penalise Gaussians whose largest scale exceeds ``max_pixels`` pixel footprints.

    ``scales [B, L, 3, H, W]``, ``depth [B, L, H, W]``, ``focal [B]``. Oversized splats blur
    and smear across depth edges; a hinge leaves normal ones alone.
    """
    footprint = depth / focal.view(-1, 1, 1, 1)
    largest = scales.amax(2) / footprint
    return (largest - max_pixels).clamp(min=0).mean()


def offset_regulariser(offset: Tensor, depth: Tensor) -> Tensor:
    """Mean squared offset relative to depth: Gaussians should stay near their pixel's ray."""
    return ((offset / depth[:, :, None]) ** 2).mean()
