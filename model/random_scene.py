"""Random Gaussian scenes that fill a camera's view: shared by the parity test and the benchmark."""

from __future__ import annotations

import math

import torch

from model.cameras import make_intrinsics
from model.gaussians import Gaussians


def random_scene(
    count: int, width: int, height: int, seed: int = 0, device="cpu", dtype=torch.float32
) -> tuple[Gaussians, torch.Tensor]:
    """``count`` Gaussians spread through the view frustum of a 60-degree camera at the origin.

    Footprints are sized so the image is covered a few layers deep, as in a trained scene.
    Returns the Gaussians and the camera's ``K``.
    """
    gen = torch.Generator().manual_seed(seed)
    f = 0.5 * width / math.tan(math.radians(30))
    K = make_intrinsics(f, f, width / 2, height / 2, dtype=dtype)
    z = 2 + 4 * torch.rand(count, generator=gen, dtype=torch.float64)
    u = torch.rand(count, generator=gen, dtype=torch.float64) * width
    v = torch.rand(count, generator=gen, dtype=torch.float64) * height
    means = torch.stack([(u - width / 2) / f * z, (v - height / 2) / f * z, z], -1)
    footprint_px = 1.5 * math.sqrt(width * height / count)
    scales = (footprint_px * z / f)[:, None] * (
        0.5 + torch.rand(count, 3, generator=gen, dtype=torch.float64)
    )
    gaussians = Gaussians(
        means=means,
        quats=torch.randn(count, 4, generator=gen, dtype=torch.float64),
        scales=scales,
        opacities=0.3 + 0.7 * torch.rand(count, generator=gen, dtype=torch.float64),
        colors=torch.rand(count, 3, generator=gen, dtype=torch.float64),
    )
    return gaussians.to(device=device, dtype=dtype), K.to(device)
