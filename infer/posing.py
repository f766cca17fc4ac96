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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.ingest import ingest
from data_prep.poses import PoseConfig, estimate_poses
from data_prep.schema import ClipPoses, read_posed_npz, write_posed_npz
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
    write_posed_npz(path, clip.poses, clip.fps, frames=clip.frames, source_size=np.array(clip.source_size))


def _load(path: Path) -> PosedClip:
    poses, fps, arrays = read_posed_npz(path)
    return PosedClip(arrays["frames"], fps, tuple(int(v) for v in arrays["source_size"]), poses)


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
    key = cache_key("poses/2", sha256(video), resolution, max_frames, asdict(config))
    path = work_dir / "poses" / f"{key}.npz"
    if path.is_file():
        return _load(path), key, True
    decoded = ingest(video, max_side=resolution, max_frames=max_frames)
    clip = PosedClip(decoded.frames, decoded.fps, decoded.source_size, estimate_poses(decoded.frames, config))
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, clip)
    return clip, key, False
