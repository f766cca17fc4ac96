"""Geometric verification: COLMAP's own verifier on one thread against ``_verify`` on all cores.

    python bench/verification.py CLIP [--side 320] [--repeats 3]

Decodes CLIP at the working size (the longer side ``--side``), extracts and matches its
features once, then verifies the same matches alternately both ways, ``--repeats`` times
each, and checks that every pair comes out the same. Prints a markdown table of the medians
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pycolmap

from common.atomic import write_atomic
from data_prep.ingest import ingest
from data_prep.poses import PoseConfig, _features_and_matches, _pinned, _verify, _write_frames


def _colmap(database: Path, config: PoseConfig) -> None:
    one = replace(config, num_threads=1)
    verifier = _pinned(pycolmap.GeometricVerifierOptions(), one)
    geometry = _pinned(pycolmap.TwoViewGeometryOptions(), one)
    pycolmap.geometric_verification(database, verifier_options=verifier, two_view_geometry_options=geometry)


def _bytes(matrix) -> str:
    return "none" if matrix is None else matrix.tobytes().hex()


def _geometries(database: Path) -> dict:
    db = pycolmap.Database.open(str(database))
    try:
        ids, geometries = db.read_two_view_geometries()
        return {
            i: (int(g.config), *(_bytes(m) for m in (g.inlier_matches, g.F, g.E, g.H)))
            for i, g in zip(ids, geometries, strict=True)
        }
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clip", type=Path)
    parser.add_argument("--side", type=int, default=320, help="working size: the longer side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "verification.json")
    args = parser.parse_args()
    pycolmap.logging.minloglevel = 3
    config = PoseConfig()
    frames = ingest(args.clip, max_side=args.side).frames
    with tempfile.TemporaryDirectory(prefix="gavs-verify-bench-") as tmp:
        root = Path(tmp)
        _write_frames(frames, root / "images")
        matched = root / "matched.db"
        _features_and_matches(matched, root / "images", config)
        ways = {"COLMAP's verifier, 1 thread": _colmap, f"_verify, {os.cpu_count()} threads": _verify}
        seconds = {name: [] for name in ways}
        results = {}
        for repeat in range(args.repeats):
            for name, verify in ways.items():
                database = root / f"run{repeat}.db"
                shutil.copy(matched, database)
                start = time.perf_counter()
                verify(database, config)
                seconds[name].append(time.perf_counter() - start)
                results.setdefault(name, _geometries(database))
                database.unlink()
        same = len({json.dumps(sorted((k, v) for k, v in r.items())) for r in results.values()}) == 1
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    base = medians[next(iter(ways))]
    print(
        f"{args.clip.name}: {len(frames)} frames, {len(next(iter(results.values())))} pairs; "
        f"same geometries both ways: {same}\n"
    )
    print("| verification | median s | speed-up |\n|---|---|---|")
    for name, median in medians.items():
        print(f"| {name} | {median:.1f} | {base / median:.2f}x |")
    write_atomic(
        args.out,
        json.dumps(
            {
                "clip": str(args.clip),
                "frames": len(frames),
                "same": same,
                "seconds": seconds,
                "medians": medians,
            },
            indent=2,
        ),
    )


if __name__ == "__main__":
    main()
