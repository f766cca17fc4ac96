"""Poses from pycolmap SfM and the rotation-only fallback, checked against ground truth."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pycolmap
import pytest
import torch
from scipy.spatial.transform import Rotation

from data_prep.poses import (
    PoseConfig,
    PoseError,
    _extract_and_match,
    _pinned,
    _run_mapper,
    _write_frames,
    average_rotations,
    estimate_poses,
    register_to_map,
)
from data_prep.synthetic import SyntheticConfig, generate
from data_prep.video import read_video
from model.cameras import align_poses, axis_angle_to_matrix, rotation_angle

SHAKY = Path(__file__).resolve().parents[2] / "shared" / "clips" / "small-shaky-5.avi"


def pose_errors(estimated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation error (deg) and centre error (as a fraction of the true path length) after alignment."""
    est, ref = torch.from_numpy(estimated), torch.from_numpy(truth)
    s, R, t = align_poses(est, ref)
    rot = torch.rad2deg(rotation_angle(ref[:, :3, :3].transpose(-1, -2) @ R @ est[:, :3, :3])).numpy()
    centres = (s * est[:, :3, 3] @ R.T + t).numpy()
    path = np.linalg.norm(np.diff(truth[:, :3, 3], axis=0), axis=-1).sum()
    return rot, np.linalg.norm(centres - truth[:, :3, 3], axis=-1) / max(path, 1e-12)


@pytest.fixture(scope="module")
def dolly():
    return generate(SyntheticConfig(width=256, height=144, num_frames=40, seed=0), progress=False)


@pytest.fixture(scope="module")
def dolly_poses(dolly):
    return estimate_poses(dolly.frames)


def test_sfm_recovers_the_true_path(dolly, dolly_poses):
    poses = dolly_poses
    assert poses.pose_method == "global" and len(poses.frame_ids) == 40
    rot, pos = pose_errors(poses.c2w, dolly.c2w[poses.frame_ids])
    assert rot.max() < 1.0 and pos.max() < 0.02, (rot.max(), pos.max())
    assert poses.K[0, 0] == pytest.approx(dolly.K[0, 0], rel=0.03)
    assert poses.stats["reprojection_error"] < 1.0


def depth_ratios(observations: np.ndarray, frames: np.ndarray, clip) -> np.ndarray:
    """``[N]`` each observation's sparse depth over the clip's true depth at its pixel;
    ``frames [N]`` are the observations' frames in ``clip``."""
    height, width = clip.depth.shape[1:3]
    cols = np.clip(observations[:, 1].astype(int), 0, width - 1)
    rows = np.clip(observations[:, 2].astype(int), 0, height - 1)
    return observations[:, 3] / clip.depth[frames, rows, cols]


def test_sparse_depth_matches_true_depth_up_to_the_stored_scale(dolly, dolly_poses):
    obs = dolly_poses.observations
    assert len(obs) > 1000 and np.median(obs[:, 3]) == pytest.approx(1.0)  # normalised scale
    ratio = depth_ratios(obs, dolly_poses.frame_ids[obs[:, 0].astype(int)], dolly)
    # one scale for the whole clip: per-point ratios agree to a few percent
    assert np.median(np.abs(ratio / np.median(ratio) - 1)) < 0.03
    # and the stored scale restores world units: the true path is the SfM path / scale
    est_len = np.linalg.norm(np.diff(dolly_poses.c2w[:, :3, 3], axis=0), axis=-1).sum() / dolly_poses.scale
    true_len = np.linalg.norm(np.diff(dolly.c2w[:, :3, 3], axis=0), axis=-1).sum()
    assert est_len * np.median(1 / ratio) * dolly_poses.scale == pytest.approx(true_len, rel=0.03)


@pytest.fixture(scope="module")
def dolly_keyframe_poses(dolly):
    return estimate_poses(dolly.frames, PoseConfig(keyframe_stride=2))


def test_frames_between_keyframes_registered_to_the_map_are_as_true_as_mapped_ones(
    dolly, dolly_poses, dolly_keyframe_poses
):
    poses = dolly_keyframe_poses
    assert poses.stats["keyframe_stride"] == 2 and len(poses.frame_ids) == 40
    rot, pos = pose_errors(poses.c2w, dolly.c2w)
    # the bounds of test_sfm_recovers_the_true_path, on the registered frames alone too
    assert rot.max() < 1.0 and pos.max() < 0.02, (rot.max(), pos.max())
    mapped_rot, mapped_pos = pose_errors(dolly_poses.c2w, dolly.c2w)
    assert np.median(rot[1::2]) < 2 * np.median(mapped_rot) + 0.05
    assert np.median(pos[1::2]) < 2 * np.median(mapped_pos) + 0.002
    assert poses.K[0, 0] == pytest.approx(dolly.K[0, 0], rel=0.03)
    # a registered frame observes the map's points: its inliers, at their true depths
    observed = np.bincount(poses.observations[:, 0].astype(int), minlength=40)
    assert observed[1::2].min() >= PoseConfig().min_observations
    t = poses.observations[:, 0].astype(int)
    between = t % 2 == 1
    ratio = depth_ratios(poses.observations[between], t[between], dolly)
    assert np.median(np.abs(ratio / np.median(ratio) - 1)) < 0.03


