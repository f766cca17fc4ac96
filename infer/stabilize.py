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
from tqdm import tqdm

from data_prep.config import ConfigError
from data_prep.poses import PoseConfig
from infer.canvas import pad_amounts, pad_canvas
from infer.coverage import bounded_path, near_depth
from infer.finetune import FinetuneConfig, finetune
from infer.media import plot_paths, write_output
from infer.posing import PosedClip, cache_key, decode_and_pose
from infer.trajectory import GAVS_SIGMA, smooth_path
from model.cameras import relative_pose
from model.network import GaussianPredictor, NetworkConfig
from model.release import load_predictor, resolve, save_predictor, sha256
from model.render import render


@dataclass
class StabilizeConfig:
    resolution: int = 320  # working resolution: the longer side, in pixels
    strength: float = 4.0  # 1 is GaVS's smoothing (31-frame window, sigma 4); 4 is sigma 16
    smoothing: str = "bounded"  # or "gaussian": the plain window, even where it leaves the canvas
    max_frames: int | None = None
    device: str = "auto"  # auto: CUDA when available
    render_batch: int = 4
    seed: int = 0
    # the network trained from scratch on the clip when no checkpoint is given
    network: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(backbone="resnet18", decoder_channels=(8, 16, 32, 64, 128))
    )
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
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
    clip: PosedClip, poses_key: str, config: StabilizeConfig, checkpoint: str | None, work_dir: Path,
    device: torch.device, progress: bool,
) -> tuple[GaussianPredictor, dict, bool]:  # fmt: skip
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


def plan_path(clip: PosedClip, config: StabilizeConfig) -> tuple[np.ndarray, dict]:
    """The smoothed poses of the posed frames and how they were found. ``bounded`` bends the
    Gaussian path back towards the real camera wherever the padded canvas would not cover
    the output frame (see ``infer.coverage``)."""
    c2w = torch.from_numpy(clip.poses.c2w)
    smoothed = smooth_path(c2w, config.strength)
    summary: dict = {"mode": config.smoothing, "strength": config.strength,
                     "sigma_frames": GAVS_SIGMA * config.strength}  # fmt: skip
    if config.smoothing == "bounded" and config.strength > 0:
        H, W = clip.frames.shape[1:3]
        rows, cols = pad_amounts(H, W, config.finetune.pad)
        depth = near_depth(clip.poses)
        smoothed, bending = bounded_path(c2w, smoothed, torch.from_numpy(clip.poses.K), (W, H), (cols, rows),
                                         depth, GAVS_SIGMA * config.strength)  # fmt: skip
        summary.update(near_depth=depth, **bending)
    return smoothed.numpy(), summary


@torch.no_grad()
def render_stabilized(net: GaussianPredictor, clip: PosedClip, smoothed: np.ndarray, config: StabilizeConfig,
                      device: torch.device, progress: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Every frame at its smoothed pose (posed frames) or as it was (unposed ones), and each
    frame's share of pixels the render covers (alpha > 0.5; 1 for unposed frames)."""
    frames = clip.frames.copy()
    coverage = np.ones(len(frames))
    ids = clip.poses.frame_ids
    H, W = frames.shape[1:3]
    K = torch.from_numpy(clip.poses.K).float().to(device)
    original = torch.from_numpy(clip.poses.c2w).float().to(device)
    target = torch.from_numpy(smoothed).float().to(device)
    bar = tqdm(
        range(0, len(ids), config.render_batch), desc="render", disable=not progress, dynamic_ncols=True
    )
    for start in bar:
        batch = slice(start, start + config.render_batch)
        images = torch.from_numpy(frames[ids[batch]]).permute(0, 3, 1, 2).float().div(255).to(device)
        B = len(images)
        padded, valid, K_pad = pad_canvas(images, K.expand(B, 3, 3), config.finetune.pad)
        out = net(padded, K_pad, valid)
        viewmats = relative_pose(original[batch], target[batch])[:, None]  # source camera -> smoothed camera
        result = render(
            out.gaussians, viewmats, K.expand(B, 1, 3, 3), W, H, backend=config.finetune.render_backend
        )
        color = result.color[:, 0].clamp(0, 1).permute(0, 2, 3, 1).mul(255).round().byte().cpu().numpy()
        frames[ids[batch]] = color
        coverage[ids[batch]] = (result.alpha[:, 0, 0] > 0.5).float().mean((1, 2)).cpu().numpy()
    return frames, coverage


def stabilize(video: Path, output: Path, config: StabilizeConfig, checkpoint: str | None = None,
              work_dir: Path | None = None, side_by_side: bool = False, evaluate_output: bool = True,
              progress: bool = True) -> dict:  # fmt: skip
    """Stabilize ``video`` into ``output``; write ``report.json`` and the path plot beside it."""
    from infer.metrics import evaluate

    output = Path(output)
    if not output.parent.is_dir():
        raise OSError(f"{output}: the folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise OSError(f"{output}: the folder {output.parent} is not writable")
    if config.smoothing not in SMOOTHING_MODES:
        raise ConfigError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {config.smoothing!r}")
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
    frames, coverage = render_stabilized(net, clip, smoothed, config, device, progress)
    timed("render", t)

    t = time.perf_counter()
    write_output(video, output, frames, clip.fps, side_by_side=clip.frames if side_by_side else None)
    plot_paths(clip.poses.c2w, smoothed, output.with_suffix(".path.png"))
    timed("write", t)

    metrics = None
    if evaluate_output:
        t = time.perf_counter()
        metrics = evaluate(clip.frames, frames, clip.fps, progress=progress)
        timed("evaluate", t)

    count = len(clip.frames)
    posed = set(clip.poses.frame_ids.tolist())
    report = {
        "input": str(video),
        "output": str(output),
        "frames": count,
        "working_size": [int(clip.frames.shape[2]), int(clip.frames.shape[1])],
        "source_size": list(clip.source_size),
        "fps": clip.fps,
        "device": str(device),
        "pose_method": clip.poses.method,
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
        "render_coverage": {"mean": float(coverage.mean()), "min": float(coverage.min())},
        "metrics": metrics,
        "config": asdict(config),
    }
    report_path = output.with_suffix(".report.json")
    tmp = report_path.with_name(f".{report_path.name}.partial")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, report_path)
    return report
