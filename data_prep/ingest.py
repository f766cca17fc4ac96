"""Ingest: decode a video at a target frame rate and working resolution, keeping provenance.

Frames are selected, not blended: for a target rate below the source's, the source frame
nearest each target time is kept, and its index and timestamp are recorded.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_prep.video import VideoError, decode

VIDEO_SUFFIXES = {".mp4", ".avi", ".m4v", ".mov", ".mkv", ".webm"}


@dataclass
class IngestedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 at the working resolution
    fps: float  # rate of the kept frames
    source_indices: np.ndarray  # [T] index of each kept frame in the decoded source
    timestamps: np.ndarray  # [T] seconds
    source_size: tuple[int, int]  # (width, height) of the source


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size with the longer side at most ``max_side``, aspect kept, both sides even."""
    scale = 1.0 if max_side is None else min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def ingest(
    path: str | os.PathLike,
    fps: float | None = None,
    max_side: int | None = None,
    max_frames: int | None = None,
) -> IngestedVideo:
    """Decode ``path``; ``fps=None`` keeps every frame, ``max_side=None`` the source size."""
    path = Path(path)
    frames, times, rate = decode(path)
    if fps is None or fps >= rate:
        keep = np.arange(len(frames))
        out_fps = rate
    else:
        targets = np.arange(0.0, times[-1] + 1e-9, 1.0 / fps)
        keep = np.unique(np.abs(times[None, :] - targets[:, None]).argmin(axis=1))
        out_fps = fps
    if max_frames is not None:
        keep = keep[:max_frames]
    height, width = frames[0].shape[:2]
    size = working_size(width, height, max_side)
    resized = [
        frames[i] if size == (width, height) else cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA)
        for i in keep
    ]
    return IngestedVideo(np.stack(resized), out_fps, keep, times[keep], (width, height))


def expand_inputs(spec: str) -> list[Path]:
    """Videos named by a folder, a glob pattern, or a text file listing one path per line."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    elif path.is_file() and path.suffix.lower() in {".txt", ".lst", ".list"}:
        lines = [line.strip() for line in path.read_text().splitlines()]
        found = [
            Path(line) if Path(line).is_absolute() else path.parent / line
            for line in lines
            if line and not line.startswith("#")
        ]
    elif path.is_file():
        found = [path]
    else:
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True))
    if not found:
        raise VideoError(f"{spec}: matches no videos")
    return found
