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
    usable = count >= 2
    return variance[usable].mean() if usable.any() else depth.sum() * 0.0
