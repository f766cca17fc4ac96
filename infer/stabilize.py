"""The gavs-stabilize pipeline: poses, smoothing, finetuning, rendering, writing, report.

Stages 1 (poses) and 3 (finetuning) are cached in the work directory under keys of
everything that changes them, so a rerun with another strength goes straight to rendering.
Frames that could not be posed are copied through unchanged and listed in the report; none
is given an invented pose.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from common.atomic import write_atomic
from common.config import ConfigError
from data_prep.poses import PoseConfig
from data_prep.video import VideoError, read_video
from infer.canvas import CanvasConfig, pad_amounts
from infer.compose import ORIGINS
from infer.coverage import Canvas, bounded_path, near_depth
from infer.finetune import FinetuneConfig, finetune
from infer.media import plot_paths, write_output
from infer.posing import PosedClip, cache_key, decode_and_pose
from infer.rerender import RenderConfig, Rendered, render_stabilized
from infer.trajectory import GAVS_SIGMA, acceleration_weight, gaussian_window_path, min_acceleration_path
from model.network import GaussianPredictor, NetworkConfig
from model.release import load_predictor, resolve, save_predictor, sha256
from model.render import Backend

X264Tune = Literal["grain", "film", "animation", "stillimage", "psnr", "ssim", "none"]
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class StabilizeConfig:
    resolution: int = 320
    """Working resolution of poses, finetuning and rendering: the longer side, in pixels."""
    strength: float = 4.0
    """How much shake to remove: 1 is GaVS's smoothing (31-frame window, sigma 4 frames), 4 is
    sigma 16; 0 keeps the path."""
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
    network: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(backbone="resnet18", decoder_channels=(8, 16, 32, 64, 128))
    )
    """The network trained from scratch on the clip when no checkpoint is given."""
    canvas: CanvasConfig = field(default_factory=CanvasConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    poses: PoseConfig = field(default_factory=PoseConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be 0-51 (x264's scale, lower is better), got {self.crf}")
        if self.strength < 0:
            raise ConfigError(f"strength must be 0 (no smoothing) or more, got {self.strength}")
        if not DEVICE.match(self.device):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@dataclass
class Finetuned:
    net: GaussianPredictor
    provenance: dict  # where the starting weights came from: a fresh network or a release
    curve: list[dict[str, float]]  # the loss terms of every finetuning step
    cached: bool  # taken from the work folder


def _initial_network(config: StabilizeConfig, checkpoint: str | None) -> tuple[GaussianPredictor, dict]:
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
    checkpoint: str | None,
    work_dir: Path,
    device: torch.device,
    progress: bool,
) -> Finetuned:
    """The clip's finetuned network, from the cache when this clip, start and config were seen."""
    net, provenance = _initial_network(config, checkpoint)
    settings = (
        asdict(net.config),
        asdict(config.canvas),
        asdict(config.finetune),
        config.backend,
        config.seed,
    )
    folder = work_dir / "finetune" / cache_key("finetune/2", poses_key, provenance, *settings)
    if (folder / "model.safetensors").is_file():
        curve = json.loads((folder / "curve.json").read_text())
        return Finetuned(load_predictor(folder).to(device), provenance, curve, cached=True)
    torch.manual_seed(config.seed)
    curve = finetune(
        net,
        clip.frames,
        clip.poses,
        config.finetune,
        pad=config.canvas.pad,
        backend=config.backend,
        device=device,
        progress=progress,
    )
    save_predictor(net, folder, extra={"clip": poses_key}, files={"curve.json": json.dumps(curve)})
    return Finetuned(net.eval(), provenance, curve, cached=False)


def plan_path(clip: PosedClip, config: StabilizeConfig) -> tuple[np.ndarray, dict]:
    """The smoothed poses of the posed frames and how they were found. ``bounded`` takes the
    minimum-acceleration path and bends it back towards the real camera wherever the padded
    canvas would not cover the output frame (see ``infer.coverage``); ``gaussian`` is GaVS's
    window, even where it leaves the canvas."""
    c2w = torch.from_numpy(clip.poses.c2w)
    summary: dict = {
        "mode": config.smoothing,
        "strength": config.strength,
        "sigma_frames": GAVS_SIGMA * config.strength,
    }
    if config.smoothing == "gaussian":
        return gaussian_window_path(c2w, config.strength).numpy(), summary
    smoothed = min_acceleration_path(c2w, config.strength)
    summary["acceleration_weight"] = acceleration_weight(config.strength)
    if config.strength > 0:
        H, W = clip.frames.shape[1:3]
        rows, cols = pad_amounts(H, W, config.canvas.pad)
        canvas = Canvas(torch.from_numpy(clip.poses.K), (W, H), (cols, rows), near_depth(clip.poses))
        smoothed, bending = bounded_path(c2w=c2w, smoothed=smoothed, canvas=canvas, strength=config.strength)
        summary.update(near_depth=canvas.near_depth, **bending)
    return smoothed.numpy(), summary


