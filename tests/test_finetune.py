"""The finetuning loss's terms, each on its own, on inputs whose answers are known."""

import pytest
import torch

from infer.finetune import camera_flow, moving_pixels, moving_term, read_terms, static_pair_mask, static_term
from model.cameras import make_intrinsics, pixel_centers
from model.losses import photometric_loss

H, W = 16, 24
PIXELS = pixel_centers(H, W)  # [H, W, 2]


def test_camera_flow_is_the_identity_at_rest_and_f_t_over_z_for_a_sideways_step():
    K = make_intrinsics(50.0, 50.0, W / 2, H / 2, dtype=torch.float32)
    depth = torch.full((1, H, W), 2.0)
    step = torch.eye(4).repeat(1, 2, 1, 1)  # [B=1, N=2, 4, 4]: stay, then move the camera
    step[0, 1, 0, 3] = -0.1  # points move 0.1 left in the target camera: it stepped right
    uv = camera_flow(depth, K, step, PIXELS)
    assert uv.shape == (2, H, W, 2)
    assert torch.allclose(uv[0], PIXELS, atol=1e-5)
    assert torch.allclose(uv[1] - PIXELS, torch.tensor([-50.0 * 0.1 / 2.0, 0.0]).expand(H, W, 2), atol=1e-5)


def test_moving_pixels_are_trusted_flow_beyond_the_threshold():
    camera_uv = PIXELS[None].clone()
    flow = torch.zeros(1, H, W, 2)
    flow[0, 4:8, 4:8, 0] = 3.0  # an object moving 3 px
    flow[0, 10:, :, 1] = 1.5  # camera-flow error below the 2 px threshold
    trusted = torch.ones(1, H, W, dtype=torch.bool)
    trusted[0, 4:6, 4:8] = False  # half the object's flow fails the forward-backward check
    moving = moving_pixels(camera_uv=camera_uv, observed_uv=PIXELS + flow, trusted=trusted, threshold_px=2.0)
    expected = torch.zeros(1, H, W, dtype=torch.bool)
    expected[0, 6:8, 4:8] = True
    assert torch.equal(moving, expected)


def test_the_static_mask_leaves_out_unseen_pixels_holes_and_the_object_at_both_positions():
    seen = torch.ones(1, H, W, dtype=torch.bool)
    seen[0, :, 0] = False  # a disoccluded border column
    alpha = torch.ones(1, H, W)
    alpha[0, 0, 10] = 0.3  # a render hole
    moving = torch.zeros(1, H, W, dtype=torch.bool)
    moving[0, 8, 4] = True  # one moving source pixel...
    camera_uv = PIXELS[None].clone()  # ...the camera alone leaves it at (4, 8)...
    observed_uv = PIXELS[None].clone()
    observed_uv[0, 8, 4] = torch.tensor([16.5, 8.5])  # ...but it is really at (16, 8)
    keep = static_pair_mask(
        seen=seen, alpha=alpha, moving=moving, camera_uv=camera_uv, observed_uv=observed_uv
    )
    expected = torch.ones(1, H, W)
    expected[0, :, 0] = 0
    expected[0, 0, 10] = 0
    expected[0, 7:10, 3:6] = 0  # the object where the camera puts it, grown by a pixel
    expected[0, 7:10, 15:18] = 0  # and where it really is
    assert keep.shape == (1, 1, H, W) and torch.equal(keep[:, 0], expected)


def test_the_static_term_is_each_pairs_masked_photometric_loss_averaged_over_pairs():
    torch.manual_seed(0)
    targets = torch.rand(2, 3, H, W)
    renders = targets.clone()
    renders[:, :, :, :8] = 1.0  # wrong, but left out below
    keep = torch.ones(2, 1, H, W)
    keep[:, :, :, :10] = 0
    assert static_term(renders, targets, keep).item() < 1e-6
    renders = (targets + 0.1).clamp(max=1)
    keep[1, :, :8] = 0  # the pairs keep different numbers of pixels: a mean of pair means
    per_pair = [photometric_loss(renders[i : i + 1], targets[i : i + 1], keep[i : i + 1]) for i in range(2)]
    assert static_term(renders, targets, keep).item() == pytest.approx(torch.stack(per_pair).mean().item())


def test_the_moving_term_compares_the_render_with_the_target_where_the_object_really_is():
    torch.manual_seed(0)
    background = torch.rand(1, 3, H, W)
    render = background.clone()
    render[:, :, 6:10, 4:8] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # the object at the source time
    target = background.clone()
    target[:, :, 6:10, 8:12] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # 4 px to the right later
    moving = torch.zeros(1, H, W, dtype=torch.bool)
    moving[0, 7:9, 5:7] = True  # the object's inner pixels (bilinear samples stay inside it)
    camera_uv = PIXELS[None].clone()
    observed_uv = camera_uv + torch.tensor([4.0, 0.0])
    common = {"renders": render, "targets": target, "camera_uv": camera_uv, "moving": moving}
    assert moving_term(**common, observed_uv=observed_uv).item() < 1e-6
    assert moving_term(**common, observed_uv=camera_uv).item() > 0.2  # without the warp: the gap
    still = moving_term(**{**common, "moving": torch.zeros_like(moving)}, observed_uv=observed_uv)
    assert still.item() == 0.0
    # a second pair without motion is left out of the mean, not averaged in as a zero
    off = torch.ones_like(render)
    two = {k: torch.cat([v, v]) for k, v in common.items()}
    two["renders"], two["moving"] = torch.cat([off, render]), torch.cat([torch.zeros_like(moving), moving])
    alone = moving_term(**common, observed_uv=camera_uv)
    assert moving_term(**two, observed_uv=torch.cat([camera_uv, camera_uv])).item() == pytest.approx(
        alone.item()
    )


def test_loss_terms_are_read_back_in_one_go_and_keep_their_order():
    steps = [
        {"total": torch.tensor(float(i)), "depth": torch.tensor(i / 10), "lr": 1e-3 * i} for i in range(3)
    ]
    curve = read_terms(steps)
    assert curve == [{"total": float(i), "depth": pytest.approx(i / 10), "lr": 1e-3 * i} for i in range(3)]
    assert all(type(v) is float for entry in curve for v in entry.values())  # JSON-ready
    assert read_terms([]) == []
