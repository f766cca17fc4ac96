"""The global mapper's bundle-adjustment budget: what capping its solver's iterations saves
in time and costs in poses.

    python bench/mapper_budget.py CLIP [--caps 200 50] [--seeds 0 1] [--side 320]

Poses CLIP at the working size (the longer side ``--side``) the way gavs-stabilize does
(``StabilizeConfig().poses``: the global mapper on every second frame, the rest registered
to its map), once per cap and seed, on one features-and-matches database. A cap is the
Ceres ``max_num_iterations`` of the mapper's bundle adjustments; COLMAP's default is 200,
and its own refinement inside retriangulation uses 50. The poses are compared in the gauge
of the first frame (each run's poses relative to its frame 0, median depth 1): position
difference in median frame-to-frame steps, rotation difference in degrees. Two seeds at the
same cap give the scale to judge a cap's difference by. Prints a markdown table and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pycolmap

from common.atomic import write_atomic
from data_prep import poses
from data_prep.ingest import ingest
from data_prep.schema import ClipPoses
from infer.stabilize import StabilizeConfig


@contextmanager
def capped(iterations: int):
    """The global mapper's bundle adjustments limited to ``iterations`` solver iterations."""
    pinned = poses._pinned

    def with_cap(options, config):
        options = pinned(options, config)
        if isinstance(options, pycolmap.GlobalPipelineOptions):
            options.mapper.bundle_adjustment.ceres.solver_options.max_num_iterations = iterations
        return options

    poses._pinned = with_cap
    try:
        yield
    finally:
        poses._pinned = pinned


def difference(a: ClipPoses, b: ClipPoses) -> dict[str, float]:
    """Position (in ``a``'s median steps) and rotation (degrees) differences, frame 0's gauge."""
    A, B = (np.linalg.inv(p.c2w[0]) @ p.c2w for p in (a, b))
    moved = np.linalg.norm(A[:, :3, 3] - B[:, :3, 3], axis=1)
    step = np.median(np.linalg.norm(np.diff(A[:, :3, 3], axis=0), axis=1))
    R = np.einsum("nij,nkj->nik", A[:, :3, :3], B[:, :3, :3])
    angle = np.degrees(np.arccos(np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return {
        "position_steps_median": float(np.median(moved) / step),
        "position_steps_max": float(moved.max() / step),
        "rotation_deg_median": float(np.median(angle)),
        "rotation_deg_max": float(angle.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clip", type=Path)
    parser.add_argument("--caps", type=int, nargs="+", default=[200, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--side", type=int, default=320, help="working size: the longer side in pixels")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mapper-budget.json")
    args = parser.parse_args()
    config = StabilizeConfig().poses
    frames = ingest(args.clip, max_side=args.side).frames
    pycolmap.logging.minloglevel = 3
    runs = {}
    with tempfile.TemporaryDirectory(prefix="gavs-mapper-") as scratch:
        root = Path(scratch)
        names = poses._write_frames(frames, root / "images")
        poses._extract_and_match(root / "database.db", root / "images", config)
        for cap in args.caps:
            for seed in args.seeds:
                start = time.perf_counter()
                with capped(cap):
                    found = poses._mapped(
                        "global",
                        config.keyframe_stride,
                        root / "database.db",
                        root,
                        names,
                        replace(config, seed=seed),
                    )
                seconds = time.perf_counter() - start
                problem = poses._acceptable(found, config, len(frames), frames.shape[2])
                runs[cap, seed] = (found.normalised(), seconds, problem, found.stats["reprojection_error"])
    reference = runs[args.caps[0], args.seeds[0]][0]
    rows = []
    for (cap, seed), (found, seconds, problem, error) in runs.items():
        same_cap = runs[cap, args.seeds[0]][0]
        rows.append(
            {
                "cap": cap,
                "seed": seed,
                "seconds": seconds,
                "accepted": problem is None,
                "reprojection_error_px": error,
                "vs_reference": difference(reference, found),
                "vs_first_seed_same_cap": difference(same_cap, found),
            }
        )
    print(f"{args.clip.name}: {len(frames)} frames; reference: cap {args.caps[0]}, seed {args.seeds[0]}\n")
    print(
        "| cap | seed | mapper s | accepted | reproj px "
        "| steps moved, degrees (median/max): vs reference | vs the same cap's first seed |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        moved = [
            f"{d['position_steps_median']:.1f}/{d['position_steps_max']:.1f}, "
            f"{d['rotation_deg_median']:.3f}/{d['rotation_deg_max']:.3f}"
            for d in (row["vs_reference"], row["vs_first_seed_same_cap"])
        ]
        print(
            f"| {row['cap']} | {row['seed']} | {row['seconds']:.1f} | {row['accepted']} "
            f"| {row['reprojection_error_px']:.3f} | {moved[0]} | {moved[1]} |"
        )
    write_atomic(
        args.out, json.dumps({"clip": str(args.clip), "frames": len(frames), "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
