"""gavs-render's readouts on real clips: time per frame beside stabilization's, depth
consistency, and stereo disparity and comfort.

    python bench/readouts.py --clips ../shared/clips/small-shaky-5.avi ../shared/clips/nus-regular-0.m4v

Each clip is stabilized once (its render stage is the yardstick), then rendered from that
work folder with ``--depth``, ``--stereo sbs`` and ``--path push-in``, so no readout poses
or finetunes again. Per clip:

- seconds per frame of each readout's own stage, and its ratio to stabilization's render,
  measured in the same run;
- depth: the median disagreement with neighbours carried by the poses (finetuned, before
  finetuning, sparse SfM), the same over each depth's contrast, and the median error
  against the SfM points after scale;
- stereo: the eyes' vertical disparity (DIS flow from left to right, median |v| px over the
  inner 80% of each frame, then over frames; 0 for a perfect pair), the horizontal
  disparity's 5-95% range, and the share of pixels (by that flow) and of the scene's depths
  beyond the comfort budget (the SfM points', or the rendered depth's where a segment posed
  by rotation alone has none).

Arguments after ``--`` go to every command (default: a quick setting, below).
Prints a markdown table and writes JSON (default: bench/results/readouts.json); with
``--sheets DIR``, also a contact sheet per clip, ``DIR/readouts-CLIP.png``: one frame of the
input, the push-in, both eyes and the depth preview, so a person can look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from common.atomic import write_atomic
from data_prep.video import VideoReader

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "--resolution",
    "192",
    "finetune.steps_per_frame=0",
    "finetune.min_steps=60",
    "finetune.batch=3",
    "finetune.neighbours=2",
]


def command(module: str, clip: Path, out: Path, args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, str(clip), "-o", str(out), "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode:
        raise RuntimeError(f"{clip}: {module} failed:\n{result.stderr[-2000:]}")


def eye_disparity(sbs: Path, budget: float) -> dict:
    """Median over frames of the median |vertical| flow between the eyes, of the 5-95%
    range of the horizontal one (px, inner 80% of each frame), and of the share of pixels
    whose horizontal disparity exceeds ``budget`` of the eye's width either way."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    vertical, low, high, beyond = [], [], [], []
    for frame in VideoReader(sbs):
        image = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
        width = image.shape[1] // 2
        flow = dis.calc(np.ascontiguousarray(image[:, :width]), np.ascontiguousarray(image[:, width:]), None)
        h, w = flow.shape[:2]
        inner = flow[h // 10 : h - h // 10, w // 10 : w - w // 10]
        vertical.append(float(np.median(np.abs(inner[..., 1]))))
        shift = -inner[..., 0]  # the left eye sees each point further right
        low.append(float(np.percentile(shift, 5)))
        high.append(float(np.percentile(shift, 95)))
        beyond.append(float(np.mean(np.abs(shift) > budget * width)))
    return {
        "vertical_px": float(np.median(vertical)),
        "disparity_5_95_px": [float(np.median(low)), float(np.median(high))],
        "pixels_beyond_budget": float(np.median(beyond)),
    }


def frame_at(video: Path, index: int) -> np.ndarray:
    for number, frame in enumerate(VideoReader(video)):
        if number == index:
            return frame.image
    raise ValueError(f"{video}: no frame {index}")


def contact_sheet(clip: Path, folder: Path, index: int, out: Path) -> None:
    """A 3x2 grid of frame ``index``: input and push-in, left and right eye, depth preview
    and stabilized, each labelled."""
    sbs = frame_at(folder / "sbs.mp4", index)
    width = sbs.shape[1] // 2
    cells = [
        ("input", frame_at(clip, index)),
        ("push-in", frame_at(folder / "push.mp4", index)),
        ("left eye", sbs[:, :width]),
        ("right eye", sbs[:, width:]),
        ("depth (near: red)", frame_at(folder / "depth" / "preview.mp4", index)),
        ("stabilized", frame_at(folder / "stable.mp4", index)),
    ]
    labelled = []
    for name, image in cells:
        image = np.ascontiguousarray(image)
        cv2.putText(image, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        labelled.append(image)
    grid = np.concatenate([np.concatenate(labelled[r : r + 2], axis=1) for r in range(0, 6, 2)], axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))[1].tobytes())


