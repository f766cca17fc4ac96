"""gsplat and the PyTorch reference agree on the same scene (CUDA only).

Tolerances: both run in float32, but gsplat uses the fast ``__expf`` and its own summation
order, and a pixel whose alpha sits at the 1/255 cut-off can fall on either side of it, so a
few pixels may differ by one such contribution (< 4e-3 x colour). Means over the image and
gradients, which average over many pixels, are held much tighter.
"""

import pytest
import torch

from model.random_scene import random_scene
from model.render import render

pytestmark = pytest.mark.gpu


def _render_with_grads(backend, gaussians, viewmats, Ks, width, height):
    names = ("means", "quats", "scales", "opacities", "colors", "features")
    params = {
        name: getattr(gaussians, name).detach().clone().requires_grad_()
        for name in names
        if getattr(gaussians, name) is not None
    }
    scene = type(gaussians)(**params)
    out = render(
        scene,
        viewmats,
        Ks,
        width,
        height,
        background=torch.tensor([0.1, 0.2, 0.3], device="cuda"),
        backend=backend,
    )
    weights = torch.linspace(0, 1, out.color.numel(), device="cuda").reshape(out.color.shape)
    loss = (out.color * weights).sum() + out.depth.mean() + out.alpha.sum()
    if out.features is not None:
        loss = loss + (out.features * torch.linspace(-1, 1, out.features.shape[-1], device="cuda")).mean()
    loss.backward()
    return out, {name: p.grad for name, p in params.items()}


def test_gsplat_and_torch_backends_agree():
    width, height = 160, 120
    gaussians, K = random_scene(4000, width, height, seed=7, device="cuda")
    viewmats = torch.eye(4, device="cuda").repeat(3, 1, 1)
    viewmats[1, 0, 3] = 0.15  # two more cameras, shifted and rotated slightly
    viewmats[2, :3, :3] = torch.tensor([[0.995, -0.0998, 0], [0.0998, 0.995, 0], [0, 0, 1]], device="cuda")
    Ks = K.expand(3, 3, 3)

    ref, ref_grads = _render_with_grads("torch", gaussians, viewmats, Ks, width, height)
    fast, fast_grads = _render_with_grads("gsplat", gaussians, viewmats, Ks, width, height)

    for name in ("color", "alpha"):
        diff = (getattr(ref, name) - getattr(fast, name)).abs()
        assert diff.mean() < 1e-4, (name, diff.mean())
        assert torch.quantile(diff.flatten(), 0.999) < 2e-3, name
        assert diff.max() < 1e-2, name
    solid = (ref.alpha > 0.5) & (fast.alpha > 0.5)
    depth_rel = ((ref.depth - fast.depth).abs() / ref.depth.clamp(min=1e-6))[solid]
    assert depth_rel.mean() < 1e-4 and depth_rel.max() < 1e-2

    for name, grad in ref_grads.items():
        other = fast_grads[name]
        rel = (grad - other).norm() / grad.norm()
        assert rel < 2e-2, (name, rel.item())


def test_gsplat_and_torch_agree_with_extra_features_and_several_cameras_per_set():
    # as finetuning renders: a batch of Gaussian sets, each seen by several cameras, with
    # feature channels beyond colour (gsplat pads the channels to its kernels' sizes)
    width, height = 96, 64
    sets = [random_scene(1500, width, height, seed=seed, device="cuda") for seed in (1, 2)]
    K = sets[0][1]
    fields = ("means", "quats", "scales", "opacities", "colors")
    stacked = {name: torch.stack([getattr(g, name) for g, _ in sets]) for name in fields}
    generator = torch.Generator(device="cuda").manual_seed(3)
    features = torch.rand(2, 1500, 4, device="cuda", generator=generator)
    gaussians = type(sets[0][0])(**stacked, features=features)
    viewmats = torch.eye(4, device="cuda").repeat(2, 3, 1, 1)  # [2 sets, 3 cameras, 4, 4]
    viewmats[:, 1, 0, 3] = 0.1
    viewmats[1, 2, 1, 3] = -0.1
    Ks = K.expand(2, 3, 3, 3).clone()
    Ks[:, 2, 0, 2] += 4.0  # an off-axis principal point, as the stereo eyes have

    ref, ref_grads = _render_with_grads("torch", gaussians, viewmats, Ks, width, height)
    fast, fast_grads = _render_with_grads("gsplat", gaussians, viewmats, Ks, width, height)

    assert fast.features.shape == (2, 3, 4, height, width)
    for name in ("color", "features", "alpha"):
        diff = (getattr(ref, name) - getattr(fast, name)).abs()
        assert diff.mean() < 1e-4, (name, diff.mean())
        assert diff.max() < 1e-2, name
    for name, grad in ref_grads.items():
        rel = (grad - fast_grads[name]).norm() / grad.norm()
        assert rel < 2e-2, (name, rel.item())
