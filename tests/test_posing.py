"""Stabilize stage 1: data_prep's decode and poses, cached by content and settings."""

import numpy as np
import pytest

from data_prep.poses import PoseError
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import VideoError, write_video
from infer.posing import decode_and_pose


def test_poses_are_cached_by_content_and_settings(tmp_path):
    clip = generate(SyntheticConfig(width=128, height=72, num_frames=12, seed=3), progress=False)
    video = tmp_path / "in.mp4"
    write_video(video, clip.frames, fps=30)
    first, key, cached = decode_and_pose(video, tmp_path / "work", resolution=128)
    assert not cached and first.frames.shape == (12, 72, 128, 3) and first.fps == 30
    assert len(first.poses.frame_ids) == 12 and first.poses.pose_method in ("global", "incremental")
    again, key_again, cached = decode_and_pose(video, tmp_path / "work", resolution=128)
    assert cached and key_again == key and np.array_equal(again.poses.c2w, first.poses.c2w)
    assert np.array_equal(again.frames, first.frames) and again.poses.pose_method == first.poses.pose_method
    _, other, cached = decode_and_pose(video, tmp_path / "work", resolution=96)  # another setting: recomputed
    assert not cached and other != key


def test_unreadable_and_unposable_clips_raise(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    with pytest.raises(VideoError):
        decode_and_pose(bad, tmp_path / "work", resolution=128)
    flat = tmp_path / "flat.mp4"
    write_video(flat, np.full((8, 72, 128, 3), 90, np.uint8), fps=30)
    with pytest.raises(PoseError):
        decode_and_pose(flat, tmp_path / "work", resolution=128)
    assert not list((tmp_path / "work").rglob("*.npz"))
