"""Camera poses for a clip: pycolmap SfM with honest fallbacks.

Order of attempts (configurable): COLMAP's global mapper (GLOMAP), on keyframes with the
other frames registered to its map where ``keyframe_stride`` asks for it and then on every
frame, then incremental mapping, then a rotation-only estimate from the homographies COLMAP
already verified between consecutive frames (for pure rotation or too little parallax). A
method's result is kept when enough frames register in one contiguous run and the reprojection
error is low. Frames outside that run are dropped; none is ever given an invented pose.

Every result is normalised so that the median sparse depth is 1.0; ``scale`` is the factor the
reconstruction was multiplied by (rotation-only poses have no depth, so their scale is 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pycolmap
from scipy.optimize import minimize_scalar

from data_prep.schema import ClipPoses

METHODS = ("global", "incremental", "rotation")
# Video cameras see 20-120 degrees across. A bundle adjustment whose focal length runs off
# to a 1-degree telephoto (seen on a small synthetic clip with a large moving object) has
# found a degenerate solution, whatever its reprojection error.
PLAUSIBLE_HFOV_DEG = (10.0, 150.0)
# A frame registered to the keyframes' map keeps the 2D-3D matches its PnP reprojects within
# this many pixels: the incremental mapper's own track filter (filter_max_reproj_error).
REGISTRATION_MAX_ERROR_PX = 4.0
# A mapped frame's pose gives way to PnP's on its matches to the other frames' points when
# PnP agrees with more than this many times as many of them. A good mapped pose agrees with
# as many as PnP's to within 2%; the mapper's runaway end frames agreed with 17-25% fewer.
REPLACE_MARGIN = 1.1


class PoseError(RuntimeError):
    """No method produced acceptable poses; the message gives the reason per method."""


@dataclass
class PoseConfig:
    methods: tuple[str, ...] = METHODS
    camera_model: str = "SIMPLE_PINHOLE"  # pinhole, like the renderer: no distortion to undo
    max_num_features: int = 4096
    peak_threshold: float = 0.004  # lower than COLMAP's 0.0067: more features on soft video frames
    sequential_overlap: int = 20
    # The global mapper poses every keyframe_stride-th frame, and the others are registered to
    # its map one by one (register_to_map); 1 maps every frame. A map that falls short is
    # made again from every frame before the next method is tried.
    keyframe_stride: int = 1
    quadratic_overlap: bool = True
    min_registered_fraction: float = 0.9  # of the clip's frames, in one contiguous run
    # When no method reaches min_registered_fraction, keep the longest run any method found
    # if it has at least this many frames (None: fail). gavs-stabilize sets it and gives the
    # rest of the shot a 2D path; prep keeps whole clips only.
    min_partial_frames: int | None = None
    max_reprojection_error: float = 1.5  # px, mean over observations
    min_observations: int = 15  # every kept frame must observe at least this many sparse points
    min_triangulation_angle_deg: float = (
        0.5  # COLMAP's 1 degree leaves handheld clips with a handful of points
    )
    # Threads for feature extraction and verification (-1: all cores); descriptor matching
    # and the mappers run on one.
    # The poses do not depend on it (tests/test_poses.py; see _features_and_matches).
    num_threads: int = -1
    seed: int = 0
    verbose: bool = False  # COLMAP's own log; off by default (failures are reported as PoseError)


def result_settings(config: PoseConfig) -> dict:
    """The settings the poses depend on, for cache keys: all but how the work is split."""
    return {k: v for k, v in asdict(config).items() if k != "num_threads"}


def _write_frames(frames: np.ndarray, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, frame in enumerate(frames):
        name = f"{index:06d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        names.append(name)
    return names


def _pinned(options, config: PoseConfig):
    """``options`` with every nested ``num_threads`` and ``random_seed`` set from ``config``.

    pycolmap spreads these over many sub-option blocks (rotation averaging, positioning,
    bundle adjustment, RANSAC, ...), each defaulting to "all cores" and "random"; pinning
    them all is what makes a run reproducible.
    """

    def pin(tree: dict) -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out[key] = pin(value)
            elif key == "num_threads":
                out[key] = config.num_threads
            elif key == "random_seed":
                out[key] = config.seed
        return out

    options.mergedict(pin(options.todict()))
    return options


def _extract_and_match(database: Path, images: Path, config: PoseConfig) -> None:
    """SIFT features of ``images`` and their verified sequential matches."""
    _features_and_matches(database, images, config)
    _verify(database, config)


def _features_and_matches(database: Path, images: Path, config: PoseConfig) -> None:
    """SIFT features of ``images`` and their sequential matches, unverified. Extraction and
    verification run on ``config.num_threads`` threads, and the result does not depend on
    the count: ``_in_name_order`` undoes extraction's numbering, and ``_verify`` seeds each
    pair's RANSAC on its own. Descriptor matching, the cheapest part (a quarter of the
    matching time), stays on one thread: its approximate nearest-neighbour search gave
    other matches on several (one match in 9 of a clip's 1425 pairs, and other poses)."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    extraction = _pinned(pycolmap.FeatureExtractionOptions(), config)
    extraction.sift.max_num_features = config.max_num_features
    extraction.sift.peak_threshold = config.peak_threshold
    unordered = database.with_name(f"{database.stem}.unordered{database.suffix}")
    unordered.unlink(missing_ok=True)
    pycolmap.extract_features(
        unordered,
        images,
        camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader,
        extraction_options=extraction,
    )
    _in_name_order(unordered, database)
    unordered.unlink()
    pairing = _pinned(pycolmap.SequentialPairingOptions(), replace(config, num_threads=1))
    pairing.overlap = config.sequential_overlap
    pairing.quadratic_overlap = config.quadratic_overlap
    matching = _pinned(pycolmap.FeatureMatchingOptions(), replace(config, num_threads=1))
    matching.skip_geometric_verification = True
    pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing)


