"""``gavs-render``'s readouts: more than stabilization from the same reconstruction, as in the
Video Gaussian Representation paper. Each reads a clip's poses and finetuned networks (from
the work folder of an earlier ``gavs-stabilize`` run, or made here) and renders with the same
neighbour fill, fusion and detail transfer as stabilization.

Each readout is a ``Readout`` (new cameras, a layout, report details) that ``render`` runs
through gavs-stabilize's own ``run_readout``:

- ``path_readout``: the clip along a new camera path, a preset or a path file;
- ``stereo_readout``: left and right eyes, side by side, top-bottom or anaglyph.

``run_depth`` writes the third readout, each frame's depth (``infer.depth``), into a folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path, write_atomic
from common.config import ConfigError
from data_prep.video import probe
from infer.camera_paths import PRESETS, PathConfig, PathFileError, preset_path, read_path_file
from infer.depth import DepthConfig, check_depth_output, write_depths
from infer.posing import DecodedClip, WorkFolderError
from infer.rerender import source_depths
from infer.stabilize import (
    Readout,
    Reconstruction,
    SegmentPlan,
    StabilizeConfig,
    StageTimer,
    output_encoding,
    pick_device,
    plan_path,
    print_warning,
    reconstruct,
    run_readout,
)
from infer.stereo import (
    LAYOUTS,
    EyeSetup,
    StereoConfig,
    StereoLayout,
    beyond_budget,
    eye_cameras,
    eye_setup,
    lay_out,
    layout_outputs,
    layout_size,
    tagged,
)
from model.render import resolve_backend


@dataclass
class ReadoutConfig(StabilizeConfig):
    """gavs-stabilize's settings (they find its work folder's poses and networks), and the
    readouts' own."""

    path: PathConfig = field(default_factory=PathConfig)
    stereo: StereoConfig = field(default_factory=StereoConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)


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
            # on the canvas the segment's network was finetuned on
            steadier = replace(plan.canvas_config(config), strength=config.path.steady_strength, max_zoom=1.0)
            cameras = plan_path(clip.posed(plan.segment), steadier)[0]
        else:
            cameras = preset_path(path, plan.smoothed, config.path)
        plans.append(replace(plan, smoothed=cameras, zoom=None, smoothing={**plan.smoothing, "path": path}))
    return plans


def render(
    video: Path,
    output: Path,
    config: ReadoutConfig,
    readout: Readout,
    *,
    work_dir: Path | None,
    progress: bool,
) -> dict:
    """Reconstruct ``video`` (or find it in the work folder), render it with ``readout``'s
    cameras and layout into ``output``, and write ``OUT.report.json`` and ``OUT.path.png``."""
    work_dir, cached_only = work_folder(Path(output), work_dir)
    return run_readout(
        video,
        output,
        config,
        readout,
        work_dir=work_dir,
        cached_only=cached_only,
        progress=progress,
    )


def path_readout(path: str, config: ReadoutConfig) -> Readout:
    """The clip along ``path``: a preset in ``PRESETS`` or a path file."""
    check = _path_checker(path)
    found: dict[str, np.ndarray | None] = {}
    return Readout(
        kind="path",
        check=lambda clip: found.setdefault("c2w", check(clip)),
        plans=lambda built: new_plans(built.plans, built.clip, path, found["c2w"], config),
        details=lambda plans: {"path": path, "settings": asdict(config.path)},
    )


def scene_depths(
    built: Reconstruction, k: int, config: ReadoutConfig, frames: int = 8
) -> tuple[np.ndarray, str]:
    """``[N]`` depths that size 3D segment ``k``'s eyes, and their source: its SfM points'
    observations, or where it has none (posed by rotation alone, so with no scale) the
    finetuned reconstruction's own rendered depth on ``frames`` evenly spaced frames, in the
    units the eyes are rendered in."""
    segment = built.plans[k].segment
    poses = segment.poses
    if len(poses.observations):
        return poses.observations[:, 3], "sfm"
    picked = np.unique(np.linspace(0, len(poses.c2w) - 1, frames).round().astype(int))
    K = poses.K if poses.K.ndim == 2 else poses.K[picked]
    sampled = replace(poses, K=K, c2w=poses.c2w[picked], frame_ids=poses.frame_ids[picked])
    net = built.network(k)
    render = {"pad": built.plans[k].pad, "config": config.render, "backend": config.backend}
    posed = replace(built.clip.posed(segment), poses=sampled)
    depths = source_depths(net, posed, device=next(net.parameters()).device, progress=False, **render)
    return torch.cat([d[d > 0] for d in depths]).cpu().double().numpy(), "rendered"


