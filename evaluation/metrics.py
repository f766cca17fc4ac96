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

from collections.abc import Iterable
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


def flicker_gray(frame: np.ndarray) -> np.ndarray:
    """The gray frame flicker is measured on: at most ``REFERENCE_WIDTH`` wide."""
    scale = min(1.0, REFERENCE_WIDTH / frame.shape[1])
    gray = to_gray(frame)
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray


def flicker_pair(
    dis: cv2.DISOpticalFlow, gray: tuple[np.ndarray, np.ndarray], masks: tuple[np.ndarray, np.ndarray]
) -> float | None:
    """Mean |I_t - warp(I_t+1)| over flow-consistent pixels valid in both frames (None if none);
    ``gray`` from ``flicker_gray``, ``masks`` at any size."""
    (a, b), (mask_a, mask_b) = gray, masks
    h, w = a.shape
    small_a, small_b = (
        cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in (mask_a, mask_b)
    )
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    forward = dis.calc(a, b, None)
    backward = dis.calc(b, a, None)
    target = grid + forward
    warped = cv2.remap(b.astype(np.float32), target[..., 0], target[..., 1], cv2.INTER_LINEAR)
    back_at_target = cv2.remap(backward, target[..., 0], target[..., 1], cv2.INTER_LINEAR)
    consistent = np.linalg.norm(forward + back_at_target, axis=-1) < FLOW_CONSISTENCY_PX
    inside = (
        (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
    )
    target_valid = cv2.remap(small_b.astype(np.uint8), target[..., 0], target[..., 1], cv2.INTER_NEAREST) > 0
    keep = consistent & inside & small_a & target_valid
    return float(np.abs(a.astype(np.float32) - warped)[keep].mean()) if keep.any() else None


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def temporal_flicker(frames: np.ndarray, masks: np.ndarray, progress: bool | None = None) -> float:
    """Mean over consecutive pairs of ``flicker_pair``."""
    dis, gray = _dis(), [flicker_gray(f) for f in frames]
    pairs = tqdm(range(len(gray) - 1), desc="flicker", disable=_quiet(progress))
    errors = [flicker_pair(dis, (gray[t], gray[t + 1]), (masks[t], masks[t + 1])) for t in pairs]
    errors = [e for e in errors if e is not None]
    return float(np.mean(errors)) if errors else float("nan")


def to_opencv_pixels(H: np.ndarray) -> np.ndarray:
    """A homography in our pixel convention (centres at +0.5) re-expressed for OpenCV's warps."""
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return np.linalg.inv(shift) @ H @ shift


def _laplacian_variance(frame: np.ndarray, mask: np.ndarray) -> float:
    lap = cv2.Laplacian(to_gray(frame).astype(np.float64), cv2.CV_64F)
    return float(lap[mask].var()) if mask.sum() > 100 else float("nan")


def frame_sharpness(
    frame_in: np.ndarray, frame_out: np.ndarray, H: np.ndarray | None, valid: np.ndarray
) -> float | None:
    """Laplacian variance of the output over the input's on the region both show (None when
    the pair did not match or shares too little)."""
    if H is None:
        return None
    kernel = np.ones((7, 7), np.uint8)
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
    return var_out / var_in if np.isfinite(var_in) and np.isfinite(var_out) and var_in > 0 else None


def sampson_errors(
    a: Features, b: Features, K: np.ndarray, c2w_a: np.ndarray, c2w_b: np.ndarray
) -> np.ndarray:
    """Epipolar residuals (px) of the matches between two frames under their poses."""
    pts_a, pts_b = match(a, b)
    if len(pts_a) <= 10:
        return np.zeros(0)
    K = torch.from_numpy(np.asarray(K, np.float64))
    a_to_b = relative_pose(
        torch.from_numpy(np.asarray(c2w_a, np.float64)), torch.from_numpy(np.asarray(c2w_b, np.float64))
    )
    residual = epipolar_residual(
        torch.from_numpy(pts_a).double(), torch.from_numpy(pts_b).double(), K, K, a_to_b
    )
    return residual.numpy()


def geometry_consistency(features: list[Features], K: np.ndarray, c2w: np.ndarray) -> float:
    """Median epipolar residual (px) of matches between output frames 1-3 apart under the poses."""
    errors = [
        sampson_errors(features[t], features[t + gap], K, c2w[t], c2w[t + gap])
        for gap in SAMPSON_GAPS
        for t in range(len(features) - gap)
    ]
    errors = np.concatenate(errors) if errors else np.zeros(0)
    return float(np.median(errors)) if len(errors) else float("nan")


# The input scored against itself has these at 1 by definition; the report leaves them None.
BY_DEFINITION_FOR_INPUT = ("C", "D", "valid_ratio", "valid_ratio_min", "sharpness")


class _PathTrack:
    """One video's frame-to-frame motion and flicker, fed one frame at a time."""

    def __init__(self) -> None:
        self.steps: list[np.ndarray | None] = []
        self.similarity_steps: list[np.ndarray | None] = []
        self.flicker: list[float] = []
        self.previous: tuple[Features, np.ndarray, np.ndarray] | None = None
        self.dis = _dis()

    def add(self, features: Features, frame: np.ndarray, mask: np.ndarray, step: tuple | None = None) -> None:
        """``step``: the (homography, similarity) from the previous frame, when known already."""
        gray = flicker_gray(frame)
        if self.previous is not None:
            last_features, last_gray, last_mask = self.previous
            if step is None:
                pairs = match(last_features, features)
                step = fit_homography(*pairs), fit_similarity(*pairs)
            self.steps.append(step[0])
            self.similarity_steps.append(step[1])
            error = flicker_pair(self.dis, (last_gray, gray), (last_mask, mask))
            if error is not None:
                self.flicker.append(error)
        self.previous = (features, gray, mask)

    def scores(self, width: int, height: int, fps: float, failed: int, total: int) -> dict:
        return {
            **stability(self.steps),
            "jitter_px": residual_jitter(self.similarity_steps, width, height, fps),
            "flicker": float(np.mean(self.flicker)) if self.flicker else float("nan"),
            "unmatched_share": failed / max(total, 1),
        }


def evaluate(
    inputs: Iterable[np.ndarray],
    outputs: Iterable[np.ndarray],
    fps: float,
    poses: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool | None = None,
    input_motion: VideoMotion | None = None,
) -> dict:
    """Score ``outputs`` against ``inputs``, and the input against itself, side by side.

    ``inputs`` and ``outputs`` are ``[H, W, 3]`` uint8 frames, read one pair at a time (arrays
    or generators): nothing but features and per-frame scores is kept, so a long clip scores
    in bounded memory. An output of another size is resized to the input's, so that C and D
    compare like with like; the frame counts must agree (the shorter length is used and both
    counts are reported). ``poses`` is ``(K, c2w)`` of the output frames, for the
    geometry-consistency score. ``input_motion``, from ``analyse_motion(inputs)``, saves
    re-analysing an input scored against several outputs.
    """
    detector = cv2.SIFT_create()
    track_in, track_out = _PathTrack(), _PathTrack()
    to_output: list[np.ndarray | None] = []
    valid_shares, sharpness, sampson = [], [], []
    recent: list[Features] = []  # the last output frames' features, for geometry consistency
    inputs, outputs = iter(inputs), iter(outputs)
    n, size, resized, unpaired_input = 0, None, False, 0
    bar = tqdm(desc="evaluate", disable=_quiet(progress), unit="frame")
    while (frame_in := next(inputs, None)) is not None:
        frame_out = next(outputs, None)
        if frame_out is None:
            unpaired_input = 1
            break
        bar.update()
        if size is None:
            size = frame_in.shape[1], frame_in.shape[0]
        if frame_out.shape[:2] != frame_in.shape[:2]:
            frame_out, resized = cv2.resize(frame_out, size, interpolation=cv2.INTER_AREA), True
        known = input_motion is not None and n < len(input_motion.features)
        features_in = input_motion.features[n] if known else sift_features(frame_in, detector)
        step = None
        if known and n > 0:
            step = input_motion.steps[n - 1], input_motion.similarity_steps[n - 1]
        features_out = sift_features(frame_out, detector)
        H = homography(features_in, features_out)
        mask = valid_mask(frame_out, frame_in, H)
        track_in.add(features_in, frame_in, np.ones(frame_in.shape[:2], bool), step)
        track_out.add(features_out, frame_out, mask)
        to_output.append(H)
        valid_shares.append(float(mask.mean()))
        sharpness.append(frame_sharpness(frame_in, frame_out, H, mask))
        if poses is not None and n < len(poses[1]):
            K, c2w = poses
            for gap, earlier in zip(SAMPSON_GAPS, reversed(recent), strict=False):
                sampson.append(sampson_errors(earlier, features_out, K, c2w[n - gap], c2w[n]))
            recent = [*recent, features_out][-max(SAMPSON_GAPS) :]
        n += 1
    bar.close()
    counts = {
        "input_frames": n + unpaired_input + sum(1 for _ in inputs),
        "output_frames": n + sum(1 for _ in outputs),
    }
    width, height = size or (0, 0)
    sharp = [r for r in sharpness if r is not None]

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
            **track_in.scores(width, height, fps, sum(h is None for h in track_in.steps), n - 1),
        },
        "output": {
            **crop_and_distortion(to_output),
            "valid_ratio": float(np.mean(valid_shares)) if valid_shares else float("nan"),
            "valid_ratio_min": float(np.min(valid_shares)) if valid_shares else float("nan"),
            "sharpness": float(np.median(sharp)) if sharp else float("nan"),
            **track_out.scores(
                width,
                height,
                fps,
                sum(h is None for h in track_out.steps) + sum(h is None for h in to_output),
                2 * n - 1,
            ),
        },
    }
    if poses is not None:
        errors = np.concatenate(sampson) if sampson else np.zeros(0)
        report["output"]["sampson_px"] = float(np.median(errors)) if len(errors) else float("nan")
    return report