def _verify(database: Path, config: PoseConfig, chunk: int = 512) -> None:
    """Two-view geometry of every matched pair in ``database``, on ``config.num_threads``
    threads (pycolmap releases the GIL), written in pair order.

    COLMAP's own verifier on several threads gives other geometries from run to run (4 of 4
    runs on a 210-frame clip), and the mappers then give other poses. Each call here builds
    its RANSAC from the pinned seed, so every pair gets what COLMAP's verifier gives it on
    one thread, on any count (tests/test_poses.py). ``chunk`` pairs are in flight at once,
    so a long clip's keypoints are never all in memory.
    """
    options = _pinned(pycolmap.TwoViewGeometryOptions(), replace(config, num_threads=1))
    threads = config.num_threads if config.num_threads > 0 else os.cpu_count()
    db = pycolmap.Database.open(str(database))
    try:
        cameras = {camera.camera_id: camera for camera in db.read_all_cameras()}
        camera_of = {image.image_id: cameras[image.camera_id] for image in db.read_all_images()}
        pair_ids, matches = db.read_all_matches()
        with ThreadPoolExecutor(threads) as pool:
            for start in range(0, len(pair_ids), chunk):
                pairs = [pycolmap.pair_id_to_image_pair(p) for p in pair_ids[start : start + chunk]]
                # The database is read on this thread only.
                points = {i: db.read_keypoints(i)[:, :2].astype(np.float64) for pair in pairs for i in pair}
                calls = [
                    (camera_of[a], points[a], camera_of[b], points[b], pair_matches, options)
                    for (a, b), pair_matches in zip(pairs, matches[start : start + chunk], strict=True)
                ]
                for (a, b), result in zip(pairs, pool.map(_two_view_geometry, calls), strict=True):
                    db.write_two_view_geometry(a, b, result)
    finally:
        db.close()


def _two_view_geometry(call: tuple) -> pycolmap.TwoViewGeometry:
    return pycolmap.estimate_two_view_geometry(*call)


