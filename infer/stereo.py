"""Stereo video for ``gavs-render --stereo``: two eyes per frame from one reconstruction, as
in the Video Gaussian Representation paper (the Gaussians seen from two horizontally offset
cameras), laid out in one frame.

SfM's scale is unknown, and each segment's poses are scaled to a median scene depth of 1, so
the baseline is a share of the median scene depth, or follows from the largest disparity
wanted at the nearest scene depth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from data_prep.schema import ClipPoses
from data_prep.video import Encoding
from infer.camera_paths import moved

StereoLayout = Literal["sbs", "tb", "anaglyph", "pair"]
LAYOUTS: tuple[str, ...] = get_args(StereoLayout)


@dataclass
class StereoConfig:
    baseline: float = 0.03
    """The distance between the eyes, as a share of the median scene depth."""
    max_disparity: float | None = None
    """Instead of baseline: the disparity in pixels at the output size of the near scene
    points (SfM points' 5% depth quantile); the baseline follows per 3D segment."""
    eye_path: Literal["stabilized", "original"] = "stabilized"
    """The path the pair of eyes follows."""
    budget: float = 0.03
    """Comfort: the disparity budget as a share of the output width; the report gives the
    share of pixels beyond it."""


def eye_cameras(c2w: np.ndarray, baseline: float) -> np.ndarray:
    """``[n, 2, 4, 4]`` left and right cameras for the centre cameras ``c2w [n, 4, 4]``: each
    moved half the ``baseline`` along its own x axis (OpenCV: x right), parallel, so a point
    at depth z has disparity ``f * baseline / z`` and none vertically."""
    half = np.zeros((len(c2w), 3))
    half[:, 0] = baseline / 2
    return np.stack([moved(c2w, -half), moved(c2w, half)], 1)


def segment_baseline(config: StereoConfig, *, near: float, focal: float, scale: float) -> float:
    """The baseline (scene units) of a segment whose near depth is ``near`` and focal length
    ``focal`` px at the working size, which is ``scale`` times the output size."""
    if config.max_disparity is None:
        return config.baseline
    return config.max_disparity * scale * near / focal


def beyond_budget(poses: ClipPoses, *, baseline: float, focal: float, budget: float) -> float:
    """Comfort: the share of the SfM points' observations in ``poses`` whose disparity
    (``focal * baseline / z``, px at the working size) exceeds ``budget`` px."""
    depths = poses.observations[:, 3]
    return float(np.mean(focal * baseline / depths > budget)) if len(depths) else 0.0


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
