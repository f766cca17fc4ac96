"""Our projection and tile lists against gsplat 1.5.3's own PyTorch twins, on the CPU.

gsplat ships plain-PyTorch versions of its projection and tile-intersection kernels
(``gsplat.cuda._torch_impl``), and these run without CUDA, so CI checks on every change that
the reference and fast CPU backends project and bin Gaussians exactly as gsplat does. Its
compositing twin calls a CUDA kernel, so compositing parity stays in ``test_render_gpu.py``.

The scenes include the cases where the two could part: Gaussians behind, at and just past
the near plane; off screen but with footprints reaching in; far enough out that the
Jacobian's 1.3x field-of-view clamp binds; and several cameras per Gaussian set.

Tolerances: float64 throughout, so values agree to rounding (1e-10 relative). One known
difference: gsplat's twin has no opacities, and bounds every footprint at 3.33 sigma, where
ours (like gsplat's CUDA kernel given opacities) stops where alpha can no longer reach 1/255,
``sqrt(2 ln(255 opacity))`` sigma: 3.3290 at opacity 1. So radii are compared at opacity 1,
where ours is gsplat's or one pixel less, and equal whenever ``3.329 sigma`` and ``3.33
sigma`` round up to the same integer.
"""

import math

import pytest
import torch
from gsplat.cuda import _torch_impl as gsplat_twin

from model.rasterize_cpu import cpu_kernels, cpu_kernels_available
from model.rasterize_torch import EXTENT_SIGMAS, TILE_SIZE, _tile_intersections, project_ewa

WIDTH, HEIGHT, NEAR = 96, 64, 0.05


def scene(seed: int = 0, n: int = 300) -> dict[str, torch.Tensor]:
    """``n`` Gaussians seen by 3 cameras, with the edge cases named in the module docstring."""
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

    z = uniform(n, low=0.5, high=6.0)
    z[:20] = torch.linspace(-0.2, 0.3, 20, dtype=torch.float64)  # behind, at and past the near plane
    spread = uniform(n, 1, low=-0.6, high=0.6)  # x/z and y/z up to 0.6: on screen
    spread[20:60] = uniform(40, 1, low=1.0, high=2.5) * torch.sign(
        uniform(40, 1, low=-1, high=1)
    )  # off screen
    means = torch.cat([spread * z[:, None], uniform(n, 1, low=-0.5, high=0.5) * z[:, None], z[:, None]], -1)
    scales = uniform(n, 3, low=0.005, high=0.08)
    scales[20:60] *= 8  # wide: off screen, yet the footprint may reach in, through the clamp
    quats = torch.nn.functional.normalize(uniform(n, 4, low=-1, high=1), dim=-1)
    viewmats = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    viewmats[1, 0, 3] = 0.2
    angle = 0.15
    viewmats[2, :3, :3] = torch.tensor(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
    )
    Ks = torch.tensor([[80.0, 0, 48], [0, 80.0, 32], [0, 0, 1]], dtype=torch.float64).repeat(3, 1, 1)
    Ks[1, 0, 2] = 40.0  # an off-centre principal point, as the stereo eyes have
    return {"means": means, "quats": quats, "scales": scales, "viewmats": viewmats, "Ks": Ks}


def ours(s: dict) -> tuple[torch.Tensor, ...]:
    """Our projection of scene ``s`` at opacity 1: means2d, conics, depths, radii, visible."""
    V, N = len(s["viewmats"]), len(s["means"])
    per_view = {k: s[k].expand(V, *s[k].shape) for k in ("means", "quats", "scales")}
    opacities = torch.ones(V, N, dtype=torch.float64)
    return project_ewa(
        per_view["means"], per_view["quats"], per_view["scales"], opacities, s["viewmats"], s["Ks"],
        WIDTH, HEIGHT, NEAR, 1e10,
    )  # fmt: skip


def theirs(s: dict) -> tuple[torch.Tensor, ...]:
    """gsplat's twin on scene ``s``: radii, means2d, depths, conics (0.3 px^2 low-pass)."""
    covars, _ = gsplat_twin._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    radii, means2d, depths, conics, _ = gsplat_twin._fully_fused_projection(
        s["means"], covars, s["viewmats"], s["Ks"], WIDTH, HEIGHT, eps2d=0.3, near_plane=NEAR
    )
    return radii, means2d, depths, conics


def test_the_scene_holds_the_edge_cases():
    s = scene()
    radii, means2d, depths, _ = theirs(s)
    kept = (radii > 0).all(-1)
    assert (depths <= NEAR).any() and ((depths > NEAR) & (depths < 0.3)).any()
    centre_off = (means2d[..., 0] < 0) | (means2d[..., 0] >= WIDTH)
    assert (kept & centre_off).sum() >= 5  # off screen, footprint reaching in
    x_over_z = s["means"][:, 0] / s["means"][:, 2]
    beyond_clamp = (x_over_z.abs() > 0.6 + 0.3 * WIDTH / 2 / 80.0) & (s["means"][:, 2] > NEAR)
    assert beyond_clamp.sum() >= 10


