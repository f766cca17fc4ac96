"""The pure-PyTorch reference renderer against hand-computed cases.

Most cases run in float64 so equalities are tight; they check the conventions that gsplat
has and the GPU parity test relies on.
"""

import math

import pytest
import torch

from model.cameras import (
    c2w_to_viewmat,
    look_at,
    make_intrinsics,
    pixel_centers,
    project,
    transform_points,
)
from model.gaussians import Gaussians
from model.random_scene import random_scene
from model.rasterize_cpu import cpu_kernels_available
from model.rasterize_torch import ALPHA_MAX, EPS2D, rasterize_torch
from model.render import render, resolve_backend

F64 = torch.float64


def gaussians(means, scales, opacities, colors, features=None) -> Gaussians:
    means = torch.as_tensor(means, dtype=F64)
    n = means.shape[0]
    quats = torch.zeros(n, 4, dtype=F64)
    quats[:, 0] = 1
    scales = torch.as_tensor(scales, dtype=F64)
    scales = scales[:, None].expand(n, 3) if scales.ndim == 1 else scales
    return Gaussians(
        means,
        quats,
        scales.clone(),
        torch.as_tensor(opacities, dtype=F64),
        torch.as_tensor(colors, dtype=F64),
        features,
    )


def identity_camera(width=32, height=32, f=40.0):
    return torch.eye(4, dtype=F64)[None], make_intrinsics(f, f, width / 2, height / 2)[None]


def test_single_gaussian_lands_where_the_camera_math_says():
    c2w = look_at(
        torch.tensor([0.4, -0.3, -3.0], dtype=F64),
        torch.tensor([0.1, 0.2, 0.5], dtype=F64),
        torch.tensor([0.0, -1.0, 0.0], dtype=F64),
    )
    viewmat = c2w_to_viewmat(c2w)
    K = make_intrinsics(60.0, 55.0, 31.0, 25.0)
    world = torch.tensor([[0.3, 0.1, 0.4]], dtype=F64)
    cam_pt = transform_points(viewmat, world)
    (uv,), (z,) = project(cam_pt, K)
    g = gaussians(world, [0.05], [0.8], [[0.2, 0.6, 1.0]])
    bg = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    out = render(g, viewmat[None], K[None], 64, 48, background=bg, backend="torch")
    alpha = out.alpha[0, 0]
    centers = pixel_centers(48, 64, dtype=F64)
    centroid = (alpha[..., None] * centers).sum((0, 1)) / alpha.sum()
    assert torch.allclose(centroid, uv, atol=0.02), (centroid, uv)
    # hand-computed footprint: an isotropic Gaussian of world std s at depth z has pixel std
    # f*s/z (to first order), widened by the 0.3 px^2 low-pass
    row, col = int(uv[1]), int(uv[0])
    d2u = (centers[row, col] - uv) / torch.sqrt(
        torch.tensor([60.0, 55.0], dtype=F64) ** 2 * 0.05**2 / z**2 + EPS2D
    )
    expected_alpha = 0.8 * torch.exp(-0.5 * (d2u**2).sum())
    assert alpha[row, col].item() == pytest.approx(expected_alpha.item(), rel=0.03)
    color = out.color[0, :, row, col]
    expected = alpha[row, col] * torch.tensor([0.2, 0.6, 1.0], dtype=F64) + (1 - alpha[row, col]) * bg
    assert torch.allclose(color, expected, atol=1e-12)
    assert out.depth[0, 0, row, col].item() == pytest.approx(z.item(), rel=1e-12)
    # nothing outside the footprint
    assert alpha[0, 0] == 0 and out.depth[0, 0, 0, 0] == 0
    assert torch.allclose(out.color[0, :, 0, 0], bg)


