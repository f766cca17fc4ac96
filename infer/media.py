"""Writing gavs-stabilize's outputs: the video (with the input's audio), the side-by-side
comparison and the camera-path plot. Every file appears complete or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from common.atomic import atomic_path
from data_prep.video import Encoding, VideoError, VideoWriter


def _mux_audio(video_only: Path, source: Path, destination: Path, duration: float) -> bool:
    """Copy ``video_only``'s video and ``source``'s first audio stream (up to ``duration`` s)
    into ``destination``, without re-encoding. False when the source has no audio."""
    with av.open(str(source)) as audio_in:
        if not audio_in.streams.audio:
            return False
        with av.open(str(video_only)) as video_in, av.open(str(destination), "w") as out:
            video, audio = video_in.streams.video[0], audio_in.streams.audio[0]
            video_out = out.add_stream_from_template(video)
            audio_out = out.add_stream_from_template(audio)
            for packet in video_in.demux(video):
                if packet.dts is not None:
                    packet.stream = video_out
                    out.mux(packet)
            for packet in audio_in.demux(audio):
                if packet.dts is None or (packet.pts is not None and packet.pts * audio.time_base > duration):
                    continue
                packet.stream = audio_out
                out.mux(packet)
    return True


def write_output(
    source: Path,
    output: Path,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    pts: np.ndarray,
    encoding: Encoding,
    duration: float,
    side_by_side: bool = False,
) -> list[Path]:
    """Encode ``(input frame, output frame)`` pairs as they come into ``output``, with
    ``source``'s audio up to ``duration`` s; with ``side_by_side``, also
    ``OUT.side-by-side.mp4`` (input left, output right). ``pts [T]`` are the frames'
    timestamps in ``encoding.time_base``. Returns the paths written; all appear complete or
    not at all."""
    video_only = output.with_name(f".{output.stem}.video{output.suffix}")
    side_path = output.with_name(f"{output.stem}.side-by-side{output.suffix}")
    side_encoding = replace(
        encoding, width=2 * encoding.width, chroma="444" if encoding.height % 2 else "420"
    )
    try:
        with ExitStack() as stack:
            main = stack.enter_context(VideoWriter(video_only, encoding))
            side = stack.enter_context(VideoWriter(side_path, side_encoding)) if side_by_side else None
            for index, (frame_in, frame_out) in enumerate(pairs):
                main.write(frame_out, int(pts[index]))
                if side is not None:
                    side.write(np.concatenate([frame_in, frame_out], axis=1), int(pts[index]))
        with atomic_path(output) as muxed:
            try:
                has_audio = _mux_audio(video_only, source, muxed, duration)
            except av.FFmpegError as err:
                raise VideoError(f"{output}: cannot copy the input's audio ({err})") from err
            if not has_audio:
                os.replace(video_only, muxed)
    except BaseException:
        side_path.unlink(missing_ok=True)
        raise
    finally:
        video_only.unlink(missing_ok=True)
    return [output, side_path] if side_by_side else [output]


def plot_paths(segments: list[tuple[int, np.ndarray, np.ndarray]], path: Path) -> Path:
    """PNG of camera centres and rotations (axis-angle relative to each segment's first
    frame), before and after smoothing, for ``(first frame, original [n, 4, 4], smoothed [n,
    4, 4])`` per 3D segment (each has its own reconstruction, so each starts from zero)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.spatial.transform import Rotation

    figure, axes = plt.subplots(2, 3, figsize=(12, 5), sharex=True)
    for index, (start, *paths) in enumerate(segments):
        for c2w, colour, label in zip(paths, ("C0", "C1"), ("input", "smoothed"), strict=True):
            frames = start + np.arange(len(c2w))
            centres = c2w[:, :3, 3] - c2w[0, :3, 3]
            rotations = Rotation.from_matrix(c2w[0, :3, :3].T @ c2w[:, :3, :3]).as_rotvec(degrees=True)
            for axis in range(3):
                name = label if index == 0 else None
                axes[0, axis].plot(frames, centres[:, axis], color=colour, label=name, linewidth=1)
                axes[1, axis].plot(frames, rotations[:, axis], color=colour, label=name, linewidth=1)
    for axis, name in enumerate("xyz"):
        axes[0, axis].set_title(f"camera centre {name} (scene units)")
        axes[1, axis].set_title(f"rotation about {name} (degrees)")
        axes[1, axis].set_xlabel("frame")
    if segments:
        axes[0, 0].legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path
