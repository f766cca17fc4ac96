import math

import pytest
import torch

from model.cameras import axis_angle_to_matrix, make_pose, quat_to_matrix
from model.gaussians import Gaussians


def make(n: int, batch: tuple[int, ...] = (), features: int | None = None, dtype=torch.float64) -> Gaussians:
    return Gaussians(
        means=torch.randn(*batch, n, 3, dtype=dtype),
        quats=torch.nn.functional.normalize(torch.randn(*batch, n, 4, dtype=dtype), dim=-1),
        scales=torch.rand(*batch, n, 3, dtype=dtype),
        opacities=torch.rand(*batch, n, dtype=dtype),
        colors=torch.rand(*batch, n, 3, dtype=dtype),
        features=None if features is None else torch.randn(*batch, n, features, dtype=dtype),
    )


def test_count_batch_and_index():
    g = make(7, batch=(2,), features=2)
    assert g.count == 7 and len(g) == 7 and g.batch_shape == (2,)
    first = g[0]
    assert first.batch_shape == () and torch.equal(first.means, g.means[0])
    picked = g[:, torch.tensor([1, 3])]
    assert picked.count == 2 and torch.equal(picked.features, g.features[:, [1, 3]])
    mask = g.opacities[0] > 0.5
    assert g[0][mask].count == int(mask.sum())


def test_cat_along_gaussians_and_batch():
    a, b = make(3, batch=(2,)), make(5, batch=(2,))
    union = Gaussians.cat([a, b])
    assert union.count == 8 and torch.equal(union.colors[:, 3:], b.colors)
    stacked = Gaussians.cat([a, make(3, batch=(4,))], dim=0)
    assert stacked.batch_shape == (6,) and stacked.count == 3
    with pytest.raises(ValueError, match="features"):
        Gaussians.cat([make(2, features=1), make(2)])


def test_shape_validation():
    with pytest.raises(ValueError, match="scales"):
        Gaussians(torch.zeros(4, 3), torch.zeros(4, 4), torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, 3))


def test_rigid_transform_moves_means_and_rotates_covariances():
    g = make(6)
    T = make_pose(
        axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64)),
        torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64),
    )
    moved = g.transform(T)
    R, t = T[:3, :3], T[:3, 3]
    assert torch.allclose(moved.means, g.means @ R.T + t)

    # covariance R S S^T R^T transforms as R_T (.) R_T^T
    def cov(h):
        M = quat_to_matrix(h.quats) * h.scales[..., None, :]
        return M @ M.transpose(-1, -2)

    assert torch.allclose(cov(moved), R @ cov(g) @ R.T, atol=1e-12)
    assert torch.equal(moved.opacities, g.opacities) and torch.equal(moved.colors, g.colors)


def test_batched_transform_broadcasts_per_element():
    g = make(4, batch=(3,))
    angles = torch.tensor([0.0, math.pi / 2, math.pi], dtype=torch.float64)
    T = make_pose(
        axis_angle_to_matrix(torch.stack([torch.zeros(3), torch.zeros(3), angles], -1).double()),
        torch.zeros(3, 3, dtype=torch.float64),
    )
    moved = g.transform(T)
    for i in range(3):
        assert torch.allclose(moved[i].means, g[i].transform(T[i]).means)
    assert torch.allclose(moved.means[0], g.means[0])
