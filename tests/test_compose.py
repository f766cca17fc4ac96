"""Composing output frames: detail transfer reproduces the full-resolution input where the
render shows it, holes are inpainted, and every pixel is attributed to one origin."""

from dataclasses import replace

import cv2
import numpy as np
import torch
from torch import Tensor

from data_prep.synthetic import procedural_texture
from infer.canvas import pad_canvas
from infer.compose import AGREEMENT, ORIGINS, agreeing_mean, compose, origin_features
from infer.rerender import gaussian_origins
from model.cameras import make_intrinsics
from model.network import GaussianPredictor, NetworkConfig
from model.render import render

FULL = (144, 256)  # H, W of the input
WORK = (36, 64)


def rendered_identity(image_full: np.ndarray, viewmat: torch.Tensor, shift: float = 0.0):
    """A fresh network's Gaussians of the working-size frame on a 12% padded canvas, rendered
    from ``viewmat`` with origin features, by a camera whose principal point is ``shift`` px
    right of the source's; the last two are the render's and the source's intrinsics."""
    small = cv2.resize(image_full, WORK[::-1], interpolation=cv2.INTER_AREA)
    image = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    K = make_intrinsics(60.0, 60.0, WORK[1] / 2, WORK[0] / 2, dtype=torch.float32)[None]
    padded, valid, K_pad = pad_canvas(image, K, 0.12)
    torch.manual_seed(0)
    net = GaussianPredictor(NetworkConfig(decoder_channels=(8, 16, 32, 64, 128))).eval()
    with torch.no_grad():
        out = net(padded, K_pad, valid)
    g = replace(out.gaussians, features=origin_features(gaussian_origins(valid, net.config.layers)))
    K_render = K.clone()
    K_render[:, 0, 2] += shift
    result = render(g, viewmat[None, None], K_render[:, None], WORK[1], WORK[0], backend="torch")
    return result.color[:, 0], result.alpha[:, 0], result.depth[:, 0], result.features[:, 0], K_render, K


def composed(full: np.ndarray, viewmat: torch.Tensor, detail: bool = True):
    color, alpha, depth, features, K, _ = rendered_identity(full, viewmat)
    source = full[None] if detail else None
    to_source = torch.linalg.inv(viewmat)[None]
    result = compose(
        color=color, alpha=alpha, depth=depth, features=features, K=K, to_source=to_source, source=source
    )
    return result, alpha


