"""Camera math: the one place where the project's conventions live as code.

Conventions (see docs/ARCHITECTURE.md):

- OpenCV axes: x right, y down, z forward. Poses are camera-to-world ``c2w`` 4x4; the renderer
  takes world-to-camera ``viewmat``.
- Pixel coordinates are continuous with the image covering ``[0, W] x [0, H]``; the centre of
  pixel (row i, column j) is ``(j + 0.5, i + 0.5)``. This is COLMAP's and gsplat's convention,
  and it makes resizing a plain scaling of ``K``.
- Depth is z-depth (distance along the optical axis), never ray length.
- Quaternions are ``wxyz`` and unit-norm.

Every function takes and returns torch tensors with arbitrary leading batch dimensions, so the
same code serves float64 pose files and float32 training batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Flips y and z: OpenGL/Blender/nerfstudio cameras look down -z with y up.
_GL_TO_CV_DIAG = (1.0, -1.0, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Intrinsics
# ---------------------------------------------------------------------------------------------


def make_intrinsics(fx: float, fy: float, cx: float, cy: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """3x3 pinhole matrix from focal lengths and principal point, in pixels."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def intrinsics_from_fov(
    width: int, height: int, hfov_deg: float, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Square-pixel intrinsics with the principal point at the image centre."""
    fx = 0.5 * width / torch.tan(torch.deg2rad(torch.tensor(hfov_deg, dtype=torch.float64)) / 2).item()
    return make_intrinsics(fx, fx, width / 2.0, height / 2.0, dtype=dtype)


def scale_intrinsics(K: Tensor, sx: float, sy: float | None = None) -> Tensor:
    """``K`` of an image resized by factors ``sx`` (width) and ``sy`` (height).

    With the pixel-edge convention a resize scales every continuous coordinate, so the first
    two rows of ``K`` scale and nothing else changes.
    """
    sy = sx if sy is None else sy
    scale = torch.tensor([sx, sy, 1.0], dtype=K.dtype, device=K.device)
    return K * scale[:, None]


def resize_intrinsics(K: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """``K`` after resizing an image from ``(W, H)`` to ``(W', H')``."""
    (w0, h0), (w1, h1) = old_size, new_size
    return scale_intrinsics(K, w1 / w0, h1 / h0)


def crop_intrinsics(K: Tensor, left: float, top: float) -> Tensor:
    """``K`` of the crop whose top-left corner is pixel ``(left, top)`` of the original."""
    K = K.clone()
    K[..., 0, 2] -= left
    K[..., 1, 2] -= top
    return K


def pad_intrinsics(K: Tensor, left: float, top: float) -> Tensor:
    """``K`` of an image padded by ``left`` columns and ``top`` rows (a crop with negative offset)."""
    return crop_intrinsics(K, -left, -top)


# ---------------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------------


def pixel_centers(height: int, width: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[H, W, 2]`` grid of pixel-centre coordinates ``(u, v)``."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def project(points_cam: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Camera-frame points ``[..., N, 3]`` to pixels ``[..., N, 2]`` and z-depth ``[..., N]``.

    ``K`` is ``[..., 3, 3]``. Points at or behind the camera get non-finite pixels; callers mask
    them with the returned depth.
    """
    z = points_cam[..., 2]
    uvw = points_cam @ K.transpose(-1, -2)
    return uvw[..., :2] / z[..., None], z


