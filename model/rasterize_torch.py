"""Pure-PyTorch tile rasterizer: the CPU reference for gsplat.

It follows gsplat 1.5's "classic" 3DGS path step by step, so the two backends agree pixel for
pixel up to float rounding:

- EWA projection with the Jacobian's x/z and y/z clamped to 1.3x the field of view, plus a
  0.3 px isotropic low-pass (``eps2d``) on the 2D covariance;
- per-axis, opacity-aware bounding boxes: ``ceil(min(3.33, sqrt(2 ln(255 * opacity))) * sigma)``,
  which is exactly the footprint where alpha can reach 1/255;
- tiles (8x8 here, 16x16 in gsplat; the image does not depend on it); every Gaussian is
  listed in the tiles its box touches, sorted front to back by camera z;
- alpha = min(0.999, opacity * exp(-sigma)); contributions below 1/255 are skipped; a pixel
  stops before the Gaussian that would bring its transmittance to 1e-4 or below.

Everything is differentiable through autograd. Tiles are processed in chunks of similar list
length, and each chunk is recomputed in the backward pass (activation checkpointing), so
memory stays bounded at high resolution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from model.cameras import quat_to_matrix

# 8x8 tiles on the CPU: a tile's list only holds Gaussians whose alpha can reach 1/255 there,
# so the image does not depend on the tile size, but smaller tiles waste far fewer
# pixel-Gaussian pairs (3.5x faster backward on a 32x56 training step than 16x16).
TILE_SIZE = 8
EPS2D = 0.3  # px^2 added to the 2D covariance: gsplat's anti-aliasing low-pass
EXTENT_SIGMAS = 3.33  # cap on the bounding-box half-width, in standard deviations
ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped
ALPHA_MAX = 0.999  # per-Gaussian alpha cap
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before transmittance would fall to this
FOV_CLAMP = 1.3  # the Jacobian is evaluated no further out than 1.3x the half field of view
DEFAULT_CHUNK_ELEMENTS = 1 << 22  # pixel x Gaussian pairs per chunk (about 16 MB per float tensor)


def project_ewa(
    means: Tensor,  # [..., N, 3] world
    quats: Tensor,  # [..., N, 4]
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    viewmats: Tensor,  # [..., 4, 4]
    Ks: Tensor,  # [..., 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Project Gaussians into each view; the leading dims ``...`` (one view each) broadcast, so
    Gaussians ``[B, 1, N]`` seen by cameras ``[B, C]`` are projected without a copy per camera,
    and their covariances are built once per set.

    Returns ``means2d [..., N, 2]``, ``conics [..., N, 3]`` (a, b, c of the inverse 2D
    covariance), ``depths [..., N]``, ``radii [..., N, 2]`` (int, per axis) and ``visible
    [..., N]`` (bool).
    """
    R = viewmats[..., :3, :3]  # [..., 3, 3]
    t = viewmats[..., None, :3, 3]
    # one [N, 3] x [3, 3] product per view: as R @ mean per Gaussian it was a batch of N
    # matrix-vector products, which the CPU runs an order of magnitude slower
    means_cam = means @ R.transpose(-1, -2) + t
    x, y, z = means_cam.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    # Culled Gaussians still flow through the maths below; a safe z keeps their (unused)
    # gradients finite instead of 0 * inf = nan.
    z = torch.where(in_depth, z, torch.ones_like(z))

    fx, fy = Ks[..., None, 0, 0], Ks[..., None, 1, 1]
    cx, cy = Ks[..., None, 0, 2], Ks[..., None, 1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    margin = FOV_CLAMP - 1.0
    tx = z * torch.minimum(
        (width - cx) / fx + margin * tan_fovx, torch.maximum(-(cx / fx + margin * tan_fovx), x / z)
    )
    ty = z * torch.minimum(
        (height - cy) / fy + margin * tan_fovy, torch.maximum(-(cy / fy + margin * tan_fovy), y / z)
    )
    # The 2D covariance J R S S^T R^T J^T (S = rotation @ diag(scales)) is A A^T with
    # A = J (R S) [2, 3]. R S is one product per view over all Gaussians (einsum makes it a
    # [3, 3] x [3, 3N] GEMM), and J's zeros make J (R S) two rows of R S combined elementwise.
    M = quat_to_matrix(quats) * scales[..., None, :]  # [..., N, 3, 3], rotation @ diag(scales)
    RM = torch.einsum("...ij,...njk->...nik", R, M)
    row0 = (fx / z)[..., None] * RM[..., 0, :] - (fx * tx / z**2)[..., None] * RM[..., 2, :]
    row1 = (fy / z)[..., None] * RM[..., 1, :] - (fy * ty / z**2)[..., None] * RM[..., 2, :]
    a = (row0 * row0).sum(-1) + EPS2D  # the 2D covariance [[a, b], [b, c]], plus 0.3 px^2
    b = (row0 * row1).sum(-1)
    c = (row1 * row1).sum(-1) + EPS2D
    det = a * c - b * b
    ok_det = det > 0
    det = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach()
        extent = torch.sqrt(2.0 * torch.log((opac / ALPHA_MIN).clamp(min=1.0))).clamp(max=EXTENT_SIGMAS)
        radii = torch.stack(
            [torch.ceil(extent * a.detach().sqrt()), torch.ceil(extent * c.detach().sqrt())], dim=-1
        )
        u, v = means2d.detach().unbind(-1)
        on_screen = (
            (u + radii[..., 0] > 0)
            & (u - radii[..., 0] < width)
            & (v + radii[..., 1] > 0)
            & (v - radii[..., 1] < height)
        )
        visible = in_depth & ok_det & (opac >= ALPHA_MIN) & ((radii > 0).any(-1)) & on_screen
        radii = torch.where(visible[..., None], radii, torch.zeros_like(radii)).to(torch.int64)
    return means2d, conics, z, radii, visible


def _tile_intersections(
    means2d: Tensor, depths: Tensor, radii: Tensor, visible: Tensor, tiles_x: int, tiles_y: int
) -> tuple[Tensor, Tensor]:
    """List (global tile, flat Gaussian) pairs sorted by tile, then front to back.

    Global tile ids are ``view * tiles_x * tiles_y + row * tiles_x + col``; flat Gaussian ids are
    ``view * N + gaussian``.
    """
    n = visible.shape[1]
    view, gid = visible.nonzero(as_tuple=True)
    u = means2d[view, gid, 0] / TILE_SIZE
    v = means2d[view, gid, 1] / TILE_SIZE
    rx = radii[view, gid, 0] / TILE_SIZE
    ry = radii[view, gid, 1] / TILE_SIZE
    x0 = torch.floor(u - rx).clamp(0, tiles_x).long()
    x1 = torch.ceil(u + rx).clamp(0, tiles_x).long()
    y0 = torch.floor(v - ry).clamp(0, tiles_y).long()
    y1 = torch.ceil(v + ry).clamp(0, tiles_y).long()
    nx = x1 - x0
    per_gaussian = nx * (y1 - y0)

    owner = torch.repeat_interleave(torch.arange(len(gid), device=gid.device), per_gaussian)
    first = torch.cumsum(per_gaussian, 0) - per_gaussian
    local = torch.arange(len(owner), device=gid.device) - first[owner]
    col = x0[owner] + local % nx[owner]
    row = y0[owner] + local // nx[owner]
    tile = view[owner] * (tiles_x * tiles_y) + row * tiles_x + col
    flat = (view * n + gid)[owner]

    by_depth = torch.argsort(depths[view, gid][owner], stable=True)
    by_tile = torch.argsort(tile[by_depth], stable=True)
    order = by_depth[by_tile]
    return tile[order], flat[order]


def _composite(
    origins: Tensor,  # [T, 2] pixel-centre coordinates of each tile's top-left pixel
    means2d: Tensor,  # [T, K, 2]
    conics: Tensor,  # [T, K, 3]
    opacities: Tensor,  # [T, K], 0 on padding slots
    features: Tensor,  # [T, K, F]
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing of each tile's sorted list, for all its pixels at once.

    Returns accumulated features ``[T, P, F]`` and accumulated alpha ``[T, P]`` for the tile's
    ``P = TILE_SIZE**2`` pixels in row-major order.
    """
    n_tiles, longest = opacities.shape
    steps = torch.arange(TILE_SIZE, device=origins.device, dtype=origins.dtype)
    # Within a tile dx depends only on the column and dy only on the row, so the quadratic form
    # is assembled from [T, tile, K] pieces and only three operations touch [T, tile, tile, K].
    dx = means2d[:, None, :, 0] - (origins[:, 0, None, None] + steps[None, :, None])  # [T, cols, K]
    dy = means2d[:, None, :, 1] - (origins[:, 1, None, None] + steps[None, :, None])  # [T, rows, K]
    ca, cb, cc = (v[:, None, :] for v in conics.unbind(-1))
    neg_sigma = (-0.5 * cc * dy * dy)[:, :, None, :] + (-0.5 * ca * dx * dx)[:, None, :, :]
    neg_sigma = neg_sigma + (-cb * dx)[:, None, :, :] * dy[:, :, None, :]
    neg_sigma = neg_sigma.reshape(n_tiles, TILE_SIZE * TILE_SIZE, longest)
    alpha = torch.clamp(opacities[:, None, :] * torch.exp(neg_sigma), max=ALPHA_MAX)
    alpha = torch.where((neg_sigma <= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    transmittance_after = torch.cumprod(1.0 - alpha, dim=-1)
    # Transmittance only falls, so "stop before it drops to 1e-4" keeps a prefix of each list.
    transmittance_before = torch.cat(
        [torch.ones_like(transmittance_after[..., :1]), transmittance_after[..., :-1]], dim=-1
    )
    weights = torch.where(
        transmittance_after > TRANSMITTANCE_MIN, alpha * transmittance_before, torch.zeros_like(alpha)
    )
    return torch.bmm(weights, features), weights.sum(-1)


def rasterize_tiles(
    means2d: Tensor,  # [V, N, 2]
    conics: Tensor,  # [V, N, 3]
    opacities: Tensor,  # [V, N]
    features: Tensor,  # [V, N, F]
    depths: Tensor,  # [V, N]
    radii: Tensor,  # [V, N, 2]
    visible: Tensor,  # [V, N]
    width: int,
    height: int,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Composite per-Gaussian features into images.

    Returns features ``[V, H, W, F]`` (no background) and alpha ``[V, H, W]``.
    """
    V, N, F = features.shape
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    tiles_per_view = tiles_x * tiles_y
    device = features.device

    with torch.no_grad():
        isect_tile, isect_gauss = _tile_intersections(
            means2d.detach(), depths.detach(), radii, visible, tiles_x, tiles_y
        )
        counts = torch.bincount(isect_tile, minlength=V * tiles_per_view)
        starts = torch.cumsum(counts, 0) - counts
        busy = torch.nonzero(counts, as_tuple=True)[0]
        busy = busy[torch.argsort(counts[busy], descending=True)]  # similar list lengths share a chunk
        offsets = _pixel_offsets(device)

    flat_means = means2d.reshape(V * N, 2)
    flat_conics = conics.reshape(V * N, 3)
    flat_opac = opacities.reshape(V * N)
    flat_feat = features.reshape(V * N, F)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, features)
    )
    # Recompute chunks in the backward pass only when keeping them all would exceed one budget.
    recompute = needs_grad and int(counts.sum()) * TILE_SIZE * TILE_SIZE > chunk_elements

    out_values, out_alpha, out_index = [], [], []
    pixels_per_tile = TILE_SIZE * TILE_SIZE
    begin = 0
    while begin < len(busy):
        longest = int(counts[busy[begin]])
        n_tiles = max(1, chunk_elements // (pixels_per_tile * longest))
        tiles = busy[begin : begin + n_tiles]
        begin += n_tiles
        with torch.no_grad():
            slot = torch.arange(longest, device=device)
            present = slot[None, :] < counts[tiles][:, None]
            gauss = isect_gauss[(starts[tiles][:, None] + slot[None, :]).clamp(max=len(isect_gauss) - 1)]
            view, local = tiles // tiles_per_view, tiles % tiles_per_view
            origin = torch.stack([(local % tiles_x) * TILE_SIZE, (local // tiles_x) * TILE_SIZE], dim=-1)
            px = origin[:, None, 0] + offsets[None, :, 0]  # [T, P] pixel column
            py = origin[:, None, 1] + offsets[None, :, 1]
            inside = (px < width) & (py < height)
            out_index.append((view[:, None] * (height * width) + py * width + px)[inside])
        opac = flat_opac[gauss]
        args = (
            origin.to(means2d.dtype) + 0.5,
            flat_means[gauss],
            flat_conics[gauss],
            torch.where(present, opac, torch.zeros_like(opac)),  # padding slots composite nothing
            flat_feat[gauss],
        )
        values, alpha = checkpoint(_composite, *args, use_reentrant=False) if recompute else _composite(*args)
        out_values.append(values[inside])
        out_alpha.append(alpha[inside])

    image = features.new_zeros(V * height * width, F)
    alpha_image = features.new_zeros(V * height * width)
    if out_index:
        index = torch.cat(out_index)
        image = image.index_copy(0, index, torch.cat(out_values))
        alpha_image = alpha_image.index_copy(0, index, torch.cat(out_alpha))
    return image.reshape(V, height, width, F), alpha_image.reshape(V, height, width)


def _pixel_offsets(device) -> Tensor:
    """``[P, 2]`` integer (u, v) offsets of the pixels of one tile, row-major."""
    r = torch.arange(TILE_SIZE, device=device)
    v, u = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def rasterize_torch(
    means: Tensor,  # [V, N, 3]
    quats: Tensor,  # [V, N, 4]
    scales: Tensor,  # [V, N, 3]
    opacities: Tensor,  # [V, N]
    features: Tensor,  # [V, N, F]
    viewmats: Tensor,  # [V, 4, 4]
    Ks: Tensor,  # [V, 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render ``V`` views, one set of Gaussians each.

    Returns composited features ``[V, H, W, F]``, expected z-depth ``[V, H, W]`` (0 where
    nothing was hit) and alpha ``[V, H, W]``.
    """
    means2d, conics, depths, radii, visible = project_ewa(
        means, quats, scales, opacities, viewmats, Ks, width, height, near, far
    )
    with_depth = torch.cat([features, depths[..., None]], dim=-1)
    image, alpha = rasterize_tiles(
        means2d, conics, opacities, with_depth, depths, radii, visible, width, height, chunk_elements
    )
    depth = image[..., -1] / alpha.clamp(min=1e-10)
    return image[..., :-1], depth, alpha
