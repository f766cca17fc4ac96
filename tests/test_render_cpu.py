"""The fast CPU renderer against the PyTorch reference, stage by stage: the same images and
the same gradients, including saturated pixels, clamped alphas and pixels beyond the image.

Tolerances: both run in float32 with the same operations in a different order (the
reference composites through cumprod and bmm, the kernel one Gaussian at a time), so values
agree to a few float32 ulps of an accumulated sum (measured: 6e-7 for colour and alpha,
1.7e-6 for depth, which is divided by alpha) and gradients, which sum many pixel terms, to
5e-7 of their largest value (measured); the bounds are about 10x those.
"""

import pytest
import torch

from model.cameras import make_intrinsics
from model.random_scene import random_scene
from model.rasterize_cpu import cpu_kernels, cpu_kernels_available, rasterize_cpu
from model.rasterize_torch import TILE_SIZE, _tile_intersections, project_ewa, rasterize_torch
from model.render import RASTERIZERS

pytestmark = pytest.mark.skipif(not cpu_kernels_available(), reason="the C++ kernel did not build here")


def scene(count: int, width: int, height: int, views: int, features: int, seed: int = 0, cameras: int = 1):
    """``views`` random scenes of ``count`` Gaussians with ``features`` channels, each seen
    from ``cameras`` slightly moved cameras: Gaussians ``[views, N]``, cameras ``[views,
    cameras]``, as the renderer's backends take them (``model.render.RASTERIZERS``)."""
    sets = [random_scene(count, width, height, seed=seed + v) for v in range(views)]
    stack = {name: torch.stack([getattr(g, name) for g, _ in sets]) for name in ("means", "quats", "scales")}
    opacities = torch.stack([g.opacities for g, _ in sets])
    colours = torch.stack([g.colors for g, _ in sets])
    extra = torch.rand(views, count, features, generator=torch.Generator().manual_seed(seed))
    viewmats = torch.eye(4).repeat(views, cameras, 1, 1)
    viewmats[..., 0, 3] = torch.linspace(-0.2, 0.2, views * cameras).view(views, cameras)
    viewmats[..., 1, 3] = torch.linspace(0.1, -0.1, cameras)
    Ks = torch.stack([K for _, K in sets])[:, None].expand(views, cameras, 3, 3)
    return stack, opacities, torch.cat([colours, extra], -1), viewmats, Ks


def both(inputs, width, height):
    stack, opacities, features, viewmats, Ks = inputs
    leaves = [t.clone().requires_grad_() for t in (stack["means"], stack["scales"], opacities, features)]
    out = {}
    for name in ("torch", "cpu"):
        rasterize = RASTERIZERS[name]
        copies = [t.detach().clone().requires_grad_() for t in leaves]
        means, scales, opac, feats = copies
        image, depth, alpha = rasterize(
            means, stack["quats"], scales, opac, feats, viewmats, Ks, width, height, 0.01, 1e10
        )
        torch.manual_seed(1)  # the same random loss weights for both
        loss = (image * torch.rand_like(image)).sum() + (depth * alpha).sum() + (alpha**2).sum()
        loss.backward()
        out[name] = (image, depth, alpha, [c.grad for c in copies])
    return out


def test_the_tile_lists_are_the_references():
    stack, opacities, _, viewmats, Ks = scene(1500, 70, 45, views=3, features=0)
    projected = project_ewa(
        stack["means"],
        stack["quats"],
        stack["scales"],
        opacities,
        viewmats[:, 0],
        Ks[:, 0],
        70,
        45,
        0.01,
        1e10,
    )
    means2d, _, depths, radii, visible = (t.detach() for t in projected)
    depths[0, :100] = depths[0, 100]  # ties: front to back, then in id order
    tiles_x, tiles_y = -(-70 // TILE_SIZE), -(-45 // TILE_SIZE)
    tile, gauss = _tile_intersections(means2d, depths, radii, visible, tiles_x, tiles_y)
    starts, fast = cpu_kernels().tile_lists(means2d, depths, radii, visible, tiles_x, tiles_y, TILE_SIZE)
    assert torch.equal(fast, gauss)
    assert torch.equal(
        starts,
        torch.cat(
            [torch.zeros(1, dtype=torch.long), torch.bincount(tile, minlength=len(starts) - 1).cumsum(0)]
        ),
    )


@pytest.mark.parametrize(
    ("count", "width", "height", "views", "features", "cameras"),
    # odd sizes (part tiles), several sets, cameras per set and feature channels; 97-98% of
    # pixels saturate (the transmittance stop), and a sparse scene that leaves most of the
    # image uncovered
    [(300, 61, 43, 1, 0, 1), (800, 96, 72, 3, 3, 2), (2000, 64, 48, 2, 5, 3), (25, 64, 48, 1, 2, 1)],
)
def test_images_and_gradients_match_the_reference(count, width, height, views, features, cameras):
    out = both(scene(count, width, height, views, features, cameras=cameras), width, height)
    (ref_image, ref_depth, ref_alpha, ref_grads), (image, depth, alpha, grads) = out["torch"], out["cpu"]
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(depth, ref_depth, atol=2e-5, rtol=0)
    for name, ref, got in zip(("means", "scales", "opacities", "features"), ref_grads, grads, strict=True):
        scale = ref.abs().max()
        assert scale > 0, name
        torch.testing.assert_close(got, ref, atol=5e-6 * float(scale), rtol=0, msg=name)


def test_a_single_saturating_stack_stops_where_the_reference_stops():
    # five opaque Gaussians on the axis, the third brings transmittance below 1e-4
    means = torch.tensor([[[0.0, 0.0, z] for z in (2.0, 2.5, 3.0, 3.5, 4.0)]])
    quats = torch.tensor([[[1.0, 0, 0, 0]] * 5])
    scales = torch.full((1, 5, 3), 0.2)
    opacities = torch.full((1, 5), 0.99)  # alpha clamps at 0.999 at the centre
    features = torch.eye(5)[None]
    K = make_intrinsics(40.0, 40.0, 16.0, 16.0, dtype=torch.float32)[None]
    args = (means, quats, scales, opacities, features, torch.eye(4)[None], K, 32, 32, 0.01, 1e10)
    reference = rasterize_torch(*args)
    fast = rasterize_cpu(*args[:5], args[5][None], args[6][None], *args[7:])  # one set, one camera
    for ref, got in zip(reference, fast, strict=True):
        torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-6)
    centre = fast[0][0, 16, 16]
    assert centre[2:].abs().max() < 1e-3 < centre[1]  # the third on and the rest never reached
