"""Stage 1 of gavs-stabilize: decode the clip, split it into shots, and pose each shot, with
data_prep's own code, cached.

Decoding is ``data_prep.ingest`` (PyAV, upright, working resolution by the longer side),
shots are ``data_prep.shots.detect_shots`` (hard cuts), and poses are
``data_prep.poses.estimate_poses`` with its fallbacks, run on each shot on its own. SfM keeps
the longest run of frames it can pose; the rest of the shot is posed again on its own, and a
stretch that still cannot be posed (a whip pan, blank frames) becomes a 2D segment, which
``infer.planar`` stabilizes. No frame is ever given an invented 3D pose.

The result is stored in the work folder under a key of the input's bytes and every setting
that changes it. The working-size frames are kept there as a ``.npy`` and memory-mapped, so a
long clip does not have to sit in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import interrupt
from common.atomic import atomic_path, remove
from common.interrupt import Child
from data_prep.ingest import ingest
from data_prep.poses import PoseConfig, PoseError, estimate_poses, result_settings
from data_prep.schema import ClipPoses, read_posed_npz, write_posed_npz
from data_prep.shots import detect_shots
from data_prep.video import VideoError, VideoInfo, probe
from model.release import sha256

MIN_FRAMES = 3  # fewer frames have no path to smooth


@dataclass
class PosedClip:
    """Frames that share one reconstruction: a 3D segment, as finetuning and rendering see it."""

    frames: np.ndarray  # [T, H, W, 3] uint8 at the working resolution
    fps: float
    source_size: tuple[int, int]  # (width, height) of the input video, as displayed
    poses: ClipPoses  # poses of frames[poses.frame_ids], OpenCV c2w, median sparse depth 1


@dataclass
class Segment:
    """A run of frames inside one shot, stabilized one way: 3D (posed) or 2D (not)."""

    start: int  # first frame, as an index into the clip
    end: int  # one past the last
    shot: int
    poses: ClipPoses | None  # every frame's pose (frame_ids 0..n-1), or None for a 2D segment
    reason: str  # 3D: the pose method; 2D: why SfM could not pose it

    @property
    def method(self) -> str:
        return "3d" if self.poses is not None else "2d"

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class DecodedClip:
    """The whole clip: working-size frames, timing, shots and segments."""

    frames: np.ndarray  # [T, H, W, 3] uint8 at the working resolution (memory-mapped)
    pts: np.ndarray  # [T] int64 presentation timestamps in info.time_base (-1: none in the file)
    info: VideoInfo
    damage: str | None  # the decoder's warning, when less decoded than the container promised
    shots: list[tuple[int, int]]
    segments: list[Segment]  # in order, covering every frame

    @property
    def fps(self) -> float:
        return self.info.fps

    def posed(self, segment: Segment) -> PosedClip:
        """A 3D segment as its own clip."""
        frames = self.frames[segment.start : segment.end]
        return PosedClip(frames, self.fps, self.info.size, segment.poses)

    def frame_methods(self) -> list[str]:
        """Each frame's method, 3d or 2d, in order."""
        return [s.method for s in self.segments for _ in range(s.length)]


class WorkFolderError(ValueError):
    """A work folder that lacks what a command was told to find in it."""


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


Estimate = Callable[[np.ndarray, PoseConfig], ClipPoses]  # estimate_poses, here or in a child process


def pose_stretch(
    frames: np.ndarray,
    start: int,
    end: int,
    shot: int,
    config: PoseConfig,
    estimate: Estimate = estimate_poses,
) -> list[Segment]:
    """Segments covering ``frames[start:end]``: SfM's longest posed run, and the frames on
    either side posed again on their own, down to stretches too short for SfM (2D)."""
    minimum = config.min_partial_frames or 1
    if end - start < minimum:
        return [Segment(start, end, shot, None, f"{end - start} frames, fewer than SfM needs ({minimum})")]
    try:
        poses = estimate(frames[start:end], config)
    except PoseError as err:
        return [Segment(start, end, shot, None, str(err))]
    first, last = start + int(poses.frame_ids[0]), start + int(poses.frame_ids[-1]) + 1
    own = Segment(first, last, shot, replace(poses, frame_ids=np.arange(last - first)), poses.pose_method)
    before = pose_stretch(frames, start, first, shot, config, estimate) if first > start else []
    after = pose_stretch(frames, last, end, shot, config, estimate) if last < end else []
    return [*before, own, *after]


def _save_segments(folder: Path, segments: list[Segment], fps: float) -> list[dict]:
    """Each 3D segment's poses as ``segment-K.npz`` in ``folder``; the segments' records."""
    records = []
    for k, segment in enumerate(segments):
        if segment.poses is not None:
            write_posed_npz(folder / f"segment-{k}.npz", segment.poses, fps)
        records.append(
            {"start": segment.start, "end": segment.end, "shot": segment.shot, "reason": segment.reason}
        )
    return records