def unproject(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Pixels ``[..., N, 2]`` with z-depth ``[..., N]`` to camera-frame points ``[..., N, 3]``."""
    # K is upper triangular with K[2, 2] = 1, so its inverse is written out: no batched
    # matrix inverse (a solver launch per call on a GPU) in every network forward
    fx, skew, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    return torch.stack([x, y, torch.ones_like(x)], dim=-1) * depth[..., None]


def unproject_depth(depth: Tensor, K: Tensor) -> Tensor:
    """Depth map ``[..., H, W]`` to camera-frame points ``[..., H, W, 3]`` (one per pixel centre)."""
    height, width = depth.shape[-2:]
    uv = pixel_centers(height, width, device=depth.device, dtype=depth.dtype)
    uv = uv.expand(*depth.shape, 2).reshape(*depth.shape[:-2], height * width, 2)
    points = unproject(uv, depth.reshape(*depth.shape[:-2], height * width), K)
    return points.reshape(*depth.shape, 3)


# ---------------------------------------------------------------------------------------------
# Rigid transforms
# ---------------------------------------------------------------------------------------------


def make_pose(R: Tensor, t: Tensor) -> Tensor:
    """4x4 rigid transform from rotation ``[..., 3, 3]`` and translation ``[..., 3]``."""
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms, exact (transpose, not a general inverse)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    R_inv = R.transpose(-1, -2)
    return make_pose(R_inv, -(R_inv @ t[..., None])[..., 0])


def c2w_to_viewmat(c2w: Tensor) -> Tensor:
    """World-to-camera matrix the renderer takes."""
    return invert_pose(c2w)


def viewmat_to_c2w(viewmat: Tensor) -> Tensor:
    return invert_pose(viewmat)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply 4x4 transforms ``[..., 4, 4]`` to points ``[..., N, 3]``."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def relative_pose(c2w_src: Tensor, c2w_dst: Tensor) -> Tensor:
    """Transform taking points in the source camera's frame to the destination camera's frame."""
    return invert_pose(c2w_dst) @ c2w_src


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert camera-to-world poses between OpenGL and OpenCV camera axes.

    The conversion is its own inverse, so ``opencv_to_opengl`` is the same function.
    """
    flip = torch.tensor(_GL_TO_CV_DIAG, dtype=c2w.dtype, device=c2w.device)
    return c2w * flip  # right-multiplying by diag(flip) scales columns


opencv_to_opengl = opengl_to_opencv


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV camera-to-world pose at ``eye`` looking at ``target``; ``up`` points up in the world.

    The camera's y axis points down, so it is aligned with ``-up``.
    """
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward)), dim=-1)
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward], dim=-1)
    return make_pose(R, eye)


# ---------------------------------------------------------------------------------------------
# Rotations
# ---------------------------------------------------------------------------------------------


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` (wxyz; normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Unit quaternions ``[..., 4]`` (wxyz, w >= 0) from rotation matrices ``[..., 3, 3]``.

    Picks, per matrix, the numerically best of the four standard formulas (largest diagonal
    term), so it is stable for every rotation including 180-degree ones.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    trace = m00 + m11 + m22
    # Four candidate (unnormalised) quaternions, each well conditioned when its lead term is big.
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], dim=-1),
        ],
        dim=-2,
    )
    lead = torch.stack([trace, m00, m11, m22], dim=-1)
    best = lead.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions (the rotation ``b`` first, then ``a``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical interpolation between unit quaternions along the shorter arc."""
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    t = t[..., None]  # scalar or batch-shaped t broadcasts over the 4 components
    # Nearly identical rotations: linear interpolation is exact to float precision and avoids 0/0.
    near = sin_theta < 1e-6
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / torch.where(near, 1.0, sin_theta))
    w1 = torch.where(near, t, torch.sin(t * theta) / torch.where(near, 1.0, sin_theta))
    return torch.nn.functional.normalize(w0 * q0 + w1 * q1, dim=-1)


def interpolate_pose(c2w_a: Tensor, c2w_b: Tensor, t: Tensor | float) -> Tensor:
    """Pose a fraction ``t`` of the way from ``a`` to ``b``: slerp rotation, lerp camera centre."""
    t = torch.as_tensor(t, dtype=c2w_a.dtype, device=c2w_a.device)
    q = quat_slerp(matrix_to_quat(c2w_a[..., :3, :3]), matrix_to_quat(c2w_b[..., :3, :3]), t)
    t_col = t[..., None]
    centre = (1 - t_col) * c2w_a[..., :3, 3] + t_col * c2w_b[..., :3, 3]
    return make_pose(quat_to_matrix(q), centre)


