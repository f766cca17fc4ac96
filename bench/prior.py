"""Finetuning from a pretrained prior against finetuning from scratch, on clips never trained on.

    python bench/prior.py --clips ../shared/clips --prior model/releases/prior-cpu \\
        --work /tmp/prior --out bench/results/prior.json [--max-frames N] [--fewer F] [KEY=VALUE ...]

Each clip is stabilized twice with ``gavs-stabilize`` at the same setting (the device's
default preset, then any ``KEY=VALUE`` overrides): from a fresh network and from ``--prior``.
The two runs draw the same windows in the same order (same seed), so their finetuning curves
compare step by step. Per run:

- the stabilize metrics of ``evaluation.metrics.evaluate`` (jitter, flicker, C, D, sharpness,
  valid ratio) and the wall time per frame;
- the finetuning loss, smoothed over ``--smooth`` steps, at the end;
- the PSNR of held-out neighbour views (``infer.views``): source frames rendered into
  neighbours that finetuning never compared them with;
- for the prior: the first step at which its smoothed loss reaches scratch's final one, and
  the share of scratch's steps that is.

With ``--fewer F``, the prior runs a third time with F times the finetuning steps
(``finetune.min_steps`` and ``finetune.steps_per_frame`` scaled), for the question a preset
asks: does the prior at fewer steps match scratch at all of them?

Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from common.atomic import write_atomic
from data_prep.ingest import VIDEO_SUFFIXES
from data_prep.video import read_video
from evaluation.metrics import analyse_motion, evaluate
from infer.stabilize import StabilizeConfig, StageTimer, reconstruct
from infer.views import heldout_pairs, view_psnr

METRICS = ["jitter_px", "flicker", "C", "D", "sharpness", "valid_ratio"]


def smoothed(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` steps."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def steps_to_reach(curve: np.ndarray, level: float) -> int | None:
    """The number of steps after which ``curve`` first is at or below ``level``."""
    below = np.flatnonzero(curve <= level)
    return int(below[0]) + 1 if below.size else None


def stabilize_clip(clip: Path, out: Path, work: Path, checkpoint: Path | None, overrides: list[str]) -> float:
    command = [sys.executable, "-m", "infer.stabilize_cli", str(clip), "-o", str(out)]
    command += ["--quiet", "--no-eval", "--work-dir", str(work), *overrides]
    command += ["--checkpoint", str(checkpoint or "none")]  # none: whatever the preset names
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-800:]}")
    return time.perf_counter() - started


def heldout_psnr(clip: Path, report: dict, work: Path, pairs: int) -> float:
    """Mean PSNR over every 3D segment's held-out neighbour views, from the run's cached
    reconstruction (its config, checkpoint included, from its report)."""
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StabilizeConfig), report["config"]))
    device = torch.device("cpu")
    found = reconstruct(
        clip,
        config,
        work_dir=work,
        device=device,
        progress=False,
        timer=StageTimer(),
        warn=lambda message: None,
        cached_only=True,
    )
    scores = []
    for k in found.tuned:
        posed = found.clip.posed(found.plans[k].segment)
        frames = posed.frames[posed.poses.frame_ids]
        segment_config = found.plans[k].canvas_config(config)
        chosen = heldout_pairs(len(frames), segment_config.finetune, number=pairs)
        scores += view_psnr(
            found.network(k),
            frames,
            posed.poses,
            chosen,
            pad=segment_config.canvas.pad,
            backend=config.backend,
            device=device,
        )
    return float(np.nanmean(scores))


def run(clip: Path, name: str, checkpoint: Path | None, args, motion, source, extra=()) -> dict:
    out = args.work / f"{clip.stem}.{name.replace(' ', '-')}.mp4"
    seconds = stabilize_clip(clip, out, args.work / "cache", checkpoint, [*args.overrides, *extra])
    report = json.loads(out.with_suffix(".report.json").read_text())
    curve = [step["total"] for s in report["segments"] for step in s.get("finetune_curve", [])]
    output = read_video(out, args.max_frames).frames
    scores = evaluate(source.frames, output, source.fps, progress=False, input_motion=motion)
    return {
        "clip": clip.name,
        "init": name,
        "frames": len(source.frames),
        "steps": len(curve),
        "seconds_per_frame": seconds / len(source.frames),
        "finetune_seconds_per_frame": report["seconds_per_frame"].get("finetune"),
        "finetune": report["config"]["finetune"],
        "curve": curve,
        "final_loss": float(smoothed(curve, args.smooth)[-1]),
        "heldout_psnr": heldout_psnr(clip, report, args.work / "cache", args.pairs),
        **{k: scores["output"][k] for k in METRICS},
    }


def table(rows: list[dict]) -> str:
    header = "| clip | init | steps | loss | steps to scratch's loss | held-out PSNR | "
    header += " | ".join(METRICS) + " | s/frame |"
    lines = [header, "|" + "---|" * (len(METRICS) + 7)]
    for row in rows:
        reach = row.get("steps_to_scratch_loss")
        reach = "-" if row["init"] == "scratch" else "not reached" if reach is None else f"{reach}"
        cells = " | ".join(f"{row[k]:.3f}" for k in METRICS)
        lines.append(
            f"| {Path(row['clip']).stem} | {row['init']} | {row['steps']} | {row['final_loss']:.4f} | "
            f"{reach} | {row['heldout_psnr']:.2f} | {cells} | {row['seconds_per_frame']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, required=True, help="a folder of videos, or one video")
    parser.add_argument("--prior", type=Path, required=True, help="the release folder to start from")
    parser.add_argument("--work", type=Path, required=True, help="outputs and the shared work folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prior.json")
    parser.add_argument("--smooth", type=int, default=10, help="steps the loss is averaged over")
    parser.add_argument("--pairs", type=int, default=32, help="held-out pairs per 3D segment")
    parser.add_argument("--max-frames", type=int, help="only the first N frames of each clip")
    parser.add_argument("--fewer", type=float, help="also run the prior with this share of the steps")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="gavs-stabilize config overrides")
    args = parser.parse_args()
    if not (args.prior / "model.safetensors").is_file():
        parser.error(f"{args.prior}: not a release folder (no model.safetensors)")
    clips = (
        [args.clips]
        if args.clips.is_file()
        else sorted(p for p in args.clips.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    )
    if not clips:
        parser.error(f"{args.clips}: no video files")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.max_frames:
        args.overrides = [*args.overrides, f"max_frames={args.max_frames}"]

    rows = []
    for clip in clips:
        source = read_video(clip, args.max_frames)
        motion = analyse_motion(source.frames, progress=False)
        scratch = run(clip, "scratch", None, args, motion, source)
        prior = run(clip, "prior", args.prior, args, motion, source)
        priors = [prior]
        if args.fewer:
            tuning = scratch["finetune"]
            fewer = [
                f"finetune.min_steps={max(1, round(tuning['min_steps'] * args.fewer))}",
                f"finetune.steps_per_frame={tuning['steps_per_frame'] * args.fewer}",
            ]
            priors.append(run(clip, f"prior x{args.fewer:g}", args.prior, args, motion, source, fewer))
        for row in priors:
            reached = steps_to_reach(smoothed(row["curve"], args.smooth), scratch["final_loss"])
            row["steps_to_scratch_loss"] = reached
        rows += [scratch, *priors]
        print(
            f"{clip.name}: scratch {scratch['final_loss']:.4f}, prior {prior['final_loss']:.4f}",
            file=sys.stderr,
        )
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.out, json.dumps({"prior": str(args.prior), "overrides": args.overrides, "rows": rows}, indent=2)
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
