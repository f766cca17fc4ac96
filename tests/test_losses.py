"""Losses: zero where they should be, invariant where they should be, sensitive otherwise."""

import torch

from model.losses import dssim, offset_regulariser, photometric_loss, scale_regulariser, sparse_depth_loss


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
    # L1 part: a constant offset of 0.1 costs 0.15 * 0.1 (SSIM is blind to a small constant shift)
    assert abs(photometric_loss((x + 0.1).clamp(max=5), x).item() - 0.015) < 0.01


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


def test_regularisers():
    depth = torch.ones(1, 2, 4, 4)
    focal = torch.tensor([100.0])
    small = torch.full((1, 2, 3, 4, 4), 0.05)  # 5 pixel footprints
    assert scale_regulariser(small, depth, focal).item() == 0.0
    assert scale_regulariser(small * 4, depth, focal).item() > 0
    assert offset_regulariser(torch.zeros(1, 2, 3, 4, 4), depth).item() == 0.0
    assert offset_regulariser(torch.full((1, 2, 3, 4, 4), 0.1), depth).item() > 0
