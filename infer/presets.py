"""Presets chosen by device, and the time a run is expected to take, said before it starts.

``--preset default`` gives a CUDA device the config's defaults, GaVS's full finetuning, and a
CPU the ``cpu`` preset: the shipped prior, finetuned with about 1/200 of GaVS's renders; ``fast``
(a few steps, a small working size) and ``gavs`` (GaVS's published setting, its smoothing
included: ``configs/stabilize/gavs.yaml``) choose outright. A ``--config`` file and
``key=value`` overrides apply on top of the preset.

The estimate is the run's work (frames, finetuning renders, pixels) times per-device unit costs
fitted to measured runs (``configs/costs.yaml``; docs/BENCHMARKS.md has the fit). A device
without measured costs gets no estimate, and says so.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
import yaml

from common.config import load_config, resolve_preset
from data_prep.ingest import working_size
from data_prep.video import VideoInfo
from infer.finetune import step_count

Choice = Literal["default", "fast", "gavs"]
CHOICES: tuple[Choice, ...] = ("default", "fast", "gavs")


def add_preset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=CHOICES,
        default="default",
        help="default: GaVS's full finetuning on CUDA, the cpu preset on a CPU (the shipped prior "
        "finetuned with about 1/200 of GaVS's renders); fast: a quick preview from the prior; "
        "gavs: GaVS's published setting. --config and key=value apply on top",
    )


def pick_device(setting: str) -> torch.device:
    """The device a config's ``device`` setting names (auto: CUDA when available)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def configured(schema: type, choice: Choice, config: str | None, overrides: list[str]):
    """A ``schema`` (StabilizeConfig or a subclass) from ``choice``'s preset for the device
    the settings name, then ``config`` (a preset name or a YAML file), then ``overrides``;
    gavs-stabilize and gavs-render resolve theirs alike, so a readout finds a stabilize run's
    cache."""
    chosen = [resolve_preset("stabilize", config)] if config else []
    device = pick_device(load_config(schema, chosen, overrides).device)
    name, path = preset_for(choice, device)
    layers = chosen if path is None else [path, *chosen]
    return load_config(schema, layers, [*overrides, f"preset={name}"])


def preset_for(choice: Choice, device: torch.device) -> tuple[str, Path | None]:
    """What ``choice`` means on ``device``: a name for the report, and the shipped preset file
    to load (None: the config's own defaults, which are GaVS's finetuning)."""
    if choice == "default" and device.type == "cuda":
        return "default", None
    name = "cpu" if choice == "default" else choice
    return name, resolve_preset("stabilize", name)


def unit_costs(device: torch.device) -> dict[str, float] | None:
    """The measured unit costs of ``device``'s kind, or None where none were measured."""
    table = yaml.safe_load((resources.files("configs") / "costs.yaml").read_text())
    return table.get(device.type)


def estimate_seconds(
    config, info: VideoInfo, device: torch.device, evaluate: bool
) -> dict[str, float] | None:
    """Expected seconds per stage of stabilizing the clip ``info`` describes with ``config``
    (a StabilizeConfig), or None without unit costs for ``device``. The clip is taken as one
    shot: the shots are not known yet, and each further one would add up to ``min_steps``."""
    costs = unit_costs(device)
    if costs is None:
        return None
    frames = clip_frames(config, info)
    work = working_size(info.width, info.height, config.resolution)
    work_mpx, out_mpx = work[0] * work[1] / 1e6, info.width * info.height / 1e6
    tuning = config.finetune
    steps = step_count(frames, tuning)
    renders = steps * tuning.batch * (tuning.neighbours + 1)
    seconds = {
        "poses": frames * work_mpx * costs["poses_per_frame_mpx"],
        "finetune": work_mpx
        * (steps * costs["finetune_per_step_mpx"] + renders * costs["finetune_per_render_mpx"]),
        "render": frames
        * (work_mpx * costs["render_per_frame_mpx"] + out_mpx * costs["write_per_frame_mpx"]),
    }
    if evaluate:
        seconds["evaluate"] = frames * costs["evaluate_per_frame"]
    return seconds


def clip_frames(config, info: VideoInfo) -> int:
    """The frames a run will stabilize, as far as the container says (0 where it does not)."""
    frames = info.promised_frames or 0
    return min(frames, config.max_frames) if config.max_frames else frames


def announcement(preset: str, device: torch.device, frames: int, seconds: dict[str, float] | None) -> str:
    """The line printed before the expensive stages: preset, device and the estimate."""
    line = f"{f'preset {preset}' if preset != 'none' else 'settings as given'} on {device.type}"
    if seconds is None:
        return f"{line}: no measured costs for {device.type} yet, so no estimate (the stages show their own)"
    parts = ", ".join(f"{stage} {_duration(s)}" for stage, s in seconds.items())
    return f"{line}: {frames} frames, about {_duration(sum(seconds.values()))} ({parts})"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