def test_detail_transfer_returns_the_full_resolution_input_at_the_source_pose():
    texture = procedural_texture(np.random.default_rng(0), 512)
    full = (cv2.resize(texture, FULL[::-1], interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    detail, _ = composed(full, torch.eye(4))
    plain, _ = composed(full, torch.eye(4), detail=False)
    upsampled = cv2.resize(plain.frames[0], FULL[::-1], interpolation=cv2.INTER_LINEAR)
    assert detail.frames.shape == (1, *FULL, 3) and plain.frames.shape == (1, *WORK, 3)
    # the warp field is the identity: the input comes back nearly exactly (measured 42 dB),
    # where the upsampled working-size render has lost the input's fine detail (measured 18 dB)
    assert cv2.PSNR(detail.frames[0], full) > 40 > cv2.PSNR(upsampled, full) + 10
    # measured 0.994: the outermost ring of pixels is mostly the padding's splats
    assert detail.origin_shares[0, ORIGINS.index("source")] > 0.99


def test_detail_transfer_follows_a_shifted_principal_point():
    texture = procedural_texture(np.random.default_rng(3), 512)
    full = (cv2.resize(texture, FULL[::-1], interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    color, alpha, depth, features, K_render, K = rendered_identity(full, torch.eye(4), shift=2.0)
    result = compose(
        color=color, alpha=alpha, depth=depth, features=features, K=K_render, K_source=K,
        to_source=torch.eye(4)[None], source=full[None],
    )  # fmt: skip
    # 2 px right at the working size is 8 px at the full size: the input, moved 8 px right
    # (measured: identical away from the borders; sampled with the render's intrinsics for the
    # source's, it would stay in place, 14 dB)
    assert cv2.PSNR(result.frames[0][8:-8, 16:-8], full[8:-8, 8:-16]) > 50


def test_pixels_beyond_the_canvas_are_inpainted_and_counted():
    texture = procedural_texture(np.random.default_rng(1), 512)
    full = (cv2.resize(texture, FULL[::-1], interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    turn = torch.eye(4)
    angle = torch.tensor(0.6)  # radians about y: far beyond the 12% canvas on one side
    turn[0, 0], turn[0, 2], turn[2, 0], turn[2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    result, alpha = composed(full, turn)
    shares = result.origin_shares[0]
    assert np.isclose(shares.sum(), 1.0)
    assert shares[ORIGINS.index("inpainted")] > 0.2 and shares[ORIGINS.index("extrapolated")] > 0.02
    holes = cv2.resize((alpha[0, 0] < 0.5).float().numpy(), FULL[::-1]) > 0.5
    assert holes.any() and result.frames[0][holes].std() > 0  # filled, not left black
    assert result.frames[0][holes].mean() > 10


def test_the_source_shows_where_it_dominates_and_fades_to_the_render_where_it_does_not():
    texture = procedural_texture(np.random.default_rng(2), 512)
    full = (cv2.resize(texture, FULL[::-1], interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    h, w = WORK
    alpha = torch.full((1, 1, h, w), 0.97)  # a first layer that is not quite opaque
    grey = 0.5
    share = torch.full((1, 1, h, w), 0.95)  # the source's share: most of the frame...
    share[..., w // 3 : 2 * w // 3] = 0.6  # ...a blend...
    share[..., 2 * w // 3 :] = 0.1  # ...and a disocclusion
    features = torch.cat([share, 1 - share, torch.zeros_like(share)], 1) * alpha
    K = make_intrinsics(60.0, 60.0, w / 2, h / 2, dtype=torch.float32)[None]
    result = compose(
        color=grey * alpha.expand(1, 3, h, w),
        alpha=alpha,
        depth=torch.ones(1, 1, h, w),
        features=features,
        K=K,
        to_source=torch.eye(4)[None],
        source=full[None],
    )
    out, third = result.frames[0].astype(float), FULL[1] // 3
    inner = slice(4, FULL[0] - 4)  # away from the bilinear seams between the thirds
    # a source share of 0.95 shows the input unblended (the identity warp samples it exactly)
    assert np.abs(out[inner, 4 : third - 4] - full[inner, 4 : third - 4]).max() <= 1
    # 0.6 is 70% of the way up the 0.25-0.75 ramp
    blend = 0.7 * full[inner, third + 4 : 2 * third - 4] + 0.3 * 255 * grey
    assert np.abs(out[inner, third + 4 : 2 * third - 4] - blend).max() <= 1
    # a share of 0.1 is the render's
    assert np.abs(out[inner, 2 * third + 4 : -4] - 255 * grey).max() <= 1


def test_agreeing_detail_averages_the_noise_and_keeps_the_source_where_another_frame_differs():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, 1, 1, generator=generator).expand(1, 3, 64, 64)
    sigma = AGREEMENT / 4  # sensor noise well inside the agreement scale

    def noisy() -> Tensor:
        return clean + sigma * torch.randn(clean.shape, generator=generator)

    own, inside = noisy(), torch.ones(1, 1, 64, 64)
    others = [(noisy(), inside), (noisy(), inside)]
    moved = others[1][0].clone()
    moved[..., 16:32, 16:32] += 0.3  # a moving object in one frame only
    fused = agreeing_mean(own, [others[0], (moved, inside)])
    patch, rest = (..., slice(17, 31), slice(17, 31)), (..., slice(40, None), slice(None))
    # three frames that agree: the noise falls by nearly sqrt(3) (a weight per pixel of about
    # exp(-(sigma * 1.1 / 3 / AGREEMENT)^2), near 1, after the 3x3 mean of |difference|)
    assert (fused - clean)[rest].std() < 0.65 * (own - clean)[rest].std()
    # where the second frame differs by 0.3 it weighs exp(-(0.3 / AGREEMENT)^2), nothing: the
    # source and the first frame alone, none of the moved patch
    assert torch.allclose(fused[patch], agreeing_mean(own, others[:1])[patch], atol=1e-6)
    # a frame that does not see the pixel (inside 0) adds nothing
    assert torch.equal(agreeing_mean(own, [(moved, torch.zeros_like(inside))]), own)


def test_the_detail_of_other_frames_joins_where_it_agrees():
    texture = procedural_texture(np.random.default_rng(4), 512)
    clean = cv2.resize(texture, FULL[::-1], interpolation=cv2.INTER_AREA) * 255
    rng = np.random.default_rng(5)
    frames = [
        np.clip(clean + rng.normal(0, 2, clean.shape), 0, 255).round().astype(np.uint8) for _ in range(3)
    ]
    color, alpha, depth, features, K, _ = rendered_identity(frames[0], torch.eye(4))
    common = dict(color=color, alpha=alpha, depth=depth, features=features, K=K, to_source=torch.eye(4)[None])
    alone = compose(**common, source=frames[0][None]).frames[0]
    others = tuple((f[None], torch.eye(4)[None]) for f in frames[1:])
    joined = compose(**common, source=frames[0][None], others=others).frames[0]
    inner = (slice(8, -8), slice(8, -8))
    error_alone, error_joined = (np.abs(f[inner] - clean[inner]).mean() for f in (alone, joined))
    # the other frames see the same scene from the same camera: the noise averages down
    # (measured mean absolute error 1.59 alone, 0.93 joined; sqrt(3) less would be 0.92)
    assert error_joined < 0.75 * error_alone, (error_alone, error_joined)
