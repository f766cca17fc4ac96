"""gsplat backend: the production CUDA path.

gsplat is imported only when this backend is used, so CPU-only installs never touch CUDA.
All views of a call go to gsplat in one batched call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.rasterize_torch import EPS2D

TILE_SIZE = 16  # gsplat's CUDA kernels are tuned for 16x16 tiles


def gsplat_available() -> bool:
    """True when CUDA is usable and gsplat imports."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_gsplat(
    means: Tensor,  # [V, N, 3]
    quats: Tensor,  # [V, N, 4]
    scales: Tensor,  # [V, N, 3]
    opacities: Tensor,  # [V, N]
    features: Tensor,  # [V, N, F]
    viewmats: Tensor,  # [V, 4, 4]
    Ks: Tensor,  # [V, 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as ``rasterize_torch``: features ``[V, H, W, F]``, depth and alpha ``[V, H, W]``."""
    from gsplat import rasterization

    # gsplat's batch dims: Gaussians [V, N], cameras [V, 1] -> renders [V, 1, H, W, F + 1].
    render, alpha, _ = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=features,
        viewmats=viewmats[:, None],
        Ks=Ks[:, None],
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        eps2d=EPS2D,
        tile_size=TILE_SIZE,
        packed=False,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    render, alpha = render[:, 0], alpha[:, 0, ..., 0]
    return render[..., :-1], render[..., -1], alpha
