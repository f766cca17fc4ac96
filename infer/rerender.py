"""Stages 4-6 of gavs-stabilize: scene extrapolation, rendering at the smoothed poses, and
composition at the output size.

For each posed frame:

1. its padded canvas is filled with static pixels of neighbouring frames
   (``infer.extrapolate.fill_canvas``), using the depth the network predicts for them from
   the frames alone (a first, cheap pass: only their own pixels are splatted, so it leaves
   out the padding, 35-52% of a canvas's pixels at pads 0.12-0.22);
2. the network turns the filled canvas into Gaussians in the source camera's frame, each
   labelled with its origin (``ORIGINS``): the frame's own visible surface, a neighbour's
   pixels, or the network's extrapolation (the still-empty padding and the deeper layers);
3. static Gaussians of nearby frames that lie outside the frame's view are added
   (``fusion_gaussians``);
4. all of them are rendered from the smoothed camera (``relative_pose(original, smoothed)``),
   and ``infer.compose`` makes the output frame (detail transfer, inpainting, attribution).

The stage streams: frames are rendered in batches, in order, and handed on to be encoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from infer.canvas import pad_amounts, pad_canvas
from infer.compose import ORIGINS, compose, origin_features
from infer.extrapolate import (
    Lifted,
    fill_canvas,
    fusion_gaussians,
    lift,
    neighbour_order,
    neighbour_transforms,
    static_masks,
)
from infer.posing import PosedClip
from model.cameras import relative_pose
from model.gaussians import Gaussians
from model.network import GaussianPredictor
from model.render import Backend, render

SOURCE, NEIGHBOURS, EXTRAPOLATED = (ORIGINS.index(name) for name in ("source", "neighbours", "extrapolated"))


@dataclass
class RenderConfig:
    batch: int = 4
    """Frames per network and render call."""
    full_resolution: bool = True
    """Output at the input's size by detail transfer; false: at the working size."""
    canvas_offsets: tuple[int, ...] = (1, 2, 4, 8, 12)
    """Neighbours (frame offsets) splatted into each padded canvas; [] for none."""
    fusion_offsets: tuple[int, ...] = (5, 10)
    """Neighbours whose static Gaussians outside the view join the render; [] for none."""
    detail_offsets: tuple[int, ...] = ()
    """Neighbouring input frames (frame offsets, both ways) whose detail, warped through the
    rendered depth, is averaged with the source's where it agrees: a temporal denoise for
    noisy footage (low light, small sensors), whose grain then flickers less, at the cost of
    that grain's share of the output's fine detail; e.g. [1]. [] (the default) for the
    source's detail alone."""
    dynamic_dilation: int = 4
    """Pixels added around moving regions before they are left out of neighbour filling."""
    dynamic_propagation: int = 6
    """Frames each moving region is tracked along the flow."""
    min_alpha: float = 0.5
    """Output pixels with less render opacity are inpainted."""
    inpaint_radius: int = 3
    """Inpainting radius, in pixels at the output size."""


def gaussian_origins(valid: Tensor, layers: int, filled: Tensor | None = None) -> Tensor:
    """``[B, layers * H * W]`` origin index of each Gaussian of padded canvases with validity
    ``valid [B, 1, H, W]`` (the frame's own pixels) and ``filled [B, 1, H, W]`` (pixels from
    neighbours): only the first layer shows what was observed; the padding left empty and the
    deeper layers are the network's extrapolation."""
    first = torch.full_like(valid, EXTRAPOLATED, dtype=torch.long)
    if filled is not None:
        first = torch.where(filled > 0, NEIGHBOURS, first)
    first = torch.where(valid > 0, SOURCE, first).flatten(1)
    return torch.cat([first, torch.full_like(first, EXTRAPOLATED).repeat(1, layers - 1)], 1)


def _pad_to(gaussians: Gaussians, count: int) -> Gaussians:
    """Append transparent Gaussians up to ``count``, so sets of different sizes batch."""
    extra = count - gaussians.count
    if extra == 0:
        return gaussians
    like = gaussians.means.new_zeros
    blank = Gaussians(
        means=like(extra, 3) + torch.tensor([0.0, 0.0, 1.0], device=gaussians.means.device),
        quats=like(extra, 4) + torch.tensor([1.0, 0, 0, 0], device=gaussians.means.device),
        scales=like(extra, 3) + 1e-3,
        opacities=like(extra),
        colors=like(extra, 3),
        features=like(extra, gaussians.features.shape[-1]),
    )
    return Gaussians.cat([gaussians, blank])


