"""Horizon lock: the smoothed path's roll levelled against the scene's up direction.

Levelling is exact in 3D: each virtual camera keeps its optical axis and turns about it until
its x axis is horizontal (perpendicular to ``up``), so nothing is rotated and cropped in 2D.

The up direction comes from one of two references, and the report says which:

- **vanishing**: the scene's dominant vertical direction. Each line segment (OpenCV's LSD) in
  a posed frame spans, with the camera centre, a plane whose normal ``n`` is known in world
  coordinates from the pose; a vertical scene line lies in such a plane, so ``n . up = 0``.
  The direction that the most planes hold (a consensus over directions that pairs of planes
  share, near the path's mean up) is refined by least squares over them;
- **path**: the mean of the cameras' up vectors, which is right when the operator held the
  camera level on average.

The vanishing estimate is used when enough segments in enough frames agree on it: a camera
held tilted for the whole clip shifts the path's mean by the tilt, and only the scene shows
it. Without such lines (a landscape, a close-up) the path's mean is all there is.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_prep.schema import ClipPoses

SAMPLED_FRAMES = 30  # frames searched for line segments, evenly spread over the segment
MIN_LENGTH = 0.1  # shortest segment used, as a share of the frame's shorter side
GATE_DEG = 20.0  # a segment is a vertical candidate within this of the path's up in the image
MAX_TILT_DEG = 15.0  # a vanishing estimate further than this from the path's mean up is not trusted
INLIER_DEG = 1.5  # a segment's plane holds a direction within this
HYPOTHESES = 2000  # directions drawn from pairs of planes
MIN_LINES = 40  # inlier segments for the vanishing reference...
MIN_LINE_FRAMES = 5  # ...spread over at least this many frames
STEEP_DEG = 15.0  # a camera looking within this of straight up or down has no roll to level


@dataclass
class SceneUp:
    up: np.ndarray  # [3] unit vector, world coordinates
    reference: str  # "vanishing" or "path"
    lines: int  # segments that agree with the vanishing estimate (0: none found)
    line_frames: int  # frames they come from
    spread_deg: float  # RMS angle between their planes and the estimate
    path_offset_deg: float  # angle between the vanishing estimate and the path's mean up

    def report(self) -> dict:
        return {
            "reference": self.reference,
            "up": [round(float(v), 6) for v in self.up],
            "lines": self.lines,
            "line_frames": self.line_frames,
            "line_spread_deg": round(self.spread_deg, 3),
            "path_offset_deg": round(self.path_offset_deg, 3),
        }


def path_up(c2w: np.ndarray) -> np.ndarray:
    """``[3]``: the mean of the cameras' up vectors (OpenCV: -y) of ``c2w [T, 4, 4]``."""
    mean = -c2w[:, :3, 1].mean(0)
    return mean / np.linalg.norm(mean)


