"""Coverage-aware smoothing: the canvas a smoothed path needs, and the path bent back where
even the largest canvas would not cover it.

The stabilized view at a virtual pose shows what the source frame's padded canvas holds. A
smooth path that strays too far from the real camera looks past the canvas edge, and those
pixels have no source at all. This module

- measures, per frame, how far the output frame's border reaches beyond the canvas
  (``overshoot``): its corners and edge midpoints, cast as rays from the virtual camera, at a
  near depth and at infinity, projected into the source camera. Between those two depths
  a ray projects to a segment, so with a convex canvas the two ends suffice;
- finds the least padding that covers the whole path (``needed_pad``), up to a limit: the
  adaptive canvas;
- where even that falls short, finds the path that stays closest to the smoothed one under
  per-frame bounds on the deviation from the real camera (``bounded_path``). The deviation
  ``delta_t`` of the smoothed pose from the real one (axis-angle and translation, in the real
  camera's frame) gets a correction ``c`` that is as small and as smooth as possible, by the
  smoother's own measure,

      minimise  sum_t |c_t|^2 + lam |c_{t+1} - 2 c_t + c_{t-1}|^2
      subject to  -b_t <= delta_t + c_t <= b_t   (per axis),

  so it fades within a few ``lam^(1/4)`` frames of the frames that need it and is zero
  elsewhere. The bounds start at the share of the canvas margin each axis may use and shrink
  on frames whose exact check still fails, until every frame is covered.

With ``lam`` of the minimum-acceleration path that ``delta`` came from, the cross terms
cancel: the bent path is the path nearest the real camera with the least acceleration
*among those that stay inside the bounds*, not a smooth path with a patch on it (tested
against a direct solve). This holds to first order in the deviations, which stay small (a
few degrees) by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import sparse
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from scipy.sparse.linalg import spsolve
from torch import Tensor

from data_prep.schema import ClipPoses
from infer.canvas import pad_amounts
from infer.trajectory import acceleration_penalty, acceleration_weight
from model.cameras import axis_angle_to_matrix, invert_pose, make_pose, matrix_to_axis_angle

SHRINK = 0.85  # bound factor per refinement round on frames still uncovered
MAX_ROUNDS = 25
BENT = 1e-4  # a frame counts as bent when its pose moves by more (radians or scene units)
PAD_STEP = 0.01  # the adaptive canvas grows in these steps (a few finetuning caches, not many)
ZOOM_BISECTIONS = 20  # the needed zoom to 1e-6 of the range: far below a pixel


def deviations(c2w: Tensor, virtual: Tensor) -> Tensor:
    """``[T, 6]``: each virtual pose relative to the real one, as (axis-angle, translation) in
    the real camera's frame."""
    relative = invert_pose(c2w) @ virtual
    return torch.cat([matrix_to_axis_angle(relative[:, :3, :3]), relative[:, :3, 3]], -1)


def from_deviations(c2w: Tensor, delta: Tensor) -> Tensor:
    return c2w @ make_pose(axis_angle_to_matrix(delta[:, :3]), delta[:, 3:])


@dataclass(frozen=True)
class Canvas:
    """The source canvas a virtual view must stay inside: the frame of ``size`` (width,
    height) with intrinsics ``K [3, 3]``, grown by ``margin`` (columns, rows) per side, and
    checked down to ``near_depth`` (scene units) as well as at infinity."""

    K: Tensor
    size: tuple[int, int]
    margin: tuple[float, float]
    near_depth: float


def _border_pixels(width: int, height: int) -> Tensor:
    u = torch.tensor([0.0, width / 2, width])
    v = torch.tensor([0.0, height / 2, height])
    grid = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2)
    return grid[(grid != torch.tensor([width / 2, height / 2])).any(-1)]  # the 8 border points


def overshoot(*, c2w: Tensor, virtual: Tensor, canvas: Canvas, zoom: Tensor | None = None) -> Tensor:
    """``[T]``: pixels by which the output frame's border, seen from ``virtual [T, 4, 4]``,
    reaches past the canvas of the real cameras ``c2w [T, 4, 4]``; zero or less where the
    canvas covers it. ``zoom [T]`` (at least 1) narrows each virtual camera's view: its focal
    length is the source's times the zoom, about the same principal point."""
    K, margin, near_depth = canvas.K, canvas.margin, canvas.near_depth
    width, height = canvas.size
    pixels = _border_pixels(width, height).to(K)
    rays = torch.cat([pixels, torch.ones_like(pixels[:, :1])], -1) @ torch.linalg.inv(K).T  # z = 1
    rays = rays.expand(len(c2w), -1, -1)  # [T, 8, 3]
    if zoom is not None:
        rays = torch.cat([rays[..., :2] / zoom.to(K)[:, None, None], rays[..., 2:]], -1)
    relative = invert_pose(c2w) @ virtual  # virtual camera -> source camera
    R, t = relative[:, None, :3, :3], relative[:, None, :3, 3]
    directions = (R @ rays[..., None])[..., 0]  # [T, 8, 3], points at infinity
    near = directions * near_depth + t
    worst = []
    for points in (directions, near):
        z = points[..., 2:].clamp(min=1e-6)
        uv = (points / z) @ K.T
        cols, rows = margin
        reach = torch.stack(
            [-cols - uv[..., 0], uv[..., 0] - width - cols, -rows - uv[..., 1], uv[..., 1] - height - rows],
            -1,
        )
        behind = (points[..., 2] <= 1e-6)[..., None].expand_as(reach)
        worst.append(torch.where(behind, torch.full_like(reach, 1e6), reach).amax((-1, -2)))
    return torch.maximum(*worst)


