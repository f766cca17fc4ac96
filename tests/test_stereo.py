"""infer.stereo: the eyes are a parallel pair with the disparity f * b / z; layouts place them."""

from pathlib import Path

import numpy as np
import pytest
from helpers import stereo_tags
from scipy.spatial.transform import Rotation

from data_prep.video import VideoWriter, simple_encoding
from infer.stereo import (
    COMMENTS,
    StereoConfig,
    beyond_budget,
    eye_cameras,
    eye_setup,
    lay_out,
    layout_outputs,
    layout_size,
    tagged,
)


def project(c2w: np.ndarray, K: np.ndarray, point: np.ndarray) -> np.ndarray:
    """[n, 2] pixel of the world ``point [3]`` in each camera ``c2w [n, 4, 4]``."""
    camera = np.einsum("nji,nj->ni", c2w[:, :3, :3], point - c2w[:, :3, 3])
    pixels = camera @ K.T
    return pixels[:, :2] / pixels[:, 2:]


def test_eyes_see_a_point_with_the_disparity_f_b_over_z_and_none_vertically():
    centre = np.tile(np.eye(4), (5, 1, 1))
    centre[:, :3, :3] = Rotation.from_rotvec(np.linspace([0, 0, 0], [0.2, -0.3, 0.1], 5)).as_matrix()
    centre[:, :3, 3] = np.linspace([0, 0, 0], [0.5, 0.1, 0.2], 5)
    K = np.array([[200.0, 0, 128], [0, 200.0, 72], [0, 0, 1]])
    eyes = eye_cameras(centre, baseline=0.06)
    assert eyes.shape == (5, 2, 4, 4)
    for depth in (0.5, 2.0):
        # a point straight ahead of each centre camera, at that depth
        for n in range(5):
            point = centre[n, :3, 3] + depth * centre[n, :3, 2]
            left, right = project(eyes[n], K, point)
            assert left[0] - right[0] == pytest.approx(
                200.0 * 0.06 / depth
            )  # the left eye sees it further right
            assert left[1] == pytest.approx(right[1], abs=1e-9)
    np.testing.assert_allclose(eyes.mean(1), centre, atol=1e-12)  # centred on the path


def test_converged_eyes_put_the_median_depth_at_the_screen():
    depths = np.array([0.5, 1.0, 1.0, 2.0, 4.0])  # median 1
    eyes = eye_setup(StereoConfig(baseline=0.06), depths, focal=200.0, scale=1.0, width=256)
    assert eyes.screen == 1.0 and eyes.baseline == 0.06
    K = np.array([[200.0, 0, 128], [0, 200.0, 72], [0, 0, 1]])
    cameras = eye_cameras(np.eye(4)[None], eyes.baseline)[0]
    for depth in (0.5, 1.0, 4.0):
        point = np.array([0.1, -0.05, depth])
        left, right = (
            project(c[None], K + np.array([[0, 0, shift], [0, 0, 0], [0, 0, 0]]), point)[0]
            for c, shift in zip(cameras, eyes.shifts, strict=True)
        )
        # crossed (in front of the screen) when nearer, uncrossed behind it, none at it
        assert left[0] - right[0] == pytest.approx(200.0 * 0.06 * (1 / depth - 1 / 1.0), abs=1e-9)
        assert left[1] == pytest.approx(right[1], abs=1e-9)
    parallel_config = StereoConfig(baseline=0.06, convergence="infinity")
    parallel = eye_setup(parallel_config, depths, focal=200.0, scale=1.0, width=256)
    assert parallel.shifts == (0.0, 0.0) and parallel.screen == np.inf


def test_the_baseline_from_a_disparity_and_the_points_beyond_the_budget():
    depths = np.array([0.5, 1.0, 1.0, 2.0, 4.0])  # |1/z - 1| up to 1 (at z = 0.5)
    # 12 px at the output size is 6 px at a half-size working size, at f 100: b * 100 * 0.99 = 6
    # (the 99% quantile of |1/z - 1| is 0.99 here)
    derived = eye_setup(StereoConfig(max_disparity=12.0), depths, focal=100.0, scale=0.5, width=128)
    assert derived.baseline == pytest.approx(6 / (100 * 0.99))
    # unset: the budget, 1.5% of the working width (1.92 px), limited to the widest baseline
    budgeted = eye_setup(StereoConfig(), depths, focal=100.0, scale=0.5, width=128)
    assert budgeted.baseline == pytest.approx(0.015 * 128 / (100 * 0.99))
    assert eye_setup(StereoConfig(widest=0.01), depths, focal=100.0, scale=0.5, width=128).baseline == 0.01
    # no depths at all (not even rendered ones): parallel eyes, the budget's disparity at depth 1
    unscaled = eye_setup(StereoConfig(), np.zeros(0), focal=100.0, scale=0.5, width=128)
    assert unscaled.baseline == pytest.approx(0.015 * 128 / 100)
    assert unscaled.screen == np.inf and unscaled.shifts == (0.0, 0.0)
    # with b 0.04 the disparities are 100 * 0.04 * |1/z - 1| = 4, 0, 0, 2 and 3 px against 2.5 px
    eyes = eye_setup(StereoConfig(baseline=0.04), depths, focal=100.0, scale=1.0, width=128)
    assert beyond_budget(depths, eyes, focal=100.0, budget=2.5) == pytest.approx(0.4)


def test_layouts_place_the_eyes():
    left = np.zeros((3, 5, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    right = np.zeros((3, 5, 3), np.uint8) + np.array([40, 50, 60], np.uint8)
    views = np.stack([left, right])
    [sbs], [tb], [anaglyph] = (lay_out(name, views) for name in ("sbs", "tb", "anaglyph"))
    assert sbs.shape == (3, 10, 3) and (sbs[:, :5] == left).all() and (sbs[:, 5:] == right).all()
    assert tb.shape == (6, 5, 3) and (tb[:3] == left).all() and (tb[3:] == right).all()
    assert (anaglyph == np.array([10, 50, 60])).all()
    pair = lay_out("pair", views)
    assert len(pair) == 2 and (pair[0] == left).all() and (pair[1] == right).all()
    sizes = [layout_size(name, 5, 3) for name in ("sbs", "tb", "anaglyph", "pair")]
    assert sizes == [(10, 3), (5, 6), (5, 3), (5, 3)]
    assert layout_outputs("pair", Path("out/3d.mp4")) == [Path("out/3d.left.mp4"), Path("out/3d.right.mp4")]
    assert layout_outputs("sbs", Path("out/3d.mp4")) == [Path("out/3d.mp4")]


@pytest.mark.parametrize(("layout", "packing"), [("sbs", 1), ("tb", 2), ("anaglyph", None)])
def test_the_written_file_says_its_layout(tmp_path, layout, packing):
    encoding = tagged(layout, simple_encoding(16, 8, 25.0), tmp_path / "3d.mp4")
    with VideoWriter(tmp_path / "3d.mp4", encoding) as writer:
        for _ in range(3):
            writer.write(np.zeros((8, 16, 3), np.uint8))
    comment, types = stereo_tags(tmp_path / "3d.mp4")
    assert comment == COMMENTS[layout]
    assert types == ([packing] if packing else [])  # x264 sends the SEI with each keyframe: here the first