def test_two_gaussians_composite_front_to_back_regardless_of_input_order():
    viewmat, K = identity_camera()
    # both centred on pixel (15, 15)'s centre: sigma = 0 there, so alpha = opacity exactly
    centre_ray = torch.tensor([15.5 - 16, 15.5 - 16], dtype=F64) / 40.0
    front = [centre_ray[0] * 2, centre_ray[1] * 2, 2.0]
    back = [centre_ray[0] * 4, centre_ray[1] * 4, 4.0]
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    bg = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    expected_color = (
        0.6 * torch.tensor(red, dtype=F64) + 0.4 * 0.5 * torch.tensor(blue, dtype=F64) + 0.4 * 0.5 * bg
    )
    for order in ([front, back], [back, front]):
        colors = [red, blue] if order[0] is front else [blue, red]
        opac = [0.6, 0.5] if order[0] is front else [0.5, 0.6]
        out = render(
            gaussians(order, [0.1, 0.2] if order[0] is front else [0.2, 0.1], opac, colors),
            viewmat,
            K,
            32,
            32,
            background=bg,
            backend="torch",
        )
        assert torch.allclose(out.color[0, :, 15, 15], expected_color, atol=1e-12)
        assert out.alpha[0, 0, 15, 15].item() == pytest.approx(1 - 0.4 * 0.5, abs=1e-12)
        assert out.depth[0, 0, 15, 15].item() == pytest.approx((0.6 * 2 + 0.2 * 4) / 0.8, abs=1e-12)


def _stack_on_pixel(n: int, opacity: float, scale: float = 0.3):
    """``n`` Gaussians at increasing depth, all centred on the centre of pixel (15, 15)."""
    ray = torch.tensor([15.5 - 16, 15.5 - 16, 1.0], dtype=F64) * torch.tensor([1 / 40, 1 / 40, 1], dtype=F64)
    depths = torch.arange(1, n + 1, dtype=F64)
    means = ray[None] * depths[:, None]
    colors = torch.eye(3, dtype=F64).repeat(n, 1)[:n] * 0.5 + 0.25
    return gaussians(means, [scale] * n, [opacity] * n, colors), colors


def test_alpha_is_capped():
    viewmat, K = identity_camera()
    g, _ = _stack_on_pixel(1, 1.0)
    out = render(g, viewmat, K, 32, 32, backend="torch")
    assert out.alpha[0, 0, 15, 15].item() == pytest.approx(ALPHA_MAX, abs=1e-12)


def test_transmittance_stop_excludes_the_gaussian_that_would_cross_it():
    viewmat, K = identity_camera()
    # alpha 0.95 each: T after three = 1.25e-4 (> 1e-4, kept); the fourth would bring it to
    # 6.25e-6, so it and everything behind it are dropped.
    g, colors = _stack_on_pixel(5, 0.95)
    out = render(g, viewmat, K, 32, 32, backend="torch")
    weights = torch.tensor([0.95, 0.05 * 0.95, 0.05**2 * 0.95], dtype=F64)
    expected = (weights[:, None] * colors[:3]).sum(0)
    assert torch.allclose(out.color[0, :, 15, 15], expected, atol=1e-12)
    assert out.alpha[0, 0, 15, 15].item() == pytest.approx(1 - 0.05**3, abs=1e-12)
    # had the fourth been composited, the pixel would differ by more than the tolerance above
    with_fourth = expected + 0.05**3 * 0.95 * colors[3]
    assert (with_fourth - expected).abs().max() > 1e-6


def test_faint_gaussians_are_skipped():
    viewmat, K = identity_camera()
    g, _ = _stack_on_pixel(1, 0.5 / 255)
    out = render(g, viewmat, K, 32, 32, backend="torch")
    assert out.alpha.abs().max() == 0


def test_background_and_features():
    viewmat, K = identity_camera()
    g, _ = _stack_on_pixel(2, 0.7, scale=0.04)
    g.features = torch.tensor([[2.0, -1.0], [2.0, -1.0]], dtype=F64)
    bg = torch.tensor([0.3, 0.3, 0.3], dtype=F64)
    out = render(g, viewmat, K, 32, 32, background=bg, backend="torch")
    # a constant feature composites to feature * alpha, with no background
    assert torch.allclose(out.features[0, 0], 2.0 * out.alpha[0, 0], atol=1e-12)
    assert torch.allclose(out.features[0, 1], -1.0 * out.alpha[0, 0], atol=1e-12)
    empty = out.alpha[0, 0] == 0
    assert empty.any() and torch.all(out.color[0, :, empty] == 0.3)


