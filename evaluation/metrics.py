"""Stabilization metrics: the field's protocol (C, D, S) plus what it misses.

Protocol (shared by most stabilization papers):
    - matching: SIFT, ratio test 0.7, more than 10 matches, RANSAC homography at 5 px;
    - cropping C: mean over frames of ``min(1, 1 / |first row of the 2x2 block|)`` of the
      input->output homography;
    - distortion D: the worst frame's eigenvalue ratio ``|l_min| / |l_max|`` of that 2x2 block;
    - stability S: the output's frame-to-frame homographies are chained into a path; for the
      translation-magnitude and rotation-angle signals of that path, the share of spectral
      energy in FFT bins 1..5 (DC dropped, first half of the spectrum kept); S is their mean.

Added here:
    - valid-pixel ratio: share of pixels not in a black border region that the input does not
      explain (see ``valid_mask``);
    - residual jitter: RMS of the high-passed path of the frame centre, in px at 640 px width,
      from 4-DOF similarity fits to the same matches (less estimation noise than homographies);
    - temporal flicker: mean absolute gray-level difference (0-255) between consecutive frames
      after warping one onto the other with optical flow, on flow-consistent pixels;
    - sharpness: variance of the Laplacian of the output over that of the input, on the
      regions the two frames share (median over frames);
    - geometry consistency: median Sampson distance (px) of matches between nearby output
      frames under given camera poses (transfer error where a pair has no baseline).

Pairs that cannot be matched are counted, never fatal: a failed frame-to-frame step counts as
no motion in the path, and a failed input->output pair is left out of C, D and sharpness.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from evaluation.matching import (
    Features,
    fit_homography,
    fit_similarity,
    homography,
    match,
    sift_features,
    to_gray,
)
from model.cameras import epipolar_residual, relative_pose

REFERENCE_WIDTH = 640  # jitter is reported in pixels of a frame scaled to this width
JITTER_SIGMA_S = 0.5  # the high-pass removes a Gaussian-smoothed path of this sigma, in seconds
STABILITY_BINS = 5
BORDER_BLACK_LEVEL = 20  # max RGB channel at or below this counts as empty (codec noise on black)
FLAT_STD = 3.0  # gray-level standard deviation (5x5) below which a pixel is flat
BORDER_CONTACT = 0.1  # an empty region lines at least this share of the shorter side
FLOW_CONSISTENCY_PX = 1.0
SAMPSON_GAPS = (1, 2, 3)


@dataclass
class VideoMotion:
    """Per-frame SIFT features and frame-to-frame motion (t -> t+1; None where unmatched).

    ``steps`` are the protocol's homographies; ``similarity_steps`` are 4-DOF fits to the same
    matches, used for residual jitter.
    """

    features: list[Features]
    steps: list[np.ndarray | None]
    similarity_steps: list[np.ndarray | None]

    def head(self, count: int) -> VideoMotion:
        """The motion of the first ``count`` frames."""
        return VideoMotion(self.features[:count], self.steps[: count - 1], self.similarity_steps[: count - 1])

    @property
    def unmatched_steps(self) -> int:
        return sum(h is None for h in self.steps)


def analyse_motion(frames: np.ndarray, desc: str = "SIFT", progress: bool | None = None) -> VideoMotion:
    detector = cv2.SIFT_create()
    features = [sift_features(f, detector) for f in tqdm(frames, desc=desc, disable=_quiet(progress))]
    pairs = [match(a, b) for a, b in pairwise(features)]
    return VideoMotion(features, [fit_homography(*p) for p in pairs], [fit_similarity(*p) for p in pairs])


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows bars only on a terminal."""
    return None if progress is None else not progress


def chained_path(steps: list[np.ndarray | None]) -> np.ndarray:
    """``[T, 3, 3]`` transforms from frame 0 to every frame (frame 0 is the identity)."""
    path = [np.eye(3)]
    for step in steps:
        path.append((np.eye(3) if step is None else step) @ path[-1])
    return np.stack(path)


