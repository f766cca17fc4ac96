"""``gavs-prep build``: videos -> shots -> clip windows -> poses -> priors -> shards + manifest.

Work is per clip, spread over processes. Each finished clip is cached as a one-sample tar
(or a rejection note) under ``OUT/.cache/<config hash>/``, so a rerun skips finished clips.
Shards are then assembled from the cache in a fixed order, so the same inputs and config give
byte-identical shards however the work was split or interrupted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import tarfile
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
import webdataset as wds
from omegaconf import OmegaConf
from tqdm import tqdm

from common import interrupt
from common.atomic import remove, write_atomic
from data_prep.ingest import expand_inputs, ingest
from data_prep.poses import PoseConfig, PoseError, estimate_poses, result_settings
from data_prep.priors import PriorConfig, compute_priors
from data_prep.schema import SCHEMA_VERSION, ClipSample, encode
from data_prep.shards import ShardWriter
from data_prep.shots import clip_windows, detect_shots
from data_prep.video import VideoError

log = logging.getLogger("gavs.prep")
MANIFEST = "manifest.json"
SFM_SUFFIX = ".sfm"  # a clip's SfM scratch folder in the cache, while it is posed


@dataclass
class PrepConfig:
    fps: float | None = None  # None keeps the source rate
    max_side: int = 320  # working resolution: the longer side, in pixels
    clip_length: int = 48
    clip_stride: int = 48
    split: str = "train"
    shard_max_clips: int = 64
    shard_max_bytes: float = 1e9
    workers: int = 1
    poses: PoseConfig = field(default_factory=PoseConfig)
    priors: PriorConfig = field(default_factory=PriorConfig)


class BuildError(RuntimeError):
    """Nothing could be built; the message says why."""


@dataclass
class ClipJob:
    key: str
    source: str
    start: int
    frames: np.ndarray
    fps: float
    source_indices: np.ndarray
    timestamps: np.ndarray
    source_size: tuple[int, int]


def config_hash(config: PrepConfig) -> str:
    """Hash of everything that changes a clip's content (not how the work is split)."""
    relevant = {
        k: v for k, v in asdict(config).items() if k not in {"workers", "shard_max_clips", "shard_max_bytes"}
    } | {"poses": result_settings(config.poses)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


def clip_key(source: Path, start: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", source.stem).strip("-") or "video"
    return f"{stem}_{start:06d}"


def _process_clip(job: ClipJob, config: PrepConfig, cache: Path) -> None:
    """Pose, prior and encode one clip; leave ``KEY.tar`` or ``KEY.rejected.json`` in ``cache``."""
    scratch = cache / f".{job.key}{SFM_SUFFIX}"  # in the cache, so a killed worker's is found
    try:
        poses = estimate_poses(job.frames, config.poses, workdir=scratch)
    except PoseError as err:
        note = {"source": job.source, "clip": job.key, "reason": f"{job.key}: poses: {err}"}
        write_atomic(cache / f"{job.key}.rejected.json", json.dumps(note).encode())
        return
    finally:
        remove(scratch)
    frames = job.frames[poses.frame_ids]
    flow = masks = None
    if config.priors.flow and len(frames) > 1:
        flow, masks = compute_priors(frames, poses.K, poses.c2w, config.priors)
    source_ids = job.source_indices[job.start + poses.frame_ids]
    sample = ClipSample(
        key=job.key,
        frames=frames,
        fps=job.fps,
        poses=replace(poses, frame_ids=source_ids),
        meta={
            "source": job.source,
            "source_size": list(job.source_size),
            "clip_start": job.start,
            "source_frame_indices": [int(i) for i in source_ids],
            "timestamps": [round(float(t), 6) for t in job.timestamps[job.start + poses.frame_ids]],
        },
        flow=flow,
        masks=masks,
    )
    buffer = io.BytesIO()
    with wds.TarWriter(buffer, encoder=False, mtime=0.0) as writer:
        writer.write(encode(sample))
    write_atomic(cache / f"{job.key}.tar", buffer.getvalue())


def _worker_init() -> None:
    """A worker leaves stopping to the main process, which ends it with SIGTERM: Ctrl-C, sent
    to the whole process group, is ignored, and SIGTERM is the default, which ends it at once.
    pycolmap is imported by then (this module imports it), so its glog handler, which prints
    a C++ stack trace on SIGTERM, is already installed and is replaced here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _read_cached(path: Path) -> dict[str, bytes]:
    """The raw fields of a cached one-sample tar, ready to write into a shard."""
    fields: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, _, name = member.name.partition(".")
            fields["__key__"] = key
            fields[name] = tar.extractfile(member).read()
    return fields


def _versions() -> dict[str, str]:
    names = ["gavs", "pycolmap", "opencv-python-headless", "numpy", "torch", "webdataset", "av"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def plan_jobs(videos: list[Path], config: PrepConfig, rejected: list[dict]) -> list[ClipJob]:
    """Decode every video and cut it into clip windows inside shots; record what cannot be used."""
    jobs = []
    for video in videos:
        try:
            ingested = ingest(video, fps=config.fps, max_side=config.max_side)
        except VideoError as err:
            rejected.append({"source": str(video), "clip": None, "reason": f"video: {err}"})
            log.warning("skipping %s", err)
            continue
        shots = detect_shots(ingested.frames)
        windows = clip_windows(shots, config.clip_length, config.clip_stride)
        if not windows:
            longest = max(end - start for start, end in shots)
            reason = f"{video}: no shot is as long as a clip ({longest} < {config.clip_length} frames)"
            rejected.append({"source": str(video), "clip": None, "reason": reason})
            log.warning("skipping %s", reason)
            continue
        for start, end in windows:
            jobs.append(
                ClipJob(
                    clip_key(video, start),
                    str(video),
                    start,
                    ingested.frames[start:end].copy(),  # not a view that keeps the whole video
                    ingested.fps,
                    ingested.source_indices,
                    ingested.timestamps,
                    ingested.source_size,
                )
            )
    return jobs


def build(
    inputs: str,
    out: str | os.PathLike,
    config: PrepConfig,
    progress: bool | None = None,
    part: tuple[int, int] | None = None,
) -> dict:
    """Run the whole pipeline; returns the manifest (also written to ``OUT/manifest.json``).

    ``part=(k, n)`` builds only every n-th input video starting at the k-th, for array jobs.
    """
    out = Path(out)
    videos = expand_inputs(inputs)
    if part is not None:
        videos = videos[part[0] :: part[1]]
        if not videos:
            raise BuildError(f"slice {part[0]}/{part[1]} of {inputs} holds no videos")
    cache = out / ".cache" / config_hash(config)
    cache.mkdir(parents=True, exist_ok=True)
    rejected: list[dict] = []
    keys: list[str] = []
    seen: set[str] = set()
    processed = 0
    bar = tqdm(total=0, desc="clips", unit="clip", disable=None if progress is None else not progress)
    # One video decoded at a time: only its frames, and the clips in flight, are in memory. The
    # clips are posed in worker processes, even with one worker, so that a stop signal reaches
    # this process at once and ends the workers (COLMAP's C++ never returns to Python to see
    # it). spawn, not fork: forking a process whose torch/OpenMP/COLMAP threads are running can
    # deadlock the children.
    context = multiprocessing.get_context("spawn")
    if config.poses.num_threads == -1 and config.workers > 1:  # the cores shared among the workers
        threads = max(1, (os.cpu_count() or 1) // config.workers)
        config = replace(config, poses=replace(config.poses, num_threads=threads))
    pool = context.Pool(max(1, config.workers), initializer=_worker_init)
    # Clips are queued across videos, so short videos of one clip each keep every worker busy;
    # a few clips per worker in flight bound the memory beside the video being decoded.
    work = partial(_process_clip, config=config, cache=cache)
    in_flight: deque = deque()
    max_in_flight = 2 * max(1, config.workers)
    try:
        for number, video in enumerate(videos):
            interrupt.progress(f"video {number + 1} of {len(videos)} ({video.name})")
            jobs = plan_jobs([video], config, rejected)
            if seen & {job.key for job in jobs}:
                raise BuildError(f"{video}: shares a file name with another input; clip keys would collide")
            keys += [job.key for job in jobs]
            seen.update(job.key for job in jobs)
            todo = [
                job
                for job in jobs
                if not (cache / f"{job.key}.tar").exists()
                and not (cache / f"{job.key}.rejected.json").exists()
            ]
            bar.total += len(todo)
            bar.refresh()
            for job in todo:
                while len(in_flight) >= max_in_flight:
                    in_flight.popleft().get()  # raises what the worker raised
                    bar.update()
                in_flight.append(pool.apply_async(work, (job,)))
            processed += len(todo)
        while in_flight:
            in_flight.popleft().get()
            bar.update()
        pool.close()
    except BaseException:
        pool.terminate()  # SIGTERM to each worker, mid-clip if need be; its clip is redone next time
        raise
    finally:
        pool.join()
        bar.close()
        for scratch in cache.glob(f".*{SFM_SUFFIX}"):
            remove(scratch)
    if not keys:
        reasons = "; ".join(r["reason"] for r in rejected) or "no input"
        raise BuildError(f"no clips to build from {inputs}: {reasons}")
    log.info("%d clips, %d processed now", len(keys), processed)

    def cached_samples():
        for key in keys:
            note = cache / f"{key}.rejected.json"
            if note.exists():
                rejected.append(json.loads(note.read_text()))
            else:
                yield _read_cached(cache / f"{key}.tar")

    return write_dataset(out, config, cached_samples(), rejected, {"videos": len(videos)})


def write_dataset(out: Path, config: PrepConfig, samples, rejected: list[dict], totals: dict) -> dict:
    """Shard encoded samples (in the order given), drop stale shards, write ``manifest.json``."""
    methods: dict[str, int] = {}
    with ShardWriter(out, config.split, config.shard_max_clips, config.shard_max_bytes) as writer:
        for fields in samples:
            method = json.loads(fields["cameras.json"])["pose_method"]
            methods[method] = methods.get(method, 0) + 1
            writer.write(fields)
    shards = writer.shards
    for stale in out.glob(f"{config.split}-*.tar"):
        if stale.name not in {s["name"] for s in shards}:
            stale.unlink()
    if not shards:
        raise BuildError(f"no clip could be made: {'; '.join(r['reason'] for r in rejected) or 'no input'}")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "split": config.split,
        "shards": shards,
        "totals": {
            **totals,
            "clips": sum(s["samples"] for s in shards),
            "frames": sum(s["frames"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "rejected": len(rejected),
        },
        "pose_methods": methods,
        "rejected": rejected,
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
        "versions": _versions(),
    }
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest
