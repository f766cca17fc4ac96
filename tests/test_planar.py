"""2D stabilization of unposable stretches: motion, the smoothed similarity path, joins, warps."""

import cv2
import numpy as np
import pytest
import torch

from infer.planar import (
    fit_similarity,
    from_params,
    induced_similarity,
    planar_corrections,
    similarity_steps,
    to_params,
    to_size,
    warp,
)
from model.cameras import make_pose

SIZE = (160, 96)
CENTRE = np.array(SIZE, float) / 2


def texture(seed=0) -> np.ndarray:
    """A photo-like RGB texture larger than the frame."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (240, 320, 3)).astype(np.float32), (0, 0), 2)
    return np.clip((noise - noise.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def view(image: np.ndarray, M: np.ndarray) -> np.ndarray:
    """The frame that sees ``image`` through the similarity ``M`` (image px -> frame px)."""
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return cv2.warpAffine(image, (np.linalg.inv(shift) @ M @ shift)[:2], SIZE, flags=cv2.INTER_LINEAR)


def test_parameters_round_trip_and_fits_are_exact():
    params = np.array([3.0, -2.0, 0.05, 0.02])
    M = from_params(params, CENTRE)
    assert to_params(M, CENTRE) == pytest.approx(params)
    points = np.random.default_rng(0).uniform(0, 100, (20, 2))
    moved = points @ M[:2, :2].T + M[:2, 2]
    assert fit_similarity(points, moved) == pytest.approx(M)


def test_steps_recover_known_motion_through_a_change_of_exposure():
    image = texture()
    truth = from_params(np.array([2.5, -1.5, np.deg2rad(1.0), 0.01]), CENTRE)
    first = view(image, from_params(np.array([-60.0, -50.0, 0, 0]), CENTRE))
    second = view(image, truth @ from_params(np.array([-60.0, -50.0, 0, 0]), CENTRE))
    dim = (second * 0.1).astype(np.uint8)  # a tenth of the light: brightness constancy fails
    for frames in (np.stack([first, second]), np.stack([first, dim])):
        [step] = similarity_steps(frames)
        # within 0.1 px and 0.05 degrees of the truth (measured: about 0.02 px)
        assert to_params(step, CENTRE)[:2] == pytest.approx(to_params(truth, CENTRE)[:2], abs=0.1)
        assert np.rad2deg(to_params(step, CENTRE)[2]) == pytest.approx(1.0, abs=0.05)
    blank = np.zeros_like(first)
    assert np.array_equal(similarity_steps(np.stack([blank, blank]))[0], np.eye(3))  # nothing to track


def test_the_2d_path_removes_shake_and_keeps_pinned_frames():
    rng = np.random.default_rng(1)
    count = 60
    pan = np.array([1.0, 0.2, 0.0, 0.0])  # a steady pan of 1 px a frame
    shake = np.stack([rng.normal(0, 2.0, count), rng.normal(0, 2.0, count), rng.normal(0, 0.01, count)], 1)
    shake = np.concatenate([shake, np.zeros((count, 1))], 1)
    positions = np.arange(count)[:, None] * pan + shake
    steps = np.stack([from_params(positions[t + 1] - positions[t], CENTRE) for t in range(count - 1)])
    pinned = {0: from_params(np.array([0.5, 0, 0, 0]), CENTRE)}
    corrections = planar_corrections(steps, lam=500.0, size=SIZE, pinned=pinned, pad=0.2, max_rotation_deg=3)
    assert corrections[0] == pytest.approx(pinned[0], abs=1e-4)  # the join keeps its correction
    shown = np.stack([to_params(c, CENTRE) for c in corrections]) + positions - positions[0]
    # what the viewer sees is the smooth pan: frame-to-frame acceleration falls by 10x or more
    before, after = np.diff(positions[:, :2], 2, axis=0), np.diff(shown[:, :2], 2, axis=0)
    assert np.abs(after).mean() < 0.1 * np.abs(before).mean()


def test_corrections_stay_inside_their_bounds():
    steps = np.stack([from_params(np.array([30.0 * (-1) ** t, 0, 0, 0]), CENTRE) for t in range(20)])
    corrections = planar_corrections(steps, lam=1000.0, size=SIZE, pinned={}, pad=0.05, max_rotation_deg=1)
    moves = np.abs([to_params(c, CENTRE)[0] for c in corrections])
    assert moves.max() <= 0.05 * SIZE[0] + 1e-9


def test_the_induced_similarity_of_a_roll_is_that_roll():
    K = np.array([[100.0, 0, SIZE[0] / 2], [0, 100.0, SIZE[1] / 2], [0, 0, 1]])
    angle = np.deg2rad(2.0)
    roll = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    to_virtual = make_pose(roll, torch.zeros(3)).numpy()
    params = to_params(induced_similarity(K, to_virtual, SIZE), CENTRE)
    assert params == pytest.approx([0, 0, angle, 0], abs=1e-9)
    shift = make_pose(
        torch.eye(3, dtype=torch.float64), torch.tensor([0.01, 0, 0.0], dtype=torch.float64)
    ).numpy()
    # a sideways step of 0.01 at depth 1 moves the picture by f * 0.01 = 1 px
    assert to_params(induced_similarity(K, shift, SIZE), CENTRE) == pytest.approx([1, 0, 0, 0], abs=1e-9)


def test_warp_at_the_output_size_and_its_uncovered_share():
    image = texture()[:96, :160]
    M = from_params(np.array([8.0, 0, 0, 0]), CENTRE)  # 8 px right at the working size
    big = cv2.resize(image, (320, 192))
    out, outside = warp(big, to_size(M, SIZE, (320, 192)))
    assert outside == pytest.approx(16 / 320, abs=1 / 320)  # 16 px at twice the size
    assert np.abs(out[:, 40:-40].astype(int) - big[:, 24:-56]).mean() < 2  # moved right by 16 px
