"""Scale-invariant sparse depth loss against SfM points.

SfM depth is known only up to the clip's scale, so the loss is the variance of the log ratio
between predicted and sparse depth per image (Eigen et al.'s scale-invariant error with
lambda = 1): any global scale of the prediction costs nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sparse_depth_loss(depth: Tensor, uv: Tensor, sparse: Tensor, valid: Tensor) -> Tensor:
    """``depth [B, 1, H, W]``; per image up to M points ``uv [B, M, 2]`` (pixel coordinates),
    ``sparse [B, M]`` depths and ``valid [B, M]`` (False on padding). Mean over images with
    at least two points."""
    height, width = depth.shape[-2:]
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)[:, :, None]
    predicted = F.grid_sample(depth, grid, mode="bilinear", align_corners=False)[:, 0, :, 0]  # [B, M]
    ok = valid & (sparse > 0) & (predicted > 0)
    log_ratio = torch.where(ok, torch.log(predicted.clamp(min=1e-6)) - torch.log(sparse.clamp(min=1e-6)), 0.0)
    count = ok.sum(-1)
    mean = log_ratio.sum(-1) / count.clamp(min=1)
    variance = ((log_ratio - mean[:, None]) ** 2 * ok).sum(-1) / count.clamp(min=1)
    usable = (count >= 2).to(variance.dtype)  # a masked mean: no host round-trip to test for any
    return (variance * usable).sum() / usable.sum().clamp(min=1)


def frame_points(
    observations: Tensor,
    frame: int,
    *,
    max_points: int,
    origin: tuple[float, float] = (0.0, 0.0),
    scale: tuple[float, float] = (1.0, 1.0),
    size: tuple[int, int] | None = None,
    depth_range: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One image's inputs to ``sparse_depth_loss``: the points that ``frame`` observes.

    ``observations [M, 4]`` are (frame, u, v, depth) rows. Each kept point's pixel becomes
    ``(uv - origin) * scale`` (a crop's corner and a resize; a negative origin pads). With
    ``size`` (width, height), points that land outside are dropped; with ``depth_range``,
    points outside ``(low, high)``. The first ``max_points`` fill ``uv [max_points, 2]``,
    ``depth [max_points]`` and ``valid [max_points]``; the rest is padding.
    """
    uv = observations.new_zeros(max_points, 2)
    depth = observations.new_zeros(max_points)
    valid = torch.zeros(max_points, dtype=torch.bool, device=observations.device)
    mine = observations[observations[:, 0] == frame]
    moved = (mine[:, 1:3] - mine.new_tensor(origin)) * mine.new_tensor(scale)
    keep = torch.ones(len(mine), dtype=torch.bool, device=observations.device)
    if size is not None:
        keep &= ((moved >= 0) & (moved < mine.new_tensor(size))).all(-1)
    if depth_range is not None:
        keep &= (mine[:, 3] > depth_range[0]) & (mine[:, 3] < depth_range[1])
    moved, z = moved[keep][:max_points], mine[keep, 3][:max_points]
    uv[: len(moved)], depth[: len(moved)], valid[: len(moved)] = moved, z, True
    return uv, depth, valid