def _in_name_order(source: Path, target: Path) -> None:
    """Copy the features database ``source`` into a new ``target`` with the images numbered in
    name (frame) order. Parallel extraction numbers them in the order its threads finish,
    and the mappers' results depend on the numbering; the features themselves do not
    depend on the thread count."""
    old, new = pycolmap.Database.open(str(source)), pycolmap.Database.open(str(target))
    try:
        for camera in old.read_all_cameras():
            new.write_camera(camera, use_camera_id=True)
        for rig in old.read_all_rigs():
            new.write_rig(rig, use_rig_id=True)
        frames = {frame.frame_id: frame for frame in old.read_all_frames()}
        for image_id, image in enumerate(sorted(old.read_all_images(), key=lambda im: im.name), start=1):
            frame = pycolmap.Frame()
            frame.frame_id, frame.rig_id = image_id, frames[image.frame_id].rig_id
            frame.add_data_id(
                pycolmap.data_t(pycolmap.sensor_t(pycolmap.SensorType.CAMERA, image.camera_id), image_id)
            )
            new.write_frame(frame, use_frame_id=True)
            copy = pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image_id)
            copy.frame_id = image_id
            new.write_image(copy, use_image_id=True)
            new.write_keypoints(image_id, old.read_keypoints(image.image_id))
            new.write_descriptors(image_id, old.read_descriptors(image.image_id))
    finally:
        old.close()
        new.close()


def _longest_run(indices: np.ndarray) -> np.ndarray:
    """The longest run of consecutive integers in sorted ``indices``."""
    if len(indices) == 0:
        return indices
    breaks = np.nonzero(np.diff(indices) != 1)[0] + 1
    runs = np.split(indices, breaks)
    return max(runs, key=len)


@dataclass
class _View:
    """One frame's pose and what it observes, from the mapper or from registration to its map."""

    w2c: np.ndarray  # [4, 4] OpenCV world-to-camera
    xy: np.ndarray  # [N, 2] pixel positions of the frame's observations
    point_ids: np.ndarray  # [N] int64 the reconstruction's ids of the points observed


def _mapped_views(rec: pycolmap.Reconstruction, names: list[str]) -> dict[int, _View]:
    """The views of the frames ``names`` (by index) that the mapper gave a pose."""
    index_of = {name: i for i, name in enumerate(names)}
    views = {}
    for img in rec.images.values():
        if not (img.has_pose and img.name in index_of):
            continue
        observed = [p2 for p2 in img.points2D if p2.has_point3D()]
        views[index_of[img.name]] = _View(
            w2c=np.vstack([img.cam_from_world().matrix(), [0, 0, 0, 1]]),
            xy=np.array([p2.xy for p2 in observed], np.float64).reshape(-1, 2),
            point_ids=np.array([p2.point3D_id for p2 in observed], np.int64),
        )
    return views


def from_reconstruction(
    rec: pycolmap.Reconstruction, method: str, names: list[str], views: dict[int, _View] | None = None
) -> ClipPoses:
    """Poses, sparse points and observations of the frames ``names`` (in order) from a model
    (``views``: the frames' views, by default those the mapper posed).

    Keeps the longest run of consecutive frames that have a pose.
    """
    views = _mapped_views(rec, names) if views is None else views
    if not views:
        raise PoseError(f"{method}: no frame has a pose")
    kept = _longest_run(np.array(sorted(views), int))
    camera = rec.cameras[next(iter(rec.cameras))]
    K = np.asarray(camera.calibration_matrix(), np.float64)
    w2c = np.stack([views[i].w2c for i in kept])
    c2w = np.linalg.inv(w2c)

    point_ids: dict[int, int] = {}
    points, observations, observation_points, errors = [], [], [], []
    for t, frame in enumerate(kept):
        view = views[frame]
        for (x, y), point_id in zip(view.xy, view.point_ids, strict=True):
            point = rec.points3D[point_id]
            if point_id not in point_ids:
                point_ids[point_id] = len(points)
                points.append(point.xyz)
                errors.append(point.error)
            z = (w2c[t, :3, :3] @ point.xyz + w2c[t, :3, 3])[2]
            observations.append((t, x, y, z))
            observation_points.append(point_ids[point_id])
    observations = np.array(observations, np.float64).reshape(-1, 4)
    return ClipPoses(
        width=camera.width,
        height=camera.height,
        K=K,
        c2w=c2w,
        frame_ids=kept,
        pose_method=method,
        points=np.array(points, np.float64).reshape(-1, 3),
        observations=observations,
        observation_points=np.array(observation_points, np.int64),
        scale=1.0,
        stats={
            "registered_fraction": len(kept) / len(names),
            "reprojection_error": float(np.mean(errors)) if errors else float("nan"),
            "mean_track_length": len(observations) / max(len(points), 1),
            "num_points": len(points),
            "min_observations_per_frame": int(
                np.bincount(observations[:, 0].astype(int), minlength=len(kept)).min()
            ),
        },
    )


