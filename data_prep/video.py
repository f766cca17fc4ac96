"""Video I/O with PyAV: the one place the project decodes and encodes video.

Decoding (``probe``, ``VideoReader``):
    - frames come out **upright**: the display matrix's rotation is applied, so every later
      stage sees what a player shows;
    - YUV is converted with the stream's own matrix and range. An untagged stream is read as
      BT.709 from 720 lines up and BT.601 below, as players do;
    - 8-bit RGB (``uint8``), or 16-bit RGB (``uint16``, full scale 65535) for the full-size
      frames of a 10- or 12-bit stream, so its precision survives to the output;
    - a packet that fails to decode is counted and skipped, and ``VideoReader.damage`` says
      how much of what the container promised actually decoded.

Encoding (``Encoding``, ``VideoWriter``) keeps what the input had: its size (odd sizes go to
4:4:4, since 4:2:0 needs even sides), bit depth, chroma layout, colour tags (matrix, range,
primaries, transfer, HDR's PQ and HLG included) and timestamps (variable frame rates stay
variable). Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from common.atomic import partial_path, remove
from common.atomic import replace as rename_onto

# ffmpeg's AVColorSpace values and the swscale matrix each one means.
MATRIX_NAMES = {0: "rgb", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m"}
MATRIX_NAMES |= {9: "bt2020nc", 10: "bt2020c"}
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
BT709, BT601, UNSPECIFIED = 1, 6, 2
LIMITED, FULL = 1, 2  # AVColorRange (0 is unspecified, read as limited)
TRANSFER_NAMES = {1: "bt709", 2: "unknown", 6: "smpte170m", 13: "srgb", 14: "bt2020-10", 16: "smpte2084 (PQ)"}
TRANSFER_NAMES |= {18: "arib-std-b67 (HLG)"}
X264_MAX_DEPTH = 10


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class Colour:
    """A stream's colour description, as ffmpeg's enum values (``AVColorSpace`` and kin)."""

    matrix: int = UNSPECIFIED
    range: int = 0
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED

    def resolved(self, height: int) -> Colour:
        """Unspecified matrix and range replaced by what players assume (BT.709 from 720 lines)."""
        matrix = self.matrix if self.matrix in _SWS_MATRIX else (BT709 if height >= 720 else BT601)
        return replace(self, matrix=matrix, range=self.range or LIMITED)

    def describe(self) -> dict[str, str]:
        return {
            "matrix": MATRIX_NAMES.get(self.matrix, str(self.matrix)),
            "range": {0: "unspecified", LIMITED: "limited", FULL: "full"}.get(self.range, str(self.range)),
            "primaries": str(self.primaries),
            "transfer": TRANSFER_NAMES.get(self.transfer, str(self.transfer)),
        }


@dataclass(frozen=True)
class VideoInfo:
    """What a video stream is, from its container and first frame."""

    path: Path
    width: int  # displayed (upright) size
    height: int
    rotation: int  # degrees counter-clockwise the player turns the stored frames: 0, 90, 180, 270
    fps: float  # average rate
    time_base: Fraction
    bit_depth: int
    chroma: str  # "420", "422" or "444"
    colour: Colour  # as tagged; ``colour.resolved(height)`` is how it is decoded
    promised_frames: int | None  # what the container says it holds
    has_audio: bool

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _chroma(format: av.VideoFormat) -> str:
    if format.is_rgb or len(format.components) < 3:
        return "444"
    return {(4, 4): "420", (4, 8): "422"}.get((format.chroma_width(8), format.chroma_height(8)), "444")


def _promised(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> int | None:
    if stream.frames:
        return int(stream.frames)
    duration = stream.duration * stream.time_base if stream.duration else None
    if duration is None and container.duration:
        duration = container.duration / av.time_base
    rate = stream.average_rate or stream.guessed_rate
    return round(float(duration) * float(rate)) if duration and rate else None


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise VideoError(f"{path}: cannot be decoded as video ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: contains no video stream")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """The stream's size as displayed, rotation, rate, bit depth, colour and promised length."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        first = next(iter(VideoReader(path, limit=1)._frames(container)), None)
        if first is None:
            raise VideoError(f"{path}: decodes to zero frames")
        rotation = round((first.rotation or 0) / 90) % 4 * 90
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
        format = first.format
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            rotation=rotation,
            fps=float(stream.average_rate or stream.guessed_rate or 30.0),
            time_base=Fraction(stream.time_base or Fraction(1, 30)),
            bit_depth=max(c.bits for c in format.components),
            chroma=_chroma(format),
            colour=Colour(first.colorspace, first.color_range, first.color_primaries, first.color_trc),
            promised_frames=_promised(stream, container),
            has_audio=bool(container.streams.audio),
        )


@dataclass
class Frame:
    index: int
    pts: int | None  # in the stream's time base
    time: float  # seconds
    image: np.ndarray  # [H, W, 3] upright RGB, uint8 or uint16


