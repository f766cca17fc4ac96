"""Clip sample schema, version 1, and the posed-clip record: the only code that writes, reads
and validates samples and the record's files (``ClipPoses``: shard fields, a standalone
``cameras.json``, the stabilizer's work-folder ``.npz``).

One WebDataset sample per clip; the sample key has no dots. Fields:

    NNNN.jpg       frame N of the clip (RGB, JPEG quality 95, 4:4:4) at the stored resolution
    cameras.json   width, height, fps, K (3x3 shared, or per frame), c2w (4x4 per frame,
                   OpenCV axes, float64), frame_ids (source frame indices), pose_method, scale
    points.npz     points [P, 3] float32; observations [M, 4] float32 (frame, u, v, z-depth);
                   observation_points [M] int32
    flow.npz       optional: forward, backward [T-1, H, W, 2] int16 in units of ``step``
                   (1/8 px; decoded to float32 px)
    masks.npz      optional: occlusion_forward, occlusion_backward [T-1, H, W] and
                   dynamic [T, H, W], bit-packed along the last axis
    meta.json      schema_version, source, provenance, pose statistics

Encoding is deterministic (fixed zip timestamps, sorted JSON keys), so rewriting a clip gives
byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from common.atomic import atomic_path, write_atomic
from model.cameras import resize_intrinsics

SCHEMA_VERSION = 1
# Frames are training targets: quality 95 with full-resolution colour (4:4:4, not 4:2:0).
JPEG_PARAMS = [
    cv2.IMWRITE_JPEG_QUALITY,
    95,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
]
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
FRAME_FIELD = re.compile(r"^(\d{4})\.jpg$")
MASK_NAMES = ("occlusion_forward", "occlusion_backward", "dynamic")
FLOW_NAMES = ("forward", "backward")
POINT_FIELDS = ("points", "observations", "observation_points")  # a record's points, in every form
FLOW_STEP = 0.125  # px: flow is stored as int16 multiples of this (9x smaller than float16)


class SchemaError(ValueError):
    """A sample or shard that does not follow the schema; the message names it and the problem."""


@dataclass
class ClipPoses:
    """A clip's cameras, sparse points and pose provenance: the project's one posed-clip record.

    Frame ``t`` of the record is frame ``frame_ids[t]`` of whatever it was posed from;
    ``observations[:, 0]`` counts the record's own frames (0..T-1). Every file form of it is
    written and read by this module: the shard fields, ``cameras.json`` and the work-folder
    ``.npz``.
    """

    width: int  # size of the image that K belongs to
    height: int
    K: np.ndarray  # [3, 3] shared or [T, 3, 3], float64, pixels
    c2w: np.ndarray  # [T, 4, 4] float64, OpenCV axes
    frame_ids: np.ndarray  # [T] int
    pose_method: str  # global, incremental, rotation, or an importer's / ground truth's name
    scale: float = 1.0  # factor the reconstruction was multiplied by to make the median depth 1
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [P, 3] world
    observations: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [M, 4] frame, u, v, z
    observation_points: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [M] into points
    stats: dict = field(default_factory=dict)  # how the poses were found (registered share, errors)

    def per_frame_K(self) -> np.ndarray:
        """``[T, 3, 3]``, also when one K is shared."""
        return np.broadcast_to(self.K, (len(self.c2w), 3, 3)) if self.K.ndim == 2 else self.K

    def normalised(self) -> ClipPoses:
        """The same reconstruction scaled so that the median sparse depth is 1 (unchanged
        without observations, as rotation-only poses have none)."""
        if len(self.observations) == 0:
            return self
        factor = 1.0 / float(np.median(self.observations[:, 3]))
        c2w = self.c2w.copy()
        c2w[:, :3, 3] *= factor
        observations = self.observations.copy()
        observations[:, 3] *= factor
        return replace(
            self, c2w=c2w, points=self.points * factor, observations=observations, scale=self.scale * factor
        )

    def window(self, start: int, end: int) -> ClipPoses:
        """Frames ``start..end-1`` of the record, with the points they observe re-indexed."""
        inside = (self.observations[:, 0] >= start) & (self.observations[:, 0] < end)
        observations = self.observations[inside].copy()
        observations[:, 0] -= start
        used, observation_points = np.unique(self.observation_points[inside], return_inverse=True)
        K = self.K if self.K.ndim == 2 else self.K[start:end]
        return replace(
            self,
            K=K,
            c2w=self.c2w[start:end],
            frame_ids=self.frame_ids[start:end],
            points=self.points[used],
            observations=observations,
            observation_points=observation_points.astype(np.int64),
        )

    def resized(self, width: int, height: int) -> ClipPoses:
        """The record for the same images resized to ``width x height``: K's first two rows
        and the observations' pixel coordinates scale; depths do not."""
        factor = np.array([width / self.width, height / self.height])
        K = resize_intrinsics(torch.from_numpy(self.K), (self.width, self.height), (width, height)).numpy()
        observations = self.observations.copy()
        observations[:, 1:3] *= factor
        return replace(self, width=width, height=height, K=K, observations=observations)


