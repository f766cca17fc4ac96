"""2D stabilization for the frames SfM cannot pose: a smoothed similarity path.

A stretch without 3D poses (a whip pan, a few blank or defocused frames) is stabilized the
classic way, and no frame gets an invented 3D pose:

1. **Motion.** Corners (Shi-Tomasi) are tracked into the next frame with pyramidal
   Lucas-Kanade on gray frames normalised to one mean and contrast (so a change of exposure
   does not break it), and a 4-DOF similarity is fitted with RANSAC. A pair that cannot be
   tracked counts as no motion.
2. **Path.** Each step is read as (dx, dy, rotation, log scale) of the frame centre, and the
   steps are summed into a path ``x``. The smoothed path ``p`` is the same
   minimum-acceleration smoother as the 3D path's (``argmin sum w_t |p_t - y_t|^2 + lam
   |D^2 p|^2``); the correction of frame t is ``p_t - x_t``.
3. **Joins.** Where the stretch meets a 3D segment of the same shot, a few of that
   segment's frames join the solve with their corrections pinned (``y = x + c``, weight
   1e6), each read from the 3D render as the similarity closest to the homography its
   camera change induces on the plane at the median scene depth (1, after normalisation).
   So the 2D path continues the 3D one in position and slope, with no jump at the join.
4. **Bounds.** The correction may move the frame by at most ``pad`` of its size and turn it
   by at most ``max_rotation_deg``; where it would go further, that frame's data weight
   grows until it stays inside. The border it uncovers is filled by reflection and counted
   as extrapolated.

Coordinates are the project's (pixel centres at +0.5), at the working size; ``to_size``
carries a correction to the output size.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from infer.trajectory import second_difference

PINNED_WEIGHT = 1e6
JOIN_FRAMES = 3  # frames of a 3D neighbour pinned on each side
MAX_ROUNDS = 12


def _normalised_gray(frame: np.ndarray) -> np.ndarray:
    """Gray levels at a fixed mean and contrast, so tracking survives exposure changes (Lucas-
    Kanade assumes constant brightness; a dimming stretch would break it)."""
    gray = cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.clip((gray - gray.mean()) / max(float(gray.std()), 1e-3) * 48 + 128, 0, 255).astype(np.uint8)


def similarity_steps(frames: np.ndarray) -> np.ndarray:
    """``[T-1, 3, 3]`` similarity from frame t's pixels to frame t+1's (identity where
    tracking fails), for uint8 RGB ``frames [T, H, W, 3]``."""
    gray = [_normalised_gray(f) for f in frames]
    steps = np.tile(np.eye(3), (max(len(frames) - 1, 0), 1, 1))
    for t in range(len(gray) - 1):
        corners = cv2.goodFeaturesToTrack(gray[t], maxCorners=400, qualityLevel=0.01, minDistance=6)
        if corners is None or len(corners) < 8:
            continue
        moved, status, _ = cv2.calcOpticalFlowPyrLK(gray[t], gray[t + 1], corners, None)
        good = status[:, 0] == 1
        if good.sum() < 8:
            continue
        M, inliers = cv2.estimateAffinePartial2D(
            corners[good] + 0.5, moved[good] + 0.5, ransacReprojThreshold=1.0
        )
        if M is not None and inliers is not None and inliers.sum() >= 8:
            steps[t, :2] = M
    return steps


def to_params(M: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``[4]`` (dx, dy, rotation rad, log scale) of a similarity ``M [3, 3]``: where it moves
    the frame centre, and how it turns and scales about it."""
    a, b = M[0, 0], M[1, 0]
    moved = M[:2, :2] @ centre + M[:2, 2]
    return np.array([*(moved - centre), np.arctan2(b, a), np.log(np.hypot(a, b))])


