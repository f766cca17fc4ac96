"""``gavs-render``'s readouts: more than stabilization from the same reconstruction, as in the
Video Gaussian Representation paper. Each reads a clip's poses and finetuned networks (from
the work folder of an earlier ``gavs-stabilize`` run, or made here) and renders with the same
neighbour fill, fusion and detail transfer as stabilization.

- ``render_path``: the clip along a new camera path, a preset or a path file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.atomic import write_atomic
from data_prep.video import probe
from infer.camera_paths import PRESETS, PathConfig, PathFileError, preset_path, read_path_file
from infer.posing import DecodedClip, WorkFolderError
from infer.stabilize import (
    SegmentPlan,
    StabilizeConfig,
    Stabilized,
    StageTimer,
    build_report,
    check_output,
    output_encoding,
    pick_device,
    plan_path,
    reconstruct,
    render_video,
)


@dataclass
class ReadoutConfig(StabilizeConfig):
    """gavs-stabilize's settings (they find its work folder's poses and networks), and the
    readouts' own."""

    path: PathConfig = field(default_factory=PathConfig)


def work_folder(output: Path, work_dir: Path | None) -> tuple[Path, bool]:
    """The work folder, and whether it must already hold the clip's poses and networks: a
    folder the user names must (it is an earlier run's); the default one beside OUT is filled
    here."""
    if work_dir is None:
        return output.parent / f".{output.stem}.gavs-work", False
    if not Path(work_dir).is_dir():
        raise WorkFolderError(f"{work_dir}: no such work folder (leave out --work-dir to make one)")
    return Path(work_dir), True


def _path_checker(path: str) -> Callable[[DecodedClip], np.ndarray | None]:
    """What ``path`` names, checked against the decoded clip before any finetuning: None for a
    preset, or the file's cameras ``[T, 4, 4]``."""
    if path in PRESETS:
        return lambda clip: None
    file = Path(path)
    if not file.is_file():
        raise PathFileError(f"{path}: neither a path preset ({', '.join(PRESETS)}) nor a file")

    def check(clip: DecodedClip) -> np.ndarray:
        c2w = read_path_file(file, len(clip.frames))
        segments = [s for s in clip.segments if s.poses is not None]
        if len(segments) != 1 or segments[0].length != len(clip.frames):
            raise PathFileError(
                f"{path}: a path file needs a clip posed as one 3D reconstruction, and this one has "
                f"{len(clip.segments)} segments in {len(clip.shots)} shots; use a preset"
            )
        return c2w

    return check


def new_plans(
    built_plans: list[SegmentPlan],
    clip: DecodedClip,
    path: str,
    c2w: np.ndarray | None,
    config: ReadoutConfig,
) -> list[SegmentPlan]:
    """Each 3D segment's plan with its cameras replaced by ``path``'s, or by the path file's
    ``c2w [T, 4, 4]`` (2D segments keep their stabilizing corrections: they have no 3D cameras
    to move)."""
    plans = []
    for plan in built_plans:
        if plan.smoothed is None:
            plans.append(plan)
            continue
        if c2w is not None:
            cameras = c2w[plan.segment.start : plan.segment.end]
        elif path == "steady":
            steadier = replace(config, strength=config.path.steady_strength)
            cameras = plan_path(clip.posed(plan.segment), steadier)[0]
        else:
            cameras = preset_path(path, plan.smoothed, config.path)
        plans.append(replace(plan, smoothed=cameras, smoothing={**plan.smoothing, "path": path}))
    return plans


def render_path(
    video: Path,
    output: Path,
    config: ReadoutConfig,
    path: str,
    *,
    checkpoint: str | None = None,
    work_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Render ``video`` along ``path`` (a preset in ``PRESETS`` or a path file) into
    ``output``, with ``OUT.report.json`` and ``OUT.path.png`` beside it."""
    warn = lambda message: print(f"warning: {message}", file=sys.stderr)  # noqa: E731
    output, video = Path(output), Path(video)
    check = _path_checker(path)
    work_dir, cached_only = work_folder(output, work_dir)
    info = probe(video)
    encoding, warnings = output_encoding(info, config)
    check_output(output, encoding, info, work_dir, side_by_side=False)
    for message in warnings:
        warn(message)
    device, timer = pick_device(config.device), StageTimer()
    where = {"checkpoint": checkpoint, "work_dir": work_dir, "device": device, "progress": progress}
    found: dict[str, np.ndarray | None] = {}
    built = reconstruct(
        video,
        config,
        timer=timer,
        warn=warn,
        cached_only=cached_only,
        check=lambda clip: found.setdefault("c2w", check(clip)),
        **where,
    )
    plans = new_plans(built.plans, built.clip, path, found["c2w"], config)
    shares, canvas_filled, encoding = render_video(
        video, output, built, plans, config, encoding=encoding, device=device, timer=timer, progress=progress
    )
    result = Stabilized(
        built.clip,
        built.poses_cached,
        plans,
        built.tuned,
        shares,
        canvas_filled,
        encoding,
        warnings + built.warnings,
        None,
        timer,
    )
    report = build_report(video, output, config, device, result)
    report["readout"] = {
        "kind": "path",
        "path": path,
        "settings": asdict(config.path),
        "cameras": {p.segment.start: p.smoothed.tolist() for p in plans if p.smoothed is not None},
    }
    write_atomic(output.with_suffix(".report.json"), json.dumps(report, indent=1, default=str))
    return report