class _Scene:
    """The posed frames' Gaussians, computed in batches on demand and dropped when passed."""

    def __init__(
        self,
        net: GaussianPredictor,
        clip: PosedClip,
        pad: float,
        config: RenderConfig,
        device: torch.device,
        progress: bool,
    ) -> None:
        self.net, self.pad, self.config, self.device = net, pad, config, device
        self.images = clip.frames[clip.poses.frame_ids]
        self.K = torch.from_numpy(clip.poses.K).float().to(device)
        self.c2w = torch.from_numpy(clip.poses.c2w).float().to(device)
        self.rows, self.cols = pad_amounts(*self.images.shape[1:3], pad)
        self.cache: dict[int, tuple[Gaussians, Tensor]] = {}
        self.lifted: dict[int, Lifted] = {}
        self.filled_share: list[float] = []
        needs_neighbours = bool(config.canvas_offsets or config.fusion_offsets)
        self.static = None
        if needs_neighbours:
            self.static = torch.from_numpy(
                static_masks(
                    self.images,
                    clip.poses.K,
                    clip.poses.c2w,
                    config.dynamic_dilation,
                    config.dynamic_propagation,
                )
            ).to(device)
        self.depths = self._first_layer_depths(progress) if config.canvas_offsets else None

    def _tensor(self, indices: list[int]) -> Tensor:
        return torch.from_numpy(self.images[indices]).permute(0, 3, 1, 2).float().div(255).to(self.device)

    def _first_layer_depths(self, progress: bool) -> Tensor:
        """``[T, H, W]`` each frame's first-layer depth over its own pixels, predicted from the
        frame alone. Only these pixels are splatted, so the padding's own predictions went
        unused; the depth moves by about as much as the canvas's size already moves it
        (docs/BENCHMARKS.md, "Eight steps and a first pass without the padding")."""
        count = len(self.images)
        depths = []
        steps = range(0, count, self.config.batch)
        for start in tqdm(steps, desc="depth", disable=not progress, dynamic_ncols=True):
            images = self._tensor(list(range(start, min(start + self.config.batch, count))))
            depths.append(self.net.first_layer_depth(images))
        return torch.cat(depths)

    def _canvas(self, index: int, padded: Tensor, valid: Tensor, K_pad: Tensor) -> tuple[Tensor, Tensor]:
        neighbours = neighbour_order(index, len(self.images), self.config.canvas_offsets)
        if not neighbours:
            return padded, torch.zeros_like(valid[0])
        canvas, filled = fill_canvas(
            canvas=padded,
            empty=valid[0] == 0,
            K_canvas=K_pad,
            neighbours=[self._lifted(n) for n in neighbours],
            to_canvas=neighbour_transforms(self.c2w, index, neighbours),
        )
        reach = max(abs(o) for o in self.config.canvas_offsets)
        for stale in [n for n in self.lifted if n < index - reach]:
            del self.lifted[stale]
        return canvas, filled[None].float()

    def _lifted(self, index: int) -> Lifted:
        """Frame ``index``'s static pixels lifted by its first-layer depth, kept while frames
        within the canvas offsets still use them: each fills up to twice as many canvases
        as there are offsets."""
        if index not in self.lifted:
            image, depth, static = self._tensor([index])[0], self.depths[index], self.static[index]
            self.lifted[index] = lift(image=image, depth=depth, static=static, K=self.K)
        return self.lifted[index]

    def _compute(self, start: int) -> None:
        """Frames from ``start`` on (up to a batch of them) that are not cached yet."""
        ahead = range(start, min(start + self.config.batch, len(self.images)))
        indices = [i for i in ahead if i not in self.cache]
        images = self._tensor(indices)
        padded, valid, K_pad = pad_canvas(images, self.K.expand(len(images), 3, 3), self.pad)
        filled = torch.zeros_like(valid)
        if self.config.canvas_offsets:
            for b, index in enumerate(indices):
                padded[b], filled[b] = self._canvas(index, padded[b], valid[b], K_pad[b])
                self.filled_share.append(float(filled[b].sum() / (1 - valid[b]).sum().clamp(min=1)))
        out = self.net(padded, K_pad, valid + filled)
        origins = gaussian_origins(valid, self.net.config.layers, filled)
        gaussians = replace(out.gaussians, features=origin_features(origins))
        canvas_pixels = valid.shape[-2] * valid.shape[-1]
        for b, index in enumerate(indices):
            fusable = origins[b] == SOURCE
            if self.static is not None:  # the frame's static mask on its canvas, first layer only
                static = F.pad(self.static[index].float(), (self.cols, self.cols, self.rows, self.rows)) > 0
                fusable = fusable & torch.cat(
                    [static.flatten(), static.new_zeros(len(fusable) - canvas_pixels)]
                )
            self.cache[index] = (gaussians[b], fusable)

    def get(self, index: int) -> tuple[Gaussians, Tensor]:
        if index not in self.cache:
            self._compute(index)
        return self.cache[index]

    def with_neighbours(self, index: int) -> Gaussians:
        """Frame ``index``'s Gaussians plus the fused ones of its neighbours, in its camera."""
        own, _ = self.get(index)
        parts = [own]
        height, width = self.images.shape[1:3]
        neighbours = neighbour_order(index, len(self.images), self.config.fusion_offsets)
        transforms = neighbour_transforms(self.c2w, index, neighbours) if neighbours else []
        for neighbour, to_frame in zip(neighbours, transforms, strict=True):
            gaussians, fusable = self.get(neighbour)
            moved = fusion_gaussians(gaussians, fusable, to_frame, self.K, (width, height))
            parts.append(
                replace(moved, features=origin_features(torch.full_like(moved.opacities, NEIGHBOURS)))
            )
        reach = max((abs(o) for o in self.config.fusion_offsets), default=0)
        for stale in [i for i in self.cache if i < index - reach]:
            del self.cache[stale]
        return Gaussians.cat(parts)


