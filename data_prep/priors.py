"""Cheap per-clip priors: optical flow, occlusion masks, and masks of independently moving regions.

- Flow: OpenCV DIS (medium preset) forward (t -> t+1) and backward (t+1 -> t), in pixels.
- Occlusion: the forward-backward test of Sundaram et al. (2010): a pixel is occluded when
  ``|f + b(x + f)|^2 > 0.01 (|f|^2 + |b(x + f)|^2) + 0.5``, or when its flow leaves the frame.
- Dynamic regions: a static point's flow must obey the epipolar geometry of the camera
  motion. Pixels whose flow correspondence is further than ``threshold_px`` from it (Sampson
  distance; homography transfer error where the camera only rotates), in either the forward
  or the backward pair, are moving. Morphological opening and closing remove speckle and fill
  holes. Motion along the epipolar lines cannot be seen this way, a limit of any two-view test.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from model.cameras import epipolar_residual, pixel_centers, relative_pose


@dataclass
class PriorConfig:
    flow: bool = True
    dynamic_threshold_px: float = 2.0
    min_dynamic_area: float = 0.001  # share of the frame: smaller moving blobs are dropped as noise


def optical_flow(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward flow ``[T-1, H, W, 2]`` float32 between consecutive frames."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    forward = np.stack([dis.calc(a, b, None) for a, b in itertools.pairwise(gray)])
    backward = np.stack([dis.calc(b, a, None) for a, b in itertools.pairwise(gray)])
    return forward, backward


def _sample(field: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``field [H, W, C]`` at array coordinates ``coords [H, W, 2]`` (x, y)."""
    return cv2.remap(field, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def occlusion(flow: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """``[T-1, H, W]`` True where a pixel's flow fails the forward-backward test or leaves the frame."""
    _, height, width, _ = flow.shape
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).astype(np.float32)
    masks = []
    for f, b in zip(flow, reverse, strict=True):
        target = grid + f
        b_at = _sample(b, target)
        mismatch = ((f + b_at) ** 2).sum(-1) > 0.01 * ((f**2).sum(-1) + (b_at**2).sum(-1)) + 0.5
        outside = (
            (target[..., 0] < 0)
            | (target[..., 0] > width - 1)
            | (target[..., 1] < 0)
            | (target[..., 1] > height - 1)
        )
        masks.append(mismatch | outside)
    return np.stack(masks)


def _residual(
    flow: np.ndarray, K_a: np.ndarray, K_b: np.ndarray, c2w_a: np.ndarray, c2w_b: np.ndarray
) -> np.ndarray:
    height, width = flow.shape[:2]
    pts_a = pixel_centers(height, width, dtype=torch.float64).reshape(-1, 2)
    pts_b = pts_a + torch.from_numpy(flow.reshape(-1, 2).astype(np.float64))
    a_to_b = relative_pose(torch.from_numpy(c2w_a), torch.from_numpy(c2w_b))
    residual = epipolar_residual(pts_a, pts_b, torch.from_numpy(K_a), torch.from_numpy(K_b), a_to_b)
    return residual.numpy().reshape(height, width)


def dynamic_masks(
    forward: np.ndarray,
    backward: np.ndarray,
    occluded_forward: np.ndarray,
    occluded_backward: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    config: PriorConfig | None = None,
) -> np.ndarray:
    """``[T, H, W]`` True on pixels that move independently of the camera."""
    config = config or PriorConfig()
    count, height, width = len(c2w), forward.shape[1], forward.shape[2]
    Ks = np.broadcast_to(K, (count, 3, 3)).astype(np.float64)
    evidence = np.zeros((count, height, width), bool)
    for t in range(count - 1):
        ahead = _residual(forward[t], Ks[t], Ks[t + 1], c2w[t], c2w[t + 1]) > config.dynamic_threshold_px
        behind = _residual(backward[t], Ks[t + 1], Ks[t], c2w[t + 1], c2w[t]) > config.dynamic_threshold_px
        evidence[t] |= ahead & ~occluded_forward[t]
        evidence[t + 1] |= behind & ~occluded_backward[t]
    open_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    close_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    cleaned = np.zeros_like(evidence)
    min_area = config.min_dynamic_area * height * width
    for t, mask in enumerate(evidence.astype(np.uint8)):
        mask = cv2.morphologyEx(
            cv2.morphologyEx(mask, cv2.MORPH_OPEN, open_kernel), cv2.MORPH_CLOSE, close_kernel
        )
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = np.nonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)[0]
        cleaned[t] = np.isin(labels, keep[keep > 0])
    return cleaned


def compute_priors(
    frames: np.ndarray, K: np.ndarray, c2w: np.ndarray, config: PriorConfig | None = None
) -> tuple[dict, dict]:
    """``(flow, masks)`` in the schema's layout for a posed clip."""
    config = config or PriorConfig()
    forward, backward = optical_flow(frames)
    occluded_forward, occluded_backward = occlusion(forward, backward), occlusion(backward, forward)
    dynamic = dynamic_masks(forward, backward, occluded_forward, occluded_backward, K, c2w, config)
    flow = {"forward": forward, "backward": backward}
    masks = {
        "occlusion_forward": occluded_forward,
        "occlusion_backward": occluded_backward,
        "dynamic": dynamic,
    }
    return flow, masks