def from_params(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The similarity ``[3, 3]`` of ``to_params``' parameters."""
    dx, dy, angle, log_scale = params
    R = np.exp(log_scale) * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    M = np.eye(3)
    M[:2, :2] = R
    M[:2, 2] = centre + np.array([dx, dy]) - R @ centre
    return M


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``[3, 3]`` least-squares similarity mapping points ``src [N, 2]`` onto ``dst [N, 2]``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    a = (s * d).sum() / (s**2).sum()
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / (s**2).sum()
    M = np.eye(3)
    M[:2, :2] = [[a, -b], [b, a]]
    M[:2, 2] = mu_d - M[:2, :2] @ mu_s
    return M


def induced_similarity(K: np.ndarray, to_virtual: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[3, 3]`` the similarity closest to the image motion that the camera change
    ``to_virtual [4, 4]`` (source camera frame -> new camera frame) induces on the plane at
    depth 1 (the median scene depth of normalised poses), for intrinsics ``K [3, 3]``."""
    width, height = size
    u, v = np.meshgrid(np.linspace(0, width, 9), np.linspace(0, height, 9))
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    points = np.linalg.inv(K) @ pixels  # on the plane z = 1
    moved = K @ (to_virtual[:3, :3] @ points + to_virtual[:3, 3:])
    return fit_similarity(pixels[:2].T, (moved[:2] / moved[2:]).T)


def smooth_params(path: np.ndarray, lam: float, weights: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[T, 4]`` argmin of ``sum w_t |p_t - y_t|^2 + lam |D^2 p|^2`` per column."""
    count = len(path)
    if count < 3:
        return targets.copy()
    D = second_difference(count)
    system = (sp.diags(weights) + lam * (D.T @ D)).tocsc()
    return np.stack([spsolve(system, weights * targets[:, k]) for k in range(path.shape[1])], 1)


def planar_corrections(
    steps: np.ndarray,
    *,
    lam: float,
    size: tuple[int, int],
    pinned: dict[int, np.ndarray],
    pad: float,
    max_rotation_deg: float,
) -> np.ndarray:
    """``[T, 3, 3]`` corrections (input pixels -> output pixels) for frames with ``steps
    [T-1, 3, 3]`` between them; ``pinned`` maps a frame to the correction it must keep (the
    3D neighbours at a join)."""
    centre = np.array(size, float) / 2
    path = np.concatenate(
        [np.zeros((1, 4)), np.cumsum([to_params(M, centre) for M in steps], 0).reshape(-1, 4)]
    )
    weights = np.ones(len(path))
    targets = path.copy()
    for t, correction in pinned.items():
        weights[t], targets[t] = PINNED_WEIGHT, path[t] + to_params(correction, centre)
    limit = np.array([pad * size[0], pad * size[1], np.deg2rad(max_rotation_deg), np.log(1 + pad)])
    free = np.array([t not in pinned for t in range(len(path))])
    for _ in range(MAX_ROUNDS):
        corrections = smooth_params(path, lam, weights, targets) - path
        over = free & (np.abs(corrections) > limit).any(1)
        if not over.any():
            break
        weights[over] *= 4  # pull those frames towards their own path
    corrections[free] = np.clip(corrections[free], -limit, limit)
    return np.stack([from_params(c, centre) for c in corrections])


def to_size(M: np.ndarray, working: tuple[int, int], output: tuple[int, int]) -> np.ndarray:
    """The correction ``M`` at the working size, at the output size."""
    S = np.diag([output[0] / working[0], output[1] / working[1], 1.0])
    return S @ M @ np.linalg.inv(S)


def warp(image: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, float]:
    """``image [H, W, 3]`` moved by the correction ``M`` (output size; Lanczos, border
    reflected), and the share of output pixels outside the input (filled by reflection)."""
    height, width = image.shape[:2]
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # OpenCV puts pixel centres at integers
    M_cv = (np.linalg.inv(shift) @ M @ shift)[:2]
    out = cv2.warpAffine(
        image, M_cv, (width, height), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101
    )
    inside = cv2.warpAffine(
        np.ones((height, width), np.uint8), M_cv, (width, height), flags=cv2.INTER_NEAREST
    )
    return out, float(1 - inside.mean())
