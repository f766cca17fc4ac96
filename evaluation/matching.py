"""SIFT matching and homographies, as the stabilization-metrics protocol prescribes.

Protocol: SIFT features, Lowe's ratio test at 0.7, more than 10 matches, RANSAC homography
with a 5 px threshold. Keypoints are returned in the project's pixel convention (pixel
centres at half-integers), so they can be used with our intrinsics directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RATIO = 0.7
MIN_MATCHES = 10  # a pair needs more than this many ratio-test matches
RANSAC_PX = 5.0


@dataclass
class Features:
    points: np.ndarray  # [n, 2] float32 pixel coordinates (centres at half-integers)
    descriptors: np.ndarray  # [n, 128] float32


def to_gray(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def sift_features(frame: np.ndarray, detector: cv2.SIFT | None = None) -> Features:
    """SIFT keypoints and descriptors of an RGB or gray uint8 frame."""
    detector = detector or cv2.SIFT_create()
    keypoints, descriptors = detector.detectAndCompute(to_gray(frame), None)
    if descriptors is None:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    points = np.array([k.pt for k in keypoints], np.float32) + 0.5  # OpenCV puts centres at integers
    return Features(points, descriptors)


def match(a: Features, b: Features, ratio: float = RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Ratio-test matches: corresponding points ``[m, 2]`` in ``a`` and in ``b``."""
    if len(a.points) < 2 or len(b.points) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    idx_a = np.array([m.queryIdx for m in good], int)
    idx_b = np.array([m.trainIdx for m in good], int)
    return a.points[idx_a].reshape(-1, 2), b.points[idx_b].reshape(-1, 2)


def fit_homography(pts_a: np.ndarray, pts_b: np.ndarray) -> np.ndarray | None:
    """The protocol's homography (a -> b) from matches, or None when there are too few."""
    if len(pts_a) <= MIN_MATCHES:
        return None
    H, _ = cv2.findHomography(pts_a, pts_b, cv2.RANSAC, RANSAC_PX)
    if H is None or not np.isfinite(H).all():
        return None
    return H / H[2, 2]


def fit_similarity(pts_a: np.ndarray, pts_b: np.ndarray, threshold_px: float = 1.0) -> np.ndarray | None:
    """3x3 similarity (rotation, uniform scale, translation) a -> b, or None.

    Four degrees of freedom estimate the image-plane shake far less noisily than the
    protocol's eight, so residual jitter is measured with it.
    """
    if len(pts_a) <= MIN_MATCHES:
        return None
    A, _ = cv2.estimateAffinePartial2D(pts_a, pts_b, method=cv2.RANSAC, ransacReprojThreshold=threshold_px)
    return None if A is None else np.vstack([A, [0.0, 0.0, 1.0]])


def homography(a: Features, b: Features) -> np.ndarray | None:
    """Homography mapping ``a``'s pixels onto ``b``'s, or None when the pair cannot be matched."""
    return fit_homography(*match(a, b))
