import math

import pytest
import torch

from model import cameras as cam

torch.manual_seed(0)
F64 = torch.float64


def random_rotation(n: int) -> torch.Tensor:
    return cam.quat_to_matrix(torch.randn(n, 4, dtype=F64))


def random_pose(n: int) -> torch.Tensor:
    return cam.make_pose(random_rotation(n), torch.randn(n, 3, dtype=F64))


def test_project_hand_computed():
    K = cam.make_intrinsics(100.0, 200.0, 50.0, 40.0)
    uv, z = cam.project(torch.tensor([[1.0, -2.0, 4.0]], dtype=F64), K)
    assert torch.allclose(uv, torch.tensor([[100 * 0.25 + 50, 200 * -0.5 + 40]], dtype=F64))
    assert z.item() == 4.0


def test_project_unproject_round_trip():
    K = cam.make_intrinsics(320.0, 310.0, 160.5, 119.0)
    uv = torch.rand(100, 2, dtype=F64) * torch.tensor([320.0, 240.0], dtype=F64)
    depth = torch.rand(100, dtype=F64) * 10 + 0.1
    uv2, z2 = cam.project(cam.unproject(uv, depth, K), K)
    assert torch.allclose(uv2, uv, atol=1e-10)
    assert torch.allclose(z2, depth, atol=1e-12)


def test_unproject_inverts_any_upper_triangular_K_batched():
    # the written-out inverse against a general one, skew included, one K per batch element
    torch.manual_seed(0)
    K = torch.zeros(4, 3, 3, dtype=F64)
    K[:, 0, 0], K[:, 1, 1] = 100 + 300 * torch.rand(4, dtype=F64), 100 + 300 * torch.rand(4, dtype=F64)
    K[:, 0, 1], K[:, :2, 2], K[:, 2, 2] = torch.randn(4, dtype=F64), 200 * torch.rand(4, 2, dtype=F64), 1
    uv, depth = 300 * torch.rand(4, 50, 2, dtype=F64), 0.1 + 5 * torch.rand(4, 50, dtype=F64)
    general = torch.cat([uv, torch.ones_like(uv[..., :1])], -1) @ torch.linalg.inv(K).transpose(-1, -2)
    torch.testing.assert_close(
        cam.unproject(uv, depth, K), general * depth[..., None], rtol=1e-12, atol=1e-12
    )


def test_unproject_depth_hits_pixel_centres_with_z_depth():
    K = cam.make_intrinsics(50.0, 50.0, 4.0, 3.0)
    depth = torch.rand(6, 8, dtype=F64) + 1
    points = cam.unproject_depth(depth, K)
    assert points.shape == (6, 8, 3)
    assert torch.allclose(points[..., 2], depth)  # z-depth, not ray length
    uv, _ = cam.project(points.reshape(-1, 3), K)
    assert torch.allclose(uv.reshape(6, 8, 2), cam.pixel_centers(6, 8, dtype=F64), atol=1e-12)
    # pixel (row 0, col 0) centre is (0.5, 0.5); the principal point (4, 3) is a pixel corner
    assert cam.pixel_centers(6, 8)[0, 0].tolist() == [0.5, 0.5]


def test_pose_inverse_round_trip():
    T = random_pose(10)
    eye = torch.eye(4, dtype=F64).expand(10, 4, 4)
    assert torch.allclose(cam.invert_pose(T) @ T, eye, atol=1e-12)
    assert torch.allclose(cam.viewmat_to_c2w(cam.c2w_to_viewmat(T)), T, atol=1e-12)


def test_relative_pose_maps_source_camera_points_to_destination_camera():
    c2w_a, c2w_b = random_pose(2)
    p_cam_a = torch.randn(5, 3, dtype=F64)
    world = cam.transform_points(c2w_a, p_cam_a)
    expected = cam.transform_points(cam.invert_pose(c2w_b), world)
    assert torch.allclose(
        cam.transform_points(cam.relative_pose(c2w_a, c2w_b), p_cam_a), expected, atol=1e-12
    )


