"""Output frames from renders: detail transfer to full resolution, hole inpainting, attribution.

The network runs at a working resolution; the output keeps the input's. Every Gaussian
carries, as render features, a one-hot label of where it came from (``ORIGINS[:3]``).
Composited like colour, they give each output pixel the share of its opacity from each
origin: the source frame's visible surface (the first Gaussian layer of the frame's own
pixels), neighbouring frames, or the network's extrapolation (the padding, and the deeper
layers that guess what the source hides).

**Detail transfer** (GaVS stage 6) finds, for every output pixel at full resolution, the
source pixel it shows and samples the full-resolution input there, so the output keeps the
input's own sharpness instead of the render's. The source pixel comes from the rendered
depth: upsampled to the output size, unprojected from the smoothed camera, moved into the
source camera and projected. (Compositing each Gaussian's source coordinate instead, as the
design suggests, returns the coordinate of the front-most splat, quantised to the working
grid: at 2x that samples the input nearly nearest-neighbour and lost 7 dB in a test. Depth
varies smoothly across a surface's splats, so its quantisation costs almost nothing.)
Rendered colour (upsampled) is used where other origins dominate the pixel, and wherever
the warp points outside the source frame. The source's share of a pixel is rarely 1: its
first Gaussian layer is 93-98% opaque on real clips, so the deeper layers always show
through a little. Taking shares literally blended that much of the soft render into every
pixel and cost 7% of the Laplacian variance (0.87 of the input's against 0.93 on a shaky-5
segment); instead the source's weight ramps from 0 to 1 as its share goes from 0.25 to 0.75
(``SOURCE_RAMP``), so a pixel that is mostly the source's shows the source, and a
disocclusion, where deeper layers take over, fades to the render. The input is sampled
with a Lanczos kernel (OpenCV), which keeps more of its detail at sub-pixel offsets than
bicubic does. Optionally (``others``), neighbouring input frames are warped through the same
rendered depth and averaged with the source's samples where they agree with them (``agreeing_mean``): the
input's sensor noise and the resampling's sub-pixel phase are new in every frame, and passed
straight into the output they flicker; a moving object, an occlusion or an edge the depth
misplaces differs by far more than the agreement scale and keeps the source's own detail.
Pixels the render leaves empty (alpha below ``min_alpha``) are filled by OpenCV's Telea
inpainting, the last resort, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.cameras import pixel_centers, project, scale_intrinsics, transform_points, unproject

ORIGINS = ("source", "neighbours", "extrapolated", "inpainted")
FEATURES = 3  # one-hot origin labels: source, neighbours, extrapolated
SOURCE_RAMP = (0.25, 0.75)  # source share over which the output goes from rendered colour to the input
AGREEMENT = 8 / 255  # colour difference (3x3 mean) at which another frame's detail weighs 1/e


def origin_features(origin: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[..., N, FEATURES]`` render features of Gaussians with origin indices ``origin [..., N]`` (0-2)."""
    return F.one_hot(origin.long(), FEATURES).to(dtype)


@dataclass
class Composed:
    frames: np.ndarray  # [B, H, W, 3] at the output size, the source's dtype (uint8 without one)
    origin_shares: np.ndarray  # [B, 4] share of output pixels per ORIGINS entry


def _inpaint(frame: np.ndarray, holes: np.ndarray, radius: int) -> np.ndarray:
    if not holes.any():
        return frame
    mask = holes.astype(np.uint8)
    if frame.dtype == np.uint8:
        return cv2.inpaint(frame, mask, radius, cv2.INPAINT_TELEA)
    # OpenCV inpaints 16-bit images one channel at a time
    return np.stack([cv2.inpaint(frame[..., c], mask, radius, cv2.INPAINT_TELEA) for c in range(3)], -1)


def source_pixels(depth: Tensor, *, K: Tensor, K_source: Tensor, to_source: Tensor) -> Tensor:
    """``[B, 2, H, W]`` source-camera pixel coordinates of the surface at ``depth [B, 1, H, W]``
    seen from a camera with intrinsics ``K [B, 3, 3]``; ``to_source [B, 4, 4]`` maps that
    camera's frame into the source camera's, whose intrinsics are ``K_source [B, 3, 3]``."""
    B, _, H, W = depth.shape
    uv = pixel_centers(H, W, device=depth.device, dtype=depth.dtype).reshape(1, H * W, 2).expand(B, -1, -1)
    points = unproject(uv, depth.reshape(B, H * W), K)
    projected, z = project(transform_points(to_source, points), K_source)
    projected = torch.where((z > 1e-6)[..., None], projected, torch.full_like(projected, -1e6))
    return projected.transpose(1, 2).reshape(B, 2, H, W)