def canvas_at(pad: float, *, K: Tensor, size: tuple[int, int], near_depth: float) -> Canvas:
    """The canvas padded by ``pad`` of each side, in whole pixels as ``pad_canvas`` makes it."""
    rows, cols = pad_amounts(size[1], size[0], pad)
    return Canvas(K, size, (cols, rows), near_depth)


def needed_pad(
    *,
    c2w: Tensor,
    virtual: Tensor,
    K: Tensor,
    size: tuple[int, int],
    near_depth: float,
    least: float,
    most: float,
) -> float:
    """The smallest pad in ``[least, most]``, in steps of ``PAD_STEP``, whose canvas covers
    every frame of ``virtual [T, 4, 4]`` seen from ``c2w [T, 4, 4]``; ``most`` where none
    does. Overshoot only falls as the canvas grows, so the steps are bisected."""
    steps = int(np.floor((most - least) / PAD_STEP + 1e-9))

    def covers(step: int) -> bool:
        canvas = canvas_at(least + step * PAD_STEP, K=K, size=size, near_depth=near_depth)
        return bool((overshoot(c2w=c2w, virtual=virtual, canvas=canvas) <= 0).all())

    if covers(0):
        return least
    if not covers(steps):
        return most
    lo, hi = 0, steps  # lo falls short, hi covers
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if covers(mid) else (mid, hi)
    return round(least + hi * PAD_STEP, 6)


def needed_zoom(*, c2w: Tensor, virtual: Tensor, canvas: Canvas, most: float, smooth_frames: float) -> Tensor:
    """``[T]`` zoom in ``[1, most]`` for the views of ``virtual [T, 4, 4]``: the least that
    brings each frame inside the canvas (``most`` where none does), then raised to a smooth
    curve so the output does not pump. The curve is the needed zoom's running maximum over
    ``smooth_frames`` frames, blurred by a third of that: at least the need on every frame,
    and it eases in and out over about ``smooth_frames``."""
    zoom = torch.ones(len(c2w), dtype=torch.float64)
    short = overshoot(c2w=c2w, virtual=virtual, canvas=canvas) > 0
    if most <= 1 or not bool(short.any()):
        return zoom
    lo, hi = torch.ones_like(zoom), torch.full_like(zoom, most)  # lo falls short, hi covers (or is most)
    for _ in range(ZOOM_BISECTIONS):
        mid = (lo + hi) / 2
        covered = overshoot(c2w=c2w, virtual=virtual, canvas=canvas, zoom=mid) <= 0
        lo, hi = torch.where(covered, lo, mid), torch.where(covered, mid, hi)
    need = torch.where(short, hi, zoom).numpy()
    window = max(1, round(smooth_frames))
    envelope = maximum_filter1d(need, size=2 * window + 1, mode="nearest")
    eased = gaussian_filter1d(envelope, sigma=window / 3, mode="nearest")
    return torch.from_numpy(np.clip(np.maximum(eased, need), 1.0, most))


def initial_bounds(canvas: Canvas, zoom: Tensor) -> Tensor:
    """``[T, 6]`` per-axis deviation bounds; each axis alone would use the whole margin of a
    view narrowed by ``zoom [T]``, whose half extents shrink by the zoom and whose margins grow
    by what that frees."""
    width, height = canvas.size
    fx, fy = float(canvas.K[0, 0]), float(canvas.K[1, 1])
    cols, rows = canvas.margin
    near_depth = canvas.near_depth
    zoom = zoom.double()
    half_w, half_h = width / 2 / zoom, height / 2 / zoom  # [T], the view's half extent
    cols, rows = cols + width / 2 - half_w, rows + height / 2 - half_h  # [T], its margins
    pan = np.arctan((width / 2 + canvas.margin[0]) / fx) - torch.atan(half_w / fx)  # about y
    tilt = np.arctan((height / 2 + canvas.margin[1]) / fy) - torch.atan(half_h / fy)  # about x
    roll = torch.minimum(cols, rows) / torch.hypot(half_w, half_h)
    sideways, upways = cols * near_depth / fx, rows * near_depth / fy
    backwards = torch.minimum(cols / half_w, rows / half_h) * near_depth
    return torch.stack([tilt, pan, roll, sideways, upways, backwards], -1)


