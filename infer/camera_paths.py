"""New camera paths for ``gavs-render --path``: presets built on a 3D segment's stabilized
path, or a path file.

A segment's poses live in its own SfM world, scaled so that the median scene depth is 1
(``ClipPoses``), so every distance here is a share of the median scene depth and means the
same on any clip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

PathPreset = Literal["push-in", "dolly", "orbit", "steady"]
PRESETS: tuple[str, ...] = get_args(PathPreset)


class PathFileError(ValueError):
    """A path file that cannot be read or does not fit the clip."""


@dataclass
class PathConfig:
    travel: float = 0.25
    """push-in and dolly: how far the camera moves over a segment, as a share of the median
    scene depth."""
    orbit_degrees: float = 6.0
    """orbit: the largest swing each way about the point at the median depth ahead."""
    steady_strength: float = 16.0
    """steady: the smoothing strength (as gavs-stabilize's --strength) of the steadier path."""


def ease(count: int) -> np.ndarray:
    """``[count]`` from 0 to 1 with zero speed at both ends (smoothstep), so a move starts and
    stops gently."""
    t = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(count)
    return t * t * (3 - 2 * t)


def moved(c2w: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``[n, 4, 4]`` the cameras ``c2w [n, 4, 4]`` moved by ``offsets [n, 3]``, given in each
    camera's own axes (x right, y down, z forward)."""
    out = c2w.copy()
    out[:, :3, 3] += np.einsum("nij,nj->ni", c2w[:, :3, :3], offsets)
    return out


def orbited(c2w: np.ndarray, degrees: np.ndarray, distance: float = 1.0) -> np.ndarray:
    """``[n, 4, 4]`` each camera of ``c2w [n, 4, 4]`` turned by ``degrees [n]`` about its own
    down (y) axis through the point ``distance`` ahead of it, which stays in view at the
    centre."""
    pivot = np.eye(4)
    pivot[2, 3] = distance
    turn = np.tile(np.eye(4), (len(c2w), 1, 1))
    turn[:, :3, :3] = Rotation.from_rotvec(np.radians(degrees)[:, None] * [0.0, 1.0, 0.0]).as_matrix()
    return c2w @ pivot @ turn @ np.linalg.inv(pivot)


def preset_path(name: PathPreset, smoothed: np.ndarray, config: PathConfig) -> np.ndarray:
    """``[n, 4, 4]`` the preset's cameras for a segment whose stabilized path is ``smoothed
    [n, 4, 4]`` (``steady`` is made by the caller, which owns the smoothing)."""
    n = len(smoothed)
    offsets = np.zeros((n, 3))
    if name == "push-in":
        offsets[:, 2] = config.travel * ease(n)
        return moved(smoothed, offsets)
    if name == "dolly":
        offsets[:, 0] = config.travel * (ease(n) - 0.5)  # centred on the stabilized path
        return moved(smoothed, offsets)
    if name == "orbit":
        phase = np.linspace(0.0, 2 * np.pi, n) if n > 1 else np.zeros(n)
        return orbited(smoothed, config.orbit_degrees * np.sin(phase))
    raise ValueError(f"no preset {name!r} here; presets: {', '.join(PRESETS)}")


def read_path_file(path: Path, frames: int) -> np.ndarray:
    """``[frames, 4, 4]`` camera-to-world poses (OpenCV axes, the clip's SfM world) from
    ``path``: a ``.npy`` of ``[frames, 4, 4]``, or JSON with ``"c2w"`` (one 4x4 per frame) or
    ``"keyframes"`` (``[{"frame": i, "c2w": 4x4}, ...]``, interpolated: centres linearly,
    rotations by slerp, held before the first and after the last)."""
    try:
        if path.suffix == ".npy":
            c2w = np.load(path)
        else:
            data = json.loads(path.read_text())
            keyed = "keyframes" in data
            c2w = _keyframed(data["keyframes"], frames) if keyed else np.asarray(data["c2w"], float)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise PathFileError(f"{path}: not a camera path ({type(err).__name__}: {err})") from err
    if c2w.shape != (frames, 4, 4):
        raise PathFileError(f"{path}: {c2w.shape[0] if c2w.ndim else 0} poses for a clip of {frames} frames")
    if not np.allclose(c2w[:, 3], [0, 0, 0, 1]) or not np.allclose(
        np.linalg.det(c2w[:, :3, :3]), 1.0, atol=1e-3
    ):
        raise PathFileError(f"{path}: the poses are not rigid camera-to-world matrices")
    return c2w


def _keyframed(keys: list[dict], frames: int) -> np.ndarray:
    keys = sorted(keys, key=lambda k: k["frame"])
    times = np.array([k["frame"] for k in keys], float)
    poses = np.array([k["c2w"] for k in keys], float)
    if len(keys) == 0 or times[0] < 0 or times[-1] >= frames or len(set(times)) < len(times):
        raise ValueError(f"keyframes must be distinct frames in 0..{frames - 1}")
    t = np.clip(np.arange(frames), times[0], times[-1])
    c2w = np.tile(np.eye(4), (frames, 1, 1))
    if len(keys) == 1:
        c2w[:] = poses[0]
        return c2w
    c2w[:, :3, :3] = Slerp(times, Rotation.from_matrix(poses[:, :3, :3]))(t).as_matrix()
    c2w[:, :3, 3] = np.stack([np.interp(t, times, poses[:, i, 3]) for i in range(3)], 1)
    return c2w
