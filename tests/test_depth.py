"""The depth readout's parts: the consistency measure on exact depth, the sparse SfM depth, the
upsampling, the two file forms and the preview colours. End to end: tests/test_stabilize.py."""

import cv2
import numpy as np
import pytest
import torch

from common.config import ConfigError, load_config
from data_prep.schema import ClipPoses
from data_prep.synthetic import SyntheticConfig, generate
from infer.depth import (
    PNG_MAX,
    NpzFrames,
    PngFrames,
    colourised,
    disagreement,
    sparse_agreement,
    sparse_depths,
    to_size,
)
from infer.readouts import ReadoutConfig


@pytest.fixture(scope="module")
def scene():
    return generate(
        SyntheticConfig(width=128, height=72, num_frames=6, seed=4, shake_rotation_deg=2.0), False
    )


@pytest.mark.parametrize("offset", [1, 3, 5])
def test_exact_depth_agrees_with_its_neighbours_and_a_scaled_one_by_its_scale(scene, offset):
    to_frame = np.linalg.inv(scene.c2w[offset]) @ scene.c2w[0]
    static = ~scene.dynamic_mask[offset]
    exact, pixels = disagreement(
        depth=scene.depth[offset], other=scene.depth[0], K=scene.K, other_to_frame=to_frame, static=static
    )
    scaled, _ = disagreement(
        depth=scene.depth[offset],
        other=1.05 * scene.depth[0],
        K=scene.K,
        other_to_frame=to_frame,
        static=static,
    )
    # Measured: 1.5-2.1e-4 for the exact depth (nearest-pixel sampling on slanted walls), and
    # 0.0505-0.0520 for a 5% deeper neighbour (the rays fan out from its own camera, not this one).
    assert exact < 1e-3, exact
    assert 0.045 < scaled < 0.056, scaled
    assert pixels > 0.7 * scene.depth[0].size  # most of the view overlaps


def test_only_static_pixels_with_a_depth_count(scene):
    to_frame = np.linalg.inv(scene.c2w[1]) @ scene.c2w[0]
    wrong = scene.depth[1].copy()
    wrong[:, :64] *= 2  # the left half is wrong, but marked as moving
    static = np.ones_like(wrong, bool)
    static[:, :64] = False
    value, pixels = disagreement(
        depth=wrong, other=scene.depth[0], K=scene.K, other_to_frame=to_frame, static=static
    )
    assert value < 1e-3 and 0 < pixels < wrong.size / 2
    blank = np.zeros_like(wrong)
    assert np.isnan(
        disagreement(depth=blank, other=scene.depth[0], K=scene.K, other_to_frame=to_frame, static=static)[0]
    )


def poses_with(observations: np.ndarray) -> ClipPoses:
    return ClipPoses(
        width=8, height=6, K=np.eye(3), c2w=np.tile(np.eye(4), (2, 1, 1)), frame_ids=np.arange(2),
        pose_method="global", observations=observations,
    )  # fmt: skip


def test_sparse_depth_puts_each_point_in_its_pixel_and_keeps_the_nearest():
    # COLMAP's pixel centres are at .5: (2.5, 1.5) is column 2, row 1
    seen = np.array([[0, 2.5, 1.5, 3.0], [0, 2.9, 1.1, 2.0], [0, 7.99, 5.99, 4.0], [1, 0.5, 0.5, 9.0]])
    depth, other = sparse_depths(poses_with(seen))
    assert depth[1, 2] == 2.0 and depth[5, 7] == 4.0
    assert np.count_nonzero(depth) == 2  # frame 1's point is not frame 0's
    assert other[0, 0] == 9.0 and np.count_nonzero(other) == 1


def test_sparse_agreement_measures_shape_after_scale():
    sparse = np.zeros((4, 4))
    sparse[0, 0], sparse[1, 2], sparse[3, 3] = 1.0, 2.0, 4.0
    assert sparse_agreement(2 * sparse + (sparse == 0), sparse) == pytest.approx((0.0, 0.5))
    bent = np.where(sparse > 0, np.sqrt(np.maximum(sparse, 1e-9)), 1.0)  # right order, wrong shape
    error, _ = sparse_agreement(bent, sparse)
    assert error > 0.1
    assert np.isnan(sparse_agreement(np.zeros((4, 4)), sparse)[0])


def test_upsampling_never_mixes_unknown_pixels_into_known_ones():
    depth = torch.full((4, 6), 2.0)
    depth[:, :2] = 0  # unknown
    out = to_size(depth, 12, 8)
    assert out.shape == (8, 12) and out.dtype == np.float32
    assert (out[:, 4:] == 2.0).all()  # a plain bilinear resize would pull these towards 0
    assert (out[:, :4] == 0).all()


def test_png_frames_round_trip_to_the_scale_and_count_what_they_clip(tmp_path):
    scale = 10.0 / PNG_MAX
    depth = np.array([[0.0, 1.0, 9.99], [12.0, 1e-6, 5.0]], np.float32)
    frames = PngFrames(tmp_path, scale)
    frames.write(3, depth)
    values = cv2.imread(str(tmp_path / "depth" / "000003.png"), cv2.IMREAD_UNCHANGED)
    assert values.dtype == np.uint16
    assert values[0, 0] == 0 and values[1, 1] == 1  # unknown stays 0; a tiny known depth is not lost
    assert values[1, 0] == PNG_MAX and frames.clipped == 1
    known = np.array([1.0, 9.99, 5.0])
    assert np.abs(values[[0, 0, 1], [1, 2, 2]] * scale - known).max() <= scale / 2


def test_npz_frames_stream_into_one_array(tmp_path):
    rng = np.random.default_rng(0)
    depths = rng.uniform(0.5, 3, (3, 5, 7)).astype(np.float32)
    frames = NpzFrames(tmp_path, depths.shape)
    for index, depth in enumerate(depths):
        frames.write(index, depth)
    frames.close()
    with np.load(tmp_path / "depth.npz") as archive:
        assert archive.files == ["depth"]
        np.testing.assert_array_equal(archive["depth"], depths)


def test_preview_runs_from_far_blue_to_near_red_and_black_where_unknown():
    rgb = colourised(np.array([[0.0, 1.0, 2.0, 100.0]]), near=1.0, far=8.0)
    unknown, near, middle, far = rgb[0].astype(int)
    assert (unknown == 0).all()
    assert near[0] > near[2] and far[2] > far[0]  # red end near, blue end far
    assert not (middle == near).all() and not (middle == far).all()


def test_a_depth_format_outside_the_choices_is_refused_by_name():
    with pytest.raises(ConfigError) as refused:
        load_config(ReadoutConfig, None, ["depth.format=jpg"])
    assert "depth.format: Invalid value 'jpg', expected one of ['png', 'npz']" in str(refused.value)
