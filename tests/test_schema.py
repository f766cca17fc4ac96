"""Schema v1: round trip, validation, deterministic shards, and unreadable shards."""

import json
import re

import numpy as np
import pytest

from data_prep.schema import (
    SCHEMA_VERSION,
    ClipPoses,
    ClipSample,
    SchemaError,
    decode,
    encode,
    iterate_clips,
    read_cameras,
    read_posed_npz,
    to_tensors,
    write_cameras,
    write_posed_npz,
)
from data_prep.shards import ShardWriter
from model.cameras import axis_angle_to_matrix, make_pose


def make_sample(key="clip_000", frames=5, width=64, height=48, seed=0, priors=True) -> ClipSample:
    import torch

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    images = np.stack([np.roll(base, i, axis=1) for i in range(frames)])
    R = axis_angle_to_matrix(torch.from_numpy(rng.normal(0, 0.1, (frames, 3))))
    c2w = make_pose(R, torch.from_numpy(rng.normal(0, 1, (frames, 3)))).numpy()
    K = np.array([[50.0, 0, width / 2], [0, 50.0, height / 2], [0, 0, 1]])
    points = rng.normal(0, 1, (20, 3)).astype(np.float32)
    obs = np.stack(
        [
            rng.integers(0, frames, 30),
            rng.uniform(0, width, 30),
            rng.uniform(0, height, 30),
            rng.uniform(0.5, 2, 30),
        ],
        -1,
    ).astype(np.float32)
    flow = masks = None
    if priors:
        flow = {
            k: rng.normal(0, 2, (frames - 1, height, width, 2)).astype(np.float16)
            for k in ("forward", "backward")
        }
        masks = {
            "occlusion_forward": rng.random((frames - 1, height, width)) < 0.1,
            "occlusion_backward": rng.random((frames - 1, height, width)) < 0.1,
            "dynamic": rng.random((frames, height, width)) < 0.05,
        }
    return ClipSample(
        key=key,
        frames=images,
        fps=30.0,
        poses=ClipPoses(
            width,
            height,
            K,
            c2w,
            np.arange(10, 10 + frames),
            "global",
            0.37,
            points=points,
            observations=obs,
            observation_points=rng.integers(0, 20, 30).astype(np.int32),
        ),
        meta={"source": "test.mp4", "sfm": {"reprojection_error": 0.5}},
        flow=flow,
        masks=masks,
    )


def test_round_trip_in_memory():
    sample = make_sample()
    back = decode(encode(sample))
    assert back.key == sample.key and back.poses.pose_method == "global"
    assert np.array_equal(back.poses.c2w, sample.poses.c2w)  # float64 survives exactly
    assert np.array_equal(back.poses.frame_ids, sample.poses.frame_ids)
    assert np.abs(back.frames.astype(int) - sample.frames.astype(int)).mean() < 3  # JPEG q95
    assert np.array_equal(back.poses.observations, sample.poses.observations)
    # flow is quantised to 1/8 px
    assert np.abs(back.flow["forward"] - sample.flow["forward"].astype(np.float32)).max() <= 1 / 16 + 1e-6
    for name, mask in sample.masks.items():
        assert np.array_equal(back.masks[name], mask)
    assert back.meta["schema_version"] == SCHEMA_VERSION and back.meta["source"] == "test.mp4"
    tensors = to_tensors(back)
    assert tensors["frames"].shape == (5, 3, 48, 64) and tensors["K"].shape == (5, 3, 3)
    assert 0 <= tensors["frames"].min() and tensors["frames"].max() <= 1


def test_shards_round_trip_and_are_byte_identical(tmp_path):
    samples = [make_sample(f"clip_{i:03d}", seed=i, priors=i % 2 == 0) for i in range(5)]
    for run in ("a", "b"):
        with ShardWriter(tmp_path / run, max_count=2) as writer:
            for s in samples:
                writer.write(encode(s))
        assert [sh["samples"] for sh in writer.shards] == [2, 2, 1]
        assert [sh["frames"] for sh in writer.shards] == [10, 10, 5]
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    clips = list(iterate_clips(str(tmp_path / "a" / "train-{000000..000002}.tar")))
    assert [c.key for c in clips] == [s.key for s in samples]
    assert clips[1].flow is None and clips[2].masks is not None


def test_size_limit_starts_new_shards(tmp_path):
    with ShardWriter(tmp_path, max_count=100, max_bytes=30_000) as writer:
        for i in range(4):
            writer.write(encode(make_sample(f"c{i}", seed=i)))
    assert len(writer.shards) > 1 and all(sh["samples"] >= 1 for sh in writer.shards)


