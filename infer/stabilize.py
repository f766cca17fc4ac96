"""The gavs-stabilize pipeline: poses, smoothing, finetuning, rendering, writing, report.

The clip is split into shots at hard cuts, and each shot into segments: runs that SfM poses
(3D: smoothed camera path, finetuned network, re-rendered full frame) and stretches it cannot
(2D: a smoothed similarity path joined to the 3D ones, ``infer.planar``). No frame is given
an invented pose, and no path is smoothed across a cut.

Stages 1 (poses) and 3 (finetuning) are cached in the work directory under keys of
everything that changes them, so a rerun with another strength goes straight to rendering.
Rendering, composing and encoding stream: the full-size input is decoded again one frame at
a time and each output frame is encoded as soon as it is made, so memory does not grow with
the clip's length beyond its working-size frames (memory-mapped from the work folder).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from common import interrupt
from common.atomic import remove, write_atomic
from common.config import ConfigError
from common.memory import peak_rss_gb, release_free_heap
from data_prep.ingest import working_size
from data_prep.poses import PoseConfig
from data_prep.video import Encoding, VideoError, VideoInfo, VideoReader, VideoWriter, encoding_like, probe
from infer.canvas import CanvasConfig
from infer.compose import ORIGINS
from infer.coverage import bounded_path, canvas_at, near_depth, needed_pad, needed_zoom
from infer.finetune import NOT_IN_RESULT, FinetuneConfig, Resumable, finetune
from infer.horizon import level, roll_deg, scene_up
from infer.media import plot_paths, write_output
from infer.planar import JOIN_FRAMES, induced_similarity, planar_corrections, similarity_steps, to_size, warp
from infer.posing import (
    MIN_FRAMES,
    DecodedClip,
    PosedClip,
    Segment,
    WorkFolderError,
    cache_key,
    decode_and_pose,
)
from infer.presets import announcement, clip_frames, estimate_seconds, pick_device
from infer.rerender import RenderConfig, SegmentRenderer
from infer.trajectory import GAVS_SIGMA, acceleration_weight, gaussian_window_path, min_acceleration_path
from model.cameras import relative_pose
from model.network import GaussianPredictor, NetworkConfig
from model.release import load_predictor, resolve, save_predictor, sha256
from model.render import Backend, resolve_backend

# Disk-space estimate before any work: the output at about 1 bit per pixel (x264 crf 18, grain
# tune, is near 0.5), the work folder at the working-size frames twice (frames and poses)
# plus the networks and finetuning curves.
OUTPUT_BITS_PER_PIXEL = 1.0
WORK_SHARE = 2
WORK_FIXED_BYTES = 200e6
PLANAR_MAX_ROTATION_DEG = 3.0  # the most a 2D segment's correction turns a frame

X264Tune = Literal["grain", "film", "animation", "stillimage", "psnr", "ssim", "none"]
MAX_ZOOM = 2.0  # beyond this, a zoomed output is mostly upscaled working-size pixels
ZOOM_EASE_S = 0.5  # seconds over which max_zoom's zoom eases in and out
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class StabilizeConfig:
    resolution: int = 320
    """Working resolution of poses, finetuning and rendering: the longer side, in pixels."""
    strength: float = 6.0
    """How much shake to remove: 1 is GaVS's smoothing (31-frame window, sigma 4 frames), 6 is
    sigma 24; 0 keeps the path."""
    smoothing: Literal["bounded", "gaussian"] = "bounded"
    """bounded: the minimum-acceleration path, as strong as the Gaussian window of that
    strength but closer to the real camera, kept where the padded canvas covers the frame;
    gaussian: GaVS's Gaussian window, even where it leaves the canvas."""
    max_frames: int | None = None
    """Only the first N frames."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda[:N]."""
    backend: Backend = "auto"
    """Renderer for finetuning and rendering: auto (gsplat on CUDA), torch or gsplat."""
    crf: int = 18
    """H.264 quality of the output, 0-51; lower is larger and sharper."""
    tune: X264Tune = "grain"
    """x264 tune; grain keeps the fine detail that the default (none) quantises away in
    B-frames, at about 1.7x the file size."""
    seed: int = 0
    """Seed of the fresh network and of finetuning."""
    checkpoint: str | None = None
    """Where finetuning starts: a release folder, a release shipped with gavs by name
    (prior-cpu, which the cpu and fast presets name), or a hub id (org/name); none: a fresh
    network as the network settings say, seeded by seed."""
    network: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(backbone="resnet18", decoder_channels=(8, 16, 32, 64, 128))
    )
    """The network trained from scratch on the clip when no checkpoint is given."""
    canvas: CanvasConfig = field(default_factory=CanvasConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    poses: PoseConfig = field(default_factory=lambda: PoseConfig(min_partial_frames=16, keyframe_stride=2))
    """SfM settings; min_partial_frames: a shot's longest posed run needs this many frames, and
    the frames SfM leaves out are posed again on their own, or stabilized in 2D;
    keyframe_stride: the global mapper poses every second frame and the rest are registered
    to its map, which halves the mapper's time (a map that falls short is made again from
    every frame)."""
    preset: str = "none"
    """The shipped preset these settings started from (gavs-stabilize --preset sets it; the
    report names it)."""
    horizon_lock: bool = False
    """Keep the output level: each smoothed camera turns about its optical axis until its
    roll against the scene's up is zero (up from the scene's vertical lines where they agree,
    else the path's mean up; the report says which)."""
    max_zoom: float = 1.0
    """The most the output may zoom in (1: never, the full frame), only where even the
    largest canvas cannot cover the smoothed view: crop less <-> smooth more. The zoom eases in
    and out over about half a second; where even max_zoom falls short, the path is bent. The
    report gives the zoom per frame."""
    strict: bool = False
    """Refuse a damaged or truncated input (less decoded than the container promises) instead
    of stabilizing what decodes, with a warning."""

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be 0-51 (x264's scale, lower is better), got {self.crf}")
        if self.strength < 0:
            raise ConfigError(f"strength must be 0 (no smoothing) or more, got {self.strength}")
        if not 1.0 <= self.max_zoom <= MAX_ZOOM:
            raise ConfigError(f"max_zoom must be 1 (no zoom) to {MAX_ZOOM}, got {self.max_zoom}")
        if not DEVICE.match(self.device):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.checkpoint is not None and self.checkpoint.lower() in ("none", ""):
            self.checkpoint = None  # as the command line writes it: --checkpoint none


def print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Finetuned:
    net: GaussianPredictor | None  # None in the report's copy: networks are loaded per segment
    provenance: dict  # where the starting weights came from: a fresh network or a release
    curve: list[dict[str, float]]  # the loss terms of every finetuning step
    cached: bool  # taken from the work folder
    resumed_from: int = 0  # the step a stopped finetuning continued from (0: it started afresh)
    seconds: float = 0.0  # this run's finetuning wall time (0 when cached)


def initial_network(config: StabilizeConfig) -> tuple[GaussianPredictor, dict]:
    """The network finetuning starts from (a seeded fresh one, or ``config.checkpoint``'s) and
    where it came from."""
    checkpoint = config.checkpoint
    if checkpoint is None:
        torch.manual_seed(config.seed)
        return GaussianPredictor(config.network), {
            "init": "fresh network (no checkpoint): finetuning does all"
        }
    folder = resolve(checkpoint)
    net = load_predictor(folder)
    return net, {
        "init": "release",
        "checkpoint": str(checkpoint),
        "weights_sha256": sha256(folder / "model.safetensors"),
    }


def finetuned_network(
    clip: PosedClip,
    *,
    poses_key: str,
    config: StabilizeConfig,
    work_dir: Path,
    device: torch.device,
    progress: bool,
    warn: Callable[[str], None] = print_warning,
    cached_only: bool = False,
) -> Finetuned:
    """The clip's finetuned network, from the cache when this clip, start and config were
    seen (with ``cached_only``, WorkFolderError when not); a stopped finetuning continues from
    its last checkpoint."""
    net, provenance = initial_network(config)
    tuning = {k: v for k, v in asdict(config.finetune).items() if k not in NOT_IN_RESULT}
    settings = (asdict(net.config), asdict(config.canvas), tuning, config.backend, config.seed)
    folder = work_dir / "finetune" / cache_key("finetune/3", poses_key, provenance, *settings)
    if (folder / "model.safetensors").is_file():
        curve = json.loads((folder / "curve.json").read_text())
        return Finetuned(load_predictor(folder).to(device), provenance, curve, cached=True)
    if cached_only:
        raise WorkFolderError(f"{work_dir}: no network finetuned on this clip at these settings")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    resume = Resumable(folder.with_name(f"{folder.name}.resume"), config.finetune.checkpoint_every_s, warn)
    curve = finetune(
        net,
        clip.frames,
        clip.poses,
        config.finetune,
        pad=config.canvas.pad,
        backend=config.backend,
        device=device,
        progress=progress,
        resume=resume,
        scratch=work_dir / "flows",
    )
    save_predictor(net, folder, extra={"clip": poses_key}, files={"curve.json": json.dumps(curve)})
    remove(resume.folder)
    seconds = time.perf_counter() - started
    return Finetuned(net.eval(), provenance, curve, False, resume.resumed_from, seconds)


def plan_path(clip: PosedClip, config: StabilizeConfig) -> tuple[np.ndarray, dict]:
    """The smoothed poses of the posed frames and how they were found. ``bounded`` takes the
    minimum-acceleration path and bends it back towards the real camera wherever the padded
    canvas would not cover the output frame (see ``infer.coverage``); ``gaussian`` is GaVS's
    window, even where it leaves the canvas. The canvas grows from ``canvas.pad`` up to
    ``canvas.max_pad`` until it covers the path (the summary's ``canvas_pad``), the view zooms
    in up to ``max_zoom`` where even that falls short (the summary's ``zoom``, per frame), and
    the path is bent only where that is not enough either. With ``horizon_lock`` the smoothed path is
    levelled first (``infer.horizon``), so the canvas and the bound see the levelled path."""
    c2w = torch.from_numpy(clip.poses.c2w)
    summary: dict = {
        "mode": config.smoothing,
        "strength": config.strength,
        "sigma_frames": GAVS_SIGMA * config.strength,
    }
    if config.smoothing == "gaussian":
        smoothed = gaussian_window_path(c2w, config.strength)
    else:
        smoothed = min_acceleration_path(c2w, config.strength)
        summary["acceleration_weight"] = acceleration_weight(config.strength)
    if config.horizon_lock:
        scene = scene_up(clip.frames, clip.poses)
        levelled, steep = level(smoothed.numpy(), scene.up)
        smoothed = torch.from_numpy(levelled)
        summary["horizon"] = scene.report() | {
            "frames_too_steep": steep,
            "roll_before_deg": float(np.abs(roll_deg(clip.poses.c2w, scene.up)).max()),
        }
    summary["canvas_pad"] = config.canvas.pad
    if config.smoothing == "bounded" and (config.strength > 0 or config.horizon_lock) and len(c2w) > 2:
        H, W = clip.frames.shape[1:3]
        where = {"K": torch.from_numpy(clip.poses.K), "size": (W, H), "near_depth": near_depth(clip.poses)}
        least, most = config.canvas.pad, config.canvas.max_pad
        pad = needed_pad(c2w=c2w.double(), virtual=smoothed.double(), least=least, most=most, **where)
        canvas = canvas_at(pad, **where)
        ease = ZOOM_EASE_S * clip.fps
        zoom = needed_zoom(
            c2w=c2w.double(),
            virtual=smoothed.double(),
            canvas=canvas,
            most=config.max_zoom,
            smooth_frames=ease,
        )
        smoothed, bending = bounded_path(
            c2w=c2w, smoothed=smoothed, canvas=canvas, strength=config.strength, zoom=zoom
        )
        summary.update(canvas_pad=pad, near_depth=canvas.near_depth, **bending)
        summary["zoom"] = [round(z, 5) for z in zoom.tolist()]
    if config.horizon_lock:  # the bound may give some roll back, where the canvas falls short
        summary["horizon"]["roll_after_deg"] = float(np.abs(roll_deg(smoothed.numpy(), scene.up)).max())
    return smoothed.numpy(), summary


@dataclass
class SegmentPlan:
    """How one segment is stabilized: its new poses (3D) or its 2D corrections."""

    segment: Segment
    smoothed: np.ndarray | None = None  # [n, 4, 4] new camera-to-world poses (3D)
    corrections: np.ndarray | None = None  # [n, 3, 3] working-size input -> output similarity (2D)
    shifts: np.ndarray | None = None  # [V] the new cameras' principal-point x shifts (px, working size)
    smoothing: dict = field(default_factory=dict)
    pad: float | None = None  # the canvas padding of a 3D segment's finetuning and rendering
    zoom: np.ndarray | None = None  # [n] a 3D segment's zoom per frame (max_zoom); None: none

    def canvas_config(self, config: StabilizeConfig) -> StabilizeConfig:
        """``config`` with the canvas fixed at this segment's padding."""
        return replace(config, canvas=config.canvas.fixed(self.pad))


def _join(clip: DecodedClip, plans: list[SegmentPlan], k: int, frames: range) -> dict[int, np.ndarray]:
    """The 2D corrections that segment ``k``, if 3D, gives its ``frames``: ``{frame: similarity}``."""
    if plans[k].smoothed is None:
        return {}
    segment = plans[k].segment
    size = clip.frames.shape[2], clip.frames.shape[1]
    original = torch.from_numpy(segment.poses.c2w)
    smoothed = torch.from_numpy(plans[k].smoothed)
    joined = {}
    for frame in frames:
        j = frame - segment.start
        to_virtual = relative_pose(original[j], smoothed[j]).numpy()
        joined[frame] = induced_similarity(segment.poses.K, to_virtual, size)
    return joined


def plan_planar(clip: DecodedClip, plans: list[SegmentPlan], k: int, config: StabilizeConfig) -> SegmentPlan:
    """Segment ``k`` (2D): a smoothed similarity path, joined to the 3D segments around it."""
    segment = plans[k].segment
    pinned: dict[int, np.ndarray] = {}
    for neighbour in (k - 1, k + 1):
        if 0 <= neighbour < len(plans) and plans[neighbour].segment.shot == segment.shot:
            reach = min(JOIN_FRAMES, plans[neighbour].segment.length)
            near = (
                range(segment.start - reach, segment.start)
                if neighbour < k
                else range(segment.end, segment.end + reach)
            )
            pinned |= _join(clip, plans, neighbour, near)
    lo = min([segment.start, *pinned])
    hi = max([segment.end, *(t + 1 for t in pinned)])
    size = clip.frames.shape[2], clip.frames.shape[1]
    corrections = planar_corrections(
        similarity_steps(clip.frames[lo:hi]),
        lam=acceleration_weight(config.strength),
        size=size,
        pinned={t - lo: M for t, M in pinned.items()},
        pad=config.canvas.pad / 2,
        max_rotation_deg=PLANAR_MAX_ROTATION_DEG,
    )
    summary = {"mode": "planar", "joined_frames": len(pinned), "reason": segment.reason}
    return replace(
        plans[k], corrections=corrections[segment.start - lo : segment.end - lo], smoothing=summary
    )


def plan_paths(clip: DecodedClip, config: StabilizeConfig) -> list[SegmentPlan]:
    """Every segment's plan: the 3D paths first, then the 2D ones that join them."""
    plans = [SegmentPlan(segment) for segment in clip.segments]
    for plan in plans:
        if plan.segment.poses is not None:
            plan.smoothed, plan.smoothing = plan_path(clip.posed(plan.segment), config)
            plan.pad = plan.smoothing["canvas_pad"]
            plan.zoom = np.asarray(plan.smoothing["zoom"]) if "zoom" in plan.smoothing else None
    return [
        plan if plan.smoothed is not None else plan_planar(clip, plans, k, config)
        for k, plan in enumerate(plans)
    ]


@dataclass
class Stabilized:
    """What the stages produced, for the report."""

    clip: DecodedClip
    poses_cached: bool
    plans: list[SegmentPlan]
    tuned: dict[int, Finetuned]  # per 3D segment (nets dropped after use)
    origin_shares: np.ndarray  # [T, 4] per ORIGINS entry
    canvas_filled: dict[int, float]  # per 3D segment: share of the padding filled from neighbours
    encoding: Encoding
    warnings: list[str]
    metrics: dict | None  # gavs-eval's report, unless skipped
    timer: StageTimer  # seconds and peak memory per stage


STAGE_NAMES = {  # for the line a stop prints: "interrupted during finetuning, ..."
    "poses": "posing",
    "smoothing": "path smoothing",
    "finetune": "finetuning",
    "render": "rendering and writing",
    "write": "writing the path plot",
    "evaluate": "evaluation",
    "depth": "depth rendering and writing",
}


class StageTimer:
    """Wall time per pipeline stage, and the process's peak memory up to each stage's end (the
    first stage that reaches the run's peak is the one that needs it):
    ``with timer.stage("poses"): ...``. The stage also names what a stop interrupted."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_gb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        with interrupt.stage(STAGE_NAMES.get(name, name)):
            yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        self.peak_rss_gb[name] = peak_rss_gb()


def output_encoding(info: VideoInfo, config: StabilizeConfig) -> tuple[Encoding, list[str]]:
    """The output's encoding: the input's size, depth, chroma, colour and time base (the
    working size, 8-bit, without ``render.full_resolution``), and notes on what changed."""
    tune = None if config.tune == "none" else config.tune
    encoding, notes = encoding_like(info, crf=config.crf, tune=tune)
    if not config.render.full_resolution:
        width, height = working_size(info.width, info.height, config.resolution)
        encoding = replace(encoding, width=width, height=height, bit_depth=8, chroma="420")
    return encoding, notes


def check_output(output: Path, encoding: Encoding, info: VideoInfo, work_dir: Path, videos: float) -> None:
    """Everything that could fail when writing, checked before any work: the folder exists and
    is writable, the encoder takes this size and format, and the disks have room for
    ``videos`` times a video of ``encoding``'s size."""
    check_writable(output)
    check_encoder(output, encoding)
    frame_bytes = encoding.width * encoding.height * OUTPUT_BITS_PER_PIXEL / 8
    check_space(output, (info.promised_frames or 0) * frame_bytes * videos, info, work_dir)


def check_writable(output: Path) -> None:
    if not output.parent.is_dir():
        raise OSError(f"{output}: the folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise OSError(f"{output}: the folder {output.parent} is not writable")


def check_encoder(output: Path, encoding: Encoding, folder: Path | None = None) -> None:
    """VideoError naming ``output`` unless the encoder takes ``encoding`` (two frames, written
    into ``folder``, by default ``output``'s, and removed)."""
    trial = (folder or output.parent) / f".{output.stem}.preflight{output.suffix}"
    try:
        with VideoWriter(trial, encoding) as writer:
            for index in range(2):
                writer.write(np.zeros((encoding.height, encoding.width, 3), encoding.dtype), index)
    except VideoError as err:
        what = f"{encoding.codec} {encoding.pix_fmt} {encoding.width}x{encoding.height}"
        raise VideoError(f"{output}: cannot be written as {what} ({err.__cause__ or err})") from err
    finally:
        trial.unlink(missing_ok=True)


def check_space(output: Path, output_bytes: float, info: VideoInfo, work_dir: Path) -> None:
    """OSError unless the output's folder has ``output_bytes`` free and the work folder room
    for the clip's working-size frames and networks."""
    working = working_size(info.width, info.height, None)
    work_bytes = (info.promised_frames or 0) * working[0] * working[1] * 3 * WORK_SHARE + WORK_FIXED_BYTES
    for folder, need, what in (
        (output.parent, output_bytes, "the output"),
        (work_dir, work_bytes, "the work folder"),
    ):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        if free < need:
            raise OSError(f"{folder}: {free / 1e9:.1f} GB free, and {what} needs about {need / 1e9:.1f} GB")


def output_pts(clip: DecodedClip, encoding: Encoding) -> tuple[np.ndarray, Encoding]:
    """Output timestamps: the input's own (variable rates stay variable), or frame indices at
    a constant rate when the file has none."""
    if (clip.pts >= 0).all() and (np.diff(clip.pts) > 0).all():
        return clip.pts - clip.pts[0], encoding
    return np.arange(len(clip.pts)), replace(
        encoding, time_base=1 / Fraction(clip.fps).limit_denominator(1001)
    )


def input_frames(video: Path, clip: DecodedClip, encoding: Encoding) -> Iterator[np.ndarray]:
    """The input frames at the output size, one at a time: decoded again at full size (16-bit
    for a deep output), or the working-size frames."""
    if (encoding.width, encoding.height) == (
        clip.frames.shape[2],
        clip.frames.shape[1],
    ) and encoding.bit_depth == 8:
        yield from clip.frames
        return
    reader = VideoReader(video, depth=8 if encoding.bit_depth == 8 else 16, limit=len(clip.frames))
    count = 0
    for frame in reader:
        count += 1
        yield frame.image
    if count != len(clip.frames):
        raise VideoError(f"{video}: decoded {count} frames at full size but {len(clip.frames)} before")


def _remembering(frames: Iterator[np.ndarray], held: deque[np.ndarray]) -> Iterator[np.ndarray]:
    """``frames``, each also appended to ``held`` as it is read."""
    for frame in frames:
        held.append(frame)
        yield frame


def stabilized_frames(
    clip: DecodedClip,
    plans: list[SegmentPlan],
    inputs: Iterator[np.ndarray],
    network: Callable[[int], GaussianPredictor],
    config: StabilizeConfig,
    *,
    device: torch.device,
    progress: bool,
    stats: dict,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(input frame, output frames [V, H, W, 3], origin shares [V, 4])`` of every frame in
    order, segment by segment, for V new cameras per frame (``smoothed [n, V, 4, 4]``; a 2D
    segment gives each the same frame); ``network(k)`` gives segment k's finetuned network."""
    working = clip.frames.shape[2], clip.frames.shape[1]
    views = next((p.smoothed.shape[1] for p in plans if p.smoothed is not None and p.smoothed.ndim == 4), 1)
    for k, plan in enumerate(plans):
        frames = itertools.islice(inputs, plan.segment.length)
        if plan.corrections is not None:
            for frame, M in zip(frames, plan.corrections, strict=True):
                out, outside = warp(frame, to_size(M, working, frame.shape[1::-1]))
                share = np.array([[1 - outside, 0.0, outside, 0.0]])
                yield frame, np.repeat(out[None], views, 0), np.repeat(share, views, 0)
            continue
        renderer = SegmentRenderer(
            network(k),
            clip.posed(plan.segment),
            smoothed=plan.smoothed,
            shifts=plan.shifts,
            zoom=plan.zoom,
            pad=plan.pad,
            config=config.render,
            backend=config.backend,
            device=device,
            progress=progress,
        )
        held: deque[np.ndarray] = deque()  # the input frames the renderer has read, not yet paired
        detail = _remembering(frames, held) if config.render.full_resolution else None
        for out, shares in renderer.frames(detail):
            yield (held.popleft() if detail is not None else next(frames)), out, shares
        stats[k] = renderer.canvas_filled
        del renderer  # before the next segment's network and scene are built beside it
        release_free_heap()


@dataclass
class Reconstruction:
    """What the readouts of a clip build on: the decoded, posed clip, each segment's plan and,
    through ``network(k)``, 3D segment k's finetuned network (from the work folder)."""

    clip: DecodedClip
    poses_cached: bool
    plans: list[SegmentPlan]
    tuned: dict[int, Finetuned]  # per 3D segment, as finetuned or found (nets dropped)
    network: Callable[[int], GaussianPredictor]
    warnings: list[str]  # the clip's damage, if any


def reconstruct(
    video: Path,
    config: StabilizeConfig,
    *,
    work_dir: Path,
    device: torch.device,
    progress: bool,
    timer: StageTimer,
    warn: Callable[[str], None],
    cached_only: bool = False,
    check: Callable[[DecodedClip], object] | None = None,
) -> Reconstruction:
    """Stages 1-3, each timed by ``timer``: poses, path smoothing and finetuning, taken from
    the work folder where it has them (with ``cached_only``, WorkFolderError where not).
    ``check(clip)`` may refuse the posed clip before any finetuning."""
    with timer.stage("poses"):
        clip, poses_key, poses_cached = decode_and_pose(
            video,
            work_dir,
            config.resolution,
            config.max_frames,
            config.poses,
            strict=config.strict,
            progress=progress,
            cached_only=cached_only,
        )
        release_free_heap()  # decoding's freed frames, before finetuning builds on the heap
    if clip.damage:
        warn(clip.damage)
    if check is not None:
        check(clip)
    with timer.stage("smoothing"):
        plans = plan_paths(clip, config)
    tuned: dict[int, Finetuned] = {}
    where = {"work_dir": work_dir, "device": device, "progress": progress}

    def network(k: int) -> GaussianPredictor:
        posed = clip.posed(plans[k].segment)
        result = finetuned_network(
            posed,
            poses_key=f"{poses_key}/{k}",
            config=plans[k].canvas_config(config),
            warn=warn,
            cached_only=cached_only,
            **where,
        )
        tuned.setdefault(k, replace(result, net=None))
        return result.net

    with timer.stage("finetune"):
        posed = [k for k, plan in enumerate(plans) if plan.smoothed is not None]
        for number, k in enumerate(posed):
            with interrupt.part(f"segment {number + 1} of {len(posed)}" if len(posed) > 1 else None):
                network(k)
            release_free_heap()  # the finetuning's freed blocks, before the next segment's
    return Reconstruction(clip, poses_cached, plans, tuned, network, [clip.damage] if clip.damage else [])


def _counted(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``frames``, telling the interruption's line which one the stage is at."""
    for index, frame in enumerate(frames):
        interrupt.progress(f"frame {index + 1}")
        yield frame


def render_video(
    video: Path,
    output: Path,
    built: Reconstruction,
    plans: list[SegmentPlan],
    config: StabilizeConfig,
    *,
    encoding: Encoding,
    device: torch.device,
    timer: StageTimer,
    progress: bool,
    side_by_side: bool = False,
    outputs: list[Path] | None = None,
    layout: Callable[[np.ndarray], list[np.ndarray]] = lambda views: [views[0]],
) -> tuple[np.ndarray, dict[int, float], Encoding]:
    """Stages 4-5: render every frame along ``plans`` (3D segments from their ``smoothed``
    cameras), encode it as it comes into ``outputs`` (default: ``output``), and plot the paths
    beside ``output``. ``layout`` makes the frame of each output from a frame's views
    ``[V, H, W, 3]`` (``encoding`` has their size). Returns
    the frames' pixel-origin shares ``[T, len(ORIGINS)]`` (the views' mean), each 3D
    segment's canvas share filled from neighbours, and the encoding used (with the clip's
    time base)."""
    clip = built.clip
    pts, encoding = output_pts(clip, encoding)
    canvas_filled: dict[int, float] = {}
    # filled in place: a small array kept per frame would pin the heap between frame-sized blocks
    shares = np.zeros((len(clip.frames), len(ORIGINS)))
    with timer.stage("render"):
        frames = stabilized_frames(
            clip,
            plans,
            input_frames(video, clip, encoding),
            built.network,
            config,
            device=device,
            progress=progress,
            stats=canvas_filled,
        )

        def laid_out() -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
            for index, (frame_in, views, share) in enumerate(frames):
                interrupt.progress(f"frame {index + 1} of {len(shares)}")
                shares[index] = share.mean(0)
                yield frame_in, layout(views)

        duration = float(pts[-1] * encoding.time_base) + 1 / clip.fps  # the last frame's end
        write_output(
            video,
            outputs or [output],
            laid_out(),
            pts=pts,
            encoding=encoding,
            duration=duration,
            side_by_side=side_by_side,
        )
    with timer.stage("write"):
        posed = [
            (p.segment.start, p.segment.poses.c2w, p.smoothed if p.smoothed.ndim == 3 else p.smoothed.mean(1))
            for p in plans
            if p.smoothed is not None
        ]
        plot_paths(posed, output.with_suffix(".path.png"))
    return shares, canvas_filled, encoding


@dataclass
class Readout:
    """What a run renders from a clip's reconstruction: gavs-stabilize's smoothed path
    (``STABILIZED``), or a gavs-render readout's new cameras, layout and report entry."""

    kind: str  # for the report
    plans: Callable[[Reconstruction], list[SegmentPlan]] = lambda built: built.plans  # with the new cameras
    check: Callable[[DecodedClip], object] = lambda clip: None  # refuses a clip before finetuning
    layout: Callable[[np.ndarray], list[np.ndarray]] = lambda views: [views[0]]  # a frame per output
    size: Callable[[int, int], tuple[int, int]] = lambda w, h: (w, h)  # their size from the input's
    outputs: Callable[[Path], list[Path]] = lambda output: [output]  # the files for -o OUT
    tags: Callable[[Encoding, Path], Encoding] = lambda encoding, output: encoding  # what they hold
    details: Callable[[list[SegmentPlan]], dict] | None = None  # the report's readout entry


STABILIZED = Readout(kind="stabilize")


def run_readout(
    video: Path,
    output: Path,
    config: StabilizeConfig,
    readout: Readout,
    *,
    work_dir: Path,
    cached_only: bool = False,
    side_by_side: bool = False,
    evaluate_output: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] = print_warning,
) -> dict:
    """Reconstruct ``video`` (or find it in ``work_dir``; with ``cached_only``, only find
    it), render it with ``readout``'s cameras and layout into ``output``, optionally
    evaluate it against the input, and write ``OUT.report.json`` and ``OUT.path.png``."""
    output, video = Path(output), Path(video)
    info = probe(video)
    encoding, warnings = output_encoding(info, config)
    width, height = readout.size(encoding.width, encoding.height)
    odd = width % 2 or height % 2
    encoding = replace(encoding, width=width, height=height, chroma="444" if odd else encoding.chroma)
    encoding, outputs = readout.tags(encoding, output), readout.outputs(output)
    videos = len(outputs) + (2 if side_by_side else 0)  # the side by side is two wide
    check_output(outputs[0], encoding, info, work_dir, videos=videos)
    for message in warnings:
        warn(message)
    device, timer = pick_device(config.device), StageTimer()
    renderer = resolve_backend(config.backend, device)  # builds its kernels now, not mid-stage
    estimate = estimate_seconds(config, info, device, evaluate_output)
    if config.checkpoint is not None:
        initial_network(config)  # a release that does not load fails here, not after SfM
    frames = clip_frames(config, info)
    if 0 < frames < MIN_FRAMES:  # known from the container: fail before any work or announcement
        raise VideoError(f"{video}: {frames} frames; stabilizing needs at least {MIN_FRAMES}")
    if not cached_only:  # one line before the work, also when quiet
        program = "gavs-stabilize" if readout is STABILIZED else "gavs-render"
        print(f"{program}: {announcement(config.preset, device, frames, estimate)}", file=sys.stderr)
    where = {"work_dir": work_dir, "device": device, "progress": progress}
    built = reconstruct(
        video, config, timer=timer, warn=warn, cached_only=cached_only, check=readout.check, **where
    )
    plans = readout.plans(built)
    shares, canvas_filled, encoding = render_video(
        video,
        output,
        built,
        plans,
        config,
        encoding=encoding,
        device=device,
        timer=timer,
        progress=progress,
        side_by_side=side_by_side,
        outputs=outputs,
        layout=readout.layout,
    )
    metrics = None
    if evaluate_output:
        with timer.stage("evaluate"):
            metrics = _evaluation(video, output, built.clip, progress)
    warnings += built.warnings
    result = Stabilized(
        built.clip,
        built.poses_cached,
        plans,
        built.tuned,
        shares,
        canvas_filled,
        encoding,
        warnings,
        metrics,
        timer,
    )
    report = build_report(video, output, config, device, result) | {"renderer": renderer}
    report["estimated_s"] = {k: round(v, 1) for k, v in estimate.items()} if estimate else None
    if readout.details is not None:
        cameras = {p.segment.start: p.smoothed.tolist() for p in plans if p.smoothed is not None}
        report["outputs"] = [str(path) for path in outputs]
        report["readout"] = {"kind": readout.kind, **readout.details(plans), "cameras": cameras}
    write_atomic(output.with_suffix(".report.json"), json.dumps(report, indent=1, default=str))
    return report


def _evaluation(video: Path, output: Path, clip: DecodedClip, progress: bool) -> dict:
    """gavs-eval's scores of ``output`` against the input."""
    from evaluation.metrics import evaluate

    return evaluate(
        _counted(f.image for f in VideoReader(video, limit=len(clip.frames))),
        (f.image for f in VideoReader(output)),
        clip.fps,
        progress=progress,
    )


def stabilize(
    video: Path,
    output: Path,
    config: StabilizeConfig,
    *,
    work_dir: Path | None = None,
    side_by_side: bool = False,
    evaluate_output: bool = True,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Stabilize ``video`` into ``output``; write ``report.json`` and the path plot beside it.
    ``warn`` receives each warning as it is found (default: printed to stderr)."""
    output = Path(output)
    work_dir = Path(work_dir) if work_dir is not None else output.parent / f".{output.stem}.gavs-work"
    return run_readout(
        video,
        output,
        config,
        STABILIZED,
        work_dir=work_dir,
        side_by_side=side_by_side,
        evaluate_output=evaluate_output,
        progress=progress,
        warn=warn or print_warning,
    )


def _segment_report(k: int, plan: SegmentPlan, result: Stabilized) -> dict:
    segment = plan.segment
    entry = {
        "start": segment.start,
        "end": segment.end,
        "shot": segment.shot,
        "method": segment.method,
        "pose_method" if segment.poses is not None else "reason": segment.reason,
        "smoothing": plan.smoothing,
    }
    if k in result.tuned:
        tuned = result.tuned[k]
        entry |= {"cached_finetune": tuned.cached, "finetune_resumed_from_step": tuned.resumed_from}
        entry["finetune_seconds"] = round(tuned.seconds, 3)
        entry["finetune_curve"] = tuned.curve
        entry["canvas_filled_from_neighbours"] = round(result.canvas_filled.get(k, 0.0), 5)
    return entry


def zoom_report(plans: list[SegmentPlan], count: int) -> dict:
    """The output's zoom (max_zoom) per frame, 1 where it has none, and its summary."""
    zoom = np.ones(count)
    for plan in plans:
        if plan.zoom is not None:
            zoom[plan.segment.start : plan.segment.end] = plan.zoom
    zoomed = zoom > 1 + 1e-6
    return {"max": float(zoom.max()), "frames_zoomed": int(zoomed.sum()), "per_frame": zoom.round(5).tolist()}


def build_report(
    video: Path, output: Path, config: StabilizeConfig, device: torch.device, result: Stabilized
) -> dict:
    """The ``report.json`` of one run: sizes, encoding, shots and segments (with their poses,
    smoothing and finetuning), cache hits, timings, where the output's pixels came from,
    warnings, metrics and the config."""
    clip, timings, shares = result.clip, result.timer.seconds, result.origin_shares
    count = len(clip.frames)
    methods = clip.frame_methods()
    first = next(iter(result.tuned.values()), None)
    provenance = first.provenance if first else {"init": "none (no 3D segment)"}
    return {
        "input": str(video),
        "output": str(output),
        "frames": count,
        "working_size": [int(clip.frames.shape[2]), int(clip.frames.shape[1])],
        "output_size": [result.encoding.width, result.encoding.height],
        "source_size": list(clip.info.size),
        "source_rotation": clip.info.rotation,
        "fps": clip.fps,
        "encoding": result.encoding.describe(),
        "warnings": result.warnings,
        "device": str(device),
        "shots": [list(s) for s in clip.shots],
        "segments": [_segment_report(k, plan, result) for k, plan in enumerate(result.plans)],
        "frame_methods": methods,
        "pose_method": ",".join(sorted({s.reason for s in clip.segments if s.poses is not None})) or "none",
        "posed_frames": methods.count("3d"),
        "planar_frames": [i for i, m in enumerate(methods) if m == "2d"],
        "strength": config.strength,
        "zoom": zoom_report(result.plans, count),
        "network": provenance["init"],
        **{k: v for k, v in provenance.items() if k != "init"},
        "cached": {"poses": result.poses_cached, "finetune": all(t.cached for t in result.tuned.values())},
        "timings_s": timings,
        "seconds_per_frame": {k: round(v / count, 4) for k, v in timings.items()},
        "peak_rss_gb": result.timer.peak_rss_gb,
        "pixel_origins": {
            "mean": dict(zip(ORIGINS, shares.mean(0).round(5).tolist(), strict=True)),
            "per_frame": {name: shares[:, i].round(5).tolist() for i, name in enumerate(ORIGINS)},
        },
        "metrics": result.metrics,
        "config": asdict(config),
    }