def _load_segments(folder: Path, records: list[dict]) -> list[Segment]:
    segments = []
    for k, s in enumerate(records):
        path = folder / f"segment-{k}.npz"
        poses = read_posed_npz(path)[0] if path.is_file() else None
        segments.append(Segment(s["start"], s["end"], s["shot"], poses, s["reason"]))
    return segments


def _save(folder: Path, clip: DecodedClip) -> None:
    with atomic_path(folder, folder=True) as tmp:
        np.save(tmp / "frames.npy", clip.frames)
        np.save(tmp / "pts.npy", clip.pts)
        segments = _save_segments(tmp, clip.segments, clip.fps)
        record = {"shots": clip.shots, "segments": segments, "damage": clip.damage}
        (tmp / "clip.json").write_text(json.dumps(record, indent=1))


def pose_shots(
    frames: np.ndarray,
    shots: list[tuple[int, int]],
    config: PoseConfig,
    fps: float,
    done: Path,
    progress: bool,
) -> list[Segment]:
    """Every shot's segments. SfM runs in a child process, so that a stop signal ends it at
    once; each shot's result is kept in ``done`` as it comes, so a stopped run keeps the shots
    already posed."""
    segments = []
    # the child is entered last so that it exits first: a stop kills it and waits for it
    # before its scratch folder goes, which it could otherwise still be writing into
    with tempfile.TemporaryDirectory(prefix="gavs-sfm-") as scratch, Child() as child:
        calls = itertools.count()

        def estimate(stretch: np.ndarray, config: PoseConfig) -> ClipPoses:
            # a fresh folder per call, owned here: a killed child cannot leave one behind
            folder = Path(scratch) / str(next(calls))
            try:
                return child.call(estimate_poses, stretch, config, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        for shot, (start, end) in enumerate(tqdm(shots, desc="poses (shots)", disable=not progress)):
            interrupt.progress(f"shot {shot + 1} of {len(shots)}")
            kept = done / f"shot-{shot}"
            if (kept / "segments.json").is_file():
                segments += _load_segments(kept, json.loads((kept / "segments.json").read_text()))
                continue
            found = pose_stretch(frames, start, end, shot, config, estimate)
            done.mkdir(parents=True, exist_ok=True)
            with atomic_path(kept, folder=True) as tmp:
                (tmp / "segments.json").write_text(json.dumps(_save_segments(tmp, found, fps)))
            segments += found
    return segments


def _load(folder: Path, info: VideoInfo) -> DecodedClip:
    record = json.loads((folder / "clip.json").read_text())
    return DecodedClip(
        frames=np.load(folder / "frames.npy", mmap_mode="r"),
        pts=np.load(folder / "pts.npy"),
        info=info,
        damage=record["damage"],
        shots=[tuple(s) for s in record["shots"]],
        segments=_load_segments(folder, record["segments"]),
    )


def decode_and_pose(
    video: Path,
    work_dir: Path,
    resolution: int,
    max_frames: int | None = None,
    config: PoseConfig | None = None,
    *,
    strict: bool = False,
    progress: bool = False,
    cached_only: bool = False,
) -> tuple[DecodedClip, str, bool]:
    """The decoded, segmented and posed clip, its cache key (later stages build on it), and
    whether it came from the cache. Raises VideoError for a clip too short to stabilize, and,
    with ``strict``, for a damaged one (before any pose work); with ``cached_only``,
    WorkFolderError when the work folder does not have them."""
    config = config or PoseConfig()
    info = probe(video)
    key = cache_key("poses/3", sha256(video), resolution, max_frames, result_settings(config))
    folder = work_dir / "poses" / key
    if (folder / "clip.json").is_file():
        clip = _load(folder, info)
        if strict and clip.damage:
            raise VideoError(f"{clip.damage} (--strict)")
        return clip, key, True
    if cached_only:
        raise WorkFolderError(f"{work_dir}: no poses of {video} at these settings")
    decoded = ingest(video, max_side=resolution, max_frames=max_frames)
    if strict and decoded.damage:
        raise VideoError(f"{decoded.damage} (--strict)")
    if len(decoded.frames) < MIN_FRAMES:
        raise VideoError(f"{video}: {len(decoded.frames)} frames; stabilizing needs at least {MIN_FRAMES}")
    shots = detect_shots(decoded.frames)
    done = folder.with_name(f"{key}.shots")
    segments = pose_shots(decoded.frames, shots, config, decoded.fps, done, progress)
    clip = DecodedClip(decoded.frames, decoded.pts, decoded.info, decoded.damage, shots, segments)
    _save(folder, clip)
    remove(done)
    return _load(folder, info), key, False