class _Window:
    """Input frames at the output size, read in order from a stream as far ahead as asked and
    held while within ``reach`` frames behind the one last asked for."""

    def __init__(self, frames: Iterator[np.ndarray], reach: int) -> None:
        self.stream, self.reach, self.held, self.read = frames, reach, {}, 0

    def __getitem__(self, index: int) -> np.ndarray:
        while self.read <= index:
            self.held[self.read] = next(self.stream)
            self.read += 1
        return self.held[index]

    def drop_before(self, index: int) -> None:
        for stale in [i for i in self.held if i < index - self.reach]:
            del self.held[stale]


class SegmentRenderer:
    """The render stage of one 3D segment, as a stream: ``frames(full_frames)`` yields each
    output frame and its pixel-origin shares in order, reading the input frames at the output
    size as it goes, so no more than a batch of them is ever held.

    ``smoothed [T, 4, 4]`` are the new camera-to-world poses of every frame of ``clip`` (all
    posed), or ``[T, V, 4, 4]`` for V new cameras per frame (a stereo pair); ``shifts [V]``
    move each new camera's principal point right by that many px at the working size (a
    stereo pair's convergence); ``zoom [T]`` lengthens each frame's focal length (max_zoom);
    ``pad`` is the canvas padding the network saw in finetuning.
    """

    def __init__(
        self,
        net: GaussianPredictor,
        clip: PosedClip,
        *,
        smoothed: np.ndarray,
        shifts: np.ndarray | None = None,
        zoom: np.ndarray | None = None,
        pad: float,
        config: RenderConfig,
        backend: Backend = "auto",
        device: torch.device,
        progress: bool = True,
    ) -> None:
        if len(clip.poses.frame_ids) != len(clip.frames):
            raise ValueError(
                f"a segment renders posed frames only: {len(clip.poses.frame_ids)} of {len(clip.frames)}"
            )
        self.clip, self.smoothed, self.config, self.backend = clip, smoothed, config, backend
        self.shifts, self.zoom, self.progress = shifts, zoom, progress
        with torch.no_grad():  # the first-layer depth pass: no graph to keep
            self.scene = _Scene(net, clip, pad, config, device, progress)

    @property
    def canvas_filled(self) -> float:
        """Share of the padding filled from neighbours, over the frames rendered so far."""
        return float(np.mean(self.scene.filled_share)) if self.scene.filled_share else 0.0

    @torch.no_grad()
    def frames(self, full_frames: Iterator[np.ndarray] | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(frames [V, H, W, 3], origin shares [V, 4])`` per input frame, one per new camera
        (``V`` is 1 for ``smoothed [T, 4, 4]``); ``full_frames`` are the input frames at the
        output size (detail transfer), None for output at the working size."""
        scene, count = self.scene, len(self.clip.frames)
        h, w = self.clip.frames.shape[1:3]
        target = torch.from_numpy(self.smoothed).float().to(scene.device)
        target = target[:, None] if target.ndim == 3 else target  # [T, V, 4, 4]
        K_new = scene.K.repeat(target.shape[1], 1, 1)  # [V, 3, 3]
        if self.shifts is not None:
            K_new[:, 0, 2] += torch.as_tensor(self.shifts, dtype=K_new.dtype, device=K_new.device)
        reach = max((abs(o) for o in self.config.detail_offsets), default=0)
        window = None if full_frames is None else _Window(full_frames, reach)
        steps = range(0, count, self.config.batch)
        for start in tqdm(steps, desc="render", disable=not self.progress, dynamic_ncols=True):
            batch = list(range(start, min(start + self.config.batch, count)))
            sets = [scene.with_neighbours(i) for i in batch]
            size = max(g.count for g in sets)
            gaussians = Gaussians.cat([_pad_to(g, size)[None] for g in sets], dim=0)
            viewmats = relative_pose(scene.c2w[batch][:, None], target[batch])  # [B, V]: source -> new camera
            Ks = K_new.expand(len(batch), -1, 3, 3)
            if self.zoom is not None:  # a longer focal length about the same principal point
                Ks = Ks.clone()
                zoom = torch.as_tensor(self.zoom[batch], dtype=Ks.dtype, device=Ks.device)[:, None]
                Ks[..., 0, 0] *= zoom
                Ks[..., 1, 1] *= zoom
            result = render(gaussians, viewmats, Ks, w, h, backend=self.backend)
            inverse = torch.linalg.inv(viewmats)
            for b, index in enumerate(batch):  # one at a time: full-size intermediates of one frame only
                source = None if window is None else window[index][None]
                others = [] if window is None else neighbour_order(index, count, self.config.detail_offsets)
                to_others = relative_pose(scene.c2w[index].expand(len(others), 4, 4), scene.c2w[others])
                views = [
                    compose(
                        color=result.color[b, v : v + 1],
                        alpha=result.alpha[b, v : v + 1],
                        depth=result.depth[b, v : v + 1],
                        features=result.features[b, v : v + 1],
                        K=Ks[b, v : v + 1],
                        K_source=scene.K[None],
                        to_source=inverse[b, v : v + 1],
                        source=source,
                        others=tuple(
                            (window[j][None], (to_other @ inverse[b, v])[None])
                            for j, to_other in zip(others, to_others, strict=True)
                        ),
                        min_alpha=self.config.min_alpha,
                        inpaint_radius=self.config.inpaint_radius,
                    )
                    for v in range(target.shape[1])
                ]
                if window is not None:
                    window.drop_before(index)
                if len(views) == 1:  # no copy of a full-size frame
                    yield views[0].frames, views[0].origin_shares
                else:
                    yield (
                        np.concatenate([c.frames for c in views]),
                        np.concatenate([c.origin_shares for c in views]),
                    )


@torch.no_grad()
def source_depths(
    net: GaussianPredictor,
    clip: PosedClip,
    *,
    pad: float,
    config: RenderConfig,
    backend: Backend = "auto",
    device: torch.device,
    progress: bool = True,
) -> Iterator[Tensor]:
    """``[H, W]`` depth (z, scene units) of each posed frame of ``clip`` as its own camera sees
    its Gaussians, in order: the render's expected depth, 0 where its opacity is below
    ``config.min_alpha``. Neighbour fill and fusion are left out: they add Gaussians outside
    the frame's own view only."""
    own = replace(config, canvas_offsets=(), fusion_offsets=())
    scene = _Scene(net, clip, pad, own, device, progress=False)
    count, (h, w) = len(scene.images), clip.frames.shape[1:3]
    steps = range(0, count, config.batch)
    for start in tqdm(steps, desc="depth", disable=not progress, dynamic_ncols=True):
        batch = list(range(start, min(start + config.batch, count)))
        gaussians = Gaussians.cat([scene.get(i)[0][None] for i in batch], dim=0)  # one size: one canvas each
        identity = torch.eye(4, device=device).expand(len(batch), 1, 4, 4)
        result = render(gaussians, identity, scene.K.expand(len(batch), 1, 3, 3), w, h, backend=backend)
        depth = torch.where(result.alpha[:, 0, 0] >= config.min_alpha, result.depth[:, 0, 0], 0.0)
        for b, index in enumerate(batch):
            del scene.cache[index]
            yield depth[b]
