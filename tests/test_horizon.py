"""Horizon lock: the scene's up direction and the levelled path, against synthetic ground truth."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from data_prep.schema import ClipPoses
from data_prep.synthetic import WORLD_UP, SyntheticConfig, generate, random_config
from infer.horizon import level, path_up, roll_deg, scene_up
from infer.posing import PosedClip
from infer.stabilize import StabilizeConfig, plan_path
from model.cameras import axis_angle_to_matrix, make_pose

ROLL = 5.0  # degrees the synthetic camera is held rolled for the whole clip
# Bounds from 11 synthetic clips (the fixed room, seeds 0-1; random rooms 1-12) at 320x180,
# rolled 5 deg: the recovered up was 0.07-1.5 deg off the truth (against 5.8-7 for the path's
# mean), mostly in pitch, which levelling does not use; the levelled roll was 0.03-0.42 deg.
# 0.75 deg of roll tilts the frame by 4 pixels across its width.
UP_TOLERANCE_DEG = 2.0
ROLL_TOLERANCE_DEG = 0.75


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1, 1))))


def truth_poses(clip, config) -> ClipPoses:
    return ClipPoses(config.width, config.height, clip.K, clip.c2w, np.arange(config.num_frames), "truth")


@pytest.fixture(scope="module", params=["fixed", "random"])
def rolled(request):
    size = {"width": 320, "height": 180, "num_frames": 40, "supersample": 1, "roll_deg": ROLL}
    if request.param == "fixed":
        config = SyntheticConfig(**size, seed=0)
    else:
        config = random_config(5, **size)
    return config, generate(config, progress=False)


def test_the_scene_s_vertical_lines_give_up_where_the_path_s_mean_is_off_by_the_tilt(rolled):
    config, clip = rolled
    scene = scene_up(clip.frames, truth_poses(clip, config))
    assert scene.reference == "vanishing" and scene.lines >= 40
    assert angle_deg(scene.up, WORLD_UP) < UP_TOLERANCE_DEG
    assert angle_deg(path_up(clip.c2w), WORLD_UP) > ROLL - 1  # the camera was held tilted
    assert scene.path_offset_deg == pytest.approx(angle_deg(scene.up, path_up(clip.c2w)), abs=1e-3)


def test_levelling_removes_the_roll_by_a_turn_about_the_optical_axis(rolled):
    config, clip = rolled
    up = scene_up(clip.frames, truth_poses(clip, config)).up
    assert np.abs(roll_deg(clip.smooth_c2w, WORLD_UP)).min() > ROLL - 1
    levelled, steep = level(clip.smooth_c2w, up)
    assert steep == 0
    assert np.abs(roll_deg(levelled, WORLD_UP)).max() < ROLL_TOLERANCE_DEG
    assert np.allclose(levelled[:, :3, 2], clip.smooth_c2w[:, :3, 2])  # the same optical axis
    assert np.array_equal(levelled[:, :, 3], clip.smooth_c2w[:, :, 3])  # the same centres
    R = levelled[:, :3, :3]
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1)
    assert (levelled[:, :3, 1] @ WORLD_UP < 0).all()  # upright: image y (down) points down


def test_without_lines_the_path_s_mean_up_is_the_reference():
    config = SyntheticConfig(width=160, height=90, num_frames=12, supersample=1, roll_deg=ROLL)
    clip = generate(config, progress=False)
    blank = np.full_like(clip.frames, 128)
    scene = scene_up(blank, truth_poses(clip, config))
    assert scene.reference == "path" and scene.lines == 0
    assert np.allclose(scene.up, path_up(clip.c2w))


def test_a_camera_looking_straight_down_is_left_as_it_is():
    down = make_pose(
        axis_angle_to_matrix(torch.tensor([[np.pi / 2, 0.0, 0.3]], dtype=torch.float64)),
        torch.zeros(1, 3, dtype=torch.float64),
    ).numpy()
    assert abs(down[0, :3, 2] @ WORLD_UP) > 0.95
    levelled, steep = level(down, WORLD_UP)
    assert steep == 1 and np.array_equal(levelled, down)


def test_stabilize_s_horizon_lock_levels_the_planned_path_and_says_how(rolled):
    config, clip = rolled
    posed = PosedClip(clip.frames, config.fps, (config.width, config.height), truth_poses(clip, config))
    locked, summary = plan_path(posed, replace(StabilizeConfig(), horizon_lock=True))
    plain, plain_summary = plan_path(posed, StabilizeConfig())
    assert "horizon" not in plain_summary
    assert np.abs(roll_deg(plain, WORLD_UP)).min() > ROLL - 2  # smoothing alone keeps the tilt
    horizon = summary["horizon"]
    assert horizon["reference"] == "vanishing"
    assert horizon["roll_before_deg"] > ROLL - 1
    # where the canvas covers the levelled frame, nothing is bent and the roll is gone
    assert summary["frames_bent"] == 0
    assert horizon["roll_after_deg"] < ROLL_TOLERANCE_DEG
    assert np.abs(roll_deg(locked, WORLD_UP)).max() < ROLL_TOLERANCE_DEG
