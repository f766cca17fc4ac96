"""Stabilize stage 1: data_prep's decode and poses, cached by content and settings."""

import numpy as np
import pytest

from data_prep.poses import PoseConfig
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import VideoError, write_video
from infer.posing import decode_and_pose


def test_poses_are_cached_by_content_and_settings(tmp_path):
    clip = generate(SyntheticConfig(width=128, height=72, num_frames=12, seed=3), progress=False)
    video = tmp_path / "in.mp4"
    write_video(video, clip.frames, fps=30)
    first, key, cached = decode_and_pose(video, tmp_path / "work", resolution=128)
    assert not cached and first.frames.shape == (12, 72, 128, 3) and first.fps == 30
    [segment] = first.segments
    assert segment.length == 12 and segment.reason in ("global", "incremental")
    again, key_again, cached = decode_and_pose(video, tmp_path / "work", resolution=128)
    assert cached and key_again == key and np.array_equal(again.segments[0].poses.c2w, segment.poses.c2w)
    assert np.array_equal(again.frames, first.frames) and again.segments[0].reason == segment.reason
    _, other, cached = decode_and_pose(video, tmp_path / "work", resolution=96)  # another setting: recomputed
    assert not cached and other != key


def test_unreadable_and_too_short_clips_raise_and_unposable_ones_go_2d(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    with pytest.raises(VideoError, match="cannot be decoded"):
        decode_and_pose(bad, tmp_path / "work", resolution=128)
    short = tmp_path / "short.mp4"
    write_video(short, np.full((2, 72, 128, 3), 90, np.uint8), fps=30)
    with pytest.raises(VideoError, match="2 frames; stabilizing needs at least 3"):
        decode_and_pose(short, tmp_path / "work", resolution=128)
    assert not (tmp_path / "work").exists()
    flat = tmp_path / "flat.mp4"  # nothing for SfM to hold on to: one 2D segment, with SfM's reasons
    write_video(flat, np.full((20, 72, 128, 3), 90, np.uint8), fps=30)
    clip, _, _ = decode_and_pose(
        flat, tmp_path / "work", resolution=128, config=PoseConfig(min_partial_frames=16)
    )
    [segment] = clip.segments
    assert segment.method == "2d" and segment.length == 20 and "global" in segment.reason
