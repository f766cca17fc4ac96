"""Stereo video for ``gavs-render --stereo``: two eyes per frame from one reconstruction, as
in the Video Gaussian Representation paper (the Gaussians seen from two horizontally offset
cameras), laid out in one frame.

SfM's scale is unknown, and each segment's poses are scaled to a median scene depth of 1, so
the baseline is a share of the median scene depth, or follows from the largest disparity
wanted. The eyes are parallel (toed-in eyes would disagree vertically at the corners) and
converge by a shift of each eye's principal point, the off-axis projection of stereo
cinema: the median scene depth sits at the screen, nearer points in front of it and farther
ones behind. A point at depth z then has the disparity ``f * b * (1 / z - 1 / z_screen)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from data_prep.video import Encoding
from infer.camera_paths import moved

StereoLayout = Literal["sbs", "tb", "anaglyph", "pair"]
LAYOUTS: tuple[str, ...] = get_args(StereoLayout)


@dataclass
class StereoConfig:
    baseline: float | None = None
    """The distance between the eyes, as a share of the median scene depth; unset, the widest
    that keeps 99% of the SfM points within max_disparity (with no points, as for poses by
    rotation alone: 99% of the rendered depth's pixels on a few frames)."""
    max_disparity: float | None = None
    """The largest disparity in pixels at the output size, either side of the screen, that
    sets the baseline when none is given; unset, the comfort budget."""
    convergence: Literal["median", "infinity"] = "median"
    """The depth at the screen (zero disparity): the median scene depth, or infinity (parallel
    eyes with no shift: everything in front of the screen)."""
    widest: float = 0.1
    """The derived baseline's limit, as a share of the median scene depth: a wider one shows
    the sides of objects that no frame of a hand-held clip saw."""
    eye_path: Literal["stabilized", "original"] = "stabilized"
    """The path the pair of eyes follows."""
    budget: float = 0.015
    """Comfort: the largest disparity either side of the screen, as a share of the output
    width (3% from nearest to farthest, the total that common 3D delivery guidelines allow);
    the report gives the share of pixels beyond it."""


@dataclass(frozen=True)
class EyeSetup:
    """One 3D segment's eyes: the baseline (scene units), each eye's principal-point shift
    (px at the working size) and the screen's depth."""

    baseline: float
    shifts: tuple[float, float]  # left, right
    screen: float  # scene units; inf for parallel eyes


def eye_cameras(c2w: np.ndarray, baseline: float) -> np.ndarray:
    """``[n, 2, 4, 4]`` left and right cameras for the centre cameras ``c2w [n, 4, 4]``: each
    moved half the ``baseline`` along its own x axis (OpenCV: x right), parallel, so a point
    at depth z has disparity ``f * baseline / z`` and none vertically."""
    half = np.zeros((len(c2w), 3))
    half[:, 0] = baseline / 2
    return np.stack([moved(c2w, -half), moved(c2w, half)], 1)


def _inverse_offsets(depths: np.ndarray, screen: float) -> np.ndarray:
    """``|1 / z - 1 / screen|`` of each of ``depths [N]`` (one at depth 1 when there are none)."""
    return np.abs(1 / (depths if len(depths) else np.ones(1)) - 1 / screen)


def eye_setup(
    config: StereoConfig, depths: np.ndarray, *, focal: float, scale: float, width: int
) -> EyeSetup:
    """The eyes of a segment whose scene lies at ``depths [N]`` (its SfM points'
    observations, or its rendered depth where it has none), with focal length ``focal`` px at
    the working size ``width`` px wide, which is ``scale`` times the output size."""
    screen = float(np.median(depths)) if config.convergence == "median" and len(depths) else np.inf
    baseline = config.baseline
    if baseline is None:
        limit = config.budget * width if config.max_disparity is None else config.max_disparity * scale
        spread = float(np.quantile(_inverse_offsets(depths, screen), 0.99))
        baseline = min(config.widest, limit / (focal * spread)) if spread > 0 else config.widest
    half = focal * baseline / (2 * screen)  # zero disparity at the screen's depth
    return EyeSetup(baseline, (-half, half), screen)


def beyond_budget(depths: np.ndarray, eyes: EyeSetup, *, focal: float, budget: float) -> float:
    """Comfort: the share of ``depths [N]`` whose disparity (``focal * baseline * |1 / z - 1 /
    screen|``, px at the working size) exceeds ``budget`` px."""
    if not len(depths):
        return 0.0
    return float(np.mean(focal * eyes.baseline * _inverse_offsets(depths, eyes.screen) > budget))


def lay_out(layout: StereoLayout, views: np.ndarray) -> list[np.ndarray]:
    """The frames written from the eyes ``views [2, H, W, 3]`` (left, right): one side by side
    (left eye on the left), top (left) and bottom (right), or a red-cyan anaglyph (red from
    the left eye, green and blue from the right); two for ``pair``, left and right."""
    left, right = views
    if layout == "sbs":
        return [np.concatenate([left, right], axis=1)]
    if layout == "tb":
        return [np.concatenate([left, right], axis=0)]
    if layout == "anaglyph":
        return [np.concatenate([left[..., :1], right[..., 1:]], axis=-1)]
    if layout == "pair":
        return [left, right]
    raise ValueError(f"no stereo layout {layout!r}; layouts: {', '.join(LAYOUTS)}")


def layout_size(layout: StereoLayout, width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` of a frame laid out from two eyes of ``width x height``."""
    return {"sbs": (2 * width, height), "tb": (width, 2 * height)}.get(layout, (width, height))


def layout_outputs(layout: StereoLayout, output: Path) -> list[Path]:
    """The files a layout writes for ``-o OUT``: OUT, or OUT.left and OUT.right for ``pair``."""
    if layout != "pair":
        return [output]
    return [output.with_name(f"{output.stem}.{eye}{output.suffix}") for eye in ("left", "right")]


COMMENTS = {
    "sbs": "stereo side by side: left eye on the left",
    "tb": "stereo top-bottom: left eye on top",
    "anaglyph": "stereo anaglyph: red from the left eye, green and blue from the right",
    "pair": "stereo pair: the left eye in {stem}.left{suffix}, the right in {stem}.right{suffix}",
}


def tagged(layout: StereoLayout, encoding: Encoding, output: Path) -> Encoding:
    """``encoding`` with the layout's tags: H.264's frame-packing SEI for side by side and
    top-bottom (what players read), and the container's comment for every layout."""
    packing = layout if layout in ("sbs", "tb") and encoding.codec == "libx264" else None
    comment = COMMENTS[layout].format(stem=output.stem, suffix=output.suffix)
    return replace(encoding, frame_packing=packing, comment=comment)