@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_plane_of_gaussians_renders_the_plane_depth(slope):
    """Thin, overlapping Gaussians on the plane z = 2 + slope * x (camera frame) cover the view.

    Rendered depth is the alpha-weighted mean of Gaussian *centre* depths (gsplat's convention),
    so a fronto-parallel plane is exact, and on a tilted one the error is bounded by the depth
    spread of one footprint: slope * 3 sigma / z.
    """
    width, height, f, sigma = 48, 40, 40.0, 0.03
    K = make_intrinsics(f, f, width / 2, height / 2)
    s = torch.linspace(-1.3, 1.3, 100, dtype=F64)
    x, y = torch.meshgrid(s * 1.5, s, indexing="ij")
    means = torch.stack([x, y, 2 + slope * x], -1).reshape(-1, 3)
    n = means.shape[0]
    normal = torch.nn.functional.normalize(torch.tensor([-slope, 0.0, 1.0], dtype=F64), dim=0)
    angle = -math.atan(slope)  # rotation about y taking the thin local z axis onto the normal
    quat = torch.tensor([math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0], dtype=F64).expand(n, 4)
    scales = torch.tensor([sigma, sigma, 1e-4], dtype=F64).expand(n, 3)
    g = Gaussians(
        means, quat.clone(), scales.clone(), torch.full((n,), 0.9, dtype=F64), torch.rand(n, 3, dtype=F64)
    )
    out = render(g, torch.eye(4, dtype=F64)[None], K[None], width, height, backend="torch")
    centers = pixel_centers(height, width, dtype=F64)
    rays = torch.cat(
        [
            (centers - torch.tensor([width / 2, height / 2], dtype=F64)) / f,
            torch.ones(height, width, 1, dtype=F64),
        ],
        -1,
    )
    truth = 2 * normal[2] / (rays @ normal)  # ray-plane intersection: n . X = n . (0, 0, 2)
    assert out.alpha[0, 0].min() > 0.99
    rel = (out.depth[0, 0] - truth).abs() / truth
    bound = slope * 3 * sigma / truth.min() if slope else 1e-12
    assert rel.max() < bound, (rel.max(), bound)


def test_batched_render_equals_per_element_renders():
    torch.manual_seed(1)
    n = 40
    means = torch.randn(2, n, 3, dtype=F64) * 0.4 + torch.tensor([0, 0, 3.0], dtype=F64)
    g = Gaussians(
        means,
        torch.randn(2, n, 4, dtype=F64),
        torch.rand(2, n, 3, dtype=F64) * 0.1,
        torch.rand(2, n, dtype=F64),
        torch.rand(2, n, 3, dtype=F64),
    )
    viewmats = torch.eye(4, dtype=F64).repeat(2, 3, 1, 1)
    viewmats[:, 1, 0, 3] = 0.2
    viewmats[:, 2, 1, 3] = -0.3
    Ks = make_intrinsics(30.0, 30.0, 20.0, 15.0).repeat(2, 3, 1, 1)
    bg = torch.rand(2, 3, 3, dtype=F64)
    out = render(g, viewmats, Ks, 40, 30, background=bg, backend="torch")
    assert out.color.shape == (2, 3, 3, 30, 40)
    for b in range(2):
        single = render(g[b], viewmats[b], Ks[b], 40, 30, background=bg[b], backend="torch")
        assert torch.allclose(out.color[b], single.color, atol=1e-12)
        assert torch.allclose(out.depth[b], single.depth, atol=1e-12)
    assert not torch.allclose(out.color[0, 0], out.color[0, 1])


def _scene_with_features(n, width, height, seed, features):
    g, _ = random_scene(n, width, height, seed=seed, dtype=torch.float64)
    g.features = torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return g