def test_a_keyframe_map_that_falls_short_is_made_again_from_every_frame(dolly):
    # Keyframes 20 frames apart share no verified pair: their map poses too few frames, and
    # the global mapper on every frame must take over before the incremental one is tried.
    poses = estimate_poses(dolly.frames, PoseConfig(keyframe_stride=20))
    assert poses.pose_method == "global" and poses.stats["keyframe_stride"] == 1
    assert len(poses.frame_ids) == 40


def test_a_mapped_pose_off_its_neighbours_gives_way_to_pnp_on_the_map(dolly, tmp_path):
    # The global mapper has put a clip's first frame 36-111 median steps off the next; here a
    # good map's frame is moved off by hand, and registration must put it back, leaving the
    # others as mapped.
    config = PoseConfig()
    names = _write_frames(dolly.frames, tmp_path / "images")
    _extract_and_match(tmp_path / "db.db", tmp_path / "images", config)
    [rec] = _run_mapper("global", tmp_path / "db.db", tmp_path / "images", tmp_path / "map", config).values()
    first = next(img for img in rec.images.values() if img.name == names[0])
    good = first.cam_from_world().matrix()
    turned = good[:, :3] @ Rotation.from_euler("y", 3, degrees=True).as_matrix()
    moved = pycolmap.Rigid3d(pycolmap.Rotation3d(turned), good[:, 3] + [0.3, 0, 0])
    rec.frames[first.frame_id].rig_from_world = moved
    views = register_to_map(rec, tmp_path / "db.db", names, config)
    back = np.linalg.inv(views[0].w2c)
    true = np.linalg.inv(np.vstack([good, [0, 0, 0, 1]]))
    assert np.degrees(float(rotation_angle(torch.from_numpy(back[:3, :3].T @ true[:3, :3])))) < 0.1
    step = np.linalg.norm(np.linalg.inv(views[1].w2c)[:3, 3] - np.linalg.inv(views[2].w2c)[:3, 3])
    assert np.linalg.norm(back[:3, 3] - true[:3, 3]) < step
    for frame in range(1, 40):  # the mapped poses of the others stay the mapper's
        img = next(img for img in rec.images.values() if img.name == names[frame])
        assert np.array_equal(views[frame].w2c[:3], img.cam_from_world().matrix())


def test_pure_rotation_falls_back_to_rotation_only_poses():
    clip = generate(
        SyntheticConfig(
            width=256, height=144, num_frames=24, dolly=0.0, pan=4.0, shake_translation=0.0, seed=1
        ),
        progress=False,
    )
    poses = estimate_poses(clip.frames)
    assert poses.pose_method == "rotation" and len(poses.frame_ids) == 24
    rot, _ = pose_errors(poses.c2w, clip.c2w)
    assert rot.max() < 1.0, rot.max()
    assert poses.K[0, 0] == pytest.approx(clip.K[0, 0], rel=0.03)
    assert np.allclose(poses.c2w[:, :3, 3], 0) and len(poses.points) == 0


def test_rotation_averaging_is_exact_on_consistent_input():
    rng = np.random.default_rng(0)
    W = axis_angle_to_matrix(torch.from_numpy(rng.normal(0, 0.3, (6, 3)))).numpy()
    W[0] = np.eye(3)
    relative = {(a, b): W[b] @ W[a].T for a in range(6) for b in range(a + 1, min(a + 3, 6))}
    assert np.allclose(average_rotations(relative, 6), W, atol=1e-10)


@pytest.mark.parametrize(("method", "stride"), [("global", 1), ("global", 2), ("incremental", 1)])
def test_poses_are_the_same_on_any_number_of_threads_to_the_last_bit(method, stride):
    # Extraction and verification run on every core; before the images were renumbered in
    # frame order, two extraction threads gave other poses every time (the mappers depend on
    # the images' numbering), and matching on two threads gave other poses in 1 run of 10.
    # A mapper on two threads differs in the last bits (1e-14), so it stays on one.
    clip = generate(SyntheticConfig(width=192, height=108, num_frames=16, seed=5), progress=False)
    config = PoseConfig(methods=(method,), keyframe_stride=stride)
    runs = [estimate_poses(clip.frames, replace(config, num_threads=n)) for n in (1, 2, 2, 4)]
    assert all(run.pose_method == method and run.stats["keyframe_stride"] == stride for run in runs)
    for other in runs[1:]:
        assert np.array_equal(runs[0].c2w, other.c2w) and np.array_equal(
            runs[0].observations, other.observations
        )
        assert np.array_equal(runs[0].points, other.points)


