"""``gavs-eval INPUT OUTPUT``: stabilization metrics of an output video next to its input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import interrupt
from common.atomic import write_atomic
from common.interrupt import Interrupted, interrupted_line
from data_prep.schema import SchemaError, read_cameras
from data_prep.video import VideoError, VideoReader, probe
from evaluation.metrics import evaluate

ROWS = [
    ("C", "cropping ratio C (1 = no crop)"),
    ("D", "distortion D (1 = none)"),
    ("S", "stability S"),
    ("S_t", "  translation S_t"),
    ("S_r", "  rotation S_r"),
    ("valid_ratio", "valid-pixel ratio"),
    ("jitter_px", "residual jitter (px @640)"),
    ("flicker", "temporal flicker (gray levels)"),
    ("sharpness", "sharpness vs input"),
    ("unmatched_share", "unmatched pairs"),
    ("sampson_px", "Sampson error under poses (px)"),
]


def load_poses(path: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K, c2w)`` of the output frames from a ``cameras.json`` (schema v1's form)."""
    poses, _, _ = read_cameras(path)
    if len(poses.c2w) < num_frames:
        raise SchemaError(f"{path}: {len(poses.c2w)} poses for {num_frames} frames")
    return poses.K, poses.c2w


def format_table(report: dict) -> str:
    lines = ["| metric | input | output |", "|---|---|---|"]
    for key, label in ROWS:
        if key not in report["output"]:
            continue
        cells = [report[side].get(key) for side in ("input", "output")]
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gavs-eval",
        description="Score a stabilized video against its input with the shared protocol "
        "(C, D, S) and the valid-pixel ratio, residual jitter, flicker, sharpness and, given "
        "poses, geometry consistency. The input is always scored too, side by side.",
    )
    parser.add_argument("input", type=Path, help="the original (shaky) video")
    parser.add_argument("output", type=Path, help="the stabilized video")
    parser.add_argument(
        "--json", action="store_true", help="print the full report as JSON instead of a table"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--poses", type=Path, help="cameras.json (K, c2w) of the output frames")
    parser.add_argument("--max-frames", type=int, help="score only the first N frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        infos = [probe(path) for path in (args.input, args.output)]
        for info in infos:
            if info.promised_frames is not None and info.promised_frames < 2:
                raise VideoError(f"{info.path}: needs at least 2 frames")
        promised = [i.promised_frames for i in infos if i.promised_frames is not None]
        count = min([*promised, *([args.max_frames] if args.max_frames else [])], default=None)
        poses = load_poses(args.poses, count or 0) if args.poses else None
    except (VideoError, SchemaError) as err:
        print(f"gavs-eval: error: {err}", file=sys.stderr)
        return 2
    frames = [
        (f.image for f in VideoReader(path, limit=args.max_frames)) for path in (args.input, args.output)
    ]
    try:
        with interrupt.stoppable(), interrupt.stage("evaluation"):
            report = evaluate(*frames, infos[0].fps, poses, progress=False if args.quiet else None)
    except Interrupted as err:
        print(interrupted_line("gavs-eval", err, resumable=False), file=sys.stderr)
        return err.exit_code
    report["input_path"], report["output_path"] = str(args.input), str(args.output)
    text = json.dumps(report, indent=2)
    if args.out:
        write_atomic(args.out, text)
    print(text if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
