"""Writing gavs-stabilize's outputs: the video (with the input's audio), the side-by-side
comparison and the camera-path plot. Every file appears complete or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from common.atomic import atomic_path
from data_prep.video import VideoError, write_video


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
    frames: np.ndarray,
    fps: float,
    side_by_side: np.ndarray | None = None,
    crf: int = 18,
    tune: str | None = None,
) -> list[Path]:
    """H.264 ``output`` (x264 ``crf`` and ``tune``) with the source's audio; with
    ``side_by_side`` (the input frames), also ``OUT.side-by-side.mp4``: input left, output
    right. Returns the paths written."""
    video_only = output.with_name(f".{output.stem}.video{output.suffix}")
    try:
        with atomic_path(output) as muxed:
            write_video(video_only, frames, fps, crf=crf, tune=tune)
            try:
                has_audio = _mux_audio(video_only, source, muxed, len(frames) / fps)
            except av.FFmpegError as err:
                raise VideoError(f"{output}: cannot copy the input's audio ({err})") from err
            if not has_audio:
                os.replace(video_only, muxed)
    finally:
        video_only.unlink(missing_ok=True)
    written = [output]
    if side_by_side is not None:
        pairs = (np.concatenate([a, b], axis=1) for a, b in zip(side_by_side, frames, strict=True))
        written.append(
            write_video(output.with_name(f"{output.stem}.side-by-side{output.suffix}"), pairs, fps)
        )
    return written


def plot_paths(original: np.ndarray, smoothed: np.ndarray, path: Path) -> Path:
    """PNG of camera centres and rotations (axis-angle relative to the first frame), before
    and after smoothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.spatial.transform import Rotation

    figure, axes = plt.subplots(2, 3, figsize=(12, 5), sharex=True)
    for c2w, style, label in ((original, "-", "input"), (smoothed, "-", "smoothed")):
        centres = c2w[:, :3, 3]
        rotations = Rotation.from_matrix(c2w[0, :3, :3].T @ c2w[:, :3, :3]).as_rotvec(degrees=True)
        for axis in range(3):
            axes[0, axis].plot(centres[:, axis], style, label=label, linewidth=1)
            axes[1, axis].plot(rotations[:, axis], style, label=label, linewidth=1)
    for axis, name in enumerate("xyz"):
        axes[0, axis].set_title(f"camera centre {name} (scene units)")
        axes[1, axis].set_title(f"rotation about {name} (degrees)")
        axes[1, axis].set_xlabel("posed frame")
    axes[0, 0].legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path