def keyframes(names: list[str], stride: int) -> list[str]:
    """Every ``stride``-th of ``names`` and the last, which the mapper poses; the rest are
    registered to its map (``register_to_map``)."""
    picked = names[::stride]
    return picked if picked[-1] == names[-1] else [*picked, names[-1]]


def register_to_map(
    rec: pycolmap.Reconstruction, database: Path, names: list[str], config: PoseConfig
) -> dict[int, _View]:
    """A view for every frame of ``names`` that the map ``rec`` can place: each frame's
    verified matches to the other posed frames within ``config.sequential_overlap`` give its
    keypoints' 3D points, and a RANSAC PnP refined on the inliers, with the map's camera
    held fixed, places it.

    Frames the mapper left out get that pose. A mapped frame keeps the mapper's pose unless
    the PnP pose agrees with clearly more of those matches (``REPLACE_MARGIN``): the mapper
    has put an end frame 36-111 median steps off its neighbours while PnP on the same map
    placed it within 3 (docs/BENCHMARKS.md). The map stays as the mapper left it, so each
    frame is placed on its own and the result does not depend on the order. Frames with
    fewer than ``config.min_observations`` inliers get no view, and are trimmed like frames
    the mapper could not pose.
    """
    views = _mapped_views(rec, names)
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.max_error = REGISTRATION_MAX_ERROR_PX
    estimation.ransac.random_seed = config.seed
    camera = rec.cameras[next(iter(rec.cameras))]
    posed = {img.name: img for img in rec.images.values() if img.has_pose}
    db = pycolmap.Database.open(str(database))
    try:
        ids = {img.name: img.image_id for img in db.read_all_images()}
        for frame in range(len(names)):
            matches = _map_matches(rec, posed, db, ids, names, frame, config)
            if matches is None:
                continue
            xy, point_ids, xyz = matches
            found = pycolmap.estimate_and_refine_absolute_pose(xy, xyz, camera, estimation)
            if found is None or found["num_inliers"] < config.min_observations:
                continue
            mapped = views.get(frame)
            if mapped is not None:
                agreeing = _agreeing(mapped.w2c, camera, xy, xyz)
                if found["num_inliers"] <= REPLACE_MARGIN * agreeing.sum():
                    continue
            inliers = np.asarray(found["inlier_mask"], bool)
            views[frame] = _View(
                w2c=np.vstack([found["cam_from_world"].matrix(), [0, 0, 0, 1]]),
                xy=xy[inliers],
                point_ids=point_ids[inliers],
            )
    finally:
        db.close()
    return views