def resample(frames: np.ndarray, uv: Tensor) -> Tensor:
    """``[B, 3, H, W]`` in [0, 1]: ``frames [B, H, W, 3]`` (uint8 or uint16) sampled at pixel coordinates
    ``uv [B, 2, H, W]`` (centres at +0.5) with OpenCV's 8x8 Lanczos kernel. Bicubic sampling
    at sub-pixel offsets keeps 0.81-0.83 of a real clip's Laplacian variance under a
    1-degree rotation, Lanczos 0.91. Torch has no Lanczos sampler, so on CUDA the warp
    field makes one round trip to the CPU per batch."""
    maps = (uv - 0.5).permute(0, 2, 3, 1).float().cpu().numpy()
    sampled = np.stack(
        [
            cv2.remap(frame, m[..., 0], m[..., 1], cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
            for frame, m in zip(frames, maps, strict=True)
        ]
    )
    return torch.from_numpy(sampled.astype(np.float32)).permute(0, 3, 1, 2).div(np.iinfo(frames.dtype).max)


def agreeing_mean(own: Tensor, others: list[tuple[Tensor, Tensor]]) -> Tensor:
    """``[B, 3, H, W]``: the source's sampled detail ``own [B, 3, H, W]`` averaged with other
    frames' ``(sampled [B, 3, H, W], inside [B, 1, H, W])``, each weighted by how well it agrees
    with the source's around the pixel: exp(-(d / AGREEMENT)^2), d the colour difference
    averaged over channels and a 3x3 window. Noise and the resampling's phase differ from frame
    to frame and average out; an edge the depth misaligns, a moving object or an occlusion
    differs by far more than ``AGREEMENT`` and keeps the source's own detail."""
    total, weights = own.clone(), torch.ones_like(own[:, :1])
    for sampled, inside in others:
        difference = (sampled - own).abs().mean(1, keepdim=True)
        local = F.avg_pool2d(difference, 3, stride=1, padding=1, count_include_pad=False)
        weight = torch.exp(-((local / AGREEMENT) ** 2)) * inside
        total += weight * sampled
        weights += weight
    return total / weights


def _inside(uv: Tensor, width: int, height: int) -> Tensor:
    return (uv[:, :1] >= 0) & (uv[:, :1] <= width) & (uv[:, 1:] >= 0) & (uv[:, 1:] <= height)


@torch.no_grad()
def compose(
    *,
    color: Tensor,
    alpha: Tensor,
    depth: Tensor,
    features: Tensor,
    K: Tensor,
    K_source: Tensor | None = None,
    to_source: Tensor,
    source: np.ndarray | None,
    others: tuple[tuple[np.ndarray, Tensor], ...] = (),
    min_alpha: float = 0.5,
    inpaint_radius: int = 3,
) -> Composed:
    """Output frames from renders at the working size ``h x w``.

    Args:
        color, alpha, depth: ``[B, 3|1|1, h, w]`` the render (colour over black).
        features: ``[B, FEATURES, h, w]`` composited ``origin_features``.
        K: ``[B, 3, 3]`` working-size intrinsics of the render.
        K_source: ``[B, 3, 3]`` the source's, where they differ from the render's (a shifted
            principal point).
        to_source: ``[B, 4, 4]`` from the rendered (smoothed) camera to the source camera.
        source: ``[B, H, W, 3]`` uint8 or uint16, the input frames at the output size (the
            output keeps their dtype), or None to output
            the working size without detail transfer.
        others: ``(frames [B, H, W, 3], to_frame [B, 4, 4])`` of other input frames and the
            transforms from the rendered camera into their cameras: their detail joins the
            source's where it agrees (``agreeing_mean``).
    """
    h, w = color.shape[-2:]
    covered = alpha >= min_alpha
    safe = alpha.clamp(min=1e-6)
    colour = (color / safe).clamp(0, 1)
    shares = (features / safe).clamp(0, 1)  # [B, 3, h, w]
    out = colour
    if source is not None:
        H, W = source.shape[1:3]

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)

        K_full = scale_intrinsics(K, W / w, H / h)
        K_source_full = K_full if K_source is None else scale_intrinsics(K_source, W / w, H / h)
        full_depth = up(depth)
        uv = source_pixels(full_depth, K=K_full, K_source=K_source_full, to_source=to_source)
        inside = _inside(uv, W, H)
        sampled = resample(source, uv).to(color.device)
        if others:
            detail = []
            for frames, to_frame in others:
                uv_other = source_pixels(full_depth, K=K_full, K_source=K_source_full, to_source=to_frame)
                detail.append((resample(frames, uv_other).to(color.device), _inside(uv_other, W, H).float()))
            sampled = agreeing_mean(sampled, detail)
        low, high = SOURCE_RAMP
        weight = up(((shares[:, :1] - low) / (high - low)).clamp(0, 1)) * inside
        out = weight * sampled + (1 - weight) * up(colour)
        covered = up(covered.float()) >= 0.5
        shares = up(shares)
    origin = shares.argmax(1, keepdim=True)
    origin = torch.where(covered, origin, torch.full_like(origin, 3))
    dtype = np.uint8 if source is None else source.dtype
    frames = out.clamp(0, 1).permute(0, 2, 3, 1).mul(np.iinfo(dtype).max).round().cpu().numpy().astype(dtype)
    holes = (~covered[:, 0]).cpu().numpy()
    frames = np.stack([_inpaint(f, m, inpaint_radius) for f, m in zip(frames, holes, strict=True)])
    counts = F.one_hot(origin[:, 0].long(), len(ORIGINS)).float().mean((1, 2)).cpu().numpy()
    return Composed(frames, counts)
