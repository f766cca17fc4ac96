"""``gavs-stabilize``: stabilize a shaky clip by per-frame 3D Gaussians re-rendered on a smooth path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import ConfigError, load_config
from data_prep.poses import PoseError
from data_prep.video import VideoError
from infer.stabilize import StabilizeConfig, stabilize
from model.release import ReleaseError

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "stabilize"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gavs-stabilize",
        description=(
            "Stabilize a video: pose every frame (pycolmap), smooth the camera path, finetune the "
            "Gaussian predictor on the clip, and re-render each frame from its smoothed pose. Writes OUT, "
            "OUT.report.json (timings, poses, loss curve, metrics) and OUT.path.png (the camera path). "
            "Poses and finetuning are cached in the work folder, so rerunning with another --strength "
            "only renders again."
        ),
        epilog=f"Presets in {PRESETS}. Overrides such as finetune.steps_per_frame=2 follow the options.",
    )
    parser.add_argument("input", type=Path, help="the shaky video")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the stabilized video (.mp4)")
    parser.add_argument("--checkpoint", help="a release folder or hub id (default: a fresh network)")
    parser.add_argument(
        "--strength",
        type=float,
        help="how much shake to remove: 1 = GaVS's 31-frame window (sigma 4 frames); default 4 (sigma 16)",
    )
    parser.add_argument(
        "--smoothing",
        choices=("bounded", "gaussian"),
        help="bounded (default): the minimum-acceleration path, as strong as the Gaussian window of "
        "that strength but closer to the real camera, kept where the padded canvas covers the frame; "
        "gaussian: GaVS's Gaussian window, even where it leaves the canvas",
    )
    parser.add_argument(
        "--crf", type=int, help="H.264 quality of the output, 0-51, lower is larger and sharper (default 18)"
    )
    parser.add_argument("--resolution", type=int, help="working resolution, longer side in px (default 320)")
    parser.add_argument("--max-frames", type=int, help="only the first N frames")
    parser.add_argument("--device", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--work-dir", type=Path, help="cache folder (default: .OUT.gavs-work beside OUT)")
    parser.add_argument("--side-by-side", action="store_true", help="also write OUT.side-by-side.mp4")
    parser.add_argument("--no-eval", action="store_true", help="skip scoring input and output (gavs-eval)")
    parser.add_argument("--config", type=Path, help="YAML preset, e.g. configs/stabilize/cpu-demo.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="config overrides: key.sub=value")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    flags = {
        "strength": args.strength,
        "smoothing": args.smoothing,
        "resolution": args.resolution,
        "max_frames": args.max_frames,
        "device": args.device,
        "crf": args.crf,
    }
    overrides = [*args.overrides, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    try:
        config = load_config(StabilizeConfig, args.config, overrides)
        if not args.input.is_file():
            raise VideoError(f"{args.input}: no such file")
        report = stabilize(
            args.input,
            args.output,
            config,
            args.checkpoint,
            args.work_dir,
            args.side_by_side,
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
