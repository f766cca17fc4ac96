"""Prep throughput and pose coverage on a folder of videos.

    python bench/prep.py --clips ../shared/clips [--workers 2] [key=value ...]

Runs ``gavs-prep build`` into a temporary folder (every clip from scratch), then reads the
result back: clips per hour per core, share of frames posed, pose methods, and the mean
reprojection error of the stored points through the stored poses. Prints a markdown table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common.atomic import write_atomic
from common.config import load_config
from data_prep.build import PrepConfig, build, plan_jobs
from data_prep.ingest import expand_inputs
from data_prep.schema import iterate_clips
from data_prep.verify import reprojection_errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, required=True, help="folder of videos")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prep.json")
    parser.add_argument("overrides", nargs="*", help="gavs-prep config overrides")
    args = parser.parse_args()
    config = load_config(PrepConfig, None, [*args.overrides, f"workers={args.workers}"])
    videos = expand_inputs(str(args.clips))
    attempted = {v.name: len(plan_jobs([v], config, [])) for v in videos}

    with tempfile.TemporaryDirectory(prefix="gavs-prep-bench-") as tmp:
        start = time.perf_counter()
        manifest = build(str(args.clips), tmp, config, progress=False)
        seconds = time.perf_counter() - start

        def empty_row() -> dict:
            return {"clips": 0, "frames": 0, "methods": defaultdict(int), "errors": []}

        per_video: dict[str, dict] = defaultdict(empty_row)
        for shard in manifest["shards"]:
            for sample in iterate_clips(str(Path(tmp) / shard["name"])):
                row = per_video[Path(sample.meta["source"]).name]
                row["clips"] += 1
                row["frames"] += len(sample.frames)
                row["methods"][sample.poses.pose_method] += 1
                row["errors"] += reprojection_errors(sample).tolist()

    rows = []
    for name, windows in attempted.items():
        row = per_video.get(name, {"clips": 0, "frames": 0, "methods": {}, "errors": []})
        errors = row["errors"]
        rows.append(
            {
                "video": name,
                "clips_attempted": windows,
                "clips_posed": row["clips"],
                "frames_posed_share": row["frames"] / max(windows * config.clip_length, 1),
                "pose_methods": dict(row["methods"]),
                "reprojection_error_px": sum(errors) / len(errors) if errors else None,
            }
        )
    total_clips = sum(attempted.values())
    summary = {
        "clips": total_clips,
        "seconds": seconds,
        "workers": config.workers,
        "clips_per_hour_per_core": total_clips / (seconds / 3600) / config.workers,
        "frames_posed_share": sum(r["frames_posed_share"] * r["clips_attempted"] for r in rows)
        / max(total_clips, 1),
    }
    print(
        f"{total_clips} clips in {seconds:.0f} s on {config.workers} workers: "
        f"{summary['clips_per_hour_per_core']:.0f} clips/hour/core\n"
    )
    print("| video | clips | posed | frames posed | methods | reprojection px |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        error = "-" if r["reprojection_error_px"] is None else f"{r['reprojection_error_px']:.3f}"
        methods = ", ".join(f"{m} {n}" for m, n in sorted(r["pose_methods"].items())) or "-"
        share = f"{r['frames_posed_share']:.1%}"
        print(
            f"| {r['video']} | {r['clips_attempted']} | {r['clips_posed']} | {share} | {methods} | {error} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.out,
        json.dumps(
            {
                "summary": summary,
                "videos": rows,
                "rejected": manifest["rejected"],
                "config": manifest["config"],
            },
            indent=2,
        ),
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