class VideoReader:
    """Upright RGB frames of a file's first video stream, in order, one at a time.

    ``depth`` 8 gives ``uint8``; 16 gives ``uint16`` (the stream's precision, full scale 65535).
    After iterating, ``decoded`` and ``errors`` count frames and undecodable packets, and
    ``damage()`` describes any shortfall against what the container promised.
    """

    def __init__(self, path: str | os.PathLike, *, depth: int = 8, limit: int | None = None) -> None:
        self.path, self.depth, self.limit = Path(path), depth, limit
        self.decoded = self.errors = 0
        self.info: VideoInfo | None = None

    def _frames(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError:
                self.errors += 1  # a damaged container: the rest is unreadable
                break
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.errors += 1
                continue
            for frame in frames:
                yield frame
                count += 1
                if self.limit is not None and count >= self.limit:
                    return

    def __iter__(self) -> Iterator[Frame]:
        self.info = info = probe(self.path)
        colour = info.colour.resolved(info.height)
        format = "rgb24" if self.depth == 8 else "rgb48le"
        turns = info.rotation // 90
        rate = info.fps
        with _open(self.path) as container:
            for index, frame in enumerate(self._frames(container)):
                image = frame.to_ndarray(
                    format=format,
                    src_colorspace=_SWS_MATRIX[colour.matrix],
                    src_color_range="JPEG" if colour.range == FULL else "MPEG",
                    dst_color_range="JPEG",
                )
                image = np.ascontiguousarray(np.rot90(image, turns)) if turns else image
                time = float(frame.time) if frame.time is not None else index / rate
                self.decoded = index + 1
                yield Frame(index, frame.pts, time, image)

    def damage(self) -> str | None:
        """One sentence when less decoded than the container promised, or packets failed."""
        promised = self.info.promised_frames if self.info else None
        short = promised is not None and self.decoded < promised - max(2, 0.01 * promised)
        if not short and not self.errors:
            return None
        said = f"the container promises {promised} frames" if promised else "the container gives no length"
        failed = f", {self.errors} packets failed to decode" if self.errors else ""
        return f"{self.path}: damaged or truncated: {self.decoded} frames decoded, {said}{failed}"


@dataclass
class Video:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB, upright
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.frames.shape[2], self.frames.shape[1]


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> Video:
    """Every frame (or the first ``max_frames``) as 8-bit upright RGB, in memory: for short clips."""
    reader = VideoReader(path, limit=max_frames)
    frames = [frame.image for frame in reader]
    if not frames:
        raise VideoError(f"{path}: decodes to zero frames")
    return Video(np.stack(frames), reader.info.fps)


FramePacking = Literal["sbs", "tb"]
X264_FRAME_PACKING = {"sbs": 3, "tb": 4}


@dataclass(frozen=True)
class Encoding:
    """How a video is written: codec, pixel format, size, colour tags, timing, and what the
    frames hold (a stereo layout)."""

    width: int
    height: int
    fps: float
    time_base: Fraction  # of the frames' pts
    bit_depth: int = 8
    chroma: str = "420"
    colour: Colour = Colour(BT601, LIMITED, UNSPECIFIED, UNSPECIFIED)
    crf: int = 18
    tune: str | None = None
    frame_packing: FramePacking | None = None  # H.264's frame-packing SEI, which players read
    comment: str | None = None  # the container's comment tag

    @property
    def codec(self) -> str:
        return "libx264" if self.bit_depth <= X264_MAX_DEPTH else "libx265"

    @property
    def pix_fmt(self) -> str:
        depth = "" if self.bit_depth == 8 else f"{self.bit_depth}le"
        return f"yuv{self.chroma}p{depth}"

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bit_depth == 8 else np.uint16

    def describe(self) -> dict:
        return {
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "size": [self.width, self.height],
            "colour": self.colour.describe(),
            "crf": self.crf,
            "tune": self.tune,
            "frame_packing": self.frame_packing,
            "comment": self.comment,
        }


def encoding_like(info: VideoInfo, *, crf: int = 18, tune: str | None = None) -> tuple[Encoding, list[str]]:
    """An encoding that keeps ``info``'s size, bit depth, chroma, colour and time base, and
    notes on anything it had to change (an odd size needs 4:4:4; depths above 12 bits)."""
    notes = []
    depth = 8 if info.bit_depth <= 8 else 10 if info.bit_depth <= 10 else 12
    if info.bit_depth > 12:
        notes.append(f"{info.bit_depth}-bit input written as 12-bit, the most H.265 takes")
    chroma = info.chroma
    odd_width, odd_height = info.width % 2, info.height % 2
    if (chroma == "420" and (odd_width or odd_height)) or (chroma == "422" and odd_width):
        chroma = "444"
        notes.append(
            f"{info.width}x{info.height} is odd, and 4:{info.chroma[1]}:{info.chroma[2]} chroma needs even "
            "sides: written as 4:4:4 (H.264 High 4:4:4; some browsers and QuickTime do not play it)"
        )
    colour = info.colour.resolved(info.height)
    encoding = Encoding(
        info.width, info.height, info.fps, info.time_base, depth, chroma, colour, crf=crf, tune=tune
    )
    return encoding, notes


def simple_encoding(width: int, height: int, fps: float, crf: int = 18, tune: str | None = None) -> Encoding:
    """8-bit 4:2:0 (4:4:4 for odd sizes) at a constant rate: frames' pts are their indices."""
    rate = Fraction(fps).limit_denominator(1001)
    chroma = "444" if width % 2 or height % 2 else "420"
    return Encoding(width, height, fps, 1 / rate, chroma=chroma, crf=crf, tune=tune)


class VideoWriter:
    """Frames encoded one at a time into ``path``, which appears complete or not at all.

    ``with VideoWriter(path, encoding) as writer: writer.write(image, pts)``; ``pts`` is in
    ``encoding.time_base`` (None: the frame's index in a constant-rate stream).
    """

    def __init__(self, path: str | os.PathLike, encoding: Encoding) -> None:
        self.path, self.encoding = Path(path), encoding
        self.count = 0
        self.last_pts: int | None = None

    def __enter__(self) -> VideoWriter:
        if not self.path.parent.is_dir():
            raise VideoError(f"{self.path}: the folder {self.path.parent} does not exist")
        self._tmp = partial_path(self.path)
        remove(self._tmp)
        try:
            self._container = av.open(str(self._tmp), mode="w")
            self._stream = self._open_stream()
        except (OSError, ValueError, av.FFmpegError) as err:
            self._abort()
            raise VideoError(f"{self.path}: cannot be written ({err})") from err
        return self

    def _open_stream(self) -> av.video.stream.VideoStream:
        e = self.encoding
        stream = self._container.add_stream(e.codec, rate=Fraction(e.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = e.width, e.height, e.pix_fmt
        stream.time_base = e.time_base
        stream.codec_context.time_base = e.time_base
        context = stream.codec_context
        context.colorspace, context.color_range = e.colour.matrix, e.colour.range
        context.color_primaries, context.color_trc = e.colour.primaries, e.colour.transfer
        stream.options = {"crf": str(e.crf), **({"tune": e.tune} if e.tune else {})}
        if e.codec == "libx265":
            stream.options["x265-params"] = "log-level=error"
        elif e.frame_packing is not None:  # x264's codes: 3 side by side, 4 top-bottom
            stream.options["x264-params"] = f"frame-packing={X264_FRAME_PACKING[e.frame_packing]}"
        if e.comment is not None:
            self._container.metadata["comment"] = e.comment
        return stream

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        e = self.encoding
        if image.shape != (e.height, e.width, 3) or image.dtype != e.dtype:
            self._abort()
            raise VideoError(
                f"{self.path}: frames must be [{e.height}, {e.width}, 3] {np.dtype(e.dtype)}, "
                f"got {image.dtype} {image.shape}"
            )
        frame = av.VideoFrame.from_ndarray(image, format="rgb24" if e.bit_depth == 8 else "rgb48le")
        frame = frame.reformat(
            format=e.pix_fmt,
            src_colorspace=_SWS_MATRIX[e.colour.matrix],
            dst_colorspace=_SWS_MATRIX[e.colour.matrix],
            src_color_range="JPEG",
            dst_color_range="JPEG" if e.colour.range == FULL else "MPEG",
        )
        frame.colorspace, frame.color_range = e.colour.matrix, e.colour.range
        frame.color_primaries, frame.color_trc = e.colour.primaries, e.colour.transfer
        pts = self.count if pts is None else int(pts)
        if self.last_pts is not None and pts <= self.last_pts:
            self._abort()
            raise VideoError(f"{self.path}: timestamps must increase, got {pts} after {self.last_pts}")
        frame.pts, frame.time_base = pts, e.time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as err:
            self._abort()
            raise VideoError(f"{self.path}: cannot be written ({err})") from err
        self.count, self.last_pts = self.count + 1, pts

    def _abort(self) -> None:
        """Close and delete the temporary file; the destination is never touched."""
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()
        tmp, self._tmp = getattr(self, "_tmp", None), None
        if tmp is not None:
            remove(tmp)

    def __exit__(self, kind, error, trace) -> None:
        if self._tmp is None:  # aborted already
            return
        if kind is not None:
            self._abort()
            return
        if self.count == 0:
            self._abort()
            raise VideoError(f"{self.path}: no frames to write")
        try:
            self._container.mux(self._stream.encode())
            self._container.close()
        except (OSError, av.FFmpegError) as err:
            self._abort()
            raise VideoError(f"{self.path}: cannot be written ({err})") from err
        self._container = None
        tmp, self._tmp = self._tmp, None
        rename_onto(tmp, self.path)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 18,
    tune: str | None = None,
) -> Path:
    """Encode 8-bit RGB frames at a constant rate as H.264 (4:2:0, or 4:4:4 for odd sizes),
    atomically. ``tune`` is x264's (e.g. ``grain``, which keeps fine texture in every frame type)."""
    path = Path(path)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise VideoError(f"{path}: no frames to write")
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        raise VideoError(f"{path}: frames must be [H, W, 3] uint8, got {first.dtype} {first.shape}")
    height, width = first.shape[:2]
    with VideoWriter(path, simple_encoding(width, height, fps, crf, tune)) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return path