def _map_matches(
    rec: pycolmap.Reconstruction,
    posed: dict[str, pycolmap.Image],
    db: pycolmap.Database,
    ids: dict[str, int],
    names: list[str],
    frame: int,
    config: PoseConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(xy [N, 2], point ids [N], xyz [N, 3])``: ``names[frame]``'s keypoints matched to
    the 3D points of the other ``posed`` frames (by name) within the overlap, the nearest
    frame's first, or None where fewer than ``config.min_observations``."""
    own = ids[names[frame]]
    lo, hi = max(frame - config.sequential_overlap, 0), min(frame + config.sequential_overlap + 1, len(names))
    nearest_first = sorted((o for o in range(lo, hi) if o != frame), key=lambda other: abs(other - frame))
    point_of: dict[int, int] = {}  # keypoint index -> 3D point id
    for other in nearest_first:
        image = posed.get(names[other])
        if image is None or not db.exists_two_view_geometry(own, image.image_id):
            continue
        for mine, theirs in db.read_two_view_geometry(own, image.image_id).inlier_matches:
            if int(mine) not in point_of and image.points2D[theirs].has_point3D():
                point_of[int(mine)] = image.points2D[theirs].point3D_id
    if len(point_of) < config.min_observations:
        return None
    xy = db.read_keypoints(own)[np.fromiter(point_of, np.int64), :2].astype(np.float64)
    point_ids = np.fromiter(point_of.values(), np.int64)
    return xy, point_ids, np.array([rec.points3D[i].xyz for i in point_ids], np.float64)


def _agreeing(w2c: np.ndarray, camera: pycolmap.Camera, xy: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the points ``xyz`` that ``w2c`` puts in front of ``camera`` and projects
    within ``REGISTRATION_MAX_ERROR_PX`` of ``xy``."""
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
    projected = camera.img_from_cam(cam, check_cheirality=False)
    return (cam[:, 2] > 0) & (np.linalg.norm(projected - xy, axis=1) < REGISTRATION_MAX_ERROR_PX)


def _run_mapper(
    method: str, database: Path, images: Path, out: Path, config: PoseConfig, only: list[str] | None = None
):
    """The mapper on one thread whatever ``config.num_threads``: its bundle adjustments and
    rotation averaging sum in another order on more, and the poses differ in the last bits.
    ``only``: the images the global mapper poses (None: all)."""
    out.mkdir(parents=True, exist_ok=True)
    config = replace(config, num_threads=1)
    if method == "global":
        options = _pinned(pycolmap.GlobalPipelineOptions(), config)
        options.image_names = only or []
        options.mapper.min_tri_angle_deg = config.min_triangulation_angle_deg
        options.mapper.retriangulation.min_angle = config.min_triangulation_angle_deg
        return pycolmap.global_mapping(database, images, out, options)
    options = _pinned(pycolmap.IncrementalPipelineOptions(), config)
    options.triangulation.min_angle = config.min_triangulation_angle_deg
    return pycolmap.incremental_mapping(database, images, out, options)


def _rotation_from_homography(H: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Nearest rotation to ``K^-1 H K`` (H maps frame a's pixels to frame b's)."""
    M = np.linalg.inv(K) @ H @ K
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    return R if np.linalg.det(R) > 0 else -R


def _transfer_errors(step: tuple[np.ndarray, np.ndarray, np.ndarray], K: np.ndarray) -> np.ndarray:
    """Pixel distances of a pair's inlier matches under the pure rotation nearest its homography."""
    H, pts_a, pts_b = step
    R = _rotation_from_homography(H, K)
    mapped = np.concatenate([pts_a, np.ones((len(pts_a), 1))], -1) @ (K @ R @ np.linalg.inv(K)).T
    return np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - pts_b, axis=-1)


def _focal_from_homographies(steps: list[tuple], width: int, height: int) -> float:
    """The focal length whose pure rotations best explain the matches (20-120 degree hfov).

    A coarse grid on the field of view finds the basin; a bounded 1-D search refines it. The
    objective is the mean pixel transfer error, which conditions the focal length far better
    than how close ``K^-1 H K`` is to a rotation.
    """

    def cost(f: float) -> float:
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
        return float(np.mean(np.concatenate([_transfer_errors(step, K) for step in steps])))

    grid = 0.5 * width / np.tan(np.deg2rad(np.linspace(20, 120, 51)) / 2)
    best = int(np.argmin([cost(f) for f in grid]))
    lo, hi = grid[min(best + 1, len(grid) - 1)], grid[max(best - 1, 0)]
    return float(minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 0.01}).x)