def test_failed_writing_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, max_count=2) as writer:
        for i in range(3):
            writer.write(encode(make_sample(f"c{i}", seed=i)))
        raise RuntimeError("worker died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]  # the finished one


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.pop("cameras.json"), "missing field 'cameras.json'"),
        (lambda f: f.update({"meta.json": json.dumps({"schema_version": 2}).encode()}), "schema version 2"),
        (lambda f: f.update({"0002.jpg": b"not a jpeg"}), "frame 0002.jpg does not decode"),
        (lambda f: f.update({"points.npz": b"junk"}), "points.npz: not a readable .npz"),
        (lambda f: [f.pop(k) for k in ("0003.jpg", "0004.jpg")], "c2w has shape (5, 4, 4) for 3 frames"),
    ],
)
def test_bad_samples_get_one_clear_error(mutate, message):
    fields = encode(make_sample())
    mutate(fields)
    with pytest.raises(SchemaError, match=re.escape(message)):
        decode(fields)


def test_invalid_samples_are_refused_at_write():
    sample = make_sample(key="has.dot")
    with pytest.raises(SchemaError, match="no dots"):
        encode(sample)
    sample = make_sample()
    sample.poses.c2w[0, :3, :3] *= 2
    with pytest.raises(SchemaError, match="orthonormal"):
        encode(sample)


def test_truncated_shard_is_reported(tmp_path):
    with ShardWriter(tmp_path, max_count=10) as writer:
        for i in range(3):
            writer.write(encode(make_sample(f"c{i}", seed=i)))
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(SchemaError, match=r"train-000000\.tar"):
        list(iterate_clips(str(shard)))


def test_record_conversions_keep_points_and_pixels_consistent():
    poses = make_sample().poses  # 5 frames, 30 observations of 20 points
    window = poses.window(1, 4)
    assert len(window.c2w) == 3 and window.frame_ids.tolist() == [11, 12, 13]
    inside = (poses.observations[:, 0] >= 1) & (poses.observations[:, 0] < 4)
    assert np.array_equal(window.observations[:, 0], poses.observations[inside, 0] - 1)
    # every observation still names its own point, by the new numbering
    assert np.array_equal(
        window.points[window.observation_points], poses.points[poses.observation_points[inside]]
    )
    half = poses.resized(32, 24)
    assert (half.width, half.height) == (32, 24)
    assert np.allclose(half.K[:2], poses.K[:2] / 2) and np.array_equal(half.K[2], poses.K[2])
    assert np.allclose(half.observations[:, 1:3], poses.observations[:, 1:3] / 2)
    assert np.array_equal(half.observations[:, 3], poses.observations[:, 3])  # depth does not scale
    unit = poses.normalised()
    assert np.median(unit.observations[:, 3]) == pytest.approx(1.0)
    factor = unit.scale / poses.scale
    assert np.allclose(unit.c2w[:, :3, 3], poses.c2w[:, :3, 3] * factor)
    assert np.array_equal(unit.c2w[:, :3, :3], poses.c2w[:, :3, :3])  # rotations stay


def test_each_file_form_reads_back_what_was_written(tmp_path):
    poses = make_sample().poses
    poses.stats = {"registered_fraction": 1.0}
    write_cameras(tmp_path / "cameras.json", poses, 24.0, {"smooth_c2w": poses.c2w.tolist()})
    back, fps, data = read_cameras(tmp_path / "cameras.json")
    assert fps == 24.0 and back.pose_method == "global" and back.scale == poses.scale
    assert np.array_equal(back.c2w, poses.c2w) and np.array_equal(back.frame_ids, poses.frame_ids)
    assert np.array_equal(data["smooth_c2w"], poses.c2w)  # extra fields ride along
    frames = np.zeros((5, 4, 4, 3), np.uint8)
    write_posed_npz(tmp_path / "clip.npz", poses, 24.0, frames=frames)
    back, fps, arrays = read_posed_npz(tmp_path / "clip.npz")
    assert back.stats == poses.stats and fps == 24.0 and set(arrays) == {"frames"}
    for name in ("K", "c2w", "points", "observations", "observation_points"):
        assert np.array_equal(getattr(back, name), getattr(poses, name)), name
    (tmp_path / "bad.json").write_text('{"K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}')
    with pytest.raises(SchemaError, match=r"bad\.json: cameras\.json lacks"):
        read_cameras(tmp_path / "bad.json")
    with pytest.raises(SchemaError, match=r"missing\.json: no such file"):
        read_cameras(tmp_path / "missing.json")
