"""infer.stereo: the eyes are a parallel pair with the disparity f * b / z; layouts place them."""

from pathlib import Path

import numpy as np
import pytest
from helpers import stereo_tags
from scipy.spatial.transform import Rotation

from data_prep.schema import ClipPoses
from data_prep.video import VideoWriter, simple_encoding
from infer.stereo import (
    COMMENTS,
    StereoConfig,
    beyond_budget,
    eye_cameras,
    lay_out,
    layout_outputs,
    layout_size,
    segment_baseline,
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


def test_the_baseline_from_a_disparity_and_the_points_beyond_the_budget():
    config = StereoConfig(max_disparity=12.0)
    # 12 px at the output size is 6 px at a half-size working size; at near depth 0.5 and f 100
    assert segment_baseline(config, near=0.5, focal=100.0, scale=0.5) == pytest.approx(6 * 0.5 / 100)
    assert segment_baseline(StereoConfig(baseline=0.05), near=0.5, focal=100.0, scale=0.5) == 0.05
    observations = np.array([[0, 10, 10, z] for z in (0.5, 1.0, 2.0, 4.0)], float)
    poses = ClipPoses(64, 48, np.eye(3), np.eye(4)[None], np.arange(1), "test", observations=observations)
    # disparities 100 * 0.04 / z = 8, 4, 2 and 1 px against a 3 px budget
    assert beyond_budget(poses, baseline=0.04, focal=100.0, budget=3.0) == 0.5


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