def average_rotations(relative: dict[tuple[int, int], np.ndarray], count: int) -> np.ndarray:
    """Absolute rotations ``W [count, 3, 3]`` (camera from world, ``W_0 = I``) from relative ones.

    ``relative[a, b]`` maps camera a's frame to camera b's, so ``W_b = R_ab W_a``. All pairs
    are solved at once by linear least squares on the matrix entries (chordal relaxation), and
    each result is projected back onto SO(3). Using wide pairs as well as consecutive ones
    stops the drift that chaining consecutive rotations accumulates.
    """
    A = np.zeros((3 * len(relative), 3 * (count - 1)))
    B = np.zeros((3 * len(relative), 3))
    for row, ((a, b), R) in enumerate(relative.items()):
        rows = slice(3 * row, 3 * row + 3)
        if b > 0:
            A[rows, 3 * (b - 1) : 3 * b] += np.eye(3)
        else:
            B[rows] -= np.eye(3)
        if a > 0:
            A[rows, 3 * (a - 1) : 3 * a] -= R
        else:
            B[rows] += R
    X = np.linalg.lstsq(A, B, rcond=None)[0]
    W = np.concatenate([np.eye(3)[None], X.reshape(count - 1, 3, 3)])
    U, _, Vt = np.linalg.svd(W)
    D = np.ones((count, 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    return (U * D[:, None, :]) @ Vt


def _read_pair(db: pycolmap.Database, id_a: int, id_b: int) -> tuple | None:
    """``(H, inlier points in a, inlier points in b)`` of a verified pair, or None."""
    if not db.exists_two_view_geometry(id_a, id_b):
        return None
    geometry = db.read_two_view_geometry(id_a, id_b)
    H = geometry.H
    if geometry.inlier_matches.shape[0] < 15 or not np.isfinite(H).all() or not np.abs(H).sum():
        return None
    matches = geometry.inlier_matches
    return H, db.read_keypoints(id_a)[matches[:, 0], :2], db.read_keypoints(id_b)[matches[:, 1], :2]


def _rotation_only(database: Path, num_frames: int, width: int, height: int) -> ClipPoses:
    """Rotation-only poses chained through verified consecutive-frame homographies.

    The focal length comes from verified pairs up to 16 frames apart: their larger rotations
    determine it far better than consecutive frames do.
    """
    db = pycolmap.Database.open(str(database))
    try:
        ids = {int(Path(img.name).stem): img.image_id for img in db.read_all_images()}
        pairs = {}
        for gap in (1, 2, 4, 8, 16):
            for t in range(num_frames - gap):
                pair = _read_pair(db, ids[t], ids[t + gap])
                if pair is not None:
                    pairs[t, gap] = pair
    finally:
        db.close()
    run = _longest_run(np.array(sorted(t for t, gap in pairs if gap == 1), int))
    if len(run) == 0:
        raise PoseError("rotation: no consecutive frames share a verified homography")
    frames = np.append(run, run[-1] + 1)
    in_run = [pair for (t, gap), pair in pairs.items() if t >= run[0] and t + gap <= frames[-1]]
    f = _focal_from_homographies(in_run, width, height)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    relative = {
        (t - run[0], t + gap - run[0]): _rotation_from_homography(pair[0], K)
        for (t, gap), pair in pairs.items()
        if t >= run[0] and t + gap <= frames[-1]
    }
    c2w = np.tile(np.eye(4), (len(frames), 1, 1))
    c2w[:, :3, :3] = average_rotations(relative, len(frames)).transpose(0, 2, 1)
    transfer = [_transfer_errors(pairs[t, 1], K) for t in run]
    return ClipPoses(
        width=width,
        height=height,
        K=K,
        c2w=c2w,
        frame_ids=frames,
        pose_method="rotation",
        points=np.zeros((0, 3)),
        observations=np.zeros((0, 4)),
        observation_points=np.zeros(0, np.int64),
        scale=1.0,
        stats={
            "registered_fraction": len(frames) / num_frames,
            "reprojection_error": float(np.mean(np.concatenate(transfer))),
            "mean_track_length": 0.0,
            "num_points": 0,
        },
    )


def _acceptable(poses: ClipPoses, config: PoseConfig, num_frames: int, width: int) -> str | None:
    """None when ``poses`` pass the checks, else the reason they do not."""
    stats = poses.stats
    if stats["registered_fraction"] < config.min_registered_fraction:
        return f"{len(poses.frame_ids)}/{num_frames} frames registered in one run"
    if not stats["reprojection_error"] <= config.max_reprojection_error:
        return f"reprojection error {stats['reprojection_error']:.2f} px"
    if poses.pose_method != "rotation" and stats["min_observations_per_frame"] < config.min_observations:
        return f"a frame observes only {stats['min_observations_per_frame']} sparse points"
    hfov = float(np.degrees(2 * np.arctan(width / 2 / poses.K[0, 0])))
    if not PLAUSIBLE_HFOV_DEG[0] <= hfov <= PLAUSIBLE_HFOV_DEG[1]:
        return f"implausible field of view {hfov:.1f} deg (focal {poses.K[0, 0]:.0f} px)"
    return None


def _attempts(config: PoseConfig) -> list[tuple[str, int]]:
    """``(method, keyframe stride)`` in the order tried: the global mapper on keyframes, where
    ``config`` asks for them, before the global mapper on every frame."""
    attempts = []
    for method in config.methods:
        if method == "global" and config.keyframe_stride > 1:
            attempts.append((method, config.keyframe_stride))
        attempts.append((method, 1))
    return attempts


def _label(method: str, stride: int) -> str:
    return method if stride == 1 else f"{method} on keyframes"


def _mapped(
    method: str, stride: int, database: Path, root: Path, names: list[str], config: PoseConfig
) -> ClipPoses:
    """Poses from ``method``'s mapper on every ``stride``-th frame, the rest registered to its map."""
    only = keyframes(names, stride) if stride > 1 else None
    out = root / (method if stride == 1 else f"{method}-keyframes")  # a workdir keeps both models
    models = _run_mapper(method, database, root / "images", out, config, only)
    if not models:
        raise PoseError(f"{_label(method, stride)}: no model")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    views = register_to_map(best, database, names, config) if stride > 1 else None
    poses = from_reconstruction(best, method, names, views)
    return replace(poses, stats={**poses.stats, "keyframe_stride": stride})


def estimate_poses(
    frames: np.ndarray, config: PoseConfig | None = None, workdir: Path | None = None
) -> ClipPoses:
    """Poses for ``frames`` ``[T, H, W, 3]`` uint8, trying ``config.methods`` in order.

    Raises PoseError with every method's reason when none succeeds.
    """
    config = config or PoseConfig()
    unknown = set(config.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown pose methods {sorted(unknown)}; choose from {METHODS}")
    num_frames, height, width = frames.shape[:3]
    # glog levels: 0 INFO ... 3 FATAL. COLMAP logs pages per clip, and errors during an
    # expected fallback are not ours to show.
    pycolmap.logging.minloglevel = 0 if config.verbose else 3
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="gavs-sfm-")) if own_dir else Path(workdir)
    try:
        images, database = root / "images", root / "database.db"
        if database.exists():
            database.unlink()
        names = _write_frames(frames, images)
        _extract_and_match(database, images, config)
        reasons, partial = [], None
        for method, stride in _attempts(config):
            try:
                if method == "rotation":
                    poses = _rotation_only(database, num_frames, width, height)
                else:
                    poses = _mapped(method, stride, database, root, names, config)
            except PoseError as err:
                reasons.append(str(err))
                continue
            problem = _acceptable(poses, config, num_frames, width)
            if problem is None:
                return poses.normalised()
            reasons.append(f"{_label(method, stride)}: {problem}")
            if _acceptable(poses, replace(config, min_registered_fraction=0), num_frames, width) is None:
                if partial is None or len(poses.frame_ids) > len(partial.frame_ids):
                    partial = poses
        if partial is not None and len(partial.frame_ids) >= (config.min_partial_frames or num_frames + 1):
            return partial.normalised()
        raise PoseError("; ".join(reasons))
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
