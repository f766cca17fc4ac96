"""How much flicker the steps every full-frame output takes add by themselves, on the input alone.

    python bench/flicker.py CLIP [--compare NAME=OUT.mp4 ...] [--max-frames N] --out JSON

Flicker is gavs-eval's: the mean gray-level difference between consecutive frames after
warping one onto the other by optical flow. Every stabilized frame is the input resampled
at a new, sub-pixel position and encoded again, and neither step is temporally consistent:
each frame's resampling phase differs, and the encoder's loss differs from frame to frame.
So before any 3D cause (depth, blending, neighbour fill), these alone change flicker.
Variants of the input, each scored like an output (valid everywhere):

- ``input``: as decoded;
- ``resampled lanczos``: each frame moved by a random sub-pixel shift (seeded), sampled by
  OpenCV's Lanczos kernel, as gavs-stabilize's detail transfer samples the input;
- ``resampled bilinear``: the same shifts, bilinear (what a 2D warp such as vid.stab's uses);
- ``encoded``: the input encoded again as gavs-stabilize encodes (x264 crf 18, tune grain);
- ``resampled lanczos + encoded``: both.

``--compare NAME=FILE`` adds finished outputs scored by ``evaluate`` against the input (their
own valid masks), e.g. ``gavs=out.mp4 vidstab=vs.mp4``. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from common.atomic import write_atomic
from data_prep.video import read_video, write_video
from evaluation.metrics import evaluate, frame_sharpness, temporal_flicker

SHIFT_SEED = 0


def shifted(frames: np.ndarray, interpolation: int) -> np.ndarray:
    """Each frame moved by a random shift of up to half a pixel each way (the border repeats)."""
    rng = np.random.default_rng(SHIFT_SEED)
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        move = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        out[index] = cv2.warpAffine(
            frame, move, frame.shape[1::-1], flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def encoded(frames: np.ndarray, fps: float) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = write_video(Path(folder) / "again.mp4", frames, fps, crf=18, tune="grain")
        return read_video(path).frames


def score(frames: np.ndarray, reference: np.ndarray) -> dict:
    everywhere = np.ones(frames.shape[:3], bool)
    ratios = [frame_sharpness(r, f, np.eye(3), everywhere[0]) for f, r in zip(frames, reference, strict=True)]
    sharp = np.median([r for r in ratios if r is not None])
    return {"flicker": temporal_flicker(frames, everywhere, progress=False), "sharpness": float(sharp)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clip", type=Path)
    parser.add_argument(
        "--compare", nargs="*", default=[], metavar="NAME=FILE", help="finished outputs to score"
    )
    parser.add_argument("--max-frames", type=int, help="only the first N frames")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "flicker.json")
    args = parser.parse_args()
    source = read_video(args.clip, args.max_frames)
    frames = source.frames
    lanczos = shifted(frames, cv2.INTER_LANCZOS4)
    variants = {
        "input": frames,
        "resampled lanczos": lanczos,
        "resampled bilinear": shifted(frames, cv2.INTER_LINEAR),
        "encoded": encoded(frames, source.fps),
        "resampled lanczos + encoded": encoded(lanczos, source.fps),
    }
    rows = {name: score(v, frames) for name, v in variants.items()}
    for spec in args.compare:
        name, _, file = spec.partition("=")
        output = read_video(Path(file), args.max_frames).frames
        scores = evaluate(frames, output, source.fps, progress=False)["output"]
        rows[name] = {"flicker": scores["flicker"], "sharpness": scores["sharpness"]}
    print(f"{args.clip.name}, {len(frames)} frames\n")
    print("| variant | flicker | ratio to the input's | sharpness |\n|---|---|---|---|")
    base = rows["input"]["flicker"]
    for name, row in rows.items():
        print(f"| {name} | {row['flicker']:.3f} | {row['flicker'] / base:.3f} | {row['sharpness']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.out, json.dumps({"clip": str(args.clip), "frames": len(frames), "rows": rows}, indent=2)
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
