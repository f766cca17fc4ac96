"""The gavs-stabilize pipeline: poses, smoothing, finetuning, rendering, writing, report.

Stages 1 (poses) and 3 (finetuning) are cached in the work directory under keys of
everything that changes them, so a rerun with another strength goes straight to rendering.
Frames that could not be posed are copied through unchanged and listed in the report; none
is given an invented pose.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.atomic import write_atomic
from common.config import ConfigError
from data_prep.poses import PoseConfig
from data_prep.video import VideoError, read_video
from infer.canvas import pad_amounts
from infer.compose import ORIGINS
from infer.coverage import bounded_path, near_depth
from infer.finetune import FinetuneConfig, finetune
from infer.media import plot_paths, write_output
from infer.posing import PosedClip, cache_key, decode_and_pose
from infer.rerender import RenderConfig, render_stabilized
from infer.trajectory import GAVS_SIGMA, acceleration_weight, gaussian_window_path, min_acceleration_path
from model.network import GaussianPredictor, NetworkConfig
from model.release import load_predictor, resolve, save_predictor, sha256


@dataclass
class StabilizeConfig:
    resolution: int = 320  # working resolution: the longer side, in pixels
    strength: float = 4.0  # 1 is GaVS's smoothing (31-frame window, sigma 4); 4 is sigma 16
    smoothing: str = "bounded"  # minimum acceleration inside the canvas; or "gaussian": GaVS's window
    max_frames: int | None = None
    device: str = "auto"  # auto: CUDA when available
    # H.264 quality of the output. x264's default tune gives B-frames coarser quantisers,
    # which cost 10% of the detail that detail transfer keeps; "grain" keeps it (files
    # about 1.7x larger at the same crf); "none" is x264's default.
    crf: int = 18
    tune: str = "grain"
    seed: int = 0
    # the network trained from scratch on the clip when no checkpoint is given
    network: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(backbone="resnet18", decoder_channels=(8, 16, 32, 64, 128))
    )
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    poses: PoseConfig = field(default_factory=PoseConfig)


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


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
    poses_key: str,
    config: StabilizeConfig,
    checkpoint: str | None,
    work_dir: Path,
    device: torch.device,
    progress: bool,
) -> tuple[GaussianPredictor, dict, bool]:
    """The clip's finetuned network, from the cache when this clip, start and config were seen."""
    net, start = _initial_network(config, checkpoint)
    key = cache_key("finetune/1", poses_key, start, asdict(net.config), asdict(config.finetune), config.seed)
    folder = work_dir / "finetune" / key
    if (folder / "model.safetensors").is_file():
        curve = json.loads((folder / "curve.json").read_text())
        return load_predictor(folder).to(device), {**start, "curve": curve}, True
    torch.manual_seed(config.seed)
    curve = finetune(net, clip.frames, clip.poses, config.finetune, device, progress)
    save_predictor(net, folder, extra={"clip": poses_key}, files={"curve.json": json.dumps(curve)})
    return net.eval(), {**start, "curve": curve}, False


SMOOTHING_MODES = ("bounded", "gaussian")
X264_TUNES = ("grain", "film", "animation", "stillimage", "psnr", "ssim", "none")


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
        rows, cols = pad_amounts(H, W, config.finetune.pad)
        depth = near_depth(clip.poses)
        smoothed, bending = bounded_path(
            c2w, smoothed, torch.from_numpy(clip.poses.K), (W, H), (cols, rows), depth, config.strength
        )
        summary.update(near_depth=depth, **bending)
    return smoothed.numpy(), summary


def stabilize(
    video: Path,
    output: Path,
    config: StabilizeConfig,
    checkpoint: str | None = None,
    work_dir: Path | None = None,
    side_by_side: bool = False,
    evaluate_output: bool = True,
    progress: bool = True,
) -> dict:
    """Stabilize ``video`` into ``output``; write ``report.json`` and the path plot beside it."""
    from evaluation.metrics import evaluate

    output = Path(output)
    if not output.parent.is_dir():
        raise OSError(f"{output}: the folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise OSError(f"{output}: the folder {output.parent} is not writable")
    if not 0 <= config.crf <= 51:
        raise ConfigError(f"crf must be 0-51 (x264's scale, lower is better), got {config.crf}")
    if config.tune not in X264_TUNES:
        raise ConfigError(f"tune must be one of {', '.join(X264_TUNES)}, got {config.tune!r}")
    if config.smoothing not in SMOOTHING_MODES:
        raise ConfigError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {config.smoothing!r}")
    if config.strength < 0:
        raise ConfigError(f"strength must be 0 (no smoothing) or more, got {config.strength}")
    work_dir = Path(work_dir) if work_dir is not None else output.parent / f".{output.stem}.gavs-work"
    device = pick_device(config.device)
    timings: dict[str, float] = {}

    def timed(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 3)

    t = time.perf_counter()
    clip, poses_key, poses_cached = decode_and_pose(
        video, work_dir, config.resolution, config.max_frames, config.poses
    )
    timed("poses", t)

    t = time.perf_counter()
    smoothed, smoothing = plan_path(clip, config)
    timed("smoothing", t)

    t = time.perf_counter()
    net, start, finetune_cached = finetuned_network(
        clip, poses_key, config, checkpoint, work_dir, device, progress
    )
    timed("finetune", t)

    t = time.perf_counter()
    inputs = clip.frames
    if config.render.full_resolution:
        inputs = read_video(video, config.max_frames).frames
        if len(inputs) != len(clip.frames):
            raise VideoError(
                f"{video}: decoded {len(inputs)} frames at full size but {len(clip.frames)} before"
            )
    rendered = render_stabilized(
        net,
        clip,
        smoothed,
        config.finetune.pad,
        config.render,
        config.finetune.render_backend,
        device,
        progress,
        inputs if config.render.full_resolution else None,
    )
    frames = rendered.frames
    timed("render", t)

    t = time.perf_counter()
    write_output(
        video,
        output,
        frames,
        clip.fps,
        side_by_side=inputs if side_by_side else None,
        crf=config.crf,
        tune=None if config.tune == "none" else config.tune,
    )
    plot_paths(clip.poses.c2w, smoothed, output.with_suffix(".path.png"))
    timed("write", t)

    metrics = None
    if evaluate_output:
        t = time.perf_counter()
        metrics = evaluate(inputs, frames, clip.fps, progress=progress)
        timed("evaluate", t)

    count = len(clip.frames)
    posed = set(clip.poses.frame_ids.tolist())
    report = {
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
        "smoothing": smoothing,
        "network": start["init"],
        **{k: v for k, v in start.items() if k not in ("init", "curve")},
        "cached": {"poses": poses_cached, "finetune": finetune_cached},
        "timings_s": timings,
        "seconds_per_frame": {k: round(v / count, 4) for k, v in timings.items()},
        "finetune_curve": start["curve"],
        "canvas_filled_from_neighbours": round(rendered.canvas_filled, 5),
        "pixel_origins": {
            "mean": dict(zip(ORIGINS, rendered.origin_shares.mean(0).round(5).tolist(), strict=True)),
            "per_frame": {
                name: rendered.origin_shares[:, i].round(5).tolist() for i, name in enumerate(ORIGINS)
            },
        },
        "metrics": metrics,
        "config": asdict(config),
    }
    report_path = output.with_suffix(".report.json")
    write_atomic(report_path, json.dumps(report, indent=1, default=str))
    return report
