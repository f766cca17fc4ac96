"""``gavs-prep verify``: re-read every shard, check it against the manifest, draw contact sheets.

A contact sheet shows frames of a clip with each sparse observation as a red dot and the
stored 3D point, projected through the stored pose and intrinsics, as a green ring. Rings
centred on dots mean the poses, intrinsics and points agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from common.atomic import atomic_path
from data_prep.locations import is_remote, join, read_url
from data_prep.schema import SCHEMA_VERSION, ClipSample, SchemaError, iterate_clips

FRAMES_PER_SHEET_ROW = 4


def reprojection_errors(sample: ClipSample) -> np.ndarray:
    """Pixel distance between each observation and its point projected through the stored pose."""
    poses = sample.poses
    if len(poses.observations) == 0:
        return np.zeros(0)
    frame = poses.observations[:, 0].astype(int)
    K = poses.per_frame_K()[frame]
    w2c = np.linalg.inv(poses.c2w)[frame]
    points = poses.points[poses.observation_points].astype(np.float64)
    cam = np.einsum("nij,nj->ni", w2c[:, :3, :3], points) + w2c[:, :3, 3]
    uv = np.einsum("nij,nj->ni", K, cam)
    uv = uv[:, :2] / uv[:, 2:]
    return np.linalg.norm(uv - poses.observations[:, 1:3], axis=-1)


def contact_sheet(sample: ClipSample) -> np.ndarray:
    """RGB image: a row of frames with observations (red) and reprojected points (green)."""
    count = len(sample.frames)
    picks = np.unique(np.linspace(0, count - 1, min(FRAMES_PER_SHEET_ROW, count)).round().astype(int))
    tiles = []
    poses = sample.poses
    frame_of = poses.observations[:, 0].astype(int)
    for t in picks:
        tile = np.ascontiguousarray(sample.frames[t])
        K = poses.per_frame_K()[t]
        w2c = np.linalg.inv(poses.c2w[t])
        here = frame_of == t
        for obs, point_index in zip(poses.observations[here], poses.observation_points[here], strict=True):
            cam = w2c[:3, :3] @ poses.points[point_index] + w2c[:3, 3]
            u, v = (K @ cam)[:2] / cam[2]
            # pixel centres sit at half-integers; OpenCV draws at integer centres
            cv2.circle(tile, (int(round(u - 0.5)), int(round(v - 0.5))), 3, (0, 255, 0), 1, cv2.LINE_AA)  # noqa: RUF046
            cv2.circle(tile, (int(round(obs[1] - 0.5)), int(round(obs[2] - 0.5))), 1, (255, 0, 0), -1)  # noqa: RUF046
        label = f"{sample.key} #{t} {poses.pose_method}"
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def verify(folder: str | os.PathLike, every: int = 8, sheets: Path | None = None) -> dict:
    """Check every shard against ``manifest.json``; write a contact sheet every ``every`` clips.

    ``folder`` is a dataset folder: a path, an ``http(s)://`` URL, or a ``pipe:`` command with
    ``{name}`` for the file (``pipe:aws s3 cp s3://bucket/gavs/{name} -``). The sheets go to
    ``sheets``, by default the folder itself when it is local and ``./contact-sheets`` when not.
    """
    folder = str(folder)
    manifest_url = join(folder, "manifest.json")
    if not is_remote(folder) and not Path(manifest_url).is_file():
        raise SchemaError(f"{folder}: no manifest.json (not a gavs-prep build folder)")
    try:
        manifest = json.loads(read_url(manifest_url))
    except json.JSONDecodeError as err:
        raise SchemaError(f"{manifest_url}: unreadable ({err})") from err
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(
            f"{manifest_url}: schema version {manifest.get('schema_version')}, "
            f"this reader reads version {SCHEMA_VERSION}"
        )
    sheets = sheets or (Path("contact-sheets") if is_remote(folder) else Path(folder))
    sheets.mkdir(parents=True, exist_ok=True)
    clips = frames = 0
    errors, drawn = [], []
    for shard in manifest["shards"]:
        path = join(folder, shard["name"])
        if not is_remote(path) and not Path(path).is_file():
            raise SchemaError(f"{path}: listed in the manifest but missing")
        samples = shard_frames = 0
        for sample in iterate_clips([path]):
            if clips % every == 0:
                sheet_path = sheets / f"contact-{clips:05d}.png"
                with atomic_path(sheet_path) as tmp:
                    cv2.imwrite(str(tmp), cv2.cvtColor(contact_sheet(sample), cv2.COLOR_RGB2BGR))
                drawn.append(str(sheet_path))
            errors.append(reprojection_errors(sample))
            samples += 1
            shard_frames += len(sample.frames)
            clips += 1
        if (samples, shard_frames) != (shard["samples"], shard["frames"]):
            raise SchemaError(
                f"{path}: holds {samples} clips / {shard_frames} frames, the manifest says "
                f"{shard['samples']} / {shard['frames']}"
            )
        frames += shard_frames
    all_errors = np.concatenate(errors) if errors else np.zeros(0)
    return {
        "clips": clips,
        "frames": frames,
        "reprojection_error": float(all_errors.mean()) if len(all_errors) else float("nan"),
        "contact_sheets": drawn,
    }
