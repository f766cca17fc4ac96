"""gsplat backend: the production CUDA path.

gsplat is imported only when this backend is used, so CPU-only installs never touch CUDA.
All views of a call go to gsplat in one batched call.
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