def _low_frequency_share(signal: np.ndarray) -> float:
    power = np.abs(np.fft.fft(signal)) ** 2
    power = power[1:]  # drop DC
    power = power[: len(power) // 2]
    total = power.sum()
    return float(power[:STABILITY_BINS].sum() / total) if total > 0 else 1.0


def stability(steps: list[np.ndarray | None]) -> dict[str, float]:
    """S, S_t and S_r of the chained path (1.0 for a path that does not move at all)."""
    path = chained_path(steps)[1:]
    translation = np.hypot(path[:, 0, 2], path[:, 1, 2])
    rotation = np.degrees(np.arctan2(path[:, 1, 0], path[:, 0, 0]))
    s_t, s_r = _low_frequency_share(translation), _low_frequency_share(rotation)
    return {"S": (s_t + s_r) / 2, "S_t": s_t, "S_r": s_r}


def centre_path(steps: list[np.ndarray | None], width: int, height: int) -> np.ndarray:
    """``[T, 2]`` displacement (px) of the frame centre along the chained path."""
    centre = np.array([width / 2, height / 2, 1.0])
    moved = chained_path(steps) @ centre
    return moved[:, :2] / moved[:, 2:] - centre[:2]


def reflected_low_pass(path: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian-smoothed ``path [T, D]``, with point-reflected ends so steady pans stay exact.

    Padding by point reflection (``2 p[0] - p[k]``) continues a linear trend through the ends,
    so a constant-velocity pan has no residual; edge or mirror padding would bend it there.
    """
    pad = min(int(np.ceil(4 * sigma_frames)), len(path) - 1)
    if pad < 1:
        return path.copy()
    before = 2 * path[0] - path[pad:0:-1]
    after = 2 * path[-1] - path[-2 : -pad - 2 : -1]
    padded = np.concatenate([before, path, after])
    # On short paths the kernel is truncated to the padding; a symmetric kernel still keeps
    # linear trends exact.
    smoothed = gaussian_filter1d(padded, sigma_frames, axis=0, mode="nearest", truncate=pad / sigma_frames)
    return smoothed[pad:-pad]


def high_pass_rms(path: np.ndarray, sigma_frames: float) -> float:
    """RMS length of ``path [T, D]`` minus its smoothed version."""
    residual = path - reflected_low_pass(path, sigma_frames)
    return float(np.sqrt((residual**2).sum(-1).mean()))


def residual_jitter(steps: list[np.ndarray | None], width: int, height: int, fps: float) -> float:
    """High-passed RMS of the frame-centre path, in pixels of a 640-wide frame.

    ``steps`` are frame-to-frame transforms; ``evaluate`` passes the similarity fits.
    """
    path = centre_path(steps, width, height) * (REFERENCE_WIDTH / width)
    return high_pass_rms(path, JITTER_SIGMA_S * fps)


def crop_and_distortion(homographies: list[np.ndarray | None]) -> dict[str, float]:
    """C and D from input->output homographies (None entries are left out)."""
    blocks = [h[:2, :2] for h in homographies if h is not None]
    if not blocks:
        return {"C": float("nan"), "D": float("nan")}
    crop = [min(1.0, 1.0 / np.linalg.norm(b[0])) for b in blocks]
    ratios = []
    for b in blocks:
        eig = np.sort(np.abs(np.linalg.eigvals(b)))
        ratios.append(eig[0] / eig[1] if eig[1] > 0 else 0.0)
    return {"C": float(np.mean(crop)), "D": float(np.min(ratios))}


def valid_mask(
    frame: np.ndarray, reference: np.ndarray | None = None, to_frame: np.ndarray | None = None
) -> np.ndarray:
    """False on empty regions: near-black regions along the border that the input does not explain.

    Candidates are near-black regions touching the border. With the input frame
    (``reference``) and its homography into ``frame`` (``to_frame``), a candidate pixel is
    empty unless its source in the input is dark too: a shadow or dark clothes in the input
    stay content, while a band whose source is outside the input, or bright, is empty.
    Without them (the pair did not match) a single-frame rule decides per region: most pixels
    locally flat, and lining at least 10% of the shorter side, like the bands and corner
    wedges that warping leaves.
    """
    height, width = frame.shape[:2]
    dark = (frame.max(axis=-1) <= BORDER_BLACK_LEVEL).astype(np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=4)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    contact = np.bincount(edge, minlength=count)
    contact[0] = 0
    if reference is not None and to_frame is not None:
        source_dark = (reference.max(axis=-1) <= BORDER_BLACK_LEVEL).astype(np.uint8)
        explained = cv2.warpPerspective(
            source_dark, to_opencv_pixels(to_frame), (width, height), flags=cv2.INTER_NEAREST, borderValue=0
        )
        candidate = contact > 0
        candidate[0] = False  # label 0 is everything that is not dark
        return ~(candidate[labels] & (explained == 0))
    gray = to_gray(frame).astype(np.float32)
    local_var = cv2.blur(gray * gray, (5, 5)) - cv2.blur(gray, (5, 5)) ** 2
    sizes = np.maximum(np.bincount(labels.ravel(), minlength=count), 1)
    flat_share = (
        np.bincount(labels.ravel(), weights=(local_var < FLAT_STD**2).ravel(), minlength=count) / sizes
    )
    empty = (contact >= BORDER_CONTACT * min(height, width)) & (flat_share > 0.5)
    empty[0] = False
    return ~empty[labels]


def temporal_flicker(frames: np.ndarray, masks: np.ndarray, progress: bool | None = None) -> float:
    """Mean |I_t - warp(I_t+1)| on gray levels over flow-consistent, valid pixels."""
    scale = min(1.0, REFERENCE_WIDTH / frames.shape[2])
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def prep(f):
        g = to_gray(f)
        return cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else g

    errors = []
    gray = [prep(f) for f in frames]
    small_masks = [
        cv2.resize(m.astype(np.uint8), gray[0].shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        for m in masks
    ]
    h, w = gray[0].shape
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    for t in tqdm(range(len(gray) - 1), desc="flicker", disable=_quiet(progress)):
        forward = dis.calc(gray[t], gray[t + 1], None)
        backward = dis.calc(gray[t + 1], gray[t], None)
        target = grid + forward
        warped = cv2.remap(gray[t + 1].astype(np.float32), target[..., 0], target[..., 1], cv2.INTER_LINEAR)
        back_at_target = cv2.remap(backward, target[..., 0], target[..., 1], cv2.INTER_LINEAR)
        consistent = np.linalg.norm(forward + back_at_target, axis=-1) < FLOW_CONSISTENCY_PX
        inside = (
            (target[..., 0] >= 0)
            & (target[..., 0] <= w - 1)
            & (target[..., 1] >= 0)
            & (target[..., 1] <= h - 1)
        )
        target_valid = (
            cv2.remap(small_masks[t + 1].astype(np.uint8), target[..., 0], target[..., 1], cv2.INTER_NEAREST)
            > 0
        )
        keep = consistent & inside & small_masks[t] & target_valid
        if keep.any():
            errors.append(np.abs(gray[t].astype(np.float32) - warped)[keep].mean())
    return float(np.mean(errors)) if errors else float("nan")


def to_opencv_pixels(H: np.ndarray) -> np.ndarray:
    """A homography in our pixel convention (centres at +0.5) re-expressed for OpenCV's warps."""
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return np.linalg.inv(shift) @ H @ shift


def _laplacian_variance(frame: np.ndarray, mask: np.ndarray) -> float:
    lap = cv2.Laplacian(to_gray(frame).astype(np.float64), cv2.CV_64F)
    return float(lap[mask].var()) if mask.sum() > 100 else float("nan")


def sharpness_ratio(
    inputs: np.ndarray, outputs: np.ndarray, homographies: list[np.ndarray | None], out_masks: np.ndarray
) -> float:
    """Median over frames of Laplacian variance (output / input) on the regions both show."""
    kernel = np.ones((7, 7), np.uint8)
    ratios = []
    for frame_in, frame_out, H, valid in zip(inputs, outputs, homographies, out_masks, strict=True):
        if H is None:
            continue
        h_in, w_in = frame_in.shape[:2]
        h_out, w_out = frame_out.shape[:2]
        H_cv = to_opencv_pixels(H)
        covered = cv2.warpPerspective(np.ones((h_in, w_in), np.uint8), H_cv, (w_out, h_out)) > 0
        shared_out = cv2.erode((covered & valid).astype(np.uint8), kernel) > 0
        shared_in = cv2.warpPerspective(
            shared_out.astype(np.uint8), H_cv, (w_in, h_in), flags=cv2.WARP_INVERSE_MAP
        )
        shared_in = cv2.erode(shared_in, kernel) > 0
        var_in, var_out = _laplacian_variance(frame_in, shared_in), _laplacian_variance(frame_out, shared_out)
        if np.isfinite(var_in) and np.isfinite(var_out) and var_in > 0:
            ratios.append(var_out / var_in)
    return float(np.median(ratios)) if ratios else float("nan")


def geometry_consistency(features: list[Features], K: np.ndarray, c2w: np.ndarray) -> float:
    """Median epipolar residual (px) of matches between output frames 1-3 apart under the poses."""
    Ks = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(K, (len(features), 3, 3)), np.float64))
    poses = torch.from_numpy(np.asarray(c2w, np.float64))
    errors = []
    for gap in SAMPSON_GAPS:
        for t in range(len(features) - gap):
            pts_a, pts_b = match(features[t], features[t + gap])
            if len(pts_a) <= 10:
                continue
            a_to_b = relative_pose(poses[t], poses[t + gap])
            residual = epipolar_residual(
                torch.from_numpy(pts_a).double(), torch.from_numpy(pts_b).double(), Ks[t], Ks[t + gap], a_to_b
            )
            errors.append(residual.numpy())
    return float(np.median(np.concatenate(errors))) if errors else float("nan")


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


