"""One rendering interface over two backends.

``render`` takes a (batched) set of Gaussians and a batch of cameras and returns colour, depth,
alpha and any extra per-Gaussian features composited the same way as colour.

Backends:
    ``gsplat``: CUDA, the production path (one gsplat call per ``render`` call).
    ``cpu``: the fast CPU path, float32: the reference's projection with C++ compositing;
        see ``model.rasterize_cpu``.
    ``torch``: pure PyTorch, any device and dtype, the reference; see ``model.rasterize_torch``.
    ``auto``: gsplat when the tensors are on CUDA and gsplat imports; on the CPU, ``cpu`` for
        float32 when its kernels build; otherwise torch.
"""

from __future__ import annotations

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
RASTERIZERS = {"torch": rasterize_torch, "cpu": rasterize_cpu, "gsplat": rasterize_gsplat}


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

    n_cams = viewmats.shape[-3]
    n = gaussians.count
    views = batch.numel() * n_cams

    def per_view(t: Tensor) -> Tensor:
        # [..., N, X] -> [V, N, X]: each camera sees its own batch element's Gaussians.
        t = t.reshape(batch.numel(), 1, n, *t.shape[len(batch) + 1 :])
        return t.expand(-1, n_cams, *t.shape[2:]).reshape(views, n, *t.shape[3:])

    parts = [gaussians.colors] + ([gaussians.features] if gaussians.features is not None else [])
    features = torch.cat(parts, dim=-1)
    image, depth, alpha = RASTERIZERS[name](
        per_view(gaussians.means),
        per_view(gaussians.quats),
        per_view(gaussians.scales),
        per_view(gaussians.opacities),
        per_view(features),
        viewmats.reshape(views, 4, 4),
        Ks.reshape(views, 3, 3),
        width,
        height,
        near,
        far,
    )
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
