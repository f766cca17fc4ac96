"""Video I/O: round trips keep size, depth, colour, orientation and timing; damage is reported;
bad input gets one clear error with nothing half-written."""

import subprocess
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from data_prep.ingest import FrameStack, ingest
from data_prep.video import (
    Colour,
    Encoding,
    VideoError,
    VideoReader,
    VideoWriter,
    encoding_like,
    probe,
    read_video,
    simple_encoding,
    write_video,
)


def frames(n=5, h=32, w=48):
    """Grey 8x8 blocks over a smooth colour gradient, shifting one pixel a frame.

    Detail lives in luma, as in real footage, so 4:2:0 chroma subsampling does not dominate.
    """
    rng = np.random.default_rng(0)
    blocks = rng.uniform(0.4, 1.0, (h // 8 + 1, w // 8 + 2)).repeat(8, 0).repeat(8, 1)
    ramp = np.stack(
        np.broadcast_arrays(
            np.linspace(60, 200, w)[None], np.full((1, 1), 120.0), np.linspace(200, 60, h)[:, None]
        ),
        -1,
    )
    return np.stack([(ramp * blocks[:h, i : i + w, None]).astype(np.uint8) for i in range(n)])


def test_round_trip_keeps_size_count_and_fps(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames(), fps=24.0)
    video = read_video(path)
    assert video.frames.shape == (5, 32, 48, 3) and video.size == (48, 32)
    assert video.fps == pytest.approx(24.0)
    assert np.abs(video.frames.astype(int) - frames().astype(int)).mean() < 3
    assert read_video(path, max_frames=2).frames.shape[0] == 2


def test_tune_and_crf_reach_the_encoder(tmp_path):
    """x264 writes its settings into the stream; tune=grain's lower deblocking shows there."""
    default = write_video(tmp_path / "default.mp4", frames(), fps=24.0).read_bytes()
    grain = write_video(tmp_path / "grain.mp4", frames(), fps=24.0, crf=12, tune="grain").read_bytes()
    assert b"deblock=1:0:0" in default and b"crf=18.0" in default
    assert b"deblock=1:-2:-2" in grain and b"crf=12.0" in grain


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError, match=r"junk\.mp4: cannot be decoded"):
        read_video(junk)
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "missing.mp4")


def test_failed_writes_leave_nothing_behind(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        write_video(tmp_path / "nowhere" / "x.mp4", frames(), fps=30)

    def broken():
        yield frames()[0]
        raise VideoError("decoder gave up")

    with pytest.raises(VideoError, match="gave up"):
        write_video(tmp_path / "half.mp4", broken(), fps=30)
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=30)
    encoding = simple_encoding(48, 32, 30)
    with (
        pytest.raises(VideoError, match=r"frames must be \[32, 48, 3\] uint8"),
        VideoWriter(tmp_path / "x.mp4", encoding) as w,
    ):
        w.write(frames()[0])
        w.write(frames(w=40)[0])
    with (
        pytest.raises(VideoError, match="timestamps must increase"),
        VideoWriter(tmp_path / "x.mp4", encoding) as w,
    ):
        w.write(frames()[0], 5)
        w.write(frames()[0], 5)
    assert list(tmp_path.iterdir()) == []


def test_odd_sizes_are_written_at_their_size_as_444(tmp_path):
    path = write_video(tmp_path / "odd.mp4", frames(h=31, w=47), fps=30)
    info = probe(path)
    assert info.size == (47, 31) and info.chroma == "444"
    assert np.abs(read_video(path).frames.astype(int) - frames(h=31, w=47)).mean() < 3
    encoding, notes = encoding_like(replace(info, chroma="420"))
    assert encoding.chroma == "444" and "47x31 is odd" in notes[0]


# Colour bars (75%) in RGB code values; the test makes YUV from them with the standard's own
# equations, so the decoder is checked against the standard, not against itself.
BARS = np.array(
    [
        [191, 191, 191],
        [191, 191, 0],
        [0, 191, 191],
        [0, 191, 0],
        [191, 0, 191],
        [191, 0, 0],
        [0, 0, 191],
        [16, 16, 16],
    ]
)
KR_KB = {1: (0.2126, 0.0722), 6: (0.299, 0.114)}  # BT.709, BT.601 (SMPTE 170M)


