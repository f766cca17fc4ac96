"""``gavs-prep import``: the same clip shards from data that already has poses.

Formats:
    re10k       RealEstate10K camera files: a URL line, then per frame
                ``timestamp_us fx fy cx cy 0 0`` (intrinsics as fractions of width and height)
                followed by the 3x4 world-to-camera matrix, row-major, OpenCV axes. Frames are
                ``<frames>/<file stem>/<timestamp>.{png,jpg}``.
    colmap      a COLMAP model folder (cameras, images, points3D; binary or text) with its image
                folder. Pinhole camera models only: undistort other models first.
    transforms  a nerfstudio/Blender ``transforms.json`` (``fl_x/fl_y/cx/cy`` or
                ``camera_angle_x``, per-frame ``transform_matrix`` camera-to-world in OpenGL axes,
                converted here to OpenCV).

Each sequence is resized to the working resolution (intrinsics scaled with it), cut into
clip windows, given priors from its poses, and written through the same shard writer and
manifest as ``gavs-prep build``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import torch

from data_prep.build import PrepConfig, clip_key, write_dataset
from data_prep.ingest import working_size
from data_prep.poses import PoseError, from_reconstruction
from data_prep.priors import compute_priors
from data_prep.schema import ClipPoses, ClipSample, encode
from data_prep.shots import clip_windows
from model.cameras import opengl_to_opencv

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImportFormatError(ValueError):
    """Input that does not follow the format being imported; the message names the file."""


@dataclass
class PosedSequence:
    name: str
    images: list[Path]
    poses: ClipPoses  # in pixels of the images on disk; COLMAP's also carry points
    fps: float


def _image(base: Path, stem: str) -> Path:
    for suffix in ("", *IMAGE_SUFFIXES):
        path = base / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise ImportFormatError(f"{base / stem}: no such image (tried {', '.join(IMAGE_SUFFIXES)})")


def _load_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImportFormatError(f"{path}: cannot be read as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_re10k(cameras_file: Path, frames_root: Path) -> PosedSequence:
    lines = [line.split() for line in Path(cameras_file).read_text().splitlines()[1:] if line.strip()]
    if not lines or any(len(values) != 19 for values in lines):
        raise ImportFormatError(f"{cameras_file}: expected a URL line, then 19 numbers per frame")
    values = np.array(lines, np.float64)
    folder = Path(frames_root) / Path(cameras_file).stem
    images = [_image(folder, str(int(t))) for t in values[:, 0]]
    height, width = _load_rgb(images[0]).shape[:2]
    K = np.zeros((len(values), 3, 3))
    K[:, 0, 0], K[:, 1, 1] = values[:, 1] * width, values[:, 2] * height
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = values[:, 3] * width, values[:, 4] * height, 1.0
    w2c = np.tile(np.eye(4), (len(values), 1, 1))
    w2c[:, :3, :] = values[:, 7:].reshape(-1, 3, 4)
    steps = np.diff(values[:, 0])
    fps = 1e6 / float(np.median(steps)) if len(steps) else 30.0
    poses = ClipPoses(width, height, K, np.linalg.inv(w2c), np.arange(len(values)), "re10k")
    return PosedSequence(Path(cameras_file).stem, images, poses, fps)


def read_colmap(model_dir: Path, images_dir: Path, fps: float) -> PosedSequence:
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as err:  # pycolmap raises plain RuntimeError/ValueError for unreadable models
        raise ImportFormatError(f"{model_dir}: not a COLMAP model ({err})") from err
    for camera in rec.cameras.values():
        if camera.model.name not in ("SIMPLE_PINHOLE", "PINHOLE"):
            raise ImportFormatError(
                f"{model_dir}: camera model {camera.model.name} has distortion; "
                "undistort first (colmap image_undistorter)"
            )
    names = sorted(img.name for img in rec.images.values())
    try:
        poses = from_reconstruction(rec, "colmap", names).normalised()
    except PoseError as err:
        raise ImportFormatError(f"{model_dir}: {err}") from err
    by_name = {img.name: img for img in rec.images.values()}
    kept = [names[i] for i in poses.frame_ids]
    K = np.stack(
        [np.asarray(rec.cameras[by_name[n].camera_id].calibration_matrix(), np.float64) for n in kept]
    )
    images = [_image(Path(images_dir), n) for n in kept]
    poses = replace(poses, K=K, frame_ids=np.arange(len(kept)))
    return PosedSequence(Path(model_dir).name, images, poses, fps)


def read_transforms(json_path: Path, fps: float) -> PosedSequence:
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        frames = data["frames"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ImportFormatError(f"{json_path}: not a transforms.json with 'frames' ({err})") from err
    images, Ks, c2w = [], [], []
    for frame in frames:
        path = _image(json_path.parent, frame["file_path"])
        images.append(path)
        cam = {**data, **frame}
        if "fl_x" in cam:
            fx, fy = cam["fl_x"], cam.get("fl_y", cam["fl_x"])
            width, height = cam.get("w"), cam.get("h")
            if width is None or height is None:
                height, width = _load_rgb(path).shape[:2]
            cx, cy = cam.get("cx", width / 2), cam.get("cy", height / 2)
        elif "camera_angle_x" in cam:
            height, width = _load_rgb(path).shape[:2]
            fx = fy = 0.5 * width / np.tan(0.5 * cam["camera_angle_x"])
            cx, cy = width / 2, height / 2
        else:
            raise ImportFormatError(
                f"{json_path}: no intrinsics (fl_x or camera_angle_x) for {frame['file_path']}"
            )
        Ks.append([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        c2w.append(frame["transform_matrix"])
    c2w_cv = opengl_to_opencv(torch.tensor(c2w, dtype=torch.float64)).numpy()
    height, width = _load_rgb(images[0]).shape[:2]
    poses = ClipPoses(width, height, np.array(Ks, np.float64), c2w_cv, np.arange(len(images)), "transforms")
    return PosedSequence(json_path.parent.name, images, poses, fps)


def sequence_samples(seq: PosedSequence, config: PrepConfig) -> Iterator[dict]:
    """Encoded clip samples of one posed sequence, at the working resolution."""
    size = working_size(seq.poses.width, seq.poses.height, config.max_side)
    frames = np.stack([cv2.resize(_load_rgb(p), size, interpolation=cv2.INTER_AREA) for p in seq.images])
    poses = seq.poses.resized(*size)
    for start, end in clip_windows([(0, len(frames))], config.clip_length, config.clip_stride):
        clip = poses.window(start, end)
        flow = masks = None
        if config.priors.flow:
            flow, masks = compute_priors(frames[start:end], clip.per_frame_K(), clip.c2w, config.priors)
        sample = ClipSample(
            key=clip_key(Path(seq.name), start),
            frames=frames[start:end],
            fps=seq.fps,
            poses=clip,
            meta={
                "source": str(seq.images[0].parent),
                "imported_from": seq.poses.pose_method,
                "images": [p.name for p in seq.images[start:end]],
            },
            flow=flow,
            masks=masks,
        )
        yield encode(sample)


def import_sequences(sequences: list[PosedSequence], out: Path, config: PrepConfig) -> dict:
    rejected: list[dict] = []
    for seq in sequences:
        if len(seq.images) < config.clip_length:
            reason = f"{seq.name}: {len(seq.images)} frames, shorter than a clip"
            rejected.append({"source": seq.name, "clip": None, "reason": reason})

    def samples():
        for seq in sequences:
            yield from sequence_samples(seq, config)

    return write_dataset(Path(out), config, samples(), rejected, {"sequences": len(sequences)})
