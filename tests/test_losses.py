"""Losses: zero where they should be, invariant where they should be, sensitive otherwise."""

import pytest
import torch
from helpers import lpips_files

from model.losses import (
    dssim,
    frame_points,
    offset_regulariser,
    photometric_loss,
    scale_regulariser,
    sparse_depth_loss,
)
from model.losses.perceptual import LPIPS
from train.objective import LossConfig, perceptual_loss


def test_photometric_loss_is_zero_on_identical_images_and_respects_the_mask():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 20)
    assert photometric_loss(x, x).item() < 1e-6 and dssim(x, x).max() < 1e-6
    y = x.clone()
    y[..., :, :10] = 0  # corrupt the left half
    mask = torch.zeros(2, 1, 16, 20)
    mask[..., 12:] = 1  # supervise only columns the corruption (and its 3x3 window) misses
    assert photometric_loss(y, x, mask).item() < 1e-6
    assert photometric_loss(y, x).item() > 0.05
    # a constant offset of 0.1: the L1 part is exactly 0.15 * 0.1, the rest is 0.85 * DSSIM
    shifted = x + 0.1
    l1_part = photometric_loss(shifted, x) - 0.85 * dssim(shifted, x).mean()
    assert l1_part.item() == pytest.approx(0.015, rel=1e-5)


def test_sparse_depth_loss_is_scale_invariant():
    torch.manual_seed(0)
    depth = torch.rand(2, 1, 12, 16) + 0.5
    uv = torch.rand(2, 30, 2) * torch.tensor([16.0, 12.0])
    # sample the map at exact pixel centres so the truth is known
    uv = uv.floor() + 0.5
    truth = depth[torch.arange(2)[:, None], 0, uv[..., 1].long(), uv[..., 0].long()]
    valid = torch.ones(2, 30, dtype=torch.bool)
    assert sparse_depth_loss(depth, uv, truth * 3.7, valid).item() < 1e-10  # any global scale is free
    noisy = truth * torch.exp(0.2 * torch.randn(2, 30))
    assert sparse_depth_loss(depth, uv, noisy, valid).item() > 0.01
    valid[:, 1:] = False  # one point per image: nothing to compare, no loss and no NaN
    assert sparse_depth_loss(depth, uv, noisy, valid).item() == 0.0


def test_scale_regulariser_is_a_hinge_on_the_largest_axis_at_8_footprints():
    depth = torch.full((1, 2, 4, 4), 2.0)
    focal = torch.tensor([100.0])  # one pixel footprint is 0.02 at depth 2

    def cost(pixels: float, other_axes: float = 1.0) -> float:
        scales = torch.full((1, 2, 3, 4, 4), other_axes * 0.02)
        scales[:, :, 1] = pixels * 0.02  # the largest axis decides
        return scale_regulariser(scales, depth, focal).item()

    assert cost(5.0) == 0.0 and cost(8.0) == 0.0  # up to the hinge: free
    assert cost(8.5) == pytest.approx(0.5, rel=1e-5)  # past it: linear in footprints
    assert cost(12.0) == pytest.approx(4.0, rel=1e-5)
    assert cost(12.0, other_axes=7.9) == pytest.approx(4.0, rel=1e-5)  # smaller axes cost nothing


def test_offset_regulariser_is_the_mean_squared_offset_relative_to_depth():
    depth = torch.full((1, 2, 4, 4), 2.0)
    assert offset_regulariser(torch.zeros(1, 2, 3, 4, 4), depth).item() == 0.0
    offset = torch.zeros(1, 2, 3, 4, 4)
    offset[:, :, 0] = 0.2  # 10% of the depth along one axis
    assert offset_regulariser(offset, depth).item() == pytest.approx(0.01 / 3, rel=1e-6)
    assert offset_regulariser(2 * offset, 2 * depth).item() == pytest.approx(0.01 / 3, rel=1e-6)


def test_frame_points_moves_a_frames_observations_into_a_crop_and_pads():
    observations = torch.tensor(
        [[0, 10.0, 20.0, 1.0], [1, 30.0, 40.0, 2.0], [1, 5.0, 6.0, 3.0], [1, 90.0, 8.0, 30.0], [2, 1, 1, 1]]
    )
    # frame 1, cropped at (4, 2) and resized by 2: (30, 40) -> (52, 76), (5, 6) -> (2, 8)
    uv, depth, valid = frame_points(
        observations, 1, max_points=4, origin=(4, 2), scale=(2, 2), size=(100, 80)
    )
    assert valid.tolist() == [True, True, False, False]  # (90, 8) lands at x = 172, outside
    assert uv[:2].tolist() == [[52.0, 76.0], [2.0, 8.0]] and depth[:2].tolist() == [2.0, 3.0]
    assert uv[2:].abs().sum() == 0 and depth[2:].abs().sum() == 0
    _, depth, valid = frame_points(observations, 1, max_points=4, depth_range=(0.05, 20.0))
    assert valid.sum() == 2 and depth[:2].tolist() == [2.0, 3.0]  # the point at depth 30 is dropped
    _, _, valid = frame_points(observations, 1, max_points=1)
    assert valid.tolist() == [True]  # capped at max_points
    _, _, valid = frame_points(observations[:0], 1, max_points=3)
    assert not valid.any()


def test_lpips_from_local_files_is_a_distance_that_grows_with_noise(tmp_path):
    lpips = LPIPS.from_files("alex", *lpips_files(tmp_path))
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=generator)
    noise = torch.randn(2, 3, 64, 64, generator=generator)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-7)
    small, large = lpips(x, (x + 0.05 * noise).clamp(0, 1)), lpips(x, (x + 0.3 * noise).clamp(0, 1))
    assert (small > 0).all() and (large > 2 * small).all()
    y = x.clone().requires_grad_(True)
    lpips((y + 0.1).clamp(0, 1), x).sum().backward()
    assert y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())


def test_lpips_refuses_wrong_files_and_missing_weights(tmp_path):
    backbone, linear = lpips_files(tmp_path)
    with pytest.raises(ValueError, match="not a torchvision vgg state dict"):
        LPIPS.from_files("vgg", backbone, linear)
    with pytest.raises(ValueError, match="not LPIPS alex linear weights"):
        LPIPS.from_files("alex", backbone, backbone)
    with pytest.raises(ValueError, match=r"needs loss\.lpips_backbone and loss\.lpips_linear"):
        perceptual_loss(LossConfig(lpips_weight=0.1))
    assert perceptual_loss(LossConfig()) is None
    config = LossConfig(
        lpips_weight=0.1, lpips_net="alex", lpips_backbone=str(backbone), lpips_linear=str(linear)
    )
    assert isinstance(perceptual_loss(config), LPIPS)