def test_chunked_rasterization_matches_single_chunk_including_gradients():
    g = _scene_with_features(300, 48, 40, seed=0, features=2)
    viewmat, K = identity_camera(48, 40, 50.0)
    feats = torch.cat([g.colors, g.features], -1)

    def run(chunk):
        params = [t.clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, feats)]
        batched = [p[None] for p in params]
        image, depth, alpha = rasterize_torch(*batched, viewmat, K, 48, 40, 0.01, 1e10, chunk_elements=chunk)
        (image.square().sum() + depth.sum() + alpha.sum()).backward()
        return image, depth, alpha, [p.grad for p in params]

    big, small = run(1 << 26), run(256 * 4)  # the small budget forces many chunks, checkpointed
    for a, b in zip(big[:3], small[:3], strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    for a, b in zip(big[3], small[3], strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_gradcheck_float64_tiny_scene():
    g = _scene_with_features(6, 20, 18, seed=3, features=1)
    viewmat, K = identity_camera(20, 18, 24.0)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=F64)

    def fn(means, quats, scales, opacities, colors, features):
        out = render(
            Gaussians(means, quats, scales, opacities, colors, features),
            viewmat,
            K,
            20,
            18,
            background=bg,
            backend="torch",
        )
        return out.color, out.depth, out.alpha, out.features

    inputs = tuple(
        t.clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors, g.features)
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    # and every parameter actually receives gradient
    loss = sum(o.sum() for o in fn(*inputs))
    grads = torch.autograd.grad(loss, inputs)
    for name, grad in zip(
        ("means", "quats", "scales", "opacities", "colors", "features"), grads, strict=True
    ):
        assert grad.abs().sum() > 0, name


def test_gaussians_behind_the_camera_are_culled_with_finite_gradients():
    viewmat, K = identity_camera()
    g = gaussians([[0.0, 0.0, -1.0], [0.0, 0.0, 2.0]], [0.1, 0.1], [0.9, 0.9], [[1.0, 0, 0], [0, 1.0, 0]])
    g.means.requires_grad_()
    out = render(g, viewmat, K, 32, 32, backend="torch")
    assert out.color[0, 0].max() == 0  # the red one, behind the camera, is invisible
    out.color.sum().backward()
    assert torch.isfinite(g.means.grad).all() and g.means.grad[0].abs().sum() == 0


def test_backend_errors_are_clear():
    viewmat, K = identity_camera()
    g, _ = _stack_on_pixel(1, 0.5)
    with pytest.raises(ValueError, match="unknown render backend"):
        render(g, viewmat, K, 32, 32, backend="vulkan")
    with pytest.raises(ValueError, match="needs CUDA"):
        render(g, viewmat, K, 32, 32, backend="gsplat")
    with pytest.raises(ValueError, match="viewmats"):
        render(g, viewmat[0], K, 32, 32, backend="torch")


def test_auto_backend_on_cpu_is_the_reference_in_float64_and_the_fast_path_in_float32():
    assert resolve_backend("auto", torch.device("cpu"), F64) == "torch"
    expected = "cpu" if cpu_kernels_available() else "torch"
    assert resolve_backend("auto", torch.device("cpu"), torch.float32) == expected
    viewmat, K = identity_camera()
    g, _ = _stack_on_pixel(2, 0.5)
    auto = render(g, viewmat, K, 32, 32)
    ref = render(g, viewmat, K, 32, 32, backend="torch")
    assert torch.equal(auto.color, ref.color)
    with pytest.raises(ValueError, match="float32 CPU"):
        render(g, viewmat, K, 32, 32, backend="cpu")


def test_image_does_not_depend_on_the_tile_size(monkeypatch):
    from model import rasterize_torch

    g = _scene_with_features(400, 70, 50, seed=2, features=1)
    viewmat, K = identity_camera(70, 50, 60.0)

    def run():
        params = [t.clone().requires_grad_() for t in (g.means, g.scales, g.opacities)]
        scene = Gaussians(params[0], g.quats, params[1], params[2], g.colors, g.features)
        out = render(scene, viewmat, K, 70, 50, backend="torch")
        (out.color.sum() + out.depth.sum()).backward()
        return out, [p.grad for p in params]

    small, small_grads = run()
    monkeypatch.setattr(rasterize_torch, "TILE_SIZE", 16)
    large, large_grads = run()
    for name in ("color", "depth", "alpha", "features"):
        assert torch.allclose(getattr(small, name), getattr(large, name), atol=1e-12), name
    for a, b in zip(small_grads, large_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
