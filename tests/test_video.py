"""Video I/O: round trip, and bad input gets one clear error with nothing half-written."""

import numpy as np
import pytest

from data_prep.video import VideoError, read_video, write_video


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
    with pytest.raises(VideoError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", frames(w=47), fps=30)
    with pytest.raises(VideoError, match="does not exist"):
        write_video(tmp_path / "nowhere" / "x.mp4", frames(), fps=30)

    def broken():
        yield frames()[0]
        raise VideoError("decoder gave up")

    with pytest.raises(VideoError, match="gave up"):
        write_video(tmp_path / "half.mp4", broken(), fps=30)
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=30)
    assert list(tmp_path.iterdir()) == []