def line_planes(
    gray: np.ndarray, K: np.ndarray, c2w: np.ndarray, up: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Unit world-frame normals ``[N, 3]`` of the planes through the camera centre and each
    line segment of ``gray [H, W]`` uint8 (intrinsics ``K``, pose ``c2w [4, 4]``) that runs
    within ``GATE_DEG`` of the way ``up [3]`` runs in the image at its midpoint, and their
    lengths ``[N]`` in pixels. The gate keeps out lines that converge elsewhere (a floor's
    edges running away from the camera), whose planes share another direction."""
    segments = cv2.createLineSegmentDetector().detect(gray)[0]
    if segments is None:
        return np.zeros((0, 3)), np.zeros(0)
    ends = segments.reshape(-1, 2, 2).astype(np.float64) + 0.5  # LSD puts pixel centres at integers
    along = ends[:, 1] - ends[:, 0]
    lengths = np.linalg.norm(along, axis=-1)
    vanishing = K @ c2w[:3, :3].T @ up  # where up vanishes in the image (homogeneous)
    middle = ends.mean(1)
    towards = vanishing[:2] - middle * vanishing[2]  # the image direction of up at the midpoint
    cosine = np.abs((along * towards).sum(-1)) / (lengths * np.linalg.norm(towards, axis=-1) + 1e-12)
    kept = (lengths >= MIN_LENGTH * min(gray.shape)) & (cosine > np.cos(np.deg2rad(GATE_DEG)))
    rays = np.concatenate([ends[kept], np.ones((int(kept.sum()), 2, 1))], -1) @ np.linalg.inv(K).T
    normals = np.cross(rays[:, 0], rays[:, 1]) @ c2w[:3, :3].T
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True), lengths[kept]


def scene_up(frames: np.ndarray, poses: ClipPoses) -> SceneUp:
    """The up direction of the posed ``frames [T, H, W, 3]`` uint8 (``poses.frame_ids`` index
    them), from the vanishing reference where it is reliable, else from the path."""
    prior = path_up(poses.c2w)
    picks = np.unique(np.linspace(0, len(poses.frame_ids) - 1, SAMPLED_FRAMES).round().astype(int))
    K, planes, lengths, owner = poses.per_frame_K(), [], [], []
    for k in picks:
        gray = cv2.cvtColor(np.ascontiguousarray(frames[poses.frame_ids[k]]), cv2.COLOR_RGB2GRAY)
        found, length = line_planes(gray, K[k], poses.c2w[k], prior)
        planes.append(found)
        lengths.append(length)
        owner.append(np.full(len(found), k))
    normals, lengths, owner = np.concatenate(planes), np.concatenate(lengths), np.concatenate(owner)
    up, inliers = _consensus(normals, lengths, prior)
    lines, line_frames = int(inliers.sum()), len(np.unique(owner[inliers]))
    residuals = np.degrees(np.arcsin(np.abs(normals[inliers] @ up)))
    spread = float(np.sqrt(np.mean(residuals**2))) if lines else 0.0
    offset = float(np.degrees(np.arccos(np.clip(up @ prior, -1, 1))))
    if lines < MIN_LINES or line_frames < MIN_LINE_FRAMES or offset > MAX_TILT_DEG:
        return SceneUp(prior, "path", lines, line_frames, spread, offset)
    return SceneUp(up, "vanishing", lines, line_frames, spread, offset)


def _consensus(normals: np.ndarray, lengths: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The direction that most of the planes ``normals [N, 3]`` hold, within ``MAX_TILT_DEG``
    of ``prior``, and which planes hold it. Hypotheses are the directions two planes share
    (a seeded draw, so the result repeats), scored by the summed length of the segments whose
    planes hold them within ``INLIER_DEG``; the winner is refined by least squares over
    those, weighted by length^2 (a segment's endpoint error turns its plane by about
    error / length)."""
    if len(normals) < 2:
        return prior, np.zeros(len(normals), bool)
    pairs = np.random.default_rng(0).integers(0, len(normals), (HYPOTHESES, 2))
    shared = np.cross(normals[pairs[:, 0]], normals[pairs[:, 1]])
    size = np.linalg.norm(shared, axis=-1)
    shared = shared[size > 1e-6] / size[size > 1e-6, None]
    shared *= np.sign(shared @ prior)[:, None]
    shared = np.concatenate([prior[None], shared[shared @ prior > np.cos(np.deg2rad(MAX_TILT_DEG))]])
    near = np.sin(np.deg2rad(INLIER_DEG))
    best = shared[np.argmax((np.abs(normals @ shared.T) < near).T @ lengths)]
    inliers = np.abs(normals @ best) < near
    held = normals[inliers]
    up = np.linalg.eigh(held.T @ (held * lengths[inliers, None] ** 2))[1][:, 0]  # least n . up
    up = up if up @ prior >= 0 else -up
    return up, np.abs(normals @ up) < near


def roll_deg(c2w: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``[T]`` each camera's roll against ``up``: how far its x axis tilts out of the level."""
    return np.degrees(np.arcsin(np.clip(c2w[:, :3, 0] @ up, -1, 1)))


def level(c2w: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, int]:
    """``c2w [T, 4, 4]`` with each camera turned about its optical axis until its x axis is
    horizontal; cameras looking within ``STEEP_DEG`` of straight up or down are left as they
    are. Returns the levelled poses and how many were left."""
    z = c2w[:, :3, 2]
    steep = np.abs(z @ up) > np.cos(np.deg2rad(STEEP_DEG))
    x = np.cross(z, up)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    levelled = c2w.copy()
    levelled[~steep, :3, 0] = x[~steep]
    levelled[~steep, :3, 1] = np.cross(z, x)[~steep]
    return levelled, int(steep.sum())