def _box_quadratic(H: sparse.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``argmin 0.5 c^T H c`` subject to ``lower <= c <= upper`` for a sparse positive-definite
    ``H``: the primal active-set method (Nocedal and Wright, section 16.5). Each round solves
    exactly for the free variables (sparse LU), steps towards that solution up to the first
    bound it meets, and releases a fixed variable only once none blocks."""
    count = len(lower)
    tolerance = 1e-12
    c = np.clip(np.zeros(count), lower, upper)  # feasible start: zero where the box allows
    fixed = (c == lower) | (c == upper)
    for _ in range(8 * count + 10):
        free = ~fixed
        target = c.copy()
        if free.any():
            rhs = -(H[free][:, fixed] @ c[fixed]) if fixed.any() else np.zeros(free.sum())
            target[free] = spsolve(H[free][:, free].tocsc(), rhs)
        step = target - c
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(step < 0, (lower - c) / step, np.where(step > 0, (upper - c) / step, np.inf))
        room[fixed] = np.inf
        blocking = int(np.argmin(room))
        if room[blocking] < 1.0:
            c = c + room[blocking] * step
            c[blocking] = lower[blocking] if step[blocking] < 0 else upper[blocking]
            fixed[blocking] = True
            continue
        c = target
        gradient = H @ c
        wrong = np.where(fixed & (c <= lower), -gradient, 0.0) + np.where(fixed & (c >= upper), gradient, 0.0)
        release = int(np.argmax(wrong))
        if wrong[release] <= tolerance * max(1.0, np.abs(gradient).max()):
            return c
        fixed[release] = False
    raise RuntimeError("coverage smoothing: the active-set solver did not converge")


def _smooth_correction(delta: np.ndarray, bound: np.ndarray, H: sparse.csr_matrix) -> np.ndarray:
    """The small, smooth ``c [T]`` with ``|delta + c| <= bound`` (one axis)."""
    if np.all(np.abs(delta) <= bound):
        return np.zeros(len(delta))
    return _box_quadratic(H, -bound - delta, bound - delta)


def bounded_path(
    *, c2w: Tensor, smoothed: Tensor, canvas: Canvas, strength: float, zoom: Tensor | None = None
) -> tuple[Tensor, dict]:
    """The path nearest ``smoothed`` (a ``min_acceleration_path`` of this ``strength`` for the
    real cameras ``c2w``) whose every frame the canvas covers, seen with ``zoom [T]`` where
    given, and a summary: frames bent, rounds, and the worst overshoot before and after
    (pixels)."""
    c2w, smoothed = c2w.double(), smoothed.double()
    canvas = replace(canvas, K=canvas.K.double())
    delta = deviations(c2w, smoothed).numpy()
    zoom = torch.ones(len(c2w), dtype=torch.float64) if zoom is None else zoom.double()
    bounds = initial_bounds(canvas, zoom).numpy()
    before = overshoot(c2w=c2w, virtual=smoothed, canvas=canvas, zoom=zoom)
    path, rounds = smoothed, 0
    reach = before
    H = acceleration_penalty(len(c2w), acceleration_weight(strength))
    while bool((reach > 0).any()) and rounds < MAX_ROUNDS:
        rounds += 1
        corrected = delta + np.stack([_smooth_correction(delta[:, j], bounds[:, j], H) for j in range(6)], -1)
        path = from_deviations(c2w, torch.from_numpy(corrected))
        reach = overshoot(c2w=c2w, virtual=path, canvas=canvas, zoom=zoom)
        bounds[(reach > 0).numpy()] *= SHRINK
    bent = np.abs(deviations(c2w, path).numpy() - delta).max(-1) > BENT
    summary = {
        "frames_bent": int(bent.sum()),
        "rounds": rounds,
        "overshoot_px_before": float(before.max()),
        "overshoot_px_after": float(reach.max()),
    }
    return path, summary


def near_depth(poses: ClipPoses, quantile: float = 0.05, floor: float = 0.2) -> float:
    """A near scene depth for the translation bounds: the ``quantile`` of the SfM points' depths
    in the frames that observe them (scene units, median 1), no nearer than ``floor``. Clips
    posed by rotation alone have no points and no translation, so 1 will do."""
    depths = poses.observations[:, 3] if len(poses.observations) else np.ones(1)
    return max(floor, float(np.quantile(depths, quantile)))
