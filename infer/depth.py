"""``gavs-render --depth``: consistent video depth read out of a clip's reconstruction.

Each posed frame's depth is what its own camera sees of its finetuned Gaussians
(``infer.rerender.source_depths``), upsampled to the input's size. It is written as one
16-bit PNG per frame (depth = value x scale, 0 where unknown) or as one ``depth.npz``, with
``depth.json`` (scale, near, far, the cameras) and a colourised ``preview.mp4`` beside it,
into a folder that appears whole or not at all.

Consistency is measured as the disagreement between a frame's depth and a neighbour's depth
carried over by the poses, on the static pixels of the frame (``disagreement``), for three
sources: the finetuned reconstruction, the network before finetuning, and the sparse SfM
depth (whose points are multi-view consistent by construction, so its number is a floor
rather than a rival). A flat map is consistent too, and a fresh network's depth is nearly
flat, so each source also gets the disagreement over its own contrast (``contrast``: the
depth's relative spread in the frame): under 1, the depth's structure holds from frame to
frame; a flat map scores 1 or more. The dense sources are also compared with the SfM points
(``sparse_agreement``), after a per-frame scale, since a fresh network has none.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common import interrupt
from common.atomic import write_atomic
from common.memory import release_free_heap
from data_prep.schema import ClipPoses
from data_prep.video import Encoding, VideoInfo, VideoWriter
from infer.extrapolate import static_masks
from infer.posing import DecodedClip
from infer.rerender import source_depths
from infer.stabilize import (
    Reconstruction,
    StabilizeConfig,
    check_encoder,
    check_space,
    check_writable,
    initial_network,
    output_pts,
)

PNG_MAX = 65535
SOURCES = ("finetuned", "initial", "sparse")


@dataclass
class DepthConfig:
    format: Literal["png", "npz"] = "png"
    """png: depth/NNNNNN.png per frame, 16-bit, depth = value x scale (depth.json), 0 where
    unknown; npz: depth.npz with float32 depth [frames, height, width], 0 where unknown."""
    preview: bool = True
    """Also write preview.mp4: inverse depth in the turbo colour map, on one scale for the clip."""
    compare: bool = True
    """Also measure the network before finetuning (one more depth pass) and the sparse SfM depth."""
    offsets: tuple[int, ...] = (1, 2, 4)
    """Earlier frames (offsets) that each frame's depth is checked against for consistency."""
    range_factor: float = 8.0
    """The PNGs' deepest value, in multiples of the SfM points' 99th-percentile depth; deeper
    pixels are clipped to it (and counted in the report)."""


class DepthOutputError(ValueError):
    """An output that --depth would not replace: it exists and is not a depth folder."""


