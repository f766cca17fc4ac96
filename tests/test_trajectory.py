"""Path smoothing keeps steady motion, removes shake, and treats rotations correctly; the
minimum-acceleration path removes shake like the Gaussian window but follows slow motion."""

import math

import pytest
import torch

from infer.trajectory import (
    GAVS_SIGMA,
    HALF_AMPLITUDE,
    acceleration_weight,
    average_quaternions,
    gaussian_window_path,
    min_acceleration_path,
)
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


def departure(smooth, path):
    """``([T], [T])``: distance of each smoothed centre from the path's, and the angle between
    their rotations."""
    position = (smooth[:, :3, 3] - path[:, :3, 3]).norm(dim=-1)
    return position, rotation_angle(smooth[:, :3, :3].transpose(-1, -2) @ path[:, :3, :3])


def test_gavs_setting_spreads_a_jolt_over_exactly_31_frames():
    """GaVS smooths with a 31-frame window: a one-frame jolt moves frames 15 either side of it
    and leaves the 16th untouched."""
    path = torch.eye(4, dtype=torch.float64).repeat(100, 1, 1)
    path[50, 0, 3] = 1.0
    moved = gaussian_window_path(path, strength=1.0)[:, 0, 3].abs() > 0
    assert torch.nonzero(moved).flatten().tolist() == list(range(35, 66))


def test_steady_motion_is_kept_up_to_the_ends():
    path = steady_path()
    smooth = gaussian_window_path(path)
    assert torch.allclose(smooth[:, :3, 3], path[:, :3, 3], atol=1e-9)
    assert departure(smooth, path)[1].max() < 1e-6


def test_shake_is_removed_in_position_and_rotation():
    path = steady_path()
    shaky = shaken(path, amplitude=0.01, angle=0.01)
    position, angle = (d / 0.01 for d in departure(gaussian_window_path(shaky), path))
    interior = slice(15, -15)  # a half window from the ends: the full Gaussian applies
    assert position[interior].max() < 1e-3 and angle[interior].max() < 1e-3
    # at the ends, the line-fit reflection leaves a fifth of the shake (measured: 0.21 at
    # worst; reflecting about the raw end pose would keep all of it)
    assert position.max() < 0.25 and angle.max() < 0.25
    # a weak smoother (sigma 0.5 frames) leaves most of the shake
    weak = gaussian_window_path(shaken(path), strength=0.125)
    assert (weak[:, :3, 3] - path[:, :3, 3]).norm(dim=-1)[interior].max() > 0.003


def test_strength_zero_is_the_input_and_negative_is_an_error():
    path = shaken(steady_path(20))
    assert torch.equal(gaussian_window_path(path, strength=0), path)
    with pytest.raises(ValueError, match="strength"):
        gaussian_window_path(path, strength=-1)
    assert gaussian_window_path(path[:3]).shape == (3, 4, 4)  # shorter than the window


def test_quaternion_average_ignores_signs_and_finds_the_middle():
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    angles = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    quats = matrix_to_quat(axis_angle_to_matrix(angles[:, None] * axis))
    quats[1] = -quats[1]  # the same rotation
    mean = average_quaternions(quats, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    expected = matrix_to_quat(axis_angle_to_matrix(0.3 * axis))
    assert torch.allclose(mean, expected, atol=1e-12)


def swaying(count: int, period: float, amplitude: float = 0.01):
    """A camera swaying sideways and panning back and forth with one period (frames)."""
    t = torch.arange(count, dtype=torch.float64)
    wave = amplitude * torch.sin(2 * math.pi * t / period + 0.4)
    centres = torch.stack([wave, torch.zeros_like(t), torch.zeros_like(t)], -1)
    rotations = axis_angle_to_matrix(torch.stack([torch.zeros_like(t), wave, torch.zeros_like(t)], -1))
    return make_pose(rotations, centres)


def kept(smoother, period: float, strength: float, count: int = 600) -> tuple[float, float]:
    """Share of a sway's amplitude (position, rotation) left in the middle of the path."""
    path = swaying(count, period)
    smooth = smoother(path, strength)
    middle = slice(count // 3, 2 * count // 3)
    position = smooth[middle, 0, 3].abs().max() / path[middle, 0, 3].abs().max()
    angle = rotation_angle(smooth[middle, :3, :3]).max() / rotation_angle(path[middle, :3, :3]).max()
    return float(position), float(angle)


@pytest.mark.parametrize("strength", [1.0, 4.0])
def test_min_acceleration_halves_the_sway_the_gaussian_halves(strength):
    sigma = GAVS_SIGMA * strength
    half = 2 * math.pi * sigma / HALF_AMPLITUDE  # the period a Gaussian of sigma halves
    for smoother in (gaussian_window_path, min_acceleration_path):
        assert kept(smoother, half, strength) == pytest.approx((0.5, 0.5), abs=0.03)
    # slower sway (10 sigma): the Gaussian takes a fifth of it away, this path a thirteenth
    gaussian = kept(gaussian_window_path, 10 * sigma, strength)
    followed = kept(min_acceleration_path, 10 * sigma, strength)
    assert max(gaussian) < 0.85 and min(followed) > 0.9
    # shake (period 4): the response 1 / (1 + lam (2 - 2 cos omega)^2) at omega = pi / 2
    # (plus what the ends leak into the middle: about 1e-6)
    shake = 1 / (1 + 4 * acceleration_weight(strength))
    assert kept(min_acceleration_path, 4, strength) == pytest.approx((shake, shake), rel=0.02, abs=2e-6)


def test_min_acceleration_keeps_steady_motion_and_removes_shake():
    path = steady_path()
    smooth = min_acceleration_path(path)
    assert torch.allclose(smooth[:, :3, 3], path[:, :3, 3], atol=1e-9)
    angles = departure(smooth, path)[1]
    # measured 1.1e-5 rad (0.0007 degrees), at the end frames: quaternions along a 34-degree
    # pan are nearly, not exactly, a straight line
    assert angles.max() < 1e-4
    shaky = shaken(path, amplitude=0.01, angle=0.01)
    position, angle = (d / 0.01 for d in departure(min_acceleration_path(shaky), path))
    interior = slice(15, -15)
    assert position[interior].max() < 0.02 and angle[interior].max() < 0.02  # measured 0.013
    # the unreflected ends keep a little more than the Gaussian's 0.21 (measured 0.28), and in
    # exchange follow the real camera there
    assert position.max() < 0.3 and angle.max() < 0.3


def test_min_acceleration_strength_zero_is_the_input_and_negative_is_an_error():
    path = shaken(steady_path(20))
    assert torch.equal(min_acceleration_path(path, strength=0), path)
    with pytest.raises(ValueError, match="strength"):
        min_acceleration_path(path, strength=-1)
    assert min_acceleration_path(path[:2]).shape == (2, 4, 4)
