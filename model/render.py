"""One rendering interface over two backends.

``render`` takes a (batched) set of Gaussians and a batch of cameras and returns colour, depth,
alpha and any extra per-Gaussian features composited the same way as colour.

Backends:
    ``gsplat``: CUDA, the production path (one gsplat call per ``render`` call, with the
        batch dims passed through, so no Gaussian is copied per camera).
    ``cpu``: the fast CPU path, float32: the reference's projection with C++ compositing;
        see ``model.rasterize_cpu``.
    ``torch``: pure PyTorch, any device and dtype, the reference; see ``model.rasterize_torch``.
    ``auto``: gsplat when the tensors are on CUDA and gsplat imports; on the CPU, ``cpu`` for
        float32 when its kernels build; otherwise torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from model.gaussians import Gaussians
from model.rasterize_cpu import cpu_kernels_available, rasterize_cpu
from model.rasterize_gsplat import gsplat_available, rasterize_gsplat
from model.rasterize_torch import rasterize_torch

Backend = Literal["auto", "torch", "cpu", "gsplat"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def _per_view(
    rasterize: Callable[..., tuple[Tensor, Tensor, Tensor]],
) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """A rasterizer of one Gaussian set per view (``[V, N]``) as one of ``B`` sets seen by ``C``
    cameras each: each set is repeated for its cameras. gsplat and the cpu backend take the
    batch dims themselves."""

    def batched(means, quats, scales, opacities, features, viewmats, Ks, *rest):
        n_cams = viewmats.shape[1]

        def repeat(t: Tensor) -> Tensor:  # [B, N, X] -> [B * C, N, X]
            return t.repeat_interleave(n_cams, dim=0) if n_cams > 1 else t

        gaussians = (repeat(t) for t in (means, quats, scales, opacities, features))
        return rasterize(*gaussians, viewmats.flatten(0, 1), Ks.flatten(0, 1), *rest)

    return batched


# each: Gaussians [B, N, ...], cameras [B, C, ...] -> features [B * C, H, W, F], depth, alpha [B * C, H, W]
RASTERIZERS = {
    "torch": _per_view(rasterize_torch),
    "cpu": rasterize_cpu,
    "gsplat": rasterize_gsplat,
}


@dataclass
class RenderOutput:
    """Rendered images; ``...`` are the Gaussians' batch dims and ``C`` the cameras per element.

    Attributes:
        color: ``[..., C, 3, H, W]`` composited colour over the background.
        depth: ``[..., C, 1, H, W]`` expected z-depth (accumulated depth / alpha; 0 where empty).
        alpha: ``[..., C, 1, H, W]`` accumulated opacity.
        features: ``[..., C, D, H, W]`` composited extra features (no background), or None.
    """

    color: Tensor
    depth: Tensor
    alpha: Tensor
    features: Tensor | None


def resolve_backend(backend: Backend, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The concrete backend for ``backend`` on ``device``, with a clear error when impossible."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda":
            return "gsplat" if gsplat_available() else "torch"
        fast = device.type == "cpu" and dtype == torch.float32 and cpu_kernels_available()
        return "cpu" if fast else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("render backend 'gsplat' needs CUDA tensors; use backend='torch' on the CPU")
    if backend == "gsplat" and not gsplat_available():
        raise ValueError("render backend 'gsplat' is not usable here (see the warning); use backend='auto'")
    if backend == "cpu" and (device.type != "cpu" or dtype != torch.float32):
        raise ValueError(f"render backend 'cpu' takes float32 CPU tensors, not {dtype} on {device.type}")
    return backend


def render(
    gaussians: Gaussians,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    backend: Backend = "auto",
    near: float = 0.01,
    far: float = 1e10,
) -> RenderOutput:
    """Render ``gaussians`` (batch dims ``...``, ``N`` each) into ``C`` cameras per batch element.

    Args:
        viewmats: ``[..., C, 4, 4]`` world-to-camera matrices (OpenCV axes).
        Ks: ``[..., C, 3, 3]`` intrinsics in pixels of the ``width`` x ``height`` image.
        background: RGB ``[3]`` or ``[..., C, 3]``; black when None. Applies to colour only.
    """
    batch = gaussians.batch_shape
    if viewmats.ndim != len(batch) + 3 or viewmats.shape[:-3] != batch or viewmats.shape[-2:] != (4, 4):
        raise ValueError(
            f"viewmats must be [..., C, 4, 4] with batch dims {tuple(batch)}, got {tuple(viewmats.shape)}"
        )
    if Ks.shape != (*viewmats.shape[:-2], 3, 3):
        raise ValueError(f"Ks must have shape {(*viewmats.shape[:-2], 3, 3)}, got {tuple(Ks.shape)}")
    name = resolve_backend(backend, gaussians.means.device, gaussians.means.dtype)

    count, n_cams, n = batch.numel(), viewmats.shape[-3], gaussians.count

    def flat(t: Tensor) -> Tensor:  # [..., N, X] -> [B, N, X]
        return t.reshape(count, n, *t.shape[len(batch) + 1 :])

    parts = [gaussians.colors] + ([gaussians.features] if gaussians.features is not None else [])
    image, depth, alpha = RASTERIZERS[name](
        flat(gaussians.means),
        flat(gaussians.quats),
        flat(gaussians.scales),
        flat(gaussians.opacities),
        flat(torch.cat(parts, dim=-1)),
        viewmats.reshape(count, n_cams, 4, 4),
        Ks.reshape(count, n_cams, 3, 3),
        width,
        height,
        near,
        far,
    )
    views = count * n_cams
    color = image[..., :3]
    if background is not None:
        bg = background.to(color).expand(*viewmats.shape[:-2], 3).reshape(views, 1, 1, 3)
        color = color + (1.0 - alpha[..., None]) * bg

    out_shape = (*viewmats.shape[:-2],)

    def to_chw(t: Tensor) -> Tensor:
        return t.permute(0, 3, 1, 2).reshape(*out_shape, t.shape[-1], height, width)

    return RenderOutput(
        color=to_chw(color),
        depth=to_chw(depth[..., None]),
        alpha=to_chw(alpha[..., None]),
        features=to_chw(image[..., 3:]) if gaussians.features is not None else None,
    )