def stereo_readout(layout: StereoLayout, config: ReadoutConfig) -> Readout:
    """Left and right eyes along the stabilized (or original) path, laid out as ``layout``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"no stereo layout {layout!r}; layouts: {', '.join(LAYOUTS)}")
    eyes: dict[int, EyeSetup] = {}
    comfort: dict[int, float] = {}  # the share of the scene's depths beyond the budget
    sources: dict[int, str] = {}  # where those depths came from
    shifts: dict[int, float] = {}  # the right eye's principal-point shift, px at the output size

    def plans(built: Reconstruction) -> list[SegmentPlan]:
        out, width = [], built.clip.frames.shape[2]
        scale = width / built.clip.info.size[0]
        for k, plan in enumerate(built.plans):
            if plan.smoothed is None:
                out.append(plan)
                continue
            poses, start = plan.segment.poses, plan.segment.start
            focal = float(poses.per_frame_K()[0, 0, 0])
            depths, sources[start] = scene_depths(built, k, config)
            setup = eye_setup(config.stereo, depths, focal=focal, scale=scale, width=width)
            if sources[start] == "rendered" and config.stereo.baseline is None:
                print_warning(
                    f"frames {start}-{plan.segment.end - 1} were posed by rotation alone: with no SfM "
                    f"points, the eyes ({setup.baseline:.3g} apart, the screen at depth "
                    f"{setup.screen:.3g}) follow the reconstruction's own depth on a few frames; "
                    "set stereo.baseline to choose"
                )
            centre = plan.smoothed if config.stereo.eye_path == "stabilized" else poses.c2w
            eyes[start], shifts[start] = setup, setup.shifts[1] / scale
            budget = config.stereo.budget * width  # px at the working size
            comfort[start] = beyond_budget(depths, setup, focal=focal, budget=budget)
            eyes_c2w = eye_cameras(centre, setup.baseline)
            out.append(replace(plan, smoothed=eyes_c2w, shifts=np.array(setup.shifts), zoom=None))
        return out

    return Readout(
        kind="stereo",
        plans=plans,
        layout=lambda views: lay_out(layout, views),
        size=lambda w, h: layout_size(layout, w, h),
        outputs=lambda output: layout_outputs(layout, output),
        tags=lambda encoding, output: tagged(layout, encoding, output),
        details=lambda _: {
            "layout": layout,
            "settings": asdict(config.stereo),
            "baseline": {start: e.baseline for start, e in eyes.items()},
            "screen_depth": {start: e.screen if np.isfinite(e.screen) else None for start, e in eyes.items()},
            "convergence_shift": shifts,
            "beyond_budget": comfort,
            "depths_from": sources,
        },
    )


def run_depth(
    video: Path,
    output: Path,
    config: ReadoutConfig,
    *,
    work_dir: Path | None,
    progress: bool,
) -> dict:
    """Reconstruct ``video`` (or find it in the work folder) and write each frame's depth at
    the input's size into the folder ``output``, with depth.json, preview.mp4 and
    report.json (the sources' consistency, timings)."""
    output, video = Path(output), Path(video)
    work_dir, cached_only = work_folder(output, work_dir)
    info = probe(video)
    encoding, _ = output_encoding(info, config)  # the input's size, upright
    size = (encoding.width, encoding.height)
    check_depth_output(output, size, info, work_dir)
    device, timer = pick_device(config.device), StageTimer()
    resolve_backend(config.backend, device)  # builds the renderer's kernels now, not mid-stage
    where = {"work_dir": work_dir, "device": device, "progress": progress}
    built = reconstruct(video, config, timer=timer, warn=print_warning, cached_only=cached_only, **where)
    with atomic_path(output, folder=True) as folder:  # the folder appears whole or not at all
        with timer.stage("depth"):
            depth = write_depths(
                folder, built, config, config.depth, size=size, device=device, progress=progress
            )
        report = depth_report(video, output, config, device, built, depth, timer)
        write_atomic(folder / "report.json", json.dumps(report, indent=1, default=str))
    return report


def depth_report(
    video: Path,
    output: Path,
    config: ReadoutConfig,
    device: torch.device,
    built: Reconstruction,
    depth: dict,
    timer: StageTimer,
) -> dict:
    """The depth readout's ``report.json``: sizes, segments, cache hits, the sources'
    consistency, timings and the config."""
    clip, count = built.clip, len(built.clip.frames)
    return {
        "input": str(video),
        "output": str(output),
        "frames": count,
        "working_size": [int(clip.frames.shape[2]), int(clip.frames.shape[1])],
        "source_size": list(clip.info.size),
        "source_rotation": clip.info.rotation,
        "warnings": built.warnings,
        "device": str(device),
        "segments": [
            {
                "start": p.segment.start,
                "end": p.segment.end,
                "shot": p.segment.shot,
                "method": p.segment.method,
            }
            for p in built.plans
        ],
        "cached": {"poses": built.poses_cached, "finetune": all(t.cached for t in built.tuned.values())},
        "readout": {"kind": "depth", **depth},
        "timings_s": timer.seconds,
        "seconds_per_frame": {k: round(v / count, 4) for k, v in timer.seconds.items()},
        "peak_rss_gb": timer.peak_rss_gb,
        "config": asdict(config),
    }