def bench_clip(clip: Path, folder: Path, args: list[str], sheets: Path | None = None) -> dict:
    stable = folder / "stable.mp4"
    command("infer.stabilize_cli", clip, stable, ["--no-eval", *args])
    work = ["--work-dir", str(folder / ".stable.gavs-work"), *args]
    command("infer.render_cli", clip, folder / "depth", ["--depth", *work])
    command("infer.render_cli", clip, folder / "sbs.mp4", ["--stereo", "sbs", *work])
    command("infer.render_cli", clip, folder / "push.mp4", ["--path", "push-in", *work])
    reports = {
        "stabilize": json.loads(stable.with_suffix(".report.json").read_text()),
        "depth": json.loads((folder / "depth" / "report.json").read_text()),
        "stereo": json.loads((folder / "sbs.report.json").read_text()),
        "path": json.loads((folder / "push.report.json").read_text()),
    }
    if sheets is not None:
        frames = reports["stabilize"]["frames"]
        contact_sheet(clip, folder, frames * 3 // 4, sheets / f"readouts-{clip.stem}.png")
    per_frame = {name: report["seconds_per_frame"] for name, report in reports.items()}
    baseline = per_frame["stabilize"]["render"]
    stages = {"stabilize": "render", "depth": "depth", "stereo": "render", "path": "render"}
    sources = reports["depth"]["readout"]["sources"]
    return {
        "clip": clip.name,
        "frames": reports["stabilize"]["frames"],
        "size": reports["stabilize"]["output_size"],
        "seconds_per_frame": {name: per_frame[name][stage] for name, stage in stages.items()},
        "ratio_to_stabilize_render": {
            name: round(per_frame[name][stage] / baseline, 3) for name, stage in stages.items()
        },
        "depth": {
            name: {k: v for k, v in entry.items() if k != "consistency_pairs"}
            for name, entry in sources.items()
        },
        "stereo": eye_disparity(folder / "sbs.mp4", reports["stereo"]["readout"]["settings"]["budget"])
        | {key: reports["stereo"]["readout"][key] for key in ("beyond_budget", "depths_from", "baseline")},
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| clip | frames | s/frame: stabilize render, depth, stereo, path "
        "| depth consistency (over contrast): finetuned, before, sparse | SfM agreement: finetuned, before "
        "| stereo vertical px | disparity 5-95% px | beyond budget: pixels, scene depths (from) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def number(value: float | None, form: str) -> str:
        return "n/a" if value is None else format(value, form)  # no SfM points: rotation-only poses

    for row in rows:
        spf, depth, stereo = row["seconds_per_frame"], row["depth"], row["stereo"]
        consistency = ", ".join(
            f"{number(depth[s]['consistency'], '.4f')} ({number(depth[s]['consistency_to_contrast'], '.3g')})"
            for s in ("finetuned", "initial", "sparse")
        )
        agreement = ", ".join(number(depth[s]["sparse_agreement"], ".3f") for s in ("finetuned", "initial"))
        beyond = max(stereo["beyond_budget"].values(), default=0.0)
        sources = "/".join(sorted(set(stereo["depths_from"].values())))
        low, high = stereo["disparity_5_95_px"]
        lines.append(
            f"| {row['clip']} | {row['frames']} | {spf['stabilize']:.2f}, {spf['depth']:.2f}, "
            f"{spf['stereo']:.2f}, {spf['path']:.2f} | {consistency} | {agreement} | "
            f"{stereo['vertical_px']:.3f} | {low:.1f} to {high:.1f} | "
            f"{stereo['pixels_beyond_budget']:.3f}, {beyond:.3f} ({sources}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else QUICK
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "readouts.json")
    parser.add_argument("--sheets", type=Path, help="write a contact sheet per clip into this folder")
    parser.add_argument(
        "--folder",
        type=Path,
        help="keep each clip's outputs in FOLDER/CLIP (default: a temporary folder); a rerun finds "
        "the poses and networks in its work folder, so only the renders run again",
    )
    args = parser.parse_args(argv)
    missing = [str(clip) for clip in args.clips if not clip.is_file()]
    if missing:
        parser.error(f"no such clip: {', '.join(missing)}")
    rows = []
    machine = {"cpu": platform.machine(), "cores": os.cpu_count()}
    for clip in args.clips:
        if args.folder is None:
            with tempfile.TemporaryDirectory(prefix="gavs-readouts-") as folder:
                rows.append(bench_clip(clip, Path(folder), extra, args.sheets))
        else:
            (args.folder / clip.stem).mkdir(parents=True, exist_ok=True)
            rows.append(bench_clip(clip, args.folder / clip.stem, extra, args.sheets))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        # after every clip, so a long run stopped part way keeps the rows it has
        write_atomic(args.out, json.dumps({"args": extra, "machine": machine, "rows": rows}, indent=1))
    print(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
