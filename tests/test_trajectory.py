"""Path smoothing keeps steady motion, removes shake, and treats rotations correctly."""

import math

import pytest
import torch

from infer.trajectory import GAVS_SIGMA, average_quaternions, smooth_path, window_for
from model.cameras import axis_angle_to_matrix, make_pose, matrix_to_quat, rotation_angle


def steady_path(count=60):
    """A dolly with constant velocity and a pan with constant angular velocity."""
    t = torch.arange(count, dtype=torch.float64)
    centres = torch.stack([0.02 * t, 0.005 * t, 0.01 * t], -1)
    axis = torch.tensor([0.2, 1.0, 0.1], dtype=torch.float64)
    rotations = axis_angle_to_matrix(t[:, None] * 0.01 * axis / axis.norm())
    return make_pose(rotations, centres)


def shaken(path, amplitude=0.01, angle=0.01):
    """Period-4 shake in position and rotation (far above a sigma-4 Gaussian's pass band)."""
    t = torch.arange(len(path), dtype=torch.float64)
    wobble = torch.sin(t * math.pi / 2 + 0.3)
    offsets = amplitude * wobble[:, None] * torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64)
    twist = axis_angle_to_matrix(angle * wobble[:, None] * torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64))
    return make_pose(path[:, :3, :3] @ twist, path[:, :3, 3] + offsets)


def test_gavs_setting_is_a_31_frame_window():
    assert window_for(GAVS_SIGMA) == 31


def test_steady_motion_is_kept_up_to_the_ends():
    path = steady_path()
    smooth = smooth_path(path)
    assert torch.allclose(smooth[:, :3, 3], path[:, :3, 3], atol=1e-9)
    angles = rotation_angle(smooth[:, :3, :3].transpose(-1, -2) @ path[:, :3, :3])
    assert angles.max() < 1e-6


def test_shake_is_removed_in_position_and_rotation():
    path = steady_path()
    smooth = smooth_path(shaken(path, amplitude=0.01, angle=0.01))
    position = (smooth[:, :3, 3] - path[:, :3, 3]).norm(dim=-1) / 0.01
    angle = rotation_angle(smooth[:, :3, :3].transpose(-1, -2) @ path[:, :3, :3]) / 0.01
    interior = slice(15, -15)  # a half window from the ends: the full Gaussian applies
    assert position[interior].max() < 1e-3 and angle[interior].max() < 1e-3
    # at the ends, the line-fit reflection leaves a fifth of the shake (measured: 0.21 at
    # worst; reflecting about the raw end pose would keep all of it)
    assert position.max() < 0.25 and angle.max() < 0.25
    # a weak smoother (sigma 0.5 frames) leaves most of the shake
    weak = smooth_path(shaken(path), strength=0.125)
    assert (weak[:, :3, 3] - path[:, :3, 3]).norm(dim=-1)[interior].max() > 0.003


def test_strength_zero_is_the_input_and_negative_is_an_error():
    path = shaken(steady_path(20))
    assert torch.equal(smooth_path(path, strength=0), path)
    with pytest.raises(ValueError, match="strength"):
        smooth_path(path, strength=-1)
    assert smooth_path(path[:3]).shape == (3, 4, 4)  # shorter than the window


def test_quaternion_average_ignores_signs_and_finds_the_middle():
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    angles = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    quats = matrix_to_quat(axis_angle_to_matrix(angles[:, None] * axis))
    quats[1] = -quats[1]  # the same rotation
    mean = average_quaternions(quats, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    expected = matrix_to_quat(axis_angle_to_matrix(0.3 * axis))
    assert torch.allclose(mean, expected, atol=1e-12)
