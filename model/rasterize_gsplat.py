"""gsplat backend: the production CUDA path.

gsplat is imported only when this backend is used, so CPU-only installs never touch CUDA.
All views of a call go to gsplat in one call, with the batch dims as gsplat 1.5.3 takes them.
"""

from __future__ import annotations

import sys
import time
import warnings
from functools import cache

import torch
from torch import Tensor

from model.rasterize_torch import EPS2D

TILE_SIZE = 16  # gsplat's CUDA kernels are tuned for 16x16 tiles


@cache
def gsplat_available() -> bool:
    """True when CUDA is usable, gsplat imports and its CUDA kernels load.

    gsplat compiles its kernels on first use (minutes; cached by torch for later runs). This
    call is where that happens, and it says so; when the build fails (no nvcc, a compile
    error), it warns once and returns False, so ``auto`` renders with the PyTorch reference.
    """
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    started = time.perf_counter()
    print("gavs: loading gsplat's CUDA kernels (the first run compiles them: minutes)", file=sys.stderr)
    try:
        from gsplat.cuda._backend import _C  # the import builds or loads the kernels
    except Exception as error:  # gsplat reports a failed build in several ways
        _C, reason = None, f": {error}"
    else:
        reason = " (gsplat printed why above)"
    if _C is None:
        warnings.warn(
            f"gsplat's CUDA kernels did not build{reason}; rendering with the PyTorch reference instead",
            stacklevel=2,
        )
        return False
    print(f"gavs: gsplat's CUDA kernels ready ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return True


def rasterize_gsplat(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    features: Tensor,  # [B, N, F]
    viewmats: Tensor,  # [B, C, 4, 4]: C cameras for each of the B Gaussian sets
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Features ``[B * C, H, W, F]``, depth and alpha ``[B * C, H, W]``: ``rasterize_torch``'s
    outputs, for B Gaussian sets seen by C cameras each, in one gsplat call that takes the
    batch dims itself (no copy of the Gaussians per camera)."""
    from gsplat import rasterization

    render, alpha, _ = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=features,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        eps2d=EPS2D,
        tile_size=TILE_SIZE,
        packed=False,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )  # [B, C, H, W, F + 1], [B, C, H, W, 1]
    render, alpha = render.flatten(0, 1), alpha.flatten(0, 1)[..., 0]
    return render[..., :-1], render[..., -1], alpha
