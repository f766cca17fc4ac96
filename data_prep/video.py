"""Video I/O with PyAV: the one place the project decodes and encodes video."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from common.atomic import atomic_path


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names the file and the problem."""


@dataclass
class Video:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.frames.shape[2], self.frames.shape[1]


def decode(
    path: str | os.PathLike, max_frames: int | None = None
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """RGB frames, their timestamps (s, from 0) and the stream's average rate."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: contains no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 30.0)
            frames, times = [], []
            for index, frame in enumerate(container.decode(stream)):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time) if frame.time is not None else index / rate)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.FFmpegError as err:
        raise VideoError(f"{path}: cannot be decoded as video ({err})") from err
    if not frames:
        raise VideoError(f"{path}: decodes to zero frames")
    return frames, np.asarray(times) - times[0], rate


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> Video:
    """Decode every frame (or the first ``max_frames``) of the first video stream as RGB."""
    frames, _, rate = decode(path, max_frames)
    return Video(np.stack(frames), rate)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 18,
    codec: str = "libx264",
    tune: str | None = None,
) -> Path:
    """Encode RGB uint8 frames as H.264 (yuv420p), atomically: a failed write leaves nothing behind.
    ``tune`` is x264's (e.g. ``grain``, which keeps fine texture in every frame type).

    Frames go to a temporary name in the destination folder, which is renamed on success.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise VideoError(f"{path}: the folder {path.parent} does not exist")
    try:
        with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
            stream = None
            for frame in frames:
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise VideoError(
                        f"{path}: frames must be [H, W, 3] uint8, got {frame.dtype} {frame.shape}"
                    )
                if stream is None:
                    height, width = frame.shape[:2]
                    if width % 2 or height % 2:
                        raise VideoError(
                            f"{path}: H.264 (yuv420p) needs even width and height, got {width}x{height}"
                        )
                    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    stream.options = {"crf": str(crf), **({"tune": tune} if tune else {})}
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            if stream is None:
                raise VideoError(f"{path}: no frames to write")
            container.mux(stream.encode())
    except (OSError, av.FFmpegError) as err:
        raise VideoError(f"{path}: cannot be written ({err})") from err
    return path