def test_frames_that_do_not_register_are_trimmed_never_invented(dolly):
    frames = dolly.frames[:30].copy()
    frames[25:] = 128  # blank frames at the end: nothing to match
    poses = estimate_poses(frames, PoseConfig(min_registered_fraction=0.8))
    assert poses.frame_ids.tolist() == list(range(25))
    assert poses.stats["registered_fraction"] == pytest.approx(25 / 30)
    with pytest.raises(PoseError, match="frames registered in one run"):
        estimate_poses(frames, PoseConfig(min_registered_fraction=0.9, methods=("global",)))


def test_unposable_input_names_every_method_that_failed():
    blank = np.full((12, 96, 128, 3), 90, np.uint8)
    with pytest.raises(PoseError) as err:
        estimate_poses(blank)
    assert all(m in str(err.value) for m in ("global", "incremental", "rotation"))
    with pytest.raises(ValueError, match="unknown pose methods"):
        estimate_poses(blank, PoseConfig(methods=("magic",)))


@pytest.mark.skipif(not SHAKY.exists(), reason="shared clips not present")
def test_real_handheld_clip_gets_poses():
    frames = read_video(SHAKY).frames
    posed, errors = 0, []
    for start in range(0, len(frames) - 47, 48):
        try:
            poses = estimate_poses(frames[start : start + 48])
        except PoseError:
            continue
        posed += len(poses.frame_ids)
        errors.append(poses.stats["reprojection_error"])
    windows = len(frames) // 48
    assert posed >= 0.9 * windows * 48, posed
    assert np.mean(errors) < 1.5


def test_a_runaway_focal_length_is_not_acceptable():
    """A degenerate bundle adjustment (focal 7220 px on a 128 px frame, a 1-degree view) was
    once accepted on its low reprojection error; the field-of-view check refuses it."""
    from data_prep.poses import PoseConfig, _acceptable
    from data_prep.schema import ClipPoses

    def poses(focal):
        K = np.array([[focal, 0, 64], [0, focal, 36], [0, 0, 1.0]])
        stats = {"registered_fraction": 1.0, "reprojection_error": 0.4, "min_observations_per_frame": 56}
        return ClipPoses(128, 72, K, np.tile(np.eye(4), (30, 1, 1)), np.arange(30), "global", stats=stats)

    assert "implausible field of view" in _acceptable(poses(7220.0), PoseConfig(), 30, 128)
    assert _acceptable(poses(110.0), PoseConfig(), 30, 128) is None


def test_parallel_verification_gives_colmaps_own_one_thread_result(tmp_path):
    # _verify replaces COLMAP's verifier, which is deterministic only on one thread: every
    # pair must come out as that verifier gives it, to the last bit.
    clip = generate(SyntheticConfig(width=192, height=108, num_frames=16, seed=5), progress=False)
    images = tmp_path / "images"
    _write_frames(clip.frames, images)
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    _extract_and_match(ours, images, PoseConfig(num_threads=2))
    shutil.copy(ours, theirs)
    db = pycolmap.Database.open(str(theirs))
    db.clear_two_view_geometries()
    db.close()
    one = _pinned(pycolmap.GeometricVerifierOptions(), PoseConfig(num_threads=1))
    geometry = _pinned(pycolmap.TwoViewGeometryOptions(), PoseConfig(num_threads=1))
    pycolmap.geometric_verification(theirs, verifier_options=one, two_view_geometry_options=geometry)
    read = {}
    for name in (ours, theirs):
        db = pycolmap.Database.open(str(name))
        ids, geometries = db.read_two_view_geometries()
        read[name] = dict(zip(ids, geometries, strict=True))
        db.close()
    assert read[ours].keys() == read[theirs].keys() and len(read[ours]) > 16
    assert sum(g.config == pycolmap.TwoViewGeometryConfiguration.DEGENERATE for g in read[ours].values()) < 16
    for pair, mine in read[ours].items():
        colmap = read[theirs][pair]
        assert mine.config == colmap.config
        assert np.array_equal(mine.inlier_matches, colmap.inlier_matches)
        for matrix in ("F", "E", "H"):
            assert np.array_equal(getattr(mine, matrix), getattr(colmap, matrix))
