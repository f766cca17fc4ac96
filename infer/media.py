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
            if "comment" in video_in.metadata:  # what the frames hold (a stereo layout)
                out.metadata["comment"] = video_in.metadata["comment"]
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
    outputs: list[Path],
    frames: Iterable[tuple[np.ndarray, list[np.ndarray]]],
    *,
    pts: np.ndarray,
    encoding: Encoding,
    duration: float,
    side_by_side: bool = False,
) -> list[Path]:
    """Encode ``(input frame, [one frame per output])`` as they come into ``outputs`` (each
    with ``source``'s audio up to ``duration`` s); with ``side_by_side``, also
    ``OUT.side-by-side.mp4`` of the first output (input left, output right). ``pts [T]`` are
    the frames' timestamps in ``encoding.time_base``. Returns the paths written; all appear
    complete or not at all."""
    video_only = [out.with_name(f".{out.stem}.video{out.suffix}") for out in outputs]
    side_path = outputs[0].with_name(f"{outputs[0].stem}.side-by-side{outputs[0].suffix}")
    side_encoding = replace(
        encoding, width=2 * encoding.width, chroma="444" if encoding.height % 2 else "420"
    )
    done: list[Path] = []
    try:
        with ExitStack() as stack:
            writers = [stack.enter_context(VideoWriter(path, encoding)) for path in video_only]
            side = stack.enter_context(VideoWriter(side_path, side_encoding)) if side_by_side else None
            for index, (frame_in, frames_out) in enumerate(frames):
                for writer, frame in zip(writers, frames_out, strict=True):
                    writer.write(frame, int(pts[index]))
                if side is not None:
                    side.write(np.concatenate([frame_in, frames_out[0]], axis=1), int(pts[index]))
        for output, video in zip(outputs, video_only, strict=True):
            with atomic_path(output) as muxed:
                try:
                    has_audio = _mux_audio(video, source, muxed, duration)
                except av.FFmpegError as err:
                    raise VideoError(f"{output}: cannot copy the input's audio ({err})") from err
                if not has_audio:
                    os.replace(video, muxed)
            done.append(output)
    except BaseException:
        for path in [*done, side_path]:  # all or nothing
            path.unlink(missing_ok=True)
        raise
    finally:
        for video in video_only:
            video.unlink(missing_ok=True)
    return [*outputs, side_path] if side_by_side else outputs


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
