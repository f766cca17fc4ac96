"""Stage 3 of gavs-stabilize: test-time finetuning of the Gaussian predictor on one clip.

Each step takes a window of ``batch`` source frames at one of several strides (GaVS: 1, 3, 5)
and renders every source's Gaussians, in one batched call, into its own camera and into
``neighbours`` frames within ``max_offset`` of it. The loss:

- **photometric, dynamics-aware:** the camera-induced flow (predicted depth through the
  relative pose) is subtracted from the observed DIS flow; what remains above
  ``dynamic_threshold_px`` is object motion. Target pixels that the moving object covers,
  at its rendered or its true position, are left out of the static term. The moving pixels
  themselves are compared where they really are: the render at the camera-flow position
  against the target at the observed-flow position, which warps the target's moving pixels
  back to the source time. Occluded pixels (forward-backward check), disoccluded borders
  (target pixels that map outside the source frame) and render holes are excluded;
- **cross-frame consistency:** the per-pixel attribute maps (opacity, scale in pixel
  footprints, rotation, colour) of the window's frames, flow-warped to its first frame, are
  pulled towards that frame's on static, unoccluded pixels;
- **sparse depth** from the SfM points (scale-invariant), and the scale and offset
  regularisers of pretraining.

Steps scale with the clip's length (``steps_per_frame``); the learning rate follows a cosine.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from common import interrupt
from common.atomic import atomic_path, remove
from common.schedule import warmup_cosine
from data_prep.schema import ClipPoses
from infer.canvas import pad_amounts, pad_canvas
from infer.flows import PairFlows
from model.cameras import pixel_centers, project, relative_pose, unproject
from model.losses import (
    frame_points,
    offset_regulariser,
    photometric_loss,
    scale_regulariser,
    sparse_depth_loss,
)
from model.losses.photometric import photometric_error
from model.network import GaussianPredictor, NetworkOutput
from model.render import Backend, render

MIN_SPARSE_DEPTH, MAX_SPARSE_DEPTH = 0.05, 20.0  # scene units: poses are scaled to median depth 1


@dataclass
class FinetuneConfig:
    steps_per_frame: float = 3.0
    """Optimisation steps per posed frame (GaVS: 3), clamped to [min_steps, max_steps]."""
    min_steps: int = 60
    """Fewest steps, however short the clip."""
    max_steps: int | None = None
    """Most steps per segment; None (the default) keeps the cost per frame the same however
    long the clip."""
    lr: float = 5e-4
    """Learning rate at the first step; a cosine takes it to min_lr at the last."""
    min_lr: float = 5e-5
    """Learning rate at the last step."""
    strides: tuple[int, ...] = (1, 3, 5)
    """Frame strides a step's window is drawn at (GaVS: 1, 3 and 5)."""
    batch: int = 5
    """Source frames per step."""
    neighbours: int = 4
    """Target views each source is rendered into."""
    max_offset: int = 10
    """Frames between a source and its targets, at most."""
    dynamic_threshold_px: float = 2.0
    """Observed flow this far (px) from the camera-induced flow counts as object motion."""
    moving_weight: float = 1.0
    """Weight of the moving-pixel term."""
    consistency_weight: float = 0.05
    """Weight of the cross-frame consistency of per-pixel Gaussian attributes."""
    depth_weight: float = 0.1
    """Weight of the scale-invariant sparse SfM depth term."""
    scale_weight: float = 0.01
    """Weight of the regulariser on Gaussians larger than a few pixels."""
    offset_weight: float = 0.01
    """Weight of the regulariser on 3D offsets from the pixel ray."""
    max_points: int = 512
    """Sparse SfM points per source frame, at most."""
    seed: int = 0
    """Seed of the window and target draws."""
    checkpoint_every_s: float = 60.0
    """Seconds between resumable checkpoints (weights, optimizer, step, random state) in the
    work folder, so a stopped run continues where it was; 0 saves after every step. Not part
    of the result's cache key."""
    flow_memory_mb: float = 256.0
    """Megabytes of flows kept in memory; beyond it they go to a temporary file in the work
    folder (about 290 kB a pair direction at 320x180). Not part of the result's cache key."""
    log_every: int = 10
    """Steps between reading the loss terms back from the device for the progress bar (each
    read waits for the device to finish); the curve still holds every step. Not part of the
    result's cache key."""


