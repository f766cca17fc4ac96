"""Scene extrapolation: real observations from neighbouring frames where a frame saw nothing.

Two places use them (GaVS stage 4):

- **Canvas filling**, before the network sees a frame: the static pixels of neighbouring
  frames, lifted to 3D with their predicted depth and moved by the relative pose, are
  splatted into the frame's padded canvas (``fill_canvas``). Per pixel, the neighbour
  nearest in time wins, and within it the nearest surface (a z-buffer). One-pixel cracks
  between splats are closed from their filled neighbours. What stays empty is left to the
  network's learned border extrapolation.
- **Neighbour fusion**, at render time: the static first-layer Gaussians of nearby frames
  that lie outside the frame's own view are added to its Gaussians (``fusion_gaussians``),
  so the smoothed view finds real surfaces where it looks past the padded canvas.

Moving objects are kept out of both by the dynamic masks of ``data_prep.priors`` (the
epipolar residual of DIS flow), dilated by a few pixels: a moving object seen at another
time would leave a ghost where it no longer is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from data_prep.priors import dynamic_masks
from infer.flows import PairFlows, consecutive
from model.cameras import project, relative_pose, transform_points, unproject_depth
from model.gaussians import Gaussians

DEPTH_RANGE = 1e4  # scene units (median depth 1): splat keys are rank * DEPTH_RANGE + depth
CRACK_NEIGHBOURS = 5  # an empty pixel with at least this many filled 3x3 neighbours is a crack


def _pull(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``mask`` of another frame, seen from this one: ``mask[x + flow(x)]`` (nearest)."""
    height, width = mask.shape
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).astype(np.float32) + flow
    return (
        cv2.remap(
            mask.astype(np.uint8),
            grid[..., 0],
            grid[..., 1],
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        > 0
    )


def _consecutive_flows(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward and backward flow ``[T-1, H, W, 2]`` float16 between consecutive frames, and
    where each fails the forward-backward test ``[T-1, H, W]``."""
    steps = consecutive(len(frames))
    back = [(b, a) for a, b in steps]
    with PairFlows(frames, steps) as flows:
        forward, backward = (np.stack([flows.flow(*p, dtype=np.float16) for p in ps]) for ps in (steps, back))
        occluded = [np.stack([~flows.trusted(*p) for p in ps]) for ps in (steps, back)]
    return forward, backward, *occluded


def static_masks(
    frames: np.ndarray, K: np.ndarray, c2w: np.ndarray, dilation: int, propagate: int
) -> np.ndarray:
    """``[T, H, W]`` True where a posed frame shows the static scene.

    The dynamic masks of ``data_prep.priors`` miss a moving object in frames where it moves
    along the epipolar lines. Each frame's mask is therefore carried along the DIS flow to
    ``propagate`` frames on either side, which tracks the object to where it is in them, and
    the union is dilated by ``dilation`` pixels.
    """
    if len(frames) < 2:
        return np.ones(frames.shape[:3], bool)
    forward, backward, *occluded = _consecutive_flows(frames)
    dynamic = dynamic_masks(forward, backward, *occluded, K, c2w)
    for _ in range(propagate):
        grown = dynamic.copy()
        for t in range(len(frames) - 1):
            grown[t] |= _pull(dynamic[t + 1], forward[t])
            grown[t + 1] |= _pull(dynamic[t], backward[t])
        dynamic = grown
    dynamic = dynamic.astype(np.uint8)
    if dilation > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1, 2 * dilation + 1))
        dynamic = np.stack([cv2.dilate(m, kernel) for m in dynamic])
    return dynamic == 0


def neighbour_order(index: int, count: int, offsets: tuple[int, ...]) -> list[int]:
    """Frames at ``+-offsets`` from ``index`` inside ``[0, count)``, nearest in time first."""
    order = []
    for offset in sorted(set(abs(o) for o in offsets if o != 0)):
        order += [n for n in (index - offset, index + offset) if 0 <= n < count]
    return order


@dataclass
class Lifted:
    """A neighbour's static pixels in its own camera, lifted once and splatted into every
    canvas it fills: ``points [M, 3]`` and their ``colours [M, C]``."""

    points: Tensor
    colours: Tensor


def lift(*, image: Tensor, depth: Tensor, static: Tensor, K: Tensor) -> Lifted:
    """``image [C, H, W]``'s pixels where ``static [H, W]``, at ``depth [H, W]`` through ``K [3, 3]``."""
    return Lifted(unproject_depth(depth, K)[static], image.permute(1, 2, 0)[static])


def fill_canvas(
    *,
    canvas: Tensor,
    empty: Tensor,
    K_canvas: Tensor,
    neighbours: list[Lifted],
    to_canvas: Tensor,
) -> tuple[Tensor, Tensor]:
    """Splat neighbours into a canvas.

    Args:
        canvas: ``[C, Hc, Wc]`` the padded canvas (colour, or any per-pixel channels).
        empty: ``[Hc, Wc]`` its unobserved pixels.
        K_canvas: ``[3, 3]`` its intrinsics.
        neighbours: N lifted neighbours (``lift``), in priority order, with ``C`` channels.
        to_canvas: ``[N, 4, 4]`` their camera -> the canvas's.

    Returns the canvas and a ``[Hc, Wc]`` mask of the pixels filled from neighbours.
    """
    canvas = canvas.clone()
    height, width = canvas.shape[-2:]
    pixels, keys, colours = [], [], []
    for rank, (lifted, transform) in enumerate(zip(neighbours, to_canvas, strict=True)):
        uv, z = project(transform_points(transform, lifted.points), K_canvas)
        x, y = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        hit = (z > 1e-6) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        # every point's pixel, clamped so that the misses index something, and then the
        # indices of the hits on empty pixels: one gather per array instead of two masks
        pixel = y.clamp(0, height - 1) * width + x.clamp(0, width - 1)
        kept = (hit & empty.flatten()[pixel]).nonzero()[:, 0]
        pixels.append(pixel[kept])
        # one key orders all splats: earlier neighbours first, then the nearer surface
        keys.append(rank * DEPTH_RANGE + z[kept].clamp(max=DEPTH_RANGE / 2))
        colours.append(lifted.colours[kept])
    filled = torch.zeros_like(empty)
    if pixels:
        pixel, key, colour = torch.cat(pixels), torch.cat(keys), torch.cat(colours)
        best = torch.full((height * width,), float("inf"), device=key.device, dtype=key.dtype)
        best.scatter_reduce_(0, pixel, key, reduce="amin")
        front = key <= best[pixel]
        canvas.reshape(len(canvas), -1)[:, pixel[front]] = colour[front].T.to(canvas.dtype)
        filled.view(-1)[pixel[front]] = True
    # close one-pixel cracks between splats from their filled 3x3 neighbours
    box = torch.ones(1, 1, 3, 3, device=canvas.device, dtype=canvas.dtype)
    count = F.conv2d(filled[None, None].to(canvas.dtype), box, padding=1)[0, 0]
    sums = F.conv2d((canvas * filled).unsqueeze(1), box, padding=1)[:, 0]
    crack = empty & ~filled & (count >= CRACK_NEIGHBOURS)
    canvas = torch.where(crack, sums / count.clamp(min=1), canvas)
    return canvas, filled | crack


def fusion_gaussians(
    gaussians: Gaussians, keep: Tensor, to_frame: Tensor, K: Tensor, size: tuple[int, int]
) -> Gaussians:
    """The Gaussians ``[N]`` of a neighbour (``keep [N]``: static, first layer, own pixels),
    moved into a frame's camera by ``to_frame [4, 4]``, that fall outside that frame's
    ``size = (width, height)`` view with intrinsics ``K``."""
    width, height = size
    # the test needs only the moved centres; the rest of each Gaussian is gathered and
    # moved only where it passes
    means = transform_points(to_frame, gaussians.means[keep])
    uv, z = project(means, K)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    outside = ~inside & (z > 0)
    moved = gaussians[keep.nonzero()[:, 0][outside]].transform(to_frame)
    return replace(moved, means=means[outside])


def neighbour_transforms(c2w: Tensor, index: int, neighbours: list[int]) -> Tensor:
    """``[N, 4, 4]`` from each neighbour's camera to frame ``index``'s camera."""
    return relative_pose(c2w[neighbours], c2w[index].expand(len(neighbours), 4, 4))
