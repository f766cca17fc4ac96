"""Stage 1 of gavs-stabilize: decode the clip and pose it, with data_prep's own code, cached.

Decoding is ``data_prep.ingest`` (PyAV, working resolution by the longer side); poses are
``data_prep.poses.estimate_poses`` with its fallbacks (global SfM, incremental, rotation
only). Frames it could not pose are never given invented poses: ``PosedClip.frame_ids``
lists the frames that have them. The result is stored in the work directory under a key of
the input's bytes and every setting that changes it, so a rerun with other smoothing or
rendering settings skips this stage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.ingest import ingest
from data_prep.poses import ClipPoses, PoseConfig, estimate_poses
from model.release import sha256


@dataclass
class PosedClip:
    frames: np.ndarray  # [T, H, W, 3] uint8: every decoded frame at the working resolution
    fps: float
    source_size: tuple[int, int]  # (width, height) of the input video
    poses: ClipPoses  # poses of frames[poses.frame_ids], OpenCV c2w, median sparse depth 1


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save(path: Path, clip: PosedClip) -> None:
    p = clip.poses
    tmp = path.with_name(f".{path.name}.partial.npz")
    np.savez_compressed(
        tmp,
        frames=clip.frames,
        fps=clip.fps,
        source_size=np.array(clip.source_size),
        K=p.K,
        c2w=p.c2w,
        frame_ids=p.frame_ids,
        method=p.method,
        points=p.points,
        observations=p.observations,
        observation_points=p.observation_points,
        scale=p.scale,
        stats=json.dumps(p.stats),
    )
    os.replace(tmp, path)


def _load(path: Path) -> PosedClip:
    with np.load(path) as z:
        poses = ClipPoses(
            K=z["K"],
            c2w=z["c2w"],
            frame_ids=z["frame_ids"],
            method=str(z["method"]),
            points=z["points"],
            observations=z["observations"],
            observation_points=z["observation_points"],
            scale=float(z["scale"]),
            stats=json.loads(str(z["stats"])),
        )
        return PosedClip(z["frames"], float(z["fps"]), tuple(int(v) for v in z["source_size"]), poses)


def decode_and_pose(
    video: Path,
    work_dir: Path,
    resolution: int,
    max_frames: int | None = None,
    config: PoseConfig | None = None,
) -> tuple[PosedClip, str, bool]:
    """The posed clip, its cache key (later stages build on it), and whether it came from the
    cache. Raises VideoError or PoseError."""
    config = config or PoseConfig()
    key = cache_key("poses/1", sha256(video), resolution, max_frames, asdict(config))
    path = work_dir / "poses" / f"{key}.npz"
    if path.is_file():
        return _load(path), key, True
    decoded = ingest(video, max_side=resolution, max_frames=max_frames)
    clip = PosedClip(decoded.frames, decoded.fps, decoded.source_size, estimate_poses(decoded.frames, config))
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, clip)
    return clip, key, False
