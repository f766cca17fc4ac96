"""``gavs-stabilize``: stabilize a shaky clip by per-frame 3D Gaussians re-rendered on a smooth path."""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

from common import interrupt
from common.config import (
    ConfigError,
    add_flags,
    config_yaml,
    flag_overrides,
    preset_names,
)
from common.interrupt import Interrupted, interrupted_line
from data_prep.poses import PoseError
from data_prep.video import VideoError
from infer.presets import add_preset_flag, configured
from infer.stabilize import StabilizeConfig, stabilize
from model.release import ReleaseError

# StabilizeConfig fields that get an option of their own; every field is also key=value
FLAGS = [
    "strength",
    "smoothing",
    "horizon_lock",
    "max_zoom",
    "crf",
    "resolution",
    "max_frames",
    "device",
    "strict",
    "checkpoint",
]
OUTPUT_SUFFIX = ".stabilized.mp4"  # the output's name in an output folder: CLIP.stabilized.mp4


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gavs-stabilize",
        description=(
            "Stabilize a video: pose every frame (pycolmap), smooth the camera path, finetune the "
            "Gaussian predictor on the clip, and re-render each frame from its smoothed pose. Writes OUT, "
            "OUT.report.json (timings, poses, loss curve, metrics) and OUT.path.png (the camera path). "
            "Poses and finetuning are cached in the work folder, so rerunning with another --strength "
            "only renders again. Several inputs (or a quoted glob) go to an output folder as "
            f"CLIP{OUTPUT_SUFFIX}; a clip that fails is reported and the others go on. Ctrl-C, SIGTERM "
            "or SIGUSR1 stops it within about a second (exit 128 + the signal's number); rerunning "
            "the same command keeps the shots already posed and continues finetuning from its last "
            "checkpoint (finetune.checkpoint_every_s)."
        ),
        epilog=(
            f"Presets for --config: {', '.join(preset_names('stabilize'))} (or a YAML file). Every setting "
            "can be overridden as key.sub=value, e.g. finetune.steps_per_frame=2 canvas.pad=0.15; "
            "--print-config lists them all with their values."
        ),
    )
    parser.add_argument(
        "input",
        nargs="+",
        metavar="INPUT",
        help="the shaky video(s), or a quoted glob such as 'clips/*.mp4'; arguments of the form "
        "key.sub=value are config overrides",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="the stabilized video (.mp4), or a folder (ending in /) for several"
    )
    add_flags(parser, StabilizeConfig, FLAGS)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="cache folder (default: .OUT.gavs-work beside OUT; one per clip in a batch)",
    )
    parser.add_argument("--side-by-side", action="store_true", help="also write OUT.side-by-side.mp4")
    parser.add_argument("--no-eval", action="store_true", help="skip scoring input and output (gavs-eval)")
    add_preset_flag(parser)
    parser.add_argument("--config", help="a preset name or a YAML file, applied over --preset")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def expand(inputs: list[str]) -> list[Path]:
    """The named files, with glob patterns that name no file expanded (sorted)."""
    found = []
    for spec in inputs:
        matches = sorted(glob.glob(spec)) if not Path(spec).exists() and glob.has_magic(spec) else []
        found += [Path(m) for m in matches] or [Path(spec)]
    return found


def jobs(inputs: list[Path], output: Path, work_dir: Path | None) -> list[tuple[Path, Path, Path | None]]:
    """``(input, output, work folder)`` per clip: one output file, or one per clip in a folder."""
    if len(inputs) == 1 and not (output.is_dir() or str(output).endswith("/")):
        return [(inputs[0], output, work_dir)]
    stems = [p.stem for p in inputs]
    if len(set(stems)) < len(stems):
        raise VideoError(
            f"two inputs share a name, so their outputs in {output} would clash: {sorted(stems)}"
        )
    output.mkdir(parents=True, exist_ok=True)
    return [
        (path, output / f"{path.stem}{OUTPUT_SUFFIX}", None if work_dir is None else work_dir / path.stem)
        for path in inputs
    ]


