"""Clip sample schema, version 1: the only code that writes, reads and validates samples.

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
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

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
FLOW_STEP = 0.125  # px: flow is stored as int16 multiples of this (9x smaller than float16)


class SchemaError(ValueError):
    """A sample or shard that does not follow the schema; the message names it and the problem."""


@dataclass
class Cameras:
    width: int
    height: int
    fps: float
    K: np.ndarray  # [3, 3] shared or [T, 3, 3], float64
    c2w: np.ndarray  # [T, 4, 4] float64
    frame_ids: np.ndarray  # [T] int, indices of the frames in the source video
    pose_method: str
    scale: float  # factor the reconstruction was multiplied by to make the median depth 1

    def per_frame_K(self) -> np.ndarray:
        return np.broadcast_to(self.K, (len(self.c2w), 3, 3)) if self.K.ndim == 2 else self.K


@dataclass
class ClipSample:
    key: str
    frames: np.ndarray  # [T, H, W, 3] uint8
    cameras: Cameras
    points: np.ndarray  # [P, 3] float32
    observations: np.ndarray  # [M, 4] float32: frame, u, v, depth
    observation_points: np.ndarray  # [M] int32
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


def encode(sample: ClipSample) -> dict[str, bytes | str]:
    """Sample -> WebDataset fields (validated first)."""
    validate(sample)
    cams = sample.cameras
    fields: dict[str, bytes | str] = {"__key__": sample.key}
    for index, frame in enumerate(sample.frames):
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), JPEG_PARAMS)
        if not ok:
            raise SchemaError(f"{sample.key}: frame {index} could not be encoded")
        fields[f"{index:04d}.jpg"] = jpg.tobytes()
    fields["cameras.json"] = _json_bytes(
        {
            "width": int(cams.width),
            "height": int(cams.height),
            "fps": float(cams.fps),
            "K": np.asarray(cams.K, np.float64).tolist(),
            "c2w": np.asarray(cams.c2w, np.float64).tolist(),
            "frame_ids": [int(i) for i in cams.frame_ids],
            "pose_method": cams.pose_method,
            "scale": float(cams.scale),
        }
    )
    fields["points.npz"] = _npz_bytes(
        {
            "points": sample.points.astype(np.float32),
            "observations": sample.observations.astype(np.float32),
            "observation_points": sample.observation_points.astype(np.int32),
        }
    )
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
    fields["meta.json"] = _json_bytes({**sample.meta, "schema_version": SCHEMA_VERSION})
    return fields


def _field(raw: dict, name: str, where: str) -> bytes:
    if name not in raw:
        raise SchemaError(f"{where}: missing field {name!r}")
    return raw[name]


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
    frame_fields = sorted(name for name in raw if FRAME_FIELD.match(name))
    if not frame_fields:
        raise SchemaError(f"{where}: no frames")
    frames = []
    for name in frame_fields:
        image = cv2.imdecode(np.frombuffer(raw[name], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise SchemaError(f"{where}: frame {name} does not decode")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    try:
        cameras = Cameras(
            width=int(cams["width"]),
            height=int(cams["height"]),
            fps=float(cams["fps"]),
            K=np.asarray(cams["K"], np.float64),
            c2w=np.asarray(cams["c2w"], np.float64),
            frame_ids=np.asarray(cams["frame_ids"], np.int64),
            pose_method=str(cams["pose_method"]),
            scale=float(cams["scale"]),
        )
    except KeyError as err:
        raise SchemaError(f"{where}: cameras.json lacks {err}") from err
    points = _load_npz(_field(raw, "points.npz", where), f"{where}/points.npz")
    flow = None
    if "flow.npz" in raw:
        stored = _load_npz(raw["flow.npz"], f"{where}/flow.npz")
        step = float(np.asarray(stored.pop("step", FLOW_STEP)).reshape(-1)[0])
        flow = {k: v.astype(np.float32) * step for k, v in stored.items()}
    masks = None
    if "masks.npz" in raw:
        width = cameras.width
        packed = _load_npz(raw["masks.npz"], f"{where}/masks.npz")
        masks = {k: np.unpackbits(v, axis=-1, count=width).astype(bool) for k, v in packed.items()}
    try:
        sample = ClipSample(
            key=key,
            frames=np.stack(frames),
            cameras=cameras,
            points=points["points"],
            observations=points["observations"],
            observation_points=points["observation_points"],
            meta=meta,
            flow=flow,
            masks=masks,
        )
    except KeyError as err:
        raise SchemaError(f"{where}: points.npz lacks {err}") from err
    validate(sample, where)
    return sample


def validate(sample: ClipSample, where: str | None = None) -> None:
    """Check shapes and invariants; raise SchemaError naming the sample and the first problem."""
    where = where or sample.key
    cams = sample.cameras
    problems = []
    if not KEY_PATTERN.match(sample.key):
        problems.append(f"key {sample.key!r} must be letters, digits, '_' or '-' (no dots)")
    if sample.frames.dtype != np.uint8 or sample.frames.ndim != 4 or sample.frames.shape[-1] != 3:
        problems.append(f"frames must be [T, H, W, 3] uint8, got {sample.frames.dtype} {sample.frames.shape}")
    count = len(sample.frames)
    if sample.frames.shape[1:3] != (cams.height, cams.width):
        h, w = sample.frames.shape[1:3]
        problems.append(f"frames are {w}x{h}, cameras say {cams.width}x{cams.height}")
    if cams.c2w.shape != (count, 4, 4):
        problems.append(f"c2w has shape {cams.c2w.shape} for {count} frames")
    elif not np.allclose(cams.c2w[:, :3, :3] @ cams.c2w[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-5):
        problems.append("c2w rotations are not orthonormal")
    if cams.K.shape not in ((3, 3), (count, 3, 3)):
        problems.append(f"K has shape {cams.K.shape}; expected (3, 3) or ({count}, 3, 3)")
    if len(cams.frame_ids) != count:
        problems.append(f"{len(cams.frame_ids)} frame_ids for {count} frames")
    if sample.points.ndim != 2 or sample.points.shape[-1] != 3:
        problems.append(f"points must be [P, 3], got {sample.points.shape}")
    if sample.observations.ndim != 2 or sample.observations.shape[-1] != 4:
        problems.append(f"observations must be [M, 4], got {sample.observations.shape}")
    elif len(sample.observations) != len(sample.observation_points):
        problems.append("observations and observation_points differ in length")
    elif len(sample.observations) and not (
        0 <= sample.observations[:, 0].min() and sample.observations[:, 0].max() < count
    ):
        problems.append("an observation refers to a frame outside the clip")
    if len(sample.observation_points) and sample.observation_points.max() >= len(sample.points):
        problems.append("an observation refers to a point that does not exist")
    if sample.flow is not None:
        for name in FLOW_NAMES:
            if name not in sample.flow or sample.flow[name].shape != (count - 1, cams.height, cams.width, 2):
                problems.append(f"flow {name!r} missing or not [T-1, H, W, 2]")
    if sample.masks is not None:
        for name in MASK_NAMES:
            frames_expected = count if name == "dynamic" else count - 1
            if name not in sample.masks or sample.masks[name].shape != (
                frames_expected,
                cams.height,
                cams.width,
            ):
                problems.append(f"mask {name!r} missing or not [{frames_expected}, H, W]")
    if problems:
        raise SchemaError(
            f"{where}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def _all_shards(urls):
    return urls


def iterate_clips(urls: str | Iterable[str]) -> Iterator[ClipSample]:
    """Decoded, validated clips from shard URLs (paths, brace patterns, or any URL WebDataset reads).

    A shard that cannot be read raises SchemaError naming it. Training builds its own
    shuffled, split pipeline around ``decode``; this is the plain sequential reader.
    """
    import webdataset as wds

    urls = urls if isinstance(urls, str) else list(urls)
    # every shard, in order, also inside a distributed job (the caller chose the shards)
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=_all_shards)
    iterator = iter(dataset)
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except Exception as err:  # tarfile, gzip and I/O errors all mean the shard is unreadable
            raise SchemaError(f"{urls}: unreadable shard ({type(err).__name__}: {err})") from err
        yield decode(raw)


def to_tensors(sample: ClipSample) -> dict[str, torch.Tensor]:
    """Frames ``[T, 3, H, W]`` float32 in [0, 1], ``K [T, 3, 3]`` and ``c2w [T, 4, 4]`` float32."""
    return {
        "frames": torch.from_numpy(sample.frames).permute(0, 3, 1, 2).float() / 255.0,
        "K": torch.from_numpy(np.ascontiguousarray(sample.cameras.per_frame_K())).float(),
        "c2w": torch.from_numpy(sample.cameras.c2w).float(),
        "observations": torch.from_numpy(sample.observations).float(),
    }
