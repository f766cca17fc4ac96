"""Stabilization quality and speed on a folder of clips, against the input and ffmpeg vid.stab.

    python bench/quality.py --clips ../shared/clips
    python bench/quality.py --clips DIR --method ours="gavs-stabilize {in} -o {out}"

Every clip is scored with ``evaluation.metrics.evaluate``: the input itself (always), vid.stab
two-pass (always, unless --no-vidstab), and each ``--method NAME=COMMAND`` whose command
holds ``{in}`` and ``{out}`` placeholders. Wall time per frame is measured around each
command. A method that writes ``OUT.report.json`` beside its output (gavs-stabilize does)
adds its pixel origins (source, neighbours, extrapolated, inpainted shares) and per-stage
seconds per frame to its row. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.atomic import write_atomic
from data_prep.ingest import VIDEO_SUFFIXES
from data_prep.video import read_video
from evaluation.metrics import analyse_motion, evaluate

VIDSTAB_SMOOTHING = 30  # the setting of the published baseline table in shared/clips/README.md
COLUMNS = [
    ("C", "C"),
    ("D", "D"),
    ("S", "S"),
    ("valid_ratio", "valid"),
    ("jitter_px", "jitter px"),
    ("flicker", "flicker"),
    ("sharpness", "sharpness"),
    ("unmatched_share", "unmatched"),
]


def find_ffmpeg_with_vidstab() -> str:
    """The imageio-ffmpeg binary, else a system ffmpeg, provided it has the vid.stab filters."""
    candidates = []
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        pass
    if shutil.which("ffmpeg"):
        candidates.append(shutil.which("ffmpeg"))
    for exe in candidates:
        filters = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True).stdout
        if "vidstabdetect" in filters and "vidstabtransform" in filters:
            return exe
    raise SystemExit("bench/quality.py: no ffmpeg with vid.stab found (pip install imageio-ffmpeg)")


def vidstab_commands(ffmpeg: str, src: Path, dst: Path, work: Path) -> list[list[str]]:
    """vid.stab two-pass: detect motion, then transform with its default crop-and-zoom."""
    transforms = work / f"{dst.stem}.trf"
    filtering = [ffmpeg, "-v", "error", "-y", "-i", str(src), "-vf"]
    detect = [*filtering, f"vidstabdetect=result={transforms}", "-f", "null", "-"]
    smooth = f"vidstabtransform=input={transforms}:smoothing={VIDSTAB_SMOOTHING}"
    encode = ["-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(dst)]
    return [detect, [*filtering, smooth, *encode]]


def parse_method(spec: str) -> tuple[str, str]:
    name, sep, command = spec.partition("=")
    if not sep or not name or "{in}" not in command or "{out}" not in command:
        raise argparse.ArgumentTypeError(
            f"--method must be NAME=COMMAND with {{in}} and {{out}}, got {spec!r}"
        )
    return name, command


def template_command(template: str, src: Path, dst: Path) -> list[str]:
    """Argument list of a user's command with ``{in}`` and ``{out}`` filled in (no shell)."""
    filled = template.replace("{in}", shlex.quote(str(src))).replace("{out}", shlex.quote(str(dst)))
    return shlex.split(filled)


def stabilizer_report(output: Path) -> dict:
    """Pixel origins and stage times from a stabilizer's report beside its output, if it wrote one."""
    path = output.with_suffix(".report.json")
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    origins = report.get("pixel_origins", {}).get("mean", {})
    return {
        **{f"origin_{name}": share for name, share in origins.items()},
        "stage_seconds_per_frame": report.get("seconds_per_frame", {}),
    }


def run_timed(commands: list[list[str]]) -> float:
    start = time.perf_counter()
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}"
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, required=True, help="folder of input videos")
    parser.add_argument("--method", type=parse_method, action="append", default=[], metavar="NAME=COMMAND")
    parser.add_argument("--no-vidstab", action="store_true", help="skip the vid.stab baseline")
    parser.add_argument("--max-frames", type=int, help="score only the first N frames of each clip")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quality.json")
    parser.add_argument("--work", type=Path, help="keep outputs here (default: a temporary folder)")
    args = parser.parse_args()

    clips = (
        sorted(p for p in args.clips.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if args.clips.is_dir()
        else []
    )
    if not clips:
        parser.error(f"{args.clips}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    ffmpeg = None if args.no_vidstab else find_ffmpeg_with_vidstab()
    work = args.work or Path(tempfile.mkdtemp(prefix="gavs-quality-"))
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for clip in clips:
        source = read_video(clip, args.max_frames)
        frames = len(source.frames)
        methods: list[tuple[str, object]] = []
        if ffmpeg:
            methods.append(("vidstab", lambda src, dst: vidstab_commands(ffmpeg, src, dst, work)))
        for name, template in args.method:
            methods.append((name, lambda src, dst, t=template: [template_command(t, src, dst)]))
        input_scores, clip_rows = None, []
        input_motion = analyse_motion(source.frames, progress=False)
        for name, make_commands in methods:
            dst = work / f"{clip.stem}.{name}.mp4"
            dst.with_suffix(".report.json").unlink(missing_ok=True)  # never read a stale report
            seconds = run_timed(make_commands(clip, dst))
            report = evaluate(
                source.frames,
                read_video(dst, args.max_frames).frames,
                source.fps,
                progress=False,
                input_motion=input_motion,
            )
            input_scores = report["input"]
            clip_rows.append(
                {
                    "clip": clip.name,
                    "method": name,
                    "frames": frames,
                    "seconds_per_frame": seconds / frames,
                    **report["output"],
                    **stabilizer_report(dst),
                }
            )
        if input_scores is None:  # no method ran: score the input alone
            input_scores = evaluate(
                source.frames, source.frames, source.fps, progress=False, input_motion=input_motion
            )["input"]
        rows.append(
            {"clip": clip.name, "method": "input", "frames": frames, "seconds_per_frame": 0.0, **input_scores}
        )
        rows.extend(clip_rows)
        print(f"scored {clip.name} ({frames} frames)", file=sys.stderr, flush=True)

    header = "| clip | method | " + " | ".join(label for _, label in COLUMNS) + " | inpainted | s/frame |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 4)]
    for row in rows:
        cells = " | ".join("-" if row[key] is None else f"{row[key]:.3f}" for key, _ in COLUMNS)
        inpainted = f"{row['origin_inpainted']:.5f}" if "origin_inpainted" in row else "-"
        lines.append(
            f"| {Path(row['clip']).stem} | {row['method']} | {cells} | {inpainted} "
            f"| {row['seconds_per_frame']:.4f} |"
        )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps({"clips": [c.name for c in clips], "rows": rows}, indent=2))
    print(f"\nwrote {args.out}" + (f"; outputs in {work}" if args.work else ""))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