def bars_yuv(matrix: int, full: bool, height=32, width=128) -> np.ndarray:
    """``[3, H, W]`` 8-bit YUV 4:4:4 planes of the bars, by the standard's equations."""
    kr, kb = KR_KB[matrix]
    rgb = BARS / 255.0
    y = kr * rgb[:, 0] + (1 - kr - kb) * rgb[:, 1] + kb * rgb[:, 2]
    cb, cr = (rgb[:, 2] - y) / (2 * (1 - kb)), (rgb[:, 0] - y) / (2 * (1 - kr))
    if full:
        planes = np.stack([255 * y, 128 + 255 * cb, 128 + 255 * cr])
    else:
        planes = np.stack([16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr])
    per_bar = np.round(planes).clip(0, 255).astype(np.uint8)  # [3, 8]
    return np.repeat(np.repeat(per_bar[:, None, :], height, 1), width // 8, 2)


def write_bars(path, matrix: int, full: bool, transfer: int = 1) -> None:
    """Lossless H.264 4:4:4 of the bars, tagged with the matrix, range and transfer."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 32, "yuv444p"
        stream.options = {"qp": "0"}
        context = stream.codec_context
        context.colorspace, context.color_range, context.color_trc = matrix, 2 if full else 1, transfer
        context.color_primaries = 1 if matrix == 1 else 6
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(bars_yuv(matrix, full), format="yuv444p")
            frame.colorspace, frame.color_range, frame.pts = matrix, 2 if full else 1, index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def centres(image: np.ndarray) -> np.ndarray:
    """``[8, 3]`` each bar's colour, averaged away from its edges."""
    return np.stack([image[8:-8, 16 * k + 4 : 16 * k + 12].reshape(-1, 3).mean(0) for k in range(8)])


@pytest.mark.parametrize(("matrix", "full"), [(6, False), (1, False), (1, True), (6, True)])
def test_colour_bars_round_trip_in_each_matrix_and_range(tmp_path, matrix, full):
    source = tmp_path / "bars.mp4"
    write_bars(source, matrix, full, transfer=18 if full else 1)  # HLG's tag on the full-range ones
    info = probe(source)
    assert (info.colour.matrix, info.colour.range) == (matrix, 2 if full else 1)
    decoded = read_video(source).frames
    # Decoding with the stream's matrix and range gives the bars back to within 1.5 code
    # values (8-bit YUV rounding). Measured with the wrong matrix: 27-34 code values off on
    # the saturated bars; limited range read as full: 16.
    assert np.abs(centres(decoded[0]) - BARS).max() <= 1.5, centres(decoded[0]) - BARS
    # Our own encoder keeps the tags, and a second decode lands within 2 code values of the
    # bars (4:2:0 at crf 18; bar centres, away from chroma edges)
    encoding, _ = encoding_like(info)
    copy = tmp_path / "copy.mkv"
    with VideoWriter(copy, encoding) as writer:
        for index, image in enumerate(decoded):
            writer.write(image, index)
    again = probe(copy)
    assert again.colour == info.colour and again.chroma == "444"
    assert np.abs(centres(read_video(copy).frames[0]) - BARS).max() <= 2.0


def test_10_bit_is_read_as_16_bit_and_written_back_as_10_bit(tmp_path):
    ramp = np.linspace(0, 65535, 128)[None, :, None].repeat(32, 0).repeat(3, 2).astype(np.uint16)
    encoding = Encoding(128, 32, 25, Fraction(1, 25), bit_depth=10, colour=Colour(9, 1, 9, 16))  # BT.2020 PQ
    path = tmp_path / "deep.mkv"
    with VideoWriter(path, encoding) as writer:
        for index in range(3):
            writer.write(ramp, index)
    info = probe(path)
    assert info.bit_depth == 10 and info.colour == Colour(9, 1, 9, 16)
    assert encoding_like(info)[0].pix_fmt == "yuv420p10le"
    deep = next(iter(VideoReader(path, depth=16))).image
    assert deep.dtype == np.uint16
    # a 10-bit ramp keeps about 4x the levels an 8-bit decode can (limited range: 877 vs 219)
    assert len(np.unique(deep[16, :, 1])) > 100 and np.abs(deep.astype(int) - ramp).max() < 65535 * 0.01


def test_display_rotation_gives_upright_frames(tmp_path):
    stored = frames(n=3, h=32, w=48)
    plain = write_video(tmp_path / "plain.mp4", stored, fps=24)
    rotated = tmp_path / "rotated.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run(
        [ffmpeg, "-v", "error", "-display_rotation:v:0", "90", "-i", str(plain), "-c", "copy", str(rotated)],
        check=True,
    )
    info = probe(rotated)
    assert info.rotation == 90 and info.size == (32, 48)  # a player shows it portrait
    upright = read_video(rotated).frames
    # ffmpeg's own autorotation, as players do it
    shown = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(rotated), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    shown = np.frombuffer(shown, np.uint8).reshape(3, 48, 32, 3)
    assert upright.shape == shown.shape and np.abs(upright.astype(int) - shown).mean() < 1.0


def test_variable_frame_rate_timestamps_are_read_and_kept(tmp_path):
    pts = [0, 3, 4, 9, 10, 15, 22]  # in 1/100 s
    encoding = Encoding(48, 32, 25, Fraction(1, 100))
    with VideoWriter(tmp_path / "vfr.mkv", encoding) as writer:
        for p, image in zip(pts, frames(n=len(pts)), strict=True):
            writer.write(image, p)
    times = [f.time for f in VideoReader(tmp_path / "vfr.mkv")]
    assert times == pytest.approx([p / 100 for p in pts], abs=1e-3)


def test_a_truncated_file_decodes_what_it_can_and_says_so(tmp_path):
    whole = tmp_path / "whole.avi"
    with av.open(str(whole), "w") as container:  # AVI: the header promises the frame count
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        noise = np.random.default_rng(0).integers(0, 256, (60, 96, 160, 3), np.uint8)  # no frame is small
        for image in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    reader = VideoReader(whole)
    assert sum(1 for _ in reader) == 60 and reader.damage() is None
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    reader = VideoReader(cut)
    decoded = sum(1 for _ in reader)
    assert 5 < decoded < 40
    message = reader.damage()
    assert message.startswith(f"{cut}: damaged or truncated: {decoded} frames decoded")
    assert "the container promises 60 frames" in message


def test_ingest_stacks_the_reader_frames_at_the_working_size(tmp_path):
    """ingest's frames are the reader's, resized, whatever the container promised: a stack
    allocated for one frame doubles as it fills, and keeps every frame written so far."""
    path = write_video(tmp_path / "clip.mp4", frames(n=9), fps=24.0)
    full = read_video(path).frames
    assert np.array_equal(ingest(path).frames, full)
    small = ingest(path, max_side=24).frames
    assert small.shape == (9, 16, 24, 3)
    resized = [cv2.resize(f, (24, 16), interpolation=cv2.INTER_AREA) for f in full]
    assert np.array_equal(small, np.stack(resized))
    stack = FrameStack((16, 24, 3), np.uint8, capacity=1)
    for image in small:
        stack.slot()[:] = image
    assert len(stack.array) == 16 and np.array_equal(stack.frames(), small)
