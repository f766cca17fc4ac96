"""Peak memory of gavs-stabilize against clip length and size, and time per frame.

    python bench/memory.py --source ../shared/clips/small-shaky-5.avi \\
        --clips 1080p:10 1080p:20 1080p:60 4k:10 --baseline 8246654

Each clip is the source looped to the length and scaled to the size (ffmpeg, H.264 crf 18;
the loop's seams are hard cuts, so it has shots). Every run is its own process under a
small wrapper that reports the peak resident set size of its child (``ru_maxrss``), so
runs do not see each other's peaks; the report's per-stage peaks say which stage it was.
``--baseline REV`` also runs the code at git revision REV (a temporary worktree) on the
first clip, side by side, for the per-frame times.
Arguments after ``--`` go to gavs-stabilize (default: a quick setting, below).

Prints a markdown table and writes JSON (default: bench/results/memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

from common.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"180p": (320, 180), "720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
QUICK = [
    "--resolution",
    "192",
    "finetune.steps_per_frame=0.05",
    "finetune.min_steps=10",
    "finetune.batch=3",
    "finetune.neighbours=2",
]
# Runs a command and prints its peak RSS (kB) as the last line: a fresh process per run, so
# RUSAGE_CHILDREN holds this run's child only.
WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def make_clip(source: Path, size: str, seconds: float, folder: Path) -> Path:
    width, height = SIZES[size]
    path = folder / f"{size}-{seconds:g}s.mp4"
    if not path.exists():
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source),
             "-t", str(seconds), "-vf", f"scale={width}:{height}", "-an", "-c:v", "libx264", "-crf", "18",
             "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )  # fmt: skip
    return path


def run(code: Path, clip: Path, out: Path, args: list[str]) -> dict:
    """One stabilize run of the code at ``code``: wall time, peak RSS, the report's stage times."""
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "infer.stabilize_cli", str(clip)]
    command += ["-o", str(out), "--no-eval", "--quiet", *args]
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=code, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)}
    )
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{clip}: stabilize failed:\n{result.stderr[-2000:]}")
    report = json.loads(out.with_suffix(".report.json").read_text())
    return {
        "seconds": seconds,
        "peak_rss_gb": int(result.stdout.strip().splitlines()[-1]) / 1e6,
        "frames": report["frames"],
        "seconds_per_frame": report["seconds_per_frame"],
        "stage_peak_rss_gb": report.get("peak_rss_gb", {}),  # absent in reports of older code
        # per segment, in clip order: whether finetuning's cost per frame stays put along the clip
        "segment_finetune_s_per_frame": [
            round(s["finetune_seconds"] / (s["end"] - s["start"]), 4)
            for s in report["segments"]
            if s.get("finetune_seconds")  # absent for cached or 2D segments, and in older code
        ],
    }


def worktree(revision: str, folder: Path) -> Path:
    path = folder / f"baseline-{revision}"
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), revision], check=True
        )
    return path


def save(args: argparse.Namespace, rows: list[dict], stabilize_args: list[str]) -> None:
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"source": str(args.source), "args": stabilize_args, "machine": machine, "rows": rows}
    write_atomic(args.out, json.dumps(record, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the clip to loop and scale")
    parser.add_argument("--clips", nargs="+", default=["1080p:10", "1080p:20", "1080p:60", "4k:10"])
    parser.add_argument("--baseline", help="a git revision to run side by side on the first clip")
    parser.add_argument("--work", type=Path, help="folder for clips and outputs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    args, extra = parser.parse_known_args(argv)
    stabilize_args = [a for a in extra if a != "--"] or QUICK
    work = args.work or Path(tempfile.mkdtemp(prefix="gavs-memory-"))
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for index, spec in enumerate(args.clips):
        size, seconds = spec.split(":")
        clip = make_clip(args.source, size, float(seconds), work)
        variants = [("this", ROOT)]
        if args.baseline and index == 0:
            variants.append((args.baseline, worktree(args.baseline, work)))
        for name, code in variants:
            out = work / f"{clip.stem}.{name}.mp4"
            rows.append({"clip": clip.name, "code": name, **run(code, clip, out, stabilize_args)})
            print(f"{clip.name} ({name}): {rows[-1]['peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
            save(args, rows, stabilize_args)  # after every run: a long benchmark keeps what it measured

    stages = ["poses", "finetune", "render"]
    header = [f"{s} s/frame" for s in stages] + [f"{s} peak GB" for s in stages]
    lines = ["| clip | code | frames | peak RSS (GB) | " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * (4 + len(header)))
    for row in rows:
        cells = [f"{row['seconds_per_frame'].get(s, float('nan')):.3f}" for s in stages]
        cells += [f"{row['stage_peak_rss_gb'].get(s) or float('nan'):.2f}" for s in stages]
        cells = [row["clip"], row["code"], str(row["frames"]), f"{row['peak_rss_gb']:.2f}", *cells]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print("\n| clip | code | segments | finetune s/frame: first third | middle | last third |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['clip']} | {row['code']} | " + _thirds(row["segment_finetune_s_per_frame"]) + " |")
    print(f"\nwrote {args.out}")


def _thirds(values: list[float]) -> str:
    """How many values, and the median of each third of them, in order."""
    if len(values) < 3:
        return f"{len(values)} | - | - | -"
    third = len(values) // 3
    parts = [values[:third], values[third : len(values) - third], values[len(values) - third :]]
    return f"{len(values)} | " + " | ".join(f"{statistics.median(p):.3f}" for p in parts)


if __name__ == "__main__":
    main()