NOT_IN_RESULT = (
    "checkpoint_every_s",
    "flow_memory_mb",
    "log_every",
)  # FinetuneConfig fields the weights do not depend on


def step_count(frames: int, config: FinetuneConfig) -> int:
    steps = max(config.min_steps, round(config.steps_per_frame * frames))
    return int(steps if config.max_steps is None else min(config.max_steps, steps))


def finetune_windows(count: int, config: FinetuneConfig) -> list[tuple[list[int], list[list[int]]]]:
    """Every step's window, drawn up front from the seed: sources (``batch`` frames at one of
    the strides) and ``neighbours`` targets for each, within ``max_offset`` frames. Knowing them
    before the first step lets every flow they compare be computed once (``infer.flows``)."""
    rng = random.Random(config.seed)
    strides = [s for s in config.strides if s * (min(config.batch, count) - 1) < count] or [1]
    windows = []
    for _ in range(step_count(count, config)):
        stride = rng.choice(strides)
        size = min(config.batch, (count - 1) // stride + 1)
        start = rng.randrange(count - stride * (size - 1))
        sources = [start + stride * i for i in range(size)]
        targets = []
        for s in sources:
            near = [
                t
                for t in range(max(0, s - config.max_offset), min(count, s + config.max_offset + 1))
                if t != s
            ]
            targets.append(rng.sample(near, min(config.neighbours, len(near))))
        width = min(len(t) for t in targets)
        windows.append((sources, [t[:width] for t in targets]))
    return windows


def window_pairs(windows: list[tuple[list[int], list[list[int]]]]) -> list[tuple[int, int]]:
    """The frame pairs the windows' losses compare: each source with its targets (the
    photometric terms) and the first source with the others (the consistency term)."""
    pairs = set()
    for sources, targets in windows:
        pairs |= {(a, t) for a, row in zip(sources, targets, strict=True) for t in row}
        pairs |= {(sources[0], s) for s in sources[1:]}
    return sorted(pairs)


def _sample(image: Tensor, uv: Tensor) -> Tensor:
    """Bilinear samples of ``image [B, C, H, W]`` at pixel coordinates ``uv [B, H', W', 2]``."""
    height, width = image.shape[-2:]
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _splat(mask: Tensor, uv: Tensor, height: int, width: int) -> Tensor:
    """Target-space masks ``[P, H, W]``: the pixels that ``uv[mask]`` (``[P, H, W(, 2)]``) land
    on in each image, grown by one pixel."""
    count = mask.shape[0]
    points = uv.floor().long()
    inside = (
        (points[..., 0] >= 0) & (points[..., 0] < width) & (points[..., 1] >= 0) & (points[..., 1] < height)
    )
    image = torch.arange(count, device=uv.device)[:, None, None]
    flat = (image * height + points[..., 1]) * width + points[..., 0]
    # every pixel writes, the ones not splatted into one spare slot: no boolean indexing,
    # whose output size would need a host round-trip
    out = torch.zeros(count * height * width + 1, device=uv.device)
    out[torch.where(mask & inside, flat, count * height * width)] = 1
    return F.max_pool2d(out[:-1].view(count, 1, height, width), 3, 1, 1)[:, 0] > 0


def attribute_maps(out: NetworkOutput, height: int, width: int, K: Tensor) -> Tensor:  # K [B, 3, 3]
    """``[B, C, H, W]`` per-pixel attributes of every layer: opacity, scale in pixel footprints,
    rotation and colour (the quantities the consistency term compares across frames)."""
    B, L = out.opacity.shape[:2]
    quats = (
        out.gaussians.quats.reshape(B, L, height * width, 4).transpose(-1, -2).reshape(B, L, 4, height, width)
    )
    colours = out.gaussians.colors.reshape(B, L, height * width, 3).transpose(-1, -2)
    colours = colours.reshape(B, L, 3, height, width)
    footprint = out.depth[:, :, None] / K[:, 0, 0].view(B, 1, 1, 1, 1)
    maps = [
        out.opacity[:, :, None],
        torch.log(out.scale / footprint),
        quats * quats[:, :, :1].sign(),
        colours,
    ]
    return torch.cat(maps, 2).flatten(1, 2)


def camera_flow(depth: Tensor, K: Tensor, src_to_tgt: Tensor, pixels: Tensor) -> Tensor:
    """``[B * N, H, W, 2]``: where each source pixel lands in each target by the camera's
    motion alone. ``depth [B, H, W]`` is the source's front-layer depth, ``K [3, 3]`` the
    shared intrinsics, ``src_to_tgt [B, N, 4, 4]`` and ``pixels [H, W, 2]`` the pixel centres."""
    B, H, W = depth.shape
    cam_points = unproject(pixels.expand(B, H, W, 2), depth, K)
    moved = (
        torch.einsum("bnij,bhwj->bnhwi", src_to_tgt[..., :3, :3], cam_points)
        + src_to_tgt[..., None, None, :3, 3]
    )
    camera_uv, _ = project(moved, K)
    return camera_uv.flatten(0, 1)


def moving_pixels(*, camera_uv: Tensor, observed_uv: Tensor, trusted: Tensor, threshold_px: float) -> Tensor:
    """``[P, H, W]`` source pixels that move on their own: the observed flow lands more than
    ``threshold_px`` from where the camera alone puts them, and the flow is trusted."""
    return ((observed_uv - camera_uv).norm(dim=-1) > threshold_px) & trusted


def static_pair_mask(
    *, seen: Tensor, alpha: Tensor, moving: Tensor, camera_uv: Tensor, observed_uv: Tensor
) -> Tensor:
    """``[P, 1, H, W]`` target pixels the static term compares: seen from the source
    (``seen``), not a render hole (``alpha [P, H, W]`` above 0.5), and not covered by the
    moving object, either where the camera would put it or where it really is."""
    height, width = seen.shape[-2:]
    keep = seen & (alpha > 0.5)
    keep &= ~_splat(moving, camera_uv, height, width) & ~_splat(moving, observed_uv, height, width)
    return keep[:, None].float()


def static_term(renders: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    """Mean over pairs of the photometric error (DSSIM + L1) of ``renders [P, 3, H, W]``
    against ``targets`` over the pixels ``keep [P, 1, H, W]``."""
    error = photometric_error(renders, targets)
    return ((error * keep).sum((1, 2, 3)) / keep.sum((1, 2, 3)).clamp(min=1.0)).mean()


def moving_term(
    *, renders: Tensor, targets: Tensor, camera_uv: Tensor, observed_uv: Tensor, moving: Tensor
) -> Tensor:
    """Mean L1 over moving pixels of the render where the camera put them against the target
    where they really are (which warps the target's object back to the source time); pairs
    without motion are left out, and zero when no pair has any."""
    gap = (_sample(renders, camera_uv) - _sample(targets, observed_uv)).abs().mean(1)  # [P, H, W]
    count = moving.sum((1, 2))
    has_motion = (count > 0).to(gap.dtype)  # masked means: no host round-trip to test for any
    per_pair = (gap * moving).sum((1, 2)) / count.clamp(min=1)
    return (per_pair * has_motion).sum() / has_motion.sum().clamp(min=1)


class ClipFinetuner:
    """Holds the clip's tensors and flow; ``step()`` runs one optimisation step."""

    def __init__(
        self,
        net: GaussianPredictor,
        frames: np.ndarray,
        poses: ClipPoses,
        config: FinetuneConfig,
        *,
        pad: float,
        backend: Backend,
        device: torch.device,
        scratch: Path | None = None,
        progress: bool = False,
    ) -> None:
        self.net, self.config, self.device = net, config, device
        self.pad, self.backend = pad, backend
        posed = frames[poses.frame_ids]
        # uint8, a quarter of float's size: a long segment's frames stay small, on any device
        self.frames = torch.from_numpy(np.ascontiguousarray(posed)).permute(0, 3, 1, 2).to(device)
        self.count, _, self.height, self.width = self.frames.shape
        self.K = torch.from_numpy(poses.K).float().to(device)
        self.c2w = torch.from_numpy(poses.c2w).float().to(device)
        self.observations = torch.from_numpy(poses.observations).float().to(device)
        self.windows = finetune_windows(self.count, config)
        self.total_steps = len(self.windows)
        self.scratch, self.progress = scratch, progress
        self.flows: PairFlows | None = None  # computed before the first step taken
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        self.pixels = pixel_centers(self.height, self.width, device=device)  # [H, W, 2]

    def _images(self, indices: Tensor) -> Tensor:
        """``[len(indices), 3, H, W]`` float frames in [0, 1]."""
        return self.frames[indices].float().div(255)

    def compute_flows(self, first_step: int = 0) -> None:
        """Every flow the steps from ``first_step`` on compare, at once (a resumed run skips
        the steps already done)."""
        posed = self.frames.permute(0, 2, 3, 1).cpu().numpy()
        pairs = window_pairs(self.windows[first_step:])
        memory_mb = self.config.flow_memory_mb
        self.flows = PairFlows(
            posed, pairs, scratch=self.scratch, memory_mb=memory_mb, progress=self.progress
        )

    def _sparse_points(self, sources: list[int], rows: int, cols: int) -> tuple[Tensor, Tensor, Tensor]:
        """``uv [B, M, 2]`` in the padded canvas, ``depth [B, M]``, ``valid [B, M]``."""
        # SfM keeps the odd point almost at a camera centre (depth 1e-6 where the median is
        # 1); one such point dominates a log-depth variance
        per_source = [
            frame_points(
                self.observations,
                s,
                max_points=self.config.max_points,
                origin=(-cols, -rows),
                depth_range=(MIN_SPARSE_DEPTH, MAX_SPARSE_DEPTH),
            )
            for s in sources
        ]
        return tuple(torch.stack(parts) for parts in zip(*per_source, strict=True))

    def _pair_flows(self, pairs: list[tuple[int, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """Observed flow ``[P, H, W, 2]`` source -> target, where it is trusted ``[P, H, W]``,
        and the target pixels the source sees ``[P, H, W]`` (consistent backward flow that
        lands inside); only the flow itself is computed pair by pair."""
        forward = [self.flows.pair(a, t) for a, t in pairs]
        flow = torch.stack([f for f, _ in forward]).to(self.device)
        trusted = torch.stack([ok for _, ok in forward]).to(self.device)
        seen = torch.stack([self.flows.pair(t, a)[1] for a, t in pairs]).to(self.device)
        return flow, trusted, seen

    def losses(self, sources: list[int], targets: list[list[int]]) -> dict[str, Tensor]:
        cfg, H, W, K = self.config, self.height, self.width, self.K
        B, N = len(sources), len(targets[0])
        src = torch.tensor(sources, device=self.device)
        tgt = torch.tensor(targets, device=self.device)  # [B, N]
        source_images = self._images(src)
        padded, valid, K_pad = pad_canvas(source_images, K.expand(B, 3, 3), self.pad)
        out = self.net(padded, K_pad, valid)
        rows, cols = pad_amounts(H, W, self.pad)

        src_to_tgt = relative_pose(self.c2w[src][:, None].expand(B, N, 4, 4), self.c2w[tgt])  # [B, N, 4, 4]
        identity = torch.eye(4, device=self.device).expand(B, 1, 4, 4)
        views = torch.cat([identity, src_to_tgt], 1)
        rendered = render(out.gaussians, views, K.expand(B, N + 1, 3, 3), W, H, backend=self.backend)
        renders = rendered.color[:, 1:].flatten(0, 1)  # [P, 3, H, W], P = B * N pairs
        target_images = self._images(tgt.flatten())

        depth = out.depth[:, 0, rows : rows + H, cols : cols + W].detach()  # front layer, [B, H, W]
        camera_uv = camera_flow(depth, K, src_to_tgt, self.pixels)
        pairs = [(a, t) for a, row in zip(sources, targets, strict=True) for t in row]
        flow, trusted, seen = self._pair_flows(pairs)
        observed_uv = self.pixels + flow
        uvs = {"camera_uv": camera_uv, "observed_uv": observed_uv}
        moving = moving_pixels(**uvs, trusted=trusted, threshold_px=cfg.dynamic_threshold_px)
        keep = static_pair_mask(seen=seen, alpha=rendered.alpha[:, 1:, 0].flatten(0, 1), moving=moving, **uvs)
        sparse = self._sparse_points(sources, rows, cols)
        terms = {
            "source": photometric_loss(rendered.color[:, 0], source_images),
            "target": static_term(renders, target_images, keep),
            "moving": cfg.moving_weight
            * moving_term(renders=renders, targets=target_images, moving=moving, **uvs),
            "consistency": cfg.consistency_weight * self._consistency(out, sources, K_pad, rows, cols),
            "depth": cfg.depth_weight * sparse_depth_loss(out.depth[:, :1], *sparse),
            "scale": cfg.scale_weight * scale_regulariser(out.scale, out.depth, K_pad[:, 0, 0]),
            "offset": cfg.offset_weight * offset_regulariser(out.offset, out.depth),
        }
        terms["total"] = sum(terms.values())
        return terms

    def _consistency(
        self, out: NetworkOutput, sources: list[int], K_pad: Tensor, rows: int, cols: int
    ) -> Tensor:
        H, W = self.height, self.width
        if len(sources) < 2:
            return out.opacity.sum() * 0
        maps = attribute_maps(out, H + 2 * rows, W + 2 * cols, K_pad)[:, :, rows : rows + H, cols : cols + W]
        anchor, losses = maps[0], []
        for j in range(1, len(sources)):
            flow, trusted = (t.to(self.device) for t in self.flows.pair(sources[0], sources[j]))
            warped = _sample(maps[j][None], (self.pixels + flow)[None])[0]
            weight = trusted.float()[None]
            losses.append(
                ((warped - anchor).abs() * weight).sum() / (weight.sum() * maps.shape[1]).clamp(min=1)
            )
        return torch.stack(losses).mean()

    def step(self, step: int) -> dict[str, Tensor | float]:
        cfg = self.config
        lr = warmup_cosine(step, steps=self.total_steps - 1, lr=cfg.lr, min_lr=cfg.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.flows is None:
            self.compute_flows(step)
        terms = self.losses(*self.windows[step])
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.optimizer.step()
        return {k: v.detach() for k, v in terms.items()} | {"lr": lr}  # still on the device

    def state(self) -> dict:
        """Everything the next step depends on besides the clip and its windows (drawn from the
        seed): optimizer and random state."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }

    def load_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


class Resumable:
    """Finetuning's checkpoints in ``folder``: ``step-NNNNNN`` folders, each written whole or
    not at all, the newest two kept. One damaged after it was written (a full disk, a copy
    cut short) is reported, and the one before it is used."""

    KEEP = 2

    def __init__(self, folder: Path, every_s: float, warn: Callable[[str], None]) -> None:
        self.folder, self.every_s, self.warn = folder, every_s, warn
        self.resumed_from = 0  # the step finetuning continued from; 0 for a fresh start
        self.last_save = time.monotonic()

    def steps(self) -> list[Path]:
        return sorted(self.folder.glob("step-[0-9]*"), reverse=True)

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.every_s

    def save(self, tuner: ClipFinetuner, curve: list[dict]) -> None:
        with atomic_path(self.folder / f"step-{len(curve):06d}", folder=True) as tmp:
            weights = {k: v.detach().cpu().contiguous() for k, v in tuner.net.state_dict().items()}
            save_file(weights, tmp / "model.safetensors")
            torch.save(tuner.state(), tmp / "state.pt")
            (tmp / "curve.json").write_text(json.dumps(curve))
        for old in self.steps()[self.KEEP :]:
            remove(old)
        self.last_save = time.monotonic()

    def restore(self, tuner: ClipFinetuner) -> list[dict]:
        """The curve of the steps already done (none without a checkpoint), after loading the
        newest checkpoint that loads whole into ``tuner``; nothing is changed before a
        checkpoint has loaded whole."""
        expected = {k: v.shape for k, v in tuner.net.state_dict().items()}
        for folder in self.steps():
            try:
                curve = json.loads((folder / "curve.json").read_text())
                weights = load_file(folder / "model.safetensors", device=str(tuner.device))
                state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
                if {k: v.shape for k, v in weights.items()} != expected:
                    raise ValueError("its weights are not this network's")
            except Exception as err:  # any damage makes this one unusable; an older one may load
                self.warn(
                    f"finetuning checkpoint {folder} does not load ({type(err).__name__}: {err}); skipped"
                )
                continue
            tuner.net.load_state_dict(weights)
            tuner.load_state(state)
            self.resumed_from = len(curve)
            return curve
        if self.steps():
            self.warn(f"no finetuning checkpoint in {self.folder} loads; finetuning starts again")
        return []


def finetune(
    net: GaussianPredictor,
    frames: np.ndarray,
    poses: ClipPoses,
    config: FinetuneConfig,
    *,
    pad: float,
    backend: Backend = "auto",
    device: torch.device,
    progress: bool = True,
    resume: Resumable | None = None,
    scratch: Path | None = None,
) -> list[dict[str, float]]:
    """Finetune ``net`` in place on the posed frames, seen on canvases padded by ``pad``;
    returns the per-step loss terms. With ``resume``, it continues from the newest checkpoint
    there and saves one whenever ``resume`` says one is due. Flows beyond the config's
    ``flow_memory_mb`` go to a temporary file in ``scratch``."""
    net = net.to(device).train()
    tuner = ClipFinetuner(
        net,
        frames,
        poses,
        config,
        pad=pad,
        backend=backend,
        device=device,
        scratch=scratch,
        progress=progress,
    )
    curve = resume.restore(tuner) if resume is not None else []
    tuner.compute_flows(len(curve))
    total = tuner.total_steps
    bar = tqdm(total=total, initial=len(curve), desc="finetune", unit="step", disable=not progress)
    pending: list[dict] = []  # steps whose loss terms are still on the device

    def read_back() -> None:
        curve.extend(read_terms(pending))
        pending.clear()
        bar.set_postfix(loss=f"{curve[-1]['total']:.4f}")

    with bar:
        for step in range(len(curve), total):
            interrupt.progress(f"step {step + 1} of {total}")
            pending.append(tuner.step(step))
            bar.update()
            if len(pending) >= config.log_every or step + 1 == total:
                read_back()
            if resume is not None and step + 1 < total and resume.due():
                if pending:  # the checkpoint holds the curve so far
                    read_back()
                resume.save(tuner, curve)
    tuner.flows.close()
    net.eval()
    return curve


def read_terms(steps: list[dict[str, Tensor | float]]) -> list[dict[str, float]]:
    """The steps' loss terms as numbers, in one read from the device."""
    if not steps:
        return []
    names = [k for k, v in steps[0].items() if isinstance(v, Tensor)]
    values = torch.stack([torch.stack([s[k] for k in names]) for s in steps]).tolist()
    return [s | dict(zip(names, row, strict=True)) for s, row in zip(steps, values, strict=True)]
