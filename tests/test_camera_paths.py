"""infer.camera_paths: the presets move the camera as they say; path files are read or refused."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from infer.camera_paths import PathConfig, PathFileError, ease, orbited, preset_path, read_path_file


def wobbly_path(n: int = 40) -> np.ndarray:
    """[n, 4, 4] cameras turning and moving, so each preset's offsets must follow them."""
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = Rotation.from_rotvec(np.linspace([0, 0, 0], [0.1, 0.4, 0.05], n)).as_matrix()
    c2w[:, :3, 3] = np.linspace([0, 0, 0], [1.0, 0.1, 0.3], n)
    return c2w


def in_camera(c2w: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[n, 3] world ``points [n, 3]`` in the cameras' own axes."""
    return np.einsum("nji,nj->ni", c2w[:, :3, :3], points - c2w[:, :3, 3])


def test_push_in_and_dolly_move_along_the_cameras_own_axes():
    base, config = wobbly_path(), PathConfig(travel=0.3)
    pushed = preset_path("push-in", base, config)
    moved = in_camera(base, pushed[:, :3, 3])  # the new centres, as each old camera sees them
    np.testing.assert_allclose(moved[:, :2], 0, atol=1e-12)
    np.testing.assert_allclose(moved[:, 2], 0.3 * ease(len(base)), atol=1e-12)
    assert moved[0, 2] == 0 and moved[-1, 2] == pytest.approx(0.3)
    np.testing.assert_allclose(pushed[:, :3, :3], base[:, :3, :3])
    dolly = in_camera(base, preset_path("dolly", base, config)[:, :3, 3])
    np.testing.assert_allclose(dolly[:, 1:], 0, atol=1e-12)
    assert dolly[0, 0] == pytest.approx(-0.15) and dolly[-1, 0] == pytest.approx(0.15)


def test_orbit_keeps_the_point_ahead_at_the_centre_and_swings_both_ways():
    base = wobbly_path()
    orbit = preset_path("orbit", base, PathConfig(orbit_degrees=6.0))
    pivot = base[:, :3, 3] + base[:, :3, 2]  # one unit (the median depth) ahead of each camera
    seen = in_camera(orbit, pivot)
    np.testing.assert_allclose(seen, np.tile([0.0, 0.0, 1.0], (len(base), 1)), atol=1e-12)
    turn = Rotation.from_matrix(np.swapaxes(base[:, :3, :3], 1, 2) @ orbit[:, :3, :3]).as_rotvec(degrees=True)
    np.testing.assert_allclose(turn[:, [0, 2]], 0, atol=1e-9)  # about the camera's own y only
    assert turn[:, 1].max() == pytest.approx(6.0, abs=0.05) and turn[:, 1].min() == pytest.approx(
        -6.0, abs=0.05
    )
    np.testing.assert_allclose(orbited(base, np.zeros(len(base))), base, atol=1e-12)


def test_path_files_per_frame_and_keyframed(tmp_path):
    base = wobbly_path(10)
    np.save(tmp_path / "path.npy", base)
    np.testing.assert_allclose(read_path_file(tmp_path / "path.npy", 10), base)
    (tmp_path / "path.json").write_text(json.dumps({"c2w": base.tolist()}))
    np.testing.assert_allclose(read_path_file(tmp_path / "path.json", 10), base)

    keys = [{"frame": 2, "c2w": base[0].tolist()}, {"frame": 6, "c2w": base[-1].tolist()}]
    (tmp_path / "keys.json").write_text(json.dumps({"keyframes": keys}))
    path = read_path_file(tmp_path / "keys.json", 10)
    np.testing.assert_allclose(path[:3], np.broadcast_to(base[0], (3, 4, 4)), atol=1e-12)  # held before
    np.testing.assert_allclose(path[6:], np.broadcast_to(base[-1], (4, 4, 4)), atol=1e-12)  # and after
    np.testing.assert_allclose(path[4, :3, 3], (base[0, :3, 3] + base[-1, :3, 3]) / 2)  # halfway
    halfway = Rotation.from_matrix(base[0, :3, :3]).inv() * Rotation.from_matrix(path[4, :3, :3])
    whole = Rotation.from_matrix(base[0, :3, :3]).inv() * Rotation.from_matrix(base[-1, :3, :3])
    np.testing.assert_allclose(halfway.as_rotvec() * 2, whole.as_rotvec(), atol=1e-9)


def test_path_files_that_do_not_fit_are_refused_by_name(tmp_path):
    base = wobbly_path(10)
    np.save(tmp_path / "short.npy", base[:9])
    with pytest.raises(PathFileError, match=r"short\.npy: 9 poses for a clip of 10 frames"):
        read_path_file(tmp_path / "short.npy", 10)
    squashed = base.copy()
    squashed[:, :3, :3] *= 0.5
    np.save(tmp_path / "squashed.npy", squashed)
    with pytest.raises(PathFileError, match=r"squashed\.npy: the poses are not rigid"):
        read_path_file(tmp_path / "squashed.npy", 10)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PathFileError, match=r"bad\.json: not a camera path"):
        read_path_file(tmp_path / "bad.json", 10)
    (tmp_path / "late.json").write_text(json.dumps({"keyframes": [{"frame": 10, "c2w": base[0].tolist()}]}))
    with pytest.raises(PathFileError, match=r"keyframes must be distinct frames in 0\.\.9"):
        read_path_file(tmp_path / "late.json", 10)
