"""``gavs-stabilize``: stabilize a shaky clip by per-frame 3D Gaussians re-rendered on a smooth path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import (
    ConfigError,
    add_flags,
    config_yaml,
    flag_overrides,
    load_config,
    preset_names,
    resolve_preset,
)
from data_prep.poses import PoseError
from data_prep.video import VideoError
from infer.stabilize import StabilizeConfig, stabilize
from model.release import ReleaseError

# StabilizeConfig fields that get an option of their own; every field is also key=value
FLAGS = ["strength", "smoothing", "crf", "resolution", "max_frames", "device"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gavs-stabilize",
        description=(
            "Stabilize a video: pose every frame (pycolmap), smooth the camera path, finetune the "
            "Gaussian predictor on the clip, and re-render each frame from its smoothed pose. Writes OUT, "
            "OUT.report.json (timings, poses, loss curve, metrics) and OUT.path.png (the camera path). "
            "Poses and finetuning are cached in the work folder, so rerunning with another --strength "
            "only renders again."
        ),
        epilog=(
            f"Presets for --config: {', '.join(preset_names('stabilize'))} (or a YAML file). Every setting "
            "can be overridden as key.sub=value, e.g. finetune.steps_per_frame=2 canvas.pad=0.15; "
            "--print-config lists them all with their values."
        ),
    )
    parser.add_argument("input", type=Path, help="the shaky video")
    parser.add_argument("-o", "--output", type=Path, help="the stabilized video (.mp4)")
    parser.add_argument("--checkpoint", help="a release folder or hub id (default: a fresh network)")
    add_flags(parser, StabilizeConfig, FLAGS)
    parser.add_argument("--work-dir", type=Path, help="cache folder (default: .OUT.gavs-work beside OUT)")
    parser.add_argument("--side-by-side", action="store_true", help="also write OUT.side-by-side.mp4")
    parser.add_argument("--no-eval", action="store_true", help="skip scoring input and output (gavs-eval)")
    parser.add_argument("--config", help="a preset name or a YAML file")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="config overrides: key.sub=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_intermixed_args(argv)  # overrides may come before or after the options
    if args.output is None and not args.print_config:
        cli.error("the following arguments are required: -o/--output")
    overrides = [*args.overrides, *flag_overrides(args, FLAGS)]
    try:
        preset = resolve_preset("stabilize", args.config) if args.config else None
        config = load_config(StabilizeConfig, preset, overrides)
        if args.print_config:
            print(config_yaml(config), end="")
            return 0
        if not args.input.is_file():
            raise VideoError(f"{args.input}: no such file")
        report = stabilize(
            args.input,
            args.output,
            config,
            checkpoint=args.checkpoint,
            work_dir=args.work_dir,
            side_by_side=args.side_by_side,
            evaluate_output=not args.no_eval,
            progress=not args.quiet,
        )
    except PoseError as err:
        print(
            f"gavs-stabilize: error: {args.input}: no camera poses could be estimated (too short, "
            f"static or textureless?): {err}",
            file=sys.stderr,
        )
        return 2
    except (ConfigError, VideoError, ReleaseError, OSError) as err:
        print(f"gavs-stabilize: error: {err}", file=sys.stderr)
        return 2
    summary = f"wrote {report['output']} ({report['frames']} frames, {report['posed_frames']} posed"
    summary += f", {report['pose_method']})"
    metrics = report.get("metrics")
    if metrics:
        jitter = {k: metrics[k]["jitter_px"] for k in ("input", "output") if k in metrics}
        summary += (
            f"; jitter {jitter.get('input', float('nan')):.1f} -> {jitter.get('output', float('nan')):.1f} px"
        )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