def test_projection_matches_gsplat_values_and_culling():
    s = scene()
    means2d, conics, depths, radii, visible = ours(s)
    their_radii, their_means2d, their_depths, their_conics = theirs(s)
    kept = (their_radii > 0).all(-1)
    in_range = their_depths > NEAR  # ours holds a safe 1 where culled by depth, for finite gradients
    torch.testing.assert_close(depths[in_range], their_depths[in_range], rtol=1e-10, atol=0)
    torch.testing.assert_close(means2d[kept], their_means2d[kept], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(conics[kept], their_conics[kept], rtol=1e-10, atol=1e-12)
    # culling: the same Gaussians, except where our box, a pixel smaller, no longer reaches the screen
    both = visible & kept
    differ = visible != kept
    assert (~visible[differ]).all() and differ.sum() <= 2, differ.sum()
    # radii: ours is gsplat's or one less (3.329 sigma against 3.33) ...
    difference = their_radii.long()[both] - radii[both]
    assert ((difference == 0) | (difference == 1)).all()
    # ... and the same wherever the two bounds round up alike, from gsplat's own 2D covariance
    covars, _ = gsplat_twin._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    means_c, covars_c = gsplat_twin._world_to_cam(s["means"], covars, s["viewmats"])
    _, covars2d = gsplat_twin._persp_proj(means_c, covars_c, s["Ks"], WIDTH, HEIGHT)
    sd = (torch.diagonal(covars2d, dim1=-2, dim2=-1) + 0.3).sqrt()  # [V, N, 2] px, with the low-pass
    cap = math.sqrt(2 * math.log(255.0))  # our bound at opacity 1
    alike = both & (torch.ceil(cap * sd) == torch.ceil(EXTENT_SIGMAS * sd)).all(-1)
    assert alike.sum() > 0.5 * both.sum()
    assert torch.equal(radii[alike], their_radii.long()[alike])


def test_projection_gradients_match_gsplat():
    s = scene(seed=1)
    grads = []
    for project in ("ours", "theirs"):
        leaves = {k: v.clone().requires_grad_() for k, v in s.items()}
        if project == "ours":
            means2d, conics, depths, radii, _ = ours(leaves)
        else:
            radii, means2d, depths, conics = theirs(leaves)
        keep = (radii > 0).all(-1)
        g = torch.Generator().manual_seed(2)
        weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (means2d, conics, depths)]
        loss = sum((t * w)[keep].sum() for t, w in zip((means2d, conics, depths), weights, strict=True))
        loss.backward()
        grads.append({k: v.grad for k, v in leaves.items()})
        assert keep.sum() > 100
    # gsplat projects the mean with all of K[:2], skew included; ours has no skew, so K's
    # gradient is compared on fx, fy, cx and cy only
    pinhole = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 0, 0]], dtype=torch.bool).expand(3, 3, 3)
    grads[1]["Ks"] = torch.where(pinhole, grads[1]["Ks"], 0.0)
    for name in s:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-8, atol=1e-10, msg=name)


def their_tile_lists(means2d, radii, depths, tiles_x, tiles_y):
    """gsplat's (tile, flat Gaussian) pairs, sorted by tile then depth, and per-tile offsets."""
    _, isect_ids, flatten_ids = gsplat_twin._isect_tiles(
        means2d[None], radii[None].int(), depths[None], TILE_SIZE, tiles_x, tiles_y
    )
    tile_bits = (tiles_x * tiles_y).bit_length()
    high = isect_ids >> 32
    image, tile = high >> tile_bits, high & ((1 << tile_bits) - 1)
    return image * tiles_x * tiles_y + tile, flatten_ids.long()


@pytest.mark.parametrize("lists", ["torch", "cpu"])
def test_tile_lists_match_gsplat(lists):
    if lists == "cpu" and not cpu_kernels_available():
        pytest.skip("the CPU kernels do not build here")
    s = scene(seed=3, n=150)
    means2d, _, depths, radii, visible = ours(s)
    means2d = means2d.float().double()  # the C++ lists read float32: bin the same values
    tiles_x, tiles_y = math.ceil(WIDTH / TILE_SIZE), math.ceil(HEIGHT / TILE_SIZE)
    # gsplat's radii from ours, so that only the binning is compared
    their_tiles, their_flat = their_tile_lists(means2d, radii, depths.float().double(), tiles_x, tiles_y)
    if lists == "torch":
        tiles, flat = _tile_intersections(means2d, depths, radii, visible, tiles_x, tiles_y)
    else:
        starts, flat = cpu_kernels().tile_lists(
            means2d.float(), depths.float(), radii, visible, tiles_x, tiles_y, TILE_SIZE
        )
        counts = starts[1:] - starts[:-1]
        tiles = torch.repeat_interleave(torch.arange(len(counts)), counts)
    assert len(their_tiles) > 500
    assert torch.equal(tiles, their_tiles)
    assert torch.equal(flat.long(), their_flat)