def test_opengl_opencv_conversion():
    gl = torch.eye(4, dtype=F64)
    cv = cam.opengl_to_opencv(gl)
    # an OpenGL camera at the origin looks down -z with y up: OpenCV's y and z axes point the other way
    assert torch.equal(cv[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64)))
    T = random_pose(4)
    assert torch.allclose(cam.opencv_to_opengl(cam.opengl_to_opencv(T)), T)
    # a point in front of the OpenGL camera (negative z) has positive depth in the OpenCV camera
    point_gl_cam = torch.tensor([[0.2, 0.3, -2.0]], dtype=F64)
    world = cam.transform_points(T[0], point_gl_cam)
    in_cv = cam.transform_points(cam.invert_pose(cam.opengl_to_opencv(T[0])), world)
    assert torch.allclose(in_cv, torch.tensor([[0.2, -0.3, 2.0]], dtype=F64))


def test_intrinsics_resize_crop_pad():
    K = cam.make_intrinsics(100.0, 100.0, 50.0, 25.0)
    K2 = cam.resize_intrinsics(K, (100, 50), (200, 100))
    assert torch.allclose(K2, cam.make_intrinsics(200.0, 200.0, 100.0, 50.0))
    # a point projects to twice its pixel coordinates in the image of twice the size
    p = torch.tensor([[0.3, -0.1, 2.0]], dtype=F64)
    assert torch.allclose(cam.project(p, K2)[0], 2 * cam.project(p, K)[0])
    Kc = cam.crop_intrinsics(K, 10, 5)
    assert Kc[0, 2] == 40.0 and Kc[1, 2] == 20.0
    assert torch.allclose(cam.project(p, Kc)[0], cam.project(p, K)[0] - torch.tensor([10.0, 5.0], dtype=F64))
    assert torch.allclose(cam.pad_intrinsics(Kc, 10, 5), K)
    assert torch.allclose(cam.resize_intrinsics(K2, (200, 100), (100, 50)), K)
    # anisotropic resize
    K3 = cam.scale_intrinsics(K, 0.5, 2.0)
    assert K3[0, 0] == 50.0 and K3[0, 2] == 25.0 and K3[1, 1] == 200.0 and K3[1, 2] == 50.0


def test_intrinsics_from_fov():
    K = cam.intrinsics_from_fov(200, 100, 90.0)
    assert K[0, 0].item() == pytest.approx(100.0)
    assert K[0, 2].item() == 100.0 and K[1, 2].item() == 50.0


def test_quaternion_hand_cases():
    q = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=F64)  # 90 deg about z
    R = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=F64)
    assert torch.allclose(cam.quat_to_matrix(q), R, atol=1e-12)
    assert torch.allclose(cam.matrix_to_quat(R), q, atol=1e-12)
    # 180 degrees about x: the trace is -1, the badly conditioned case for the naive formula
    R180 = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))
    assert torch.allclose(cam.matrix_to_quat(R180), torch.tensor([0.0, 1, 0, 0], dtype=F64), atol=1e-12)


def test_quaternion_round_trip_and_product():
    q = torch.nn.functional.normalize(torch.randn(200, 4, dtype=F64), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    R = cam.quat_to_matrix(q)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64).expand(200, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(200, dtype=F64))
    assert torch.allclose(cam.matrix_to_quat(R), q, atol=1e-10)
    a, b = q[:100], q[100:]
    assert torch.allclose(cam.quat_to_matrix(cam.quat_multiply(a, b)), R[:100] @ R[100:], atol=1e-12)


