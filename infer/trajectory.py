"""Camera-path smoothing: GaVS's Gaussian window, and the minimum-acceleration path.

**Gaussian window** (``gaussian_window_path``).

Each smoothed pose is the Gaussian-weighted mean of the poses around it: camera centres by a
weighted mean, rotations by the weighted quaternion average of Markley et al. (2007), the
unit quaternion maximising ``sum_i w_i (q . q_i)^2``, which is the top eigenvector of
``sum_i w_i q_i q_i^T`` and does not care about quaternion signs. GaVS smooths with a 31-frame
window and sigma 4 (``GAVS_SIGMA``); ``strength`` scales sigma, and the window stays at
``2 * round(3.75 * sigma) + 1`` frames so strength 1 is exactly GaVS's setting.

At the ends, the path is extended by point reflection (``p_{-k} = 2 a - p_k``,
``R_{-k} = A R_k^T A``) about an anchor ``(A, a)``: a weighted straight-line fit to the
window of frames at the end, evaluated at the end. A steady pan or dolly so keeps its speed up to the last
frame instead of slowing into the end, and the end frame's own shake is smoothed too.

**Minimum-acceleration path** (``min_acceleration_path``): the path ``p`` nearest the real
one ``x`` with little acceleration, ``argmin sum_t |p_t - x_t|^2 + lam sum_t |p_{t+1} - 2 p_t
+ p_{t-1}|^2`` (Whittaker's smoother; one sparse solve). Its response to a wobble of
``omega`` radians per frame is ``1 / (1 + lam (2 - 2 cos omega)^2)``: flat where a Gaussian's
already falls as ``1 - sigma^2 omega^2 / 2``, then as steep. ``acceleration_weight`` puts its
half-amplitude frequency where the Gaussian's is, so the same ``strength`` removes shake
alike, while slow sway the viewer reads as intended motion is followed rather than averaged
away. The objective keeps straight lines exactly, ends included, so the ends need no
reflection: each end frame is pulled towards its neighbours only, which leaves it a little
more of its shake than the reflected Gaussian does and keeps it much closer to the real
camera. Rotations are smoothed as sign-aligned unit quaternions, renormalised: near a
straight line over the few dozen frames that weigh on each pose, which the solve keeps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import spsolve
from torch import Tensor

from model.cameras import (
    axis_angle_to_matrix,
    make_pose,
    matrix_to_axis_angle,
    matrix_to_quat,
    quat_to_matrix,
)

GAVS_SIGMA = 4.0  # frames; GaVS's window is 31 frames
HALF_AMPLITUDE = math.sqrt(2 * math.log(2))  # a Gaussian of sigma s halves a wobble of this / s rad per frame


def window_for(sigma: float) -> int:
    return 2 * round(3.75 * sigma) + 1


def _end_anchor(c2w: Tensor) -> Tensor:
    """The pose at frame 0 of a straight-line fit to ``c2w`` (one window of frames; rotations
    in the tangent space of frame 0). Reflecting about this, not about frame 0 itself, keeps
    a trend at the end without pinning the end frame's own shake."""
    k = torch.arange(len(c2w), dtype=c2w.dtype, device=c2w.device)
    design = torch.stack([torch.ones_like(k), k], -1)

    def intercept(values: Tensor) -> Tensor:
        return torch.linalg.lstsq(design, values).solution[0]

    R0 = c2w[0, :3, :3]
    omega = intercept(matrix_to_axis_angle(R0.T @ c2w[:, :3, :3]))
    return make_pose(R0 @ axis_angle_to_matrix(omega), intercept(c2w[:, :3, 3]))


def _reflect(c2w: Tensor, radius: int) -> Tensor:
    """The path extended by ``radius`` poses at each end, point-reflected about the end anchors."""
    count = len(c2w)
    radius = min(radius, count - 1)
    if radius == 0:
        return c2w

    def mirrored(anchor: Tensor, others: Tensor) -> Tensor:
        A, a = anchor[:3, :3], anchor[:3, 3]
        rotations = A @ others[:, :3, :3].transpose(-1, -2) @ A
        return make_pose(rotations, 2 * a - others[:, :3, 3])

    span = min(count, 2 * radius + 1)
    head = mirrored(_end_anchor(c2w[:span]), c2w[1 : radius + 1].flip(0))
    tail = mirrored(_end_anchor(c2w.flip(0)[:span]), c2w[-radius - 1 : -1].flip(0))
    return torch.cat([head, c2w, tail])