def disagreement(
    *, depth: np.ndarray, other: np.ndarray, K: np.ndarray, other_to_frame: np.ndarray, static: np.ndarray
) -> tuple[float, int]:
    """Median of ``|z - d| / d`` and the pixel count, where a neighbour's depth ``other [H, W]``
    is carried into this frame's camera by ``other_to_frame [4, 4]`` (its camera to this one)
    to depth ``z`` at pixel ``p``, and ``d = depth[p]`` (``depth [H, W]``). Only pixels with a
    depth in both and static in this frame's ``static [H, W]`` count (nan, 0 when none do)."""
    height, width = depth.shape
    rows, cols = np.nonzero(other > 0)
    rays = np.linalg.inv(K) @ np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))])  # pixel centres
    points = other_to_frame[:3, :3] @ (rays * other[rows, cols]) + other_to_frame[:3, 3:]
    points = points[:, points[2] > 1e-6]
    projected = K @ points
    u = np.floor(projected[0] / projected[2]).astype(np.int64)
    v = np.floor(projected[1] / projected[2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], points[2, inside]
    d = depth[v, u]
    keep = (d > 0) & static[v, u]
    if not keep.any():
        return float("nan"), 0
    return float(np.median(np.abs(z[keep] - d[keep]) / d[keep])), int(keep.sum())


def contrast(depth: np.ndarray, static: np.ndarray) -> float:
    """The depth's own relative spread over the static pixels with a depth: median absolute
    deviation over the median (0 for a flat map; nan where none)."""
    known = depth[(depth > 0) & static]
    if len(known) == 0:
        return float("nan")
    middle = np.median(known)
    return float(np.median(np.abs(known - middle)) / middle)


def sparse_depths(poses: ClipPoses) -> Iterator[np.ndarray]:
    """``[H, W]`` each frame's SfM points' depths at their pixels (the nearest where two share
    one), 0 elsewhere, in frame order: the observations are sorted by frame once."""
    seen = poses.observations[np.argsort(poses.observations[:, 0], kind="stable")]
    bounds = np.searchsorted(seen[:, 0], np.arange(len(poses.c2w) + 1))
    for start, end in itertools.pairwise(bounds):
        frame = seen[start:end]
        cols = np.clip(frame[:, 1].astype(np.int64), 0, poses.width - 1)  # COLMAP: (0.5, 0.5) is a centre
        rows = np.clip(frame[:, 2].astype(np.int64), 0, poses.height - 1)
        depth = np.full((poses.height, poses.width), np.inf)
        np.minimum.at(depth, (rows, cols), frame[:, 3])
        yield np.where(np.isfinite(depth), depth, 0.0)


def sparse_agreement(depth: np.ndarray, sparse: np.ndarray) -> tuple[float, float]:
    """``(median |k d - z| / z, k)`` over the pixels where ``sparse [H, W]`` has an SfM depth z
    and ``depth [H, W]`` a depth d, with ``k`` the median of z / d: how well the dense depth's
    shape follows the points, and its scale against theirs (nan where none overlap)."""
    both = (sparse > 0) & (depth > 0)
    if not both.any():
        return float("nan"), float("nan")
    z, d = sparse[both], depth[both]
    k = float(np.median(z / d))
    return float(np.median(np.abs(k * d - z) / z)), k


class Measure:
    """One source's consistency (and, with ``agree``, agreement with the SfM points) over a
    segment with ``poses`` and static masks ``static [T, H, W]``, fed its depths in order."""

    def __init__(self, poses: ClipPoses, static: np.ndarray, offsets: tuple[int, ...], agree: bool) -> None:
        self.poses, self.static, self.offsets, self.agree = poses, static, offsets, agree
        self.points = sparse_depths(poses) if agree else None  # frame by frame, as the depths come
        self.held: dict[int, np.ndarray] = {}
        self.pairs: list[tuple[int, int, float, int]] = []  # frame, neighbour, disagreement, pixels
        self.contrast: dict[int, float] = {}  # per frame
        self.agreement: list[tuple[float, float]] = []
        self.density: list[float] = []

    def add(self, t: int, depth: np.ndarray) -> None:
        K, c2w = self.poses.per_frame_K()[t], self.poses.c2w
        for offset in self.offsets:
            if t - offset in self.held:
                value, pixels = disagreement(
                    depth=depth,
                    other=self.held[t - offset],
                    K=K,
                    other_to_frame=np.linalg.inv(c2w[t]) @ c2w[t - offset],
                    static=self.static[t],
                )
                self.pairs.append((t, t - offset, value, pixels))
        self.held[t] = depth
        self.held.pop(t - max(self.offsets, default=0), None)
        self.contrast[t] = contrast(depth, self.static[t])
        if self.agree:
            self.agreement.append(sparse_agreement(depth, next(self.points)))
        self.density.append(float((depth > 0).mean()))

    def feed(self, depths: Iterator[Tensor | np.ndarray]) -> Iterator[Tensor | np.ndarray]:
        """``depths`` (frame 0 on), each measured as it passes."""
        for t, depth in enumerate(depths):
            self.add(t, depth.cpu().numpy() if isinstance(depth, Tensor) else depth)
            yield depth

    def consume(self, depths: Iterator[Tensor | np.ndarray]) -> None:
        for _ in self.feed(depths):
            pass


def summary(measures: list[Measure], starts: list[int]) -> dict:
    """A source's report entry over its segments (``starts``: each one's first frame): the
    median disagreement over frame pairs, the depth's contrast, their ratio, each pair's
    numbers, and the agreement with the points."""
    pairs = [
        (s + t, s + n, v, p, v / m.contrast[t])
        for m, s in zip(measures, starts, strict=True)
        for t, n, v, p in m.pairs
    ]
    counted = [pair for pair in pairs if pair[3] > 0]
    contrasts = [c for m in measures for c in m.contrast.values() if np.isfinite(c)]
    entry = {
        "consistency": float(np.median([v for _, _, v, _, _ in counted])) if counted else None,
        "contrast": float(np.median(contrasts)) if contrasts else None,
        "consistency_to_contrast": float(np.median([r for *_, r in counted])) if counted else None,
        "density": float(np.mean([d for m in measures for d in m.density])) if measures else None,
        "consistency_pairs": [[t, n, round(v, 6), p] for t, n, v, p, _ in pairs],
    }
    agreement = np.array([a for m in measures for a in m.agreement], float).reshape(-1, 2)
    if measures and measures[0].agree:
        found = np.isfinite(agreement[:, 0])
        entry["sparse_agreement"] = float(np.median(agreement[found, 0])) if found.any() else None
        entry["sparse_scale"] = float(np.median(agreement[found, 1])) if found.any() else None
    return entry


def to_size(depth: Tensor, width: int, height: int) -> np.ndarray:
    """``depth [h, w]`` at ``width`` x ``height`` (bilinear over the known pixels only, so an
    unknown 0 never pulls a neighbour's depth down), 0 where the nearest pixel is unknown."""
    known = (depth > 0).float()[None, None]
    size = (height, width)
    total = F.interpolate((depth * known.squeeze())[None, None], size, mode="bilinear", align_corners=False)
    weight = F.interpolate(known, size, mode="bilinear", align_corners=False)
    nearest = F.interpolate(known, size, mode="nearest")
    out = torch.where((nearest > 0) & (weight > 0), total / weight.clamp(min=1e-6), 0.0)
    return out[0, 0].cpu().numpy().astype(np.float32)


class PngFrames:
    """``depth/NNNNNN.png``: 16-bit depth / ``scale``, rounded; 0 unknown, deeper clipped."""

    def __init__(self, folder: Path, scale: float) -> None:
        self.folder, self.scale = folder / "depth", scale
        self.folder.mkdir()
        self.clipped = 0

    def write(self, index: int, depth: np.ndarray) -> None:
        values = np.rint(depth / self.scale)
        self.clipped += int((values > PNG_MAX).sum())
        values = np.where(depth > 0, np.clip(values, 1, PNG_MAX), 0).astype(np.uint16)
        if not cv2.imwrite(str(self.folder / f"{index:06d}.png"), values):
            raise OSError(f"{self.folder / f'{index:06d}.png'}: could not be written")

    def close(self) -> None:
        pass


class NpzFrames:
    """``depth.npz`` holding ``depth``, float32 ``[T, H, W]``, written a frame at a time (the
    array's .npy header first, then the frames' bytes), so the clip never sits in memory."""

    def __init__(self, folder: Path, shape: tuple[int, int, int]) -> None:
        self.archive = zipfile.ZipFile(folder / "depth.npz", "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        self.entry = self.archive.open("depth.npy", "w", force_zip64=True)
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.entry, header)

    def write(self, index: int, depth: np.ndarray) -> None:
        self.entry.write(depth.astype("<f4").tobytes())

    def close(self) -> None:
        self.entry.close()
        self.archive.close()


def colourised(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of ``depth [H, W]``: inverse depth from ``far`` (dark blue) to
    ``near`` (dark red) in the turbo map; black where unknown."""
    inverse = np.where(depth > 0, 1 / np.maximum(depth, 1e-9), 0)
    level = np.clip((inverse - 1 / far) / (1 / near - 1 / far), 0, 1)
    rgb = cv2.cvtColor(
        cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB
    )
    return np.where((depth > 0)[..., None], rgb, 0).astype(np.uint8)


def deep_points(clip: DecodedClip) -> float:
    """The 99th percentile of the clip's SfM point depths (scene units), or 2 for a clip whose
    poses have none (rotation only: median depth 1 by convention)."""
    depths = [s.poses.observations[:, 3] for s in clip.segments if s.poses is not None]
    depths = np.concatenate(depths) if depths else np.zeros(0)
    return float(np.quantile(depths, 0.99)) if len(depths) else 2.0


def preview_encoding(size: tuple[int, int], info: VideoInfo) -> Encoding:
    """The preview's encoding: 8-bit H.264 at ``size`` (4:4:4 when a side is odd), in the
    input's time base, so its frames keep the input's timestamps."""
    width, height = size
    chroma = "444" if width % 2 or height % 2 else "420"
    return Encoding(width, height, info.fps, info.time_base, chroma=chroma)


def check_depth_output(output: Path, size: tuple[int, int], info: VideoInfo, work_dir: Path) -> None:
    """Before any work: OUT's folder is writable, OUT is new or an earlier depth folder (which
    is replaced), the preview can be encoded and the disks have room."""
    check_writable(output)
    if output.exists() and not (output.is_dir() and (output / "depth.json").is_file()):
        raise DepthOutputError(f"{output}: exists and is not a gavs-render depth folder; choose another")
    check_encoder(output / "preview.mp4", preview_encoding(size, info), folder=output.parent)
    check_space(output, (info.promised_frames or 0) * size[0] * size[1] * 4, info, work_dir)  # float32


class DepthSink:
    """Where a clip's depth frames go, in order, at ``size``: the PNGs (at ``scale`` per value)
    or the .npz, and the preview; ``fields()`` is depth.json's description of what was
    written. The preview's colours run over the first known frame's 2nd-98th depth
    percentiles, kept for the whole clip so that they do not flicker."""

    def __init__(
        self, folder: Path, config: DepthConfig, *, clip: DecodedClip, size: tuple[int, int], scale: float
    ) -> None:
        self.config, self.size, self.scale, self.count = config, size, scale, len(clip.frames)
        self.shown: tuple[float, float] | None = None  # near and far of the preview's colours
        self.pts, encoding = output_pts(clip, preview_encoding(size, clip.info))
        self.stack = ExitStack()
        if config.format == "png":
            self.frames: PngFrames | NpzFrames = PngFrames(folder, scale)
        else:
            self.frames = NpzFrames(folder, (self.count, size[1], size[0]))
        self.stack.callback(self.frames.close)
        self.preview = (
            self.stack.enter_context(VideoWriter(folder / "preview.mp4", encoding))
            if config.preview
            else None
        )
        self.index, self.known, self.near, self.far = 0, 0, float("inf"), 0.0

    def __enter__(self) -> DepthSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def write(self, frames: Iterator[np.ndarray]) -> None:
        """Each ``[H, W]`` depth frame of ``frames``, as it comes."""
        for depth in frames:
            interrupt.progress(f"frame {self.index + 1} of {self.count}")
            self.frames.write(self.index, depth)
            known = depth[depth > 0]
            if self.shown is None and len(known):
                near, far = np.percentile(known, [2, 98])
                self.shown = float(near), float(max(far, near * 1.01))
            if self.preview is not None:
                self.preview.write(colourised(depth, *(self.shown or (1.0, 2.0))), int(self.pts[self.index]))
            if len(known):
                self.near, self.far = min(self.near, float(known.min())), max(self.far, float(known.max()))
            self.known, self.index = self.known + len(known), self.index + 1

    def fields(self) -> dict:
        fields = {"format": self.config.format, "size": list(self.size), "frames": self.count, "unknown": 0}
        if self.config.format == "png":
            fields |= {
                "scale": self.scale,
                "depth": "PNG value x scale",
                "clipped_pixels": self.frames.clipped,
            }
        return fields | {
            "near": self.near if self.known else None,
            "far": self.far if self.known else None,
            "units": "scene units: each 3D segment's SfM world, scaled to a median point depth of 1",
        }


def _frame_cameras(poses: ClipPoses, size: tuple[int, int]) -> list[dict]:
    """Each frame's camera at the output ``size``: K (scaled from the working size) and c2w."""
    scale = np.diag([size[0] / poses.width, size[1] / poses.height, 1.0])
    return [
        {"K": (scale @ K).tolist(), "c2w": c2w.tolist()}
        for K, c2w in zip(poses.per_frame_K(), poses.c2w, strict=True)
    ]


def write_depths(
    folder: Path,
    built: Reconstruction,
    config: StabilizeConfig,
    depth: DepthConfig,
    *,
    size: tuple[int, int],
    device: torch.device,
    progress: bool,
) -> dict:
    """Write every frame's depth at ``size`` into ``folder`` (with depth.json and the preview),
    measure the sources, and return the report's depth entry."""
    clip = built.clip
    render = {"config": config.render, "backend": config.backend, "device": device}
    first = initial_network(config)[0].to(device).eval() if depth.compare else None
    measures: dict[str, list[Measure]] = {s: [] for s in (SOURCES if depth.compare else SOURCES[:1])}
    cameras: list[dict | None] = []
    starts: list[int] = []
    scale = depth.range_factor * deep_points(clip) / PNG_MAX
    with DepthSink(folder, depth, clip=clip, size=size, scale=scale) as sink:
        for k, plan in enumerate(built.plans):
            segment, poses = plan.segment, plan.segment.poses
            if poses is None:  # a 2D segment: no 3D camera, so no depth
                cameras += [None] * segment.length
                sink.write(np.zeros(size[::-1], np.float32) for _ in range(segment.length))
                continue
            posed, render_config = clip.posed(segment), config.render
            static = static_masks(
                posed.frames, poses.per_frame_K()[0], poses.c2w, render_config.dynamic_dilation,
                render_config.dynamic_propagation,
            )  # fmt: skip
            for source, kept in measures.items():
                kept.append(Measure(poses, static, depth.offsets, agree=source != "sparse"))
            starts.append(segment.start)
            cameras += _frame_cameras(poses, size)
            tuned = source_depths(built.network(k), posed, pad=plan.pad, progress=progress, **render)
            sink.write(to_size(d, *size) for d in measures["finetuned"][-1].feed(tuned))
            if first is not None:
                initial = source_depths(first, posed, pad=plan.pad, progress=False, **render)
                measures["initial"][-1].consume(initial)
                measures["sparse"][-1].consume(sparse_depths(poses))
            release_free_heap()
    fields = sink.fields() | {"frames_without_depth": [i for i, c in enumerate(cameras) if c is None]}
    write_atomic(folder / "depth.json", json.dumps(fields | {"cameras": cameras}))
    return fields | {"sources": {source: summary(m, starts) for source, m in measures.items()}}
