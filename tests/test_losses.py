"""Losses: zero where they should be, invariant where they should be, sensitive otherwise."""

import pytest
import torch

from model.losses import dssim, offset_regulariser, photometric_loss, scale_regulariser, sparse_depth_loss
from model.losses.perceptual import LAYERS, LPIPS
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


def lpips_files(tmp_path, net="alex"):
    """A torchvision-format backbone (random init) and LPIPS-format positive linear weights."""
    import torchvision

    torch.manual_seed(0)
    backbone = (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None)
    torch.save(backbone.state_dict(), tmp_path / "backbone.pth")
    widths = LAYERS[net][1]
    torch.save(
        {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(widths)},
        tmp_path / "linear.pth",
    )
    return tmp_path / "backbone.pth", tmp_path / "linear.pth"


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
