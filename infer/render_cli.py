"""``gavs-render``: read more out of a clip's reconstruction than stabilization."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import interrupt
from common.config import (
    ConfigError,
    add_flags,
    config_yaml,
    flag_overrides,
    preset_names,
)
from data_prep.poses import PoseError
from data_prep.video import VideoError
from infer.camera_paths import PRESETS, PathFileError
from infer.depth import DepthOutputError
from infer.posing import WorkFolderError
from infer.presets import add_preset_flag, configured
from infer.readouts import ReadoutConfig, path_readout, render, run_depth, stereo_readout
from infer.stereo import LAYOUTS
from model.release import ReleaseError

FLAGS = ["resolution", "max_frames", "device", "crf", "checkpoint"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gavs-render",
        description=(
            "Render a clip from its 3D reconstruction along a new camera path, or as stereo video, "
            "with the same neighbour fill, fusion and detail transfer as gavs-stabilize. Give the work "
            "folder of an earlier gavs-stabilize run on the same video (and the same --preset, --config and "
            "overrides) and no pose or finetuning stage runs again; without --work-dir, this command "
            "runs them itself. Writes OUT, OUT.report.json (the cameras rendered, pixel origins, "
            "timings) and OUT.path.png; with --depth, OUT is a folder."
        ),
        epilog=(
            "Path presets, built on the stabilized path of each 3D segment: push-in (moves forward by "
            "path.travel of the median scene depth), dolly (sideways by as much), orbit (swings "
            "path.orbit_degrees each way about the point at the median depth ahead), steady (smoothed "
            "at path.steady_strength). A path file is a .npy of [frames, 4, 4] camera-to-world poses, "
            'or JSON with "c2w" (one 4x4 per frame) or "keyframes" ([{"frame": i, "c2w": 4x4}, ...], '
            "interpolated), in the poses' world as the report of a render gives them. "
            f"Presets for --config: {', '.join(preset_names('stabilize'))} (or a YAML file); every "
            "setting can be overridden as key.sub=value; --print-config lists them."
        ),
    )
    parser.add_argument(
        "input", nargs="+", metavar="VIDEO", help="the video; arguments like key.sub=value are overrides"
    )
    parser.add_argument("-o", "--output", type=Path, help="the rendered video (.mp4); a folder for --depth")
    readout = parser.add_mutually_exclusive_group()
    readout.add_argument(
        "--path",
        metavar="PRESET|FILE",
        help=f"render along a new camera path: {', '.join(PRESETS)}, or a path file",
    )
    readout.add_argument(
        "--stereo",
        choices=LAYOUTS,
        help="stereo video: left and right eyes side by side (left on the left), top (left) and bottom, "
        "or a red-cyan anaglyph. By default the baseline keeps 99%% of the scene within the comfort "
        "budget (stereo.budget) and the median depth sits at the screen; stereo.baseline or "
        "stereo.max_disparity sets the eyes' distance, stereo.convergence=infinity keeps them parallel",
    )
    readout.add_argument(
        "--depth",
        action="store_true",
        help="each frame's depth from its own camera, at the input's size, into the folder OUT: "
        "depth/NNNNNN.png (16-bit, depth = value x scale of depth.json; depth.format=npz for one "
        "float32 depth.npz), depth.json (scale, near, far, every frame's camera), preview.mp4, and "
        "report.json (consistency of the finetuned depth, the network's before finetuning and SfM's)",
    )
    parser.add_argument("--work-dir", type=Path, help="an earlier gavs-stabilize run's work folder")
    add_flags(parser, ReadoutConfig, FLAGS)
    add_preset_flag(parser)
    parser.add_argument("--config", help="a gavs-stabilize preset name or a YAML file, over --preset")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace, overrides: list[str], video: Path) -> int:
    config = configured(ReadoutConfig, args.preset, args.config, overrides)
    if args.print_config:
        print(config_yaml(config), end="")
        return 0
    if not video.is_file():
        raise VideoError(f"{video}: no such file")
    where = {"work_dir": args.work_dir, "progress": not args.quiet}
    if args.depth:
        report = run_depth(video, args.output, config, **where)
        found = ", ".join(
            f"{name} {entry['consistency']:.4f} ({entry['consistency_to_contrast']:.3g})"
            for name, entry in report["readout"]["sources"].items()
            if entry["consistency"] is not None
        )
        print(
            f"wrote {report['output']} ({report['frames']} frames of depth; disagreement with the "
            f"neighbours, and as a share of the depth's contrast: {found})"
        )
        return 0
    readout = path_readout(args.path, config) if args.path else stereo_readout(args.stereo, config)
    report = render(
        video,
        args.output,
        config,
        readout,
        **where,
    )
    what = f"along {args.path}" if args.path else f"in stereo, {args.stereo}"
    print(f"wrote {report['output']} ({report['frames']} frames {what})")
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    overrides = [item for item in args.input if "=" in item and not Path(item).exists()]
    inputs = [item for item in args.input if item not in overrides]
    if not args.print_config:
        if args.output is None:
            cli.error("the following arguments are required: -o/--output")
        if args.path is None and args.stereo is None and not args.depth:
            cli.error("choose a readout: --path PRESET|FILE, --stereo LAYOUT or --depth")
        if len(inputs) != 1:
            cli.error(f"one video at a time, got {len(inputs)}")
    try:
        with interrupt.stoppable():
            return run(args, overrides + flag_overrides(args, FLAGS), Path(inputs[0]) if inputs else Path())
    except (
        ConfigError,
        VideoError,
        PoseError,
        PathFileError,
        WorkFolderError,
        DepthOutputError,
        ReleaseError,
        OSError,
    ) as err:
        print(f"gavs-render: error: {err}", file=sys.stderr)
        return 2
    except interrupt.Interrupted as err:
        print(interrupt.interrupted_line("gavs-render", err), file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
