"""gsplat backend: the production CUDA path.

gsplat is imported only when this backend is used, so CPU-only installs never touch CUDA.
All views of a call go to gsplat in one call, with the batch dims as gsplat 1.5.3 takes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from model.rasterize_torch import EPS2D

TILE_SIZE = 16  # gsplat's CUDA kernels are tuned for 16x16 tiles


def toolkit_of(nvcc: str) -> Path | None:
    """The CUDA toolkit folder the ``nvcc`` command really runs from, as nvcc reports it
    (``_HERE_``, its bin folder, in a dry run), or None when it cannot tell."""
    try:
        dry = subprocess.run(
            [nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in dry.stderr.splitlines():
        if line.startswith("#$ _HERE_="):
            return Path(line.split("=", 1)[1]).parent
    return None


def point_torch_at_the_toolkit() -> None:
    """Set ``CUDA_HOME`` when torch would guess it wrong. Unset, torch takes the parent of the
    folder of the ``nvcc`` on PATH; a wrapper script such as ``/usr/local/bin/nvcc`` (on our
    machines: ``exec /usr/local/cuda-13.0/bin/nvcc``) makes that ``/usr/local``, which has no
    ``cuda_runtime.h``, and gsplat's host files fail to compile."""
    nvcc = shutil.which("nvcc")
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or nvcc is None:
        return
    if (Path(nvcc).resolve().parents[1] / "include" / "cuda_runtime.h").is_file():
        return
    toolkit = toolkit_of(nvcc)
    if toolkit is not None and (toolkit / "include" / "cuda_runtime.h").is_file():
        os.environ["CUDA_HOME"] = str(toolkit)


@cache
def gsplat_available() -> bool:
    """True when CUDA is usable, gsplat imports and its CUDA kernels load (``build_kernels``)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return build_kernels()


def build_kernels() -> bool:
    """Build (or load, when torch has them cached) gsplat's CUDA kernels; needs nvcc, not a GPU.

    gsplat compiles its kernels on first use (minutes). This call is where that happens, and
    it says so; when the build fails (no nvcc, a compile error), it warns once and returns
    False, so ``auto`` renders with the PyTorch reference. Without a GPU, set
    ``TORCH_CUDA_ARCH_LIST`` (9.0 for an H100 or H200).
    """
    point_torch_at_the_toolkit()
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