def average_quaternions(quats: Tensor, weights: Tensor) -> Tensor:
    """Weighted average ``[..., 4]`` of unit quaternions ``[..., N, 4]`` with weights ``[..., N]``."""
    M = torch.einsum("...n,...ni,...nj->...ij", weights, quats, quats)
    _, vectors = torch.linalg.eigh(M)
    mean = vectors[..., -1]
    return mean * torch.where(mean[..., :1] < 0, -1.0, 1.0)  # w >= 0, for a stable sign


def gaussian_window_path(c2w: Tensor, strength: float = 1.0, sigma: float = GAVS_SIGMA) -> Tensor:
    """Smoothed camera-to-world poses ``[T, 4, 4]`` for ``c2w [T, 4, 4]``; strength 0 is the input."""
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    sigma = sigma * strength
    if sigma == 0 or len(c2w) < 2:
        return c2w.clone()
    window = window_for(sigma)
    radius = window // 2
    padded = _reflect(c2w, radius)
    pad = (len(padded) - len(c2w)) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=c2w.dtype, device=c2w.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    # frame t averages padded[t + pad - radius ... t + pad + radius]; indices beyond a short
    # clip's reflected ends get weight zero
    index = torch.arange(len(c2w), device=c2w.device)[:, None] + pad + offsets.long()[None]
    inside = (index >= 0) & (index < len(padded))
    weights = kernel[None] * inside
    weights = weights / weights.sum(-1, keepdim=True)
    index = index.clamp(0, len(padded) - 1)
    centres = (weights[..., None] * padded[index, :3, 3]).sum(1)
    quats = matrix_to_quat(padded[:, :3, :3])[index]
    rotations = quat_to_matrix(average_quaternions(quats, weights))
    return make_pose(rotations, centres)


def acceleration_weight(strength: float, sigma: float = GAVS_SIGMA) -> float:
    """``lam`` of the minimum-acceleration path that halves the wobble a Gaussian window of
    ``sigma * strength`` frames halves (``lam omega^4 = 1`` there)."""
    return (sigma * strength / HALF_AMPLITUDE) ** 4


def second_difference(count: int) -> sparse.csr_matrix:
    """``[count - 2, count]``: row t is ``p_t - 2 p_{t+1} + p_{t+2}``."""
    return sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(max(count - 2, 0), count), format="csr")


def acceleration_penalty(count: int, weight: float) -> sparse.csr_matrix:
    """``I + lam D2^T D2``: the quadratic form of the minimum-acceleration objective."""
    D = second_difference(count)
    return (sparse.identity(count, format="csr") + weight * (D.T @ D)).tocsr()


def min_acceleration_path(c2w: Tensor, strength: float = 1.0, sigma: float = GAVS_SIGMA) -> Tensor:
    """The minimum-acceleration poses ``[T, 4, 4]`` for ``c2w [T, 4, 4]``, as strong as a
    Gaussian window of ``sigma * strength`` frames; strength 0 is the input."""
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    if strength == 0 or len(c2w) < 3:
        return c2w.clone()
    system = acceleration_penalty(len(c2w), acceleration_weight(strength, sigma)).tocsc()
    quats = matrix_to_quat(c2w[:, :3, :3].double()).cpu().numpy()
    for t in range(1, len(quats)):  # q and -q are one rotation: keep neighbours on one side
        if quats[t] @ quats[t - 1] < 0:
            quats[t] = -quats[t]
    centres = c2w[:, :3, 3].double().cpu().numpy()
    solved = spsolve(system, np.concatenate([quats, centres], -1))  # one factorisation for both
    quats, centres = solved[:, :4], solved[:, 4:]
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    return make_pose(quat_to_matrix(torch.from_numpy(quats)), torch.from_numpy(centres)).to(c2w)