# The input scored against itself has these at 1 by definition; the report leaves them None.
BY_DEFINITION_FOR_INPUT = ("C", "D", "valid_ratio", "valid_ratio_min", "sharpness")


def evaluate(
    inputs: np.ndarray,
    outputs: np.ndarray,
    fps: float,
    poses: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool | None = None,
    input_motion: VideoMotion | None = None,
) -> dict:
    """Score ``outputs`` against ``inputs``, and the input against itself, side by side.

    ``inputs`` and ``outputs`` are ``[T, H, W, 3]`` uint8. An output of another size is resized
    to the input's, so that C and D compare like with like; the frame counts must agree (the
    shorter length is used and both counts are reported). ``poses`` is ``(K, c2w)`` of the
    output frames, for the geometry-consistency score. ``input_motion``, from
    ``analyse_motion(inputs)``, saves re-analysing an input scored against several outputs.
    """
    counts = {"input_frames": len(inputs), "output_frames": len(outputs)}
    n = min(len(inputs), len(outputs))
    height, width = inputs.shape[1:3]
    resized = outputs.shape[1:3] != inputs.shape[1:3]
    inputs = inputs[:n]
    outputs = _resize_frames(outputs[:n], (width, height)) if resized else outputs[:n]

    motion_in = input_motion.head(n) if input_motion else analyse_motion(inputs, "SIFT input", progress)
    motion_out = analyse_motion(outputs, "SIFT output", progress)
    to_output = [homography(a, b) for a, b in zip(motion_in.features, motion_out.features, strict=True)]
    masks_in = np.ones(inputs.shape[:3], bool)  # the input is the reference: valid by definition
    masks_out = np.stack([valid_mask(o, i, H) for o, i, H in zip(outputs, inputs, to_output, strict=True)])

    def scores(frames, motion, masks, pairs_failed, pairs_total):
        return {
            **stability(motion.steps),
            "jitter_px": residual_jitter(motion.similarity_steps, width, height, fps),
            "flicker": temporal_flicker(frames, masks, progress),
            "unmatched_share": pairs_failed / max(pairs_total, 1),
        }

    # The input scored against itself: its homography to itself is the identity, so C, D,
    # sharpness and the valid ratio are 1 by definition. They are None (not measured), and
    # its path metrics are computed like the output's.
    report = {
        "frames": n,
        **counts,
        "size": [width, height],
        "output_resized": bool(resized),
        "fps": fps,
        "input": {
            **dict.fromkeys(BY_DEFINITION_FOR_INPUT),
            **scores(inputs, motion_in, masks_in, motion_in.unmatched_steps, n - 1),
        },
        "output": {
            **crop_and_distortion(to_output),
            "valid_ratio": float(masks_out.mean()),
            "valid_ratio_min": float(masks_out.mean(axis=(1, 2)).min()),
            "sharpness": sharpness_ratio(inputs, outputs, to_output, masks_out),
            **scores(
                outputs,
                motion_out,
                masks_out,
                motion_out.unmatched_steps + sum(h is None for h in to_output),
                2 * n - 1,
            ),
        },
    }
    if poses is not None:
        K, c2w = poses
        report["output"]["sampson_px"] = geometry_consistency(motion_out.features, K, c2w[:n])
    return report
