"""Ingest: decode a video at a target frame rate and working resolution, keeping provenance.

Frames are selected, not blended: for a target rate below the source's, the source frame
nearest each target time is kept, and its index and timestamp are recorded.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_prep.video import Frame, VideoError, VideoInfo, VideoReader

VIDEO_SUFFIXES = {".mp4", ".avi", ".m4v", ".mov", ".mkv", ".webm"}


@dataclass
class IngestedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 at the working resolution, upright
    fps: float  # rate of the kept frames
    source_indices: np.ndarray  # [T] index of each kept frame in the decoded source
    timestamps: np.ndarray  # [T] seconds from the first decoded frame
    pts: np.ndarray  # [T] int64 presentation timestamps in ``info.time_base`` (-1 where the file has none)
    info: VideoInfo  # the source: displayed size, rotation, depth, colour, rate
    damage: str | None  # the reader's warning when less decoded than the container promised

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) of the source as displayed."""
        return self.info.size


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size with the longer side at most ``max_side``, aspect kept, both sides even."""
    scale = 1.0 if max_side is None else min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _nearest_to_rate(frames: Iterator[Frame], fps: float | None) -> Iterator[Frame]:
    """The frame nearest each multiple of ``1 / fps`` s from the first (the earlier on a tie),
    each at most once; every frame when ``fps`` is None. Frames are selected, not blended."""
    previous, target, start, last = None, 0.0, None, None
    for frame in frames:
        start = frame.time if start is None else start
        if fps is None:
            yield frame
            continue
        while previous is not None and target <= frame.time - start:
            nearest = min((previous, frame), key=lambda f: abs(f.time - start - target))
            if nearest is not last:
                yield nearest
                last = nearest
            target += 1.0 / fps
        previous = frame
    if previous is not None and previous is not last and target <= previous.time - start + 1e-9:
        yield previous


class FrameStack:
    """Working-size frames stacked into one array as they come, allocated for the promised
    count and doubled when full. A list of small per-frame arrays, each allocated between two
    full-size decodes, pins the heap's freed space, so memory grew with every frame."""

    def __init__(self, shape: tuple[int, ...], dtype: type, capacity: int) -> None:
        self.array = np.empty((max(1, capacity), *shape), dtype)
        self.count = 0

    def slot(self) -> np.ndarray:
        """The next frame's ``[H, W, C]`` slot, to be written in place."""
        if self.count == len(self.array):
            grown = np.empty((2 * len(self.array), *self.array.shape[1:]), self.array.dtype)
            grown[: self.count] = self.array
            self.array = grown
        self.count += 1
        return self.array[self.count - 1]

    def frames(self) -> np.ndarray:
        return self.array[: self.count]


def ingest(
    path: str | os.PathLike,
    fps: float | None = None,
    max_side: int | None = None,
    max_frames: int | None = None,
) -> IngestedVideo:
    """Decode ``path`` one frame at a time, keeping only the selected frames at the working
    size; ``fps=None`` keeps every frame, ``max_side=None`` the source size."""
    reader = VideoReader(path)
    frames: list[Frame] = []
    source = iter(reader)
    first = next(source, None)
    if first is None:
        raise VideoError(f"{path}: decodes to zero frames")
    rate = None if fps is None or fps >= reader.info.fps else fps
    size = working_size(first.image.shape[1], first.image.shape[0], max_side)
    expected = (reader.info.promised_frames or 1) * (1 if rate is None else rate / reader.info.fps)
    # at most 256 MB up front: a container's promise can be wrong, and the stack doubles anyway
    capacity = min(round(expected) + 1, max_frames or np.inf, 2**28 // (3 * size[0] * size[1]) + 1)
    images = FrameStack((size[1], size[0], 3), np.uint8, int(capacity))
    for frame in _nearest_to_rate(itertools.chain([first], source), rate):
        if frame.image.shape[1::-1] == size:
            images.slot()[:] = frame.image
        else:
            cv2.resize(frame.image, size, dst=images.slot(), interpolation=cv2.INTER_AREA)
        frame.image = None  # only the working size is kept
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    complete = max_frames is None or len(frames) < max_frames
    return IngestedVideo(
        frames=images.frames(),
        fps=reader.info.fps if rate is None else rate,
        source_indices=np.array([f.index for f in frames]),
        timestamps=np.array([f.time for f in frames]) - frames[0].time,
        pts=np.array([-1 if f.pts is None else f.pts for f in frames], np.int64),
        info=reader.info,
        damage=reader.damage() if complete else None,
    )


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