def test_axis_angle():
    R = cam.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=F64))
    assert torch.allclose(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=F64), atol=1e-12)
    assert torch.allclose(cam.axis_angle_to_matrix(torch.zeros(3, dtype=F64)), torch.eye(3, dtype=F64))
    aa = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2
    # a rotation by theta is one by 2 pi - theta about the opposite axis: angles fold into [0, pi]
    turned = aa.norm(dim=-1) % (2 * math.pi)
    folded = torch.minimum(turned, 2 * math.pi - turned)
    assert (aa.norm(dim=-1) > math.pi).any()  # the fold is exercised
    assert torch.allclose(cam.rotation_angle(cam.axis_angle_to_matrix(aa)), folded)


def test_pose_interpolation():
    a = torch.eye(4, dtype=F64)
    b = cam.make_pose(
        cam.axis_angle_to_matrix(torch.tensor([0, 0, math.pi / 2], dtype=F64)),
        torch.tensor([2.0, 0, 0], dtype=F64),
    )
    mid = cam.interpolate_pose(a, b, 0.5)
    expected_R = cam.axis_angle_to_matrix(torch.tensor([0, 0, math.pi / 4], dtype=F64))
    assert torch.allclose(mid[:3, :3], expected_R, atol=1e-12)
    assert torch.allclose(mid[:3, 3], torch.tensor([1.0, 0, 0], dtype=F64))
    assert torch.allclose(cam.interpolate_pose(a, b, 0.0), a, atol=1e-12)
    assert torch.allclose(cam.interpolate_pose(a, b, 1.0), b, atol=1e-12)
    # batched t
    poses = cam.interpolate_pose(
        a.expand(3, 4, 4), b.expand(3, 4, 4), torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    )
    assert torch.allclose(poses[1], mid, atol=1e-12)


def test_look_at_is_opencv():
    c2w = cam.look_at(
        torch.tensor([0.0, 0, 0], dtype=F64),
        torch.tensor([0.0, 0, 1], dtype=F64),
        torch.tensor([0.0, -1, 0], dtype=F64),
    )
    assert torch.allclose(c2w, torch.eye(4, dtype=F64))
    eye = torch.tensor([3.0, -1.0, 2.0], dtype=F64)
    target = torch.tensor([0.0, 0.5, 7.0], dtype=F64)
    c2w = cam.look_at(eye, target, torch.tensor([0.0, -1, 0], dtype=F64))
    in_cam = cam.transform_points(cam.invert_pose(c2w), target[None])
    assert torch.allclose(in_cam[0, :2], torch.zeros(2, dtype=F64), atol=1e-12)
    assert in_cam[0, 2] > 0


def test_epipolar_residual_is_zero_for_true_correspondences():
    K = cam.make_intrinsics(100.0, 100.0, 64.0, 48.0)
    points = torch.randn(50, 3, dtype=F64) + torch.tensor([0.0, 0.0, 5.0], dtype=F64)
    a_to_b = cam.make_pose(
        cam.axis_angle_to_matrix(torch.tensor([0.02, -0.05, 0.01], dtype=F64)),
        torch.tensor([0.3, 0.05, 0.0], dtype=F64),
    )
    uv_a, _ = cam.project(points, K)
    uv_b, _ = cam.project(cam.transform_points(a_to_b, points), K)
    assert cam.epipolar_residual(uv_a, uv_b, K, K, a_to_b).max() < 1e-9
    # moving the match off its epipolar line shows up; moving it along the line would not
    off = cam.epipolar_residual(uv_a, uv_b + torch.tensor([0.0, 3.0], dtype=F64), K, K, a_to_b)
    assert off.median() > 1.0
    # no baseline: the rotation homography's transfer error, in pixels
    rotation = a_to_b.clone()
    rotation[:3, 3] = 0
    uv_r, _ = cam.project(cam.transform_points(rotation, points), K)
    shifted = cam.epipolar_residual(uv_a, uv_r + torch.tensor([2.0, 0.0], dtype=F64), K, K, rotation)
    assert torch.allclose(shifted, torch.full_like(shifted, 2.0), atol=1e-9)