def run_one(video: Path, output: Path, work_dir: Path | None, config: StabilizeConfig, args) -> dict:
    """Stabilize one clip; errors are raised as they are."""
    if not video.is_file():
        raise VideoError(f"{video}: no such file")
    return stabilize(
        video,
        output,
        config,
        work_dir=work_dir,
        side_by_side=args.side_by_side,
        evaluate_output=not args.no_eval,
        progress=not args.quiet,
    )


def describe_error(video: Path, err: Exception) -> str:
    if isinstance(err, PoseError):
        return f"{video}: no camera poses could be estimated (too short, static or textureless?): {err}"
    return str(err)


def summary_line(report: dict) -> str:
    methods = report["frame_methods"]
    line = f"wrote {report['output']} ({report['frames']} frames: {methods.count('3d')} 3D"
    line += f" ({report['pose_method']}), {methods.count('2d')} 2D, {len(report['shots'])} shots)"
    metrics = report.get("metrics")
    if metrics:
        line += f"; jitter {metrics['input']['jitter_px']:.1f} -> {metrics['output']['jitter_px']:.1f} px"
    return line


def summary_table(results: list[tuple[Path, dict | None, str | None, float]]) -> str:
    lines = [
        "| clip | frames | 3D | 2D | shots | jitter in -> out (px) | seconds | result |",
        "|---" * 8 + "|",
    ]
    for video, report, error, seconds in results:
        if report is None:
            lines.append(f"| {video.name} | - | - | - | - | - | {seconds:.0f} | failed: {error} |")
            continue
        methods, metrics = report["frame_methods"], report.get("metrics")
        jitter = (
            f"{metrics['input']['jitter_px']:.2f} -> {metrics['output']['jitter_px']:.2f}" if metrics else "-"
        )
        lines.append(
            f"| {video.name} | {report['frames']} | {methods.count('3d')} | {methods.count('2d')} | "
            f"{len(report['shots'])} | {jitter} | {seconds:.0f} | {report['output']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_intermixed_args(argv)  # overrides may come before or after the options
    if args.output is None and not args.print_config:
        cli.error("the following arguments are required: -o/--output")
    # key=value is an override, unless a file of that name exists
    is_override = [("=" in item and not Path(item).exists()) for item in args.input]
    inputs = [item for item, override in zip(args.input, is_override, strict=True) if not override]
    overrides = [item for item, override in zip(args.input, is_override, strict=True) if override]
    overrides += flag_overrides(args, FLAGS)
    try:
        config = configured(StabilizeConfig, args.preset, args.config, overrides)
        if args.print_config:
            print(config_yaml(config), end="")
            return 0
        if not inputs:
            raise VideoError("no input video given")
        todo = jobs(expand(inputs), args.output, args.work_dir)
    except (ConfigError, VideoError, OSError) as err:
        print(f"gavs-stabilize: error: {err}", file=sys.stderr)
        return 2
    try:
        with interrupt.stoppable():
            results = run_all(todo, config, args)
    except Interrupted as err:
        print(interrupted_line("gavs-stabilize", err), file=sys.stderr)
        return err.exit_code
    if len(results) > 1:
        print(summary_table(results))
    return 2 if any(report is None for _, report, _, _ in results) else 0


def run_all(todo: list[tuple[Path, Path, Path]], config: StabilizeConfig, args: argparse.Namespace) -> list:
    """Each clip in turn: (video, report or None, error or None, seconds); a failed clip does
    not stop the others, a stop signal does."""
    results = []
    for video, output, work_dir in todo:
        start = time.perf_counter()
        try:
            report, error = run_one(video, output, work_dir, config, args), None
            print(summary_line(report))
        except (PoseError, ConfigError, VideoError, ReleaseError, OSError) as err:
            report, error = None, describe_error(video, err)
            print(f"gavs-stabilize: error: {error}", file=sys.stderr)
        results.append((video, report, error, time.perf_counter() - start))
    return results


if __name__ == "__main__":
    sys.exit(main())