@dataclass
class ClipSample:
    """One shard sample: a clip's posed frames, their record, and optional priors."""

    key: str
    frames: np.ndarray  # [T, H, W, 3] uint8, frame t posed by poses.c2w[t]
    fps: float
    poses: ClipPoses
    meta: dict = field(default_factory=dict)
    flow: dict[str, np.ndarray] | None = None
    masks: dict[str, np.ndarray] | None = None


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps (np.savez stamps the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.save(entry, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.getvalue())
    return buffer.getvalue()


def _load_npz(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SchemaError(f"{name}: not a readable .npz ({err})") from err


def _json_bytes(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


def cameras_json(poses: ClipPoses, fps: float) -> dict:
    """The ``cameras.json`` form of a record (points go to ``points.npz``)."""
    return {
        "width": int(poses.width),
        "height": int(poses.height),
        "fps": float(fps),
        "K": np.asarray(poses.K, np.float64).tolist(),
        "c2w": np.asarray(poses.c2w, np.float64).tolist(),
        "frame_ids": [int(i) for i in poses.frame_ids],
        "pose_method": poses.pose_method,
        "scale": float(poses.scale),
    }


def poses_from_cameras_json(data: dict, where: str) -> tuple[ClipPoses, float]:
    """``(record without points, fps)`` from the ``cameras.json`` form; SchemaError names ``where``."""
    try:
        poses = ClipPoses(
            width=int(data["width"]),
            height=int(data["height"]),
            K=np.asarray(data["K"], np.float64),
            c2w=np.asarray(data["c2w"], np.float64),
            frame_ids=np.asarray(data["frame_ids"], np.int64),
            pose_method=str(data["pose_method"]),
            scale=float(data["scale"]),
        )
        return poses, float(data["fps"])
    except KeyError as err:
        raise SchemaError(f"{where}: cameras.json lacks {err}") from err
    except (TypeError, ValueError) as err:
        raise SchemaError(f"{where}: cameras.json has a malformed field ({err})") from err


def _points_arrays(poses: ClipPoses) -> dict[str, np.ndarray]:
    return {
        "points": poses.points.astype(np.float32),
        "observations": poses.observations.astype(np.float32),
        "observation_points": poses.observation_points.astype(np.int32),
    }


def _with_points(poses: ClipPoses, arrays: dict[str, np.ndarray], where: str) -> ClipPoses:
    try:
        return replace(
            poses,
            points=arrays["points"],
            observations=arrays["observations"],
            observation_points=arrays["observation_points"],
        )
    except KeyError as err:
        raise SchemaError(f"{where}: lacks {err}") from err


def write_cameras(path: str | os.PathLike, poses: ClipPoses, fps: float, extra: dict | None = None) -> Path:
    """A standalone ``cameras.json`` (the shard field's form, plus ``extra`` fields), atomically."""
    return write_atomic(path, json.dumps({**(extra or {}), **cameras_json(poses, fps)}, indent=1))


def read_cameras(path: str | os.PathLike) -> tuple[ClipPoses, float, dict]:
    """``(record, fps, every field of the file)`` from a standalone ``cameras.json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchemaError(f"{path}: not a readable cameras.json ({err})") from err
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: not a cameras.json (a JSON object)")
    poses, fps = poses_from_cameras_json(data, str(path))
    validate_poses(poses, str(path))
    return poses, fps, data


def write_posed_npz(path: str | os.PathLike, poses: ClipPoses, fps: float, **arrays: np.ndarray) -> Path:
    """The work-folder form: the record at full precision, beside ``arrays`` (frames and the like)."""
    record = {
        "poses_json": json.dumps({**cameras_json(poses, fps), "stats": poses.stats}),
        "points": poses.points,
        "observations": poses.observations,
        "observation_points": poses.observation_points,
    }
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **record, **arrays)
    return Path(path)


def read_posed_npz(path: str | os.PathLike) -> tuple[ClipPoses, float, dict[str, np.ndarray]]:
    """``(record, fps, the other arrays)`` from the work-folder form."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    data = json.loads(str(arrays.pop("poses_json")))
    poses, fps = poses_from_cameras_json(data, str(path))
    points = {name: arrays.pop(name) for name in POINT_FIELDS if name in arrays}
    return _with_points(replace(poses, stats=data["stats"]), points, str(path)), fps, arrays


def _plain(value):
    """JSON-ready stats: NumPy scalars become Python numbers."""
    return float(value) if isinstance(value, float | np.floating) else value


def encode(sample: ClipSample) -> dict[str, bytes | str]:
    """Sample -> WebDataset fields (validated first). The record's stats go to ``meta.json``
    under ``poses``."""
    validate(sample)
    fields: dict[str, bytes | str] = {"__key__": sample.key}
    for index, frame in enumerate(sample.frames):
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), JPEG_PARAMS)
        if not ok:
            raise SchemaError(f"{sample.key}: frame {index} could not be encoded")
        fields[f"{index:04d}.jpg"] = jpg.tobytes()
    fields["cameras.json"] = _json_bytes(cameras_json(sample.poses, sample.fps))
    fields["points.npz"] = _npz_bytes(_points_arrays(sample.poses))
    if sample.flow is not None:
        limit = np.iinfo(np.int16).max
        quantised = {
            k: np.clip(np.round(v / FLOW_STEP), -limit, limit).astype(np.int16)
            for k, v in sample.flow.items()
        }
        fields["flow.npz"] = _npz_bytes({**quantised, "step": np.array(FLOW_STEP, np.float32)})
    if sample.masks is not None:
        packed = {k: np.packbits(v.astype(bool), axis=-1) for k, v in sample.masks.items()}
        fields["masks.npz"] = _npz_bytes(packed)
    stats = {k: _plain(v) for k, v in sample.poses.stats.items()}
    meta = {**sample.meta, **({"poses": stats} if stats else {}), "schema_version": SCHEMA_VERSION}
    fields["meta.json"] = _json_bytes(meta)
    return fields


def _field(raw: dict, name: str, where: str) -> bytes:
    if name not in raw:
        raise SchemaError(f"{where}: missing field {name!r}")
    return raw[name]


def _frames(raw: dict[str, bytes], where: str) -> np.ndarray:
    names = sorted(name for name in raw if FRAME_FIELD.match(name))
    if not names:
        raise SchemaError(f"{where}: no frames")
    frames = []
    for name in names:
        image = cv2.imdecode(np.frombuffer(raw[name], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise SchemaError(f"{where}: frame {name} does not decode")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def decode(raw: dict[str, bytes]) -> ClipSample:
    """WebDataset fields -> validated sample. Errors name the shard and the sample key."""
    key = raw.get("__key__", "?")
    where = f"{raw.get('__url__', '<memory>')}:{key}"
    try:
        meta = json.loads(_field(raw, "meta.json", where))
        cams = json.loads(_field(raw, "cameras.json", where))
    except json.JSONDecodeError as err:
        raise SchemaError(f"{where}: unreadable JSON ({err})") from err
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{where}: schema version {version}, this reader reads version {SCHEMA_VERSION}")
    frames = _frames(raw, where)
    poses, fps = poses_from_cameras_json(cams, where)
    points = _load_npz(_field(raw, "points.npz", where), f"{where}/points.npz")
    poses = _with_points(replace(poses, stats=meta.pop("poses", {})), points, f"{where}/points.npz")
    flow = None
    if "flow.npz" in raw:
        stored = _load_npz(raw["flow.npz"], f"{where}/flow.npz")
        step = float(np.asarray(stored.pop("step", FLOW_STEP)).reshape(-1)[0])
        flow = {k: v.astype(np.float32) * step for k, v in stored.items()}
    masks = None
    if "masks.npz" in raw:
        packed = _load_npz(raw["masks.npz"], f"{where}/masks.npz")
        masks = {k: np.unpackbits(v, axis=-1, count=poses.width).astype(bool) for k, v in packed.items()}
    sample = ClipSample(key=key, frames=frames, fps=fps, poses=poses, meta=meta, flow=flow, masks=masks)
    validate(sample, where)
    return sample


def _poses_problems(poses: ClipPoses) -> list[str]:
    problems = []
    count = len(poses.c2w)
    if poses.c2w.ndim != 3 or poses.c2w.shape[1:] != (4, 4):
        return [f"c2w must be [T, 4, 4], got {poses.c2w.shape}"]
    if not np.allclose(poses.c2w[:, :3, :3] @ poses.c2w[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-5):
        problems.append("c2w rotations are not orthonormal")
    if poses.K.shape not in ((3, 3), (count, 3, 3)):
        problems.append(f"K has shape {poses.K.shape}; expected (3, 3) or ({count}, 3, 3)")
    if len(poses.frame_ids) != count:
        problems.append(f"{len(poses.frame_ids)} frame_ids for {count} poses")
    if poses.points.ndim != 2 or poses.points.shape[-1] != 3:
        problems.append(f"points must be [P, 3], got {poses.points.shape}")
    if poses.observations.ndim != 2 or poses.observations.shape[-1] != 4:
        problems.append(f"observations must be [M, 4], got {poses.observations.shape}")
    elif len(poses.observations) != len(poses.observation_points):
        problems.append("observations and observation_points differ in length")
    elif len(poses.observations) and not (
        0 <= poses.observations[:, 0].min() and poses.observations[:, 0].max() < count
    ):
        problems.append("an observation refers to a frame outside the clip")
    if len(poses.observation_points) and poses.observation_points.max() >= len(poses.points):
        problems.append("an observation refers to a point that does not exist")
    return problems


def _raise_first(where: str, problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SchemaError(f"{where}: {problems[0]}{more}")


def validate_poses(poses: ClipPoses, where: str) -> None:
    """Check a record's shapes and invariants; raise SchemaError naming ``where`` and the first problem."""
    _raise_first(where, _poses_problems(poses))


def validate(sample: ClipSample, where: str | None = None) -> None:
    """Check shapes and invariants; raise SchemaError naming the sample and the first problem."""
    where = where or sample.key
    poses = sample.poses
    problems = []
    if not KEY_PATTERN.match(sample.key):
        problems.append(f"key {sample.key!r} must be letters, digits, '_' or '-' (no dots)")
    if sample.frames.dtype != np.uint8 or sample.frames.ndim != 4 or sample.frames.shape[-1] != 3:
        problems.append(f"frames must be [T, H, W, 3] uint8, got {sample.frames.dtype} {sample.frames.shape}")
    count = len(sample.frames)
    if sample.frames.shape[1:3] != (poses.height, poses.width):
        h, w = sample.frames.shape[1:3]
        problems.append(f"frames are {w}x{h}, cameras say {poses.width}x{poses.height}")
    if len(poses.c2w) != count:
        problems.append(f"c2w has shape {poses.c2w.shape} for {count} frames")
    problems += _poses_problems(poses)
    if sample.flow is not None:
        for name in FLOW_NAMES:
            if name not in sample.flow or sample.flow[name].shape != (
                count - 1,
                poses.height,
                poses.width,
                2,
            ):
                problems.append(f"flow {name!r} missing or not [T-1, H, W, 2]")
    if sample.masks is not None:
        for name in MASK_NAMES:
            expected = (count if name == "dynamic" else count - 1, poses.height, poses.width)
            if name not in sample.masks or sample.masks[name].shape != expected:
                problems.append(f"mask {name!r} missing or not [{expected[0]}, H, W]")
    _raise_first(where, problems)


def iterate_clips(urls: str | Iterable[str]) -> Iterator[ClipSample]:
    """Decoded, validated clips from shard URLs (paths, brace patterns, or any URL WebDataset reads).

    A shard that cannot be fetched raises LocationError, and one that cannot be read as a
    shard SchemaError, naming it. Training builds its own
    shuffled, split pipeline around ``decode``; this is the plain sequential reader.
    """
    import webdataset as wds

    from data_prep.locations import LocationError, shard_samples

    urls = urls if isinstance(urls, str) else list(urls)
    # every shard, in order, also inside a distributed job (the caller chose the shards)
    iterator = iter(wds.DataPipeline(wds.SimpleShardList(urls), shard_samples))
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except LocationError:
            raise
        except Exception as err:  # tarfile, gzip and I/O errors all mean the shard is unreadable
            raise SchemaError(f"{urls}: unreadable shard ({type(err).__name__}: {err})") from err
        yield decode(raw)


def to_tensors(sample: ClipSample) -> dict[str, torch.Tensor]:
    """Frames ``[T, 3, H, W]`` float32 in [0, 1], ``K [T, 3, 3]`` and ``c2w [T, 4, 4]`` float32."""
    return {
        "frames": torch.from_numpy(sample.frames).permute(0, 3, 1, 2).float() / 255.0,
        "K": torch.from_numpy(np.ascontiguousarray(sample.poses.per_frame_K())).float(),
        "c2w": torch.from_numpy(sample.poses.c2w).float(),
        "observations": torch.from_numpy(sample.poses.observations).float(),
    }