def rerender(
    net: GaussianPredictor,
    clip: PosedClip,
    smoothed: np.ndarray,
    config: StabilizeConfig,
    *,
    device: torch.device,
    progress: bool,
    full_frames: np.ndarray | None,
) -> Rendered:
    """The render stage with this config's canvas, render settings and backend."""
    return render_stabilized(
        net,
        clip,
        smoothed=smoothed,
        pad=config.canvas.pad,
        config=config.render,
        backend=config.backend,
        device=device,
        progress=progress,
        full_frames=full_frames,
    )


@dataclass
class Stabilized:
    """What the stages produced, for the report."""

    clip: PosedClip
    poses_cached: bool
    smoothing: dict  # how the path was found
    tuned: Finetuned
    rendered: Rendered
    metrics: dict | None  # gavs-eval's report, unless skipped
    timings: dict[str, float]  # seconds per stage


class StageTimer:
    """Wall time per pipeline stage: ``with timer.stage("poses"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


def check_output(output: Path) -> None:
    """Refuse an output whose folder is missing or read-only, before any work."""
    if not output.parent.is_dir():
        raise OSError(f"{output}: the folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise OSError(f"{output}: the folder {output.parent} is not writable")


def stabilize(
    video: Path,
    output: Path,
    config: StabilizeConfig,
    *,
    checkpoint: str | None = None,
    work_dir: Path | None = None,
    side_by_side: bool = False,
    evaluate_output: bool = True,
    progress: bool = True,
) -> dict:
    """Stabilize ``video`` into ``output``; write ``report.json`` and the path plot beside it."""
    from evaluation.metrics import evaluate

    output = Path(output)
    check_output(output)
    work_dir = Path(work_dir) if work_dir is not None else output.parent / f".{output.stem}.gavs-work"
    device = pick_device(config.device)
    timer = StageTimer()

    with timer.stage("poses"):
        clip, poses_key, poses_cached = decode_and_pose(
            video, work_dir, config.resolution, config.max_frames, config.poses
        )
    with timer.stage("smoothing"):
        smoothed, smoothing = plan_path(clip, config)
    with timer.stage("finetune"):
        where = {"checkpoint": checkpoint, "work_dir": work_dir, "device": device, "progress": progress}
        tuned = finetuned_network(clip, poses_key=poses_key, config=config, **where)
    with timer.stage("render"):
        inputs = clip.frames
        if config.render.full_resolution:
            inputs = read_video(video, config.max_frames).frames
            if len(inputs) != len(clip.frames):
                raise VideoError(
                    f"{video}: decoded {len(inputs)} frames at full size but {len(clip.frames)} before"
                )
        full = inputs if config.render.full_resolution else None
        rendered = rerender(
            tuned.net, clip, smoothed, config, device=device, progress=progress, full_frames=full
        )
    with timer.stage("write"):
        tune = None if config.tune == "none" else config.tune
        side = inputs if side_by_side else None
        write_output(video, output, rendered.frames, clip.fps, side_by_side=side, crf=config.crf, tune=tune)
        plot_paths(clip.poses.c2w, smoothed, output.with_suffix(".path.png"))
    metrics = None
    if evaluate_output:
        with timer.stage("evaluate"):
            metrics = evaluate(inputs, rendered.frames, clip.fps, progress=progress)

    result = Stabilized(clip, poses_cached, smoothing, tuned, rendered, metrics, timer.seconds)
    report = build_report(video, output, config, device, result)
    write_atomic(output.with_suffix(".report.json"), json.dumps(report, indent=1, default=str))
    return report


def build_report(
    video: Path, output: Path, config: StabilizeConfig, device: torch.device, result: Stabilized
) -> dict:
    """The ``report.json`` of one run: sizes, poses, smoothing, network, cache hits, timings,
    the finetuning curve, where the output's pixels came from, metrics and the config."""
    clip, tuned, rendered, timings = result.clip, result.tuned, result.rendered, result.timings
    count = len(clip.frames)
    posed = set(clip.poses.frame_ids.tolist())
    frames = rendered.frames
    return {
        "input": str(video),
        "output": str(output),
        "frames": count,
        "working_size": [int(clip.frames.shape[2]), int(clip.frames.shape[1])],
        "output_size": [int(frames.shape[2]), int(frames.shape[1])],
        "source_size": list(clip.source_size),
        "fps": clip.fps,
        "device": str(device),
        "pose_method": clip.poses.pose_method,
        "posed_frames": len(posed),
        "unposed_frames": [i for i in range(count) if i not in posed],
        "strength": config.strength,
        "smoothing": result.smoothing,
        "network": tuned.provenance["init"],
        **{k: v for k, v in tuned.provenance.items() if k != "init"},
        "cached": {"poses": result.poses_cached, "finetune": tuned.cached},
        "timings_s": timings,
        "seconds_per_frame": {k: round(v / count, 4) for k, v in timings.items()},
        "finetune_curve": tuned.curve,
        "canvas_filled_from_neighbours": round(rendered.canvas_filled, 5),
        "pixel_origins": {
            "mean": dict(zip(ORIGINS, rendered.origin_shares.mean(0).round(5).tolist(), strict=True)),
            "per_frame": {
                name: rendered.origin_shares[:, i].round(5).tolist() for i, name in enumerate(ORIGINS)
            },
        },
        "metrics": result.metrics,
        "config": asdict(config),
    }