def rotation_angle(R: Tensor) -> Tensor:
    """Rotation angle in radians of matrices ``[..., 3, 3]``; used for pose-error metrics."""
    cos = ((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1) / 2).clamp(-1.0, 1.0)
    return torch.acos(cos)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rotation matrices from axis-angle vectors ``[..., 3]`` (angle = norm, in radians)."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    half = angle / 2
    # sin(x/2)/x -> 1/2 as x -> 0; the series keeps small angles exact.
    small = angle < 1e-8
    factor = torch.where(small, 0.5 - angle**2 / 48, torch.sin(half) / torch.where(small, 1.0, angle))
    q = torch.cat([torch.cos(half), axis_angle * factor], dim=-1)
    return quat_to_matrix(q)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Axis-angle vectors ``[..., 3]`` of rotation matrices ``[..., 3, 3]`` (the inverse of
    ``axis_angle_to_matrix`` for angles up to pi)."""
    q = matrix_to_quat(R)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    v = q[..., 1:]
    norm = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(norm, q[..., :1])
    return torch.where(norm > 1e-12, v / norm.clamp(min=1e-300) * angle, 2 * v)


def align_poses(c2w: Tensor, reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity ``(s, R, t)`` that best maps poses ``c2w [N, 4, 4]`` onto ``reference``.

    SfM poses are known up to a similarity. The rotation is the chordal mean of the
    orientation differences; scale and translation then fit the camera centres by least
    squares. Taking the rotation from orientations rather than from centres keeps it well
    determined on near-straight paths, where centres alone cannot fix the roll about the path.
    Apply as ``centre' = s R centre + t`` and ``R_c2w' = R R_c2w``.
    """
    U, _, Vt = torch.linalg.svd((reference[:, :3, :3] @ c2w[:, :3, :3].transpose(-1, -2)).sum(0))
    D = torch.eye(3, dtype=c2w.dtype, device=c2w.device)
    D[2, 2] = torch.sign(torch.linalg.det(U @ Vt))
    R = U @ D @ Vt
    src, dst = c2w[:, :3, 3], reference[:, :3, 3]
    a, b = (src - src.mean(0)) @ R.T, dst - dst.mean(0)
    s = (a * b).sum() / a.square().sum().clamp(min=1e-12)
    return s, R, dst.mean(0) - s * R @ src.mean(0)


def _cross_matrix(v: Tensor) -> Tensor:
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)


def epipolar_residual(pts_a: Tensor, pts_b: Tensor, K_a: Tensor, K_b: Tensor, a_to_b: Tensor) -> Tensor:
    """Per-correspondence distance (px) from what the relative pose ``a_to_b`` allows.

    ``pts_a``, ``pts_b`` are ``[N, 2]`` pixels; ``a_to_b`` maps camera a's frame to camera b's.
    With a baseline this is the Sampson distance under ``F = K_b^-T [t]x R K_a^-1``; without
    one (pure rotation, where F vanishes) it is the transfer error of the homography
    ``K_b R K_a^-1``.
    """
    R, t = a_to_b[:3, :3], a_to_b[:3, 3]
    ones = torch.ones_like(pts_a[:, :1])
    a = torch.cat([pts_a, ones], -1)
    b = torch.cat([pts_b, ones], -1)
    if torch.linalg.norm(t) < 1e-9:
        mapped = a @ (K_b @ R @ torch.linalg.inv(K_a)).T
        return torch.linalg.norm(mapped[:, :2] / mapped[:, 2:] - pts_b, dim=-1)
    F = torch.linalg.inv(K_b).T @ _cross_matrix(t / torch.linalg.norm(t)) @ R @ torch.linalg.inv(K_a)
    Fa, Ftb = a @ F.T, b @ F
    numerator = (b * Fa).sum(-1) ** 2
    denominator = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return torch.sqrt(numerator / denominator.clamp(min=1e-12))
