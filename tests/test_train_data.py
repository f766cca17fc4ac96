"""Training items: crops keep intrinsics consistent, borders are masked, targets are nearby."""

import random

import numpy as np
import pytest
import torch

from data_prep.schema import ClipPoses, ClipSample, encode
from data_prep.shards import ShardWriter
from model.cameras import make_intrinsics, project, relative_pose
from train.data import DataConfig, clip_items, training_stream


def clip(frames=10, width=80, height=60, seed=0) -> ClipSample:
    rng = np.random.default_rng(seed)
    K = make_intrinsics(70.0, 70.0, 40.0, 30.0).numpy()
    c2w = np.tile(np.eye(4), (frames, 1, 1))
    c2w[:, 0, 3] = np.linspace(0, 0.5, frames)  # a sideways dolly
    points = np.stack([rng.uniform(-1, 1, 200), rng.uniform(-0.8, 0.8, 200), rng.uniform(2, 4, 200)], -1)
    observations, owners = [], []
    for t in range(frames):
        cam = points - c2w[t, :3, 3]
        uv, z = project(torch.from_numpy(cam), torch.from_numpy(K))
        for i in range(len(points)):
            observations.append((t, *uv[i].tolist(), z[i].item()))
            owners.append(i)
    return ClipSample(
        key=f"c{seed}",
        frames=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        fps=30.0,
        poses=ClipPoses(
            width,
            height,
            K,
            c2w,
            np.arange(frames),
            "global",
            points=points.astype(np.float32),
            observations=np.array(observations, np.float32),
            observation_points=np.array(owners, np.int32),
        ),
    )


def test_items_keep_intrinsics_consistent_with_crops():
    sample = clip()
    config = DataConfig(size=(48, 64), num_targets=3, window=2, items_per_clip=20, border_probability=0.0)
    for item in clip_items(sample, config, random.Random(0)):
        uv, z, valid = item["points_uv"], item["points_depth"], item["points_valid"]
        assert valid.sum() > 20
        # unprojecting the moved observations with the new K must land on the points'
        # camera-frame positions, up to float32 rounding
        rays = (
            torch.cat([uv[valid], torch.ones(int(valid.sum()), 1)], -1) @ torch.linalg.inv(item["source_K"]).T
        )
        cam = rays * z[valid, None]
        reprojected, _ = project(cam, item["source_K"])
        assert torch.allclose(reprojected, uv[valid], atol=1e-3)
        assert item["source"].shape == (3, 48, 64) and item["targets"].shape == (3, 3, 48, 64)
        assert item["source_valid"].min() == 1


def test_targets_are_nearby_and_relative_poses_match():
    sample = clip()
    config = DataConfig(size=(48, 64), num_targets=2, window=2, items_per_clip=30, border_probability=0.0)
    c2w = torch.from_numpy(sample.poses.c2w).float()
    for item in clip_items(sample, config, random.Random(1)):
        offsets = item["source_to_target"][:, 0, 3]  # the dolly moves 0.5/9 per frame in x
        frames_apart = (-offsets / (0.5 / 9)).round()
        assert (frames_apart.abs() <= 2).all() and (frames_apart != 0).all()
    assert torch.allclose(relative_pose(c2w[3], c2w[5])[0, 3], torch.tensor(-2 * 0.5 / 9), atol=1e-6)


def test_border_band_repeats_the_edge_and_is_marked_invalid():
    config = DataConfig(size=(48, 64), items_per_clip=40, border_probability=1.0, border_fraction=0.125)
    for item in clip_items(clip(), config, random.Random(2)):
        invalid = item["source_valid"][0] == 0
        assert invalid.sum() in (8 * 48, 6 * 64)  # one band of 12.5% along one side
        # the band repeats the nearest real row or column of the complete frame
        full, source = item["source_full"], item["source"]
        if invalid[:, 0].all():
            assert torch.equal(source[:, :, :8], full[:, :, 8:9].expand(3, 48, 8))
        elif invalid[:, -1].all():
            assert torch.equal(source[:, :, -8:], full[:, :, -9:-8].expand(3, 48, 8))
        elif invalid[0].all():
            assert torch.equal(source[:, :6], full[:, 6:7].expand(3, 6, 64))
        else:
            assert torch.equal(source[:, -6:], full[:, -7:-6].expand(3, 6, 64))
        assert torch.equal(source[:, ~invalid], full[:, ~invalid])
        assert item["targets"].abs().sum() > 0  # targets stay complete


def test_stream_reads_shards_and_needs_them(tmp_path):
    with ShardWriter(tmp_path, max_count=1) as writer:
        for seed in range(3):
            writer.write(encode(clip(seed=seed)))
    config = DataConfig(shards=str(tmp_path / "train-{000000..000002}.tar"), size=(48, 64), items_per_clip=2)
    items = list(training_stream(config, resampled=False))
    assert len(items) == 6 and items[0]["source"].shape == (3, 48, 64)
    with pytest.raises(ValueError, match=r"data\.shards is empty"):
        training_stream(DataConfig())
