"""Synthetic shaky clips with exact ground truth, license-clean by construction.

A textured scene of rectangles (a back wall, a floor and boxes, optionally one box that moves)
is ray-cast analytically, not through the Gaussian renderer, so tests of the renderer and of
reconstruction are not circular. The camera follows a smooth dolly past the scene, perturbed by
a controllable handheld-style shake (a few incommensurate sinusoids in rotation and
translation), and optionally a strong rotational hand shake (``hand_shake_deg``: band-limited
noise at 1-8 Hz). The clip carries its true intrinsics, both camera paths (shaky and smooth), per-
frame z-depth and the mask of pixels that show the moving object.

With ``layout="random"`` (``random_config``), the room, its light and moving boxes and the
camera's motion are drawn from the seed instead: the domain-randomised source of the
pretraining set (``data_prep.pretrain_set``).

``python -m data_prep.synthetic OUT_DIR [--layout random]`` writes ``video.mp4``,
``cameras.json`` and ``depth.npz``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.atomic import atomic_path
from data_prep.schema import ClipPoses, write_cameras
from data_prep.video import write_video
from model.cameras import axis_angle_to_matrix, intrinsics_from_fov, look_at, make_pose

WORLD_UP = np.array([0.0, -1.0, 0.0])  # OpenCV-style world: y points down
FLOOR_Y = 1.5
# The fixed layout's moving box drifts right and rises at a fixed speed (a few pixels a frame,
# as people and cars move in real footage): a diagonal path, so part of its motion leaves the
# epipolar lines of the sideways dolly (motion along them is invisible to any two-view test).
MOVING_VELOCITY = np.array([0.06, -0.06, 0.0])  # scene units per frame
HAND_BAND_HZ = (1.0, 8.0)  # the band of a hand's rotational shake (strong-shake clips)


@dataclass
class SyntheticConfig:
    width: int = 320
    height: int = 180
    num_frames: int = 60
    fps: float = 30.0
    hfov_deg: float = 60.0
    dolly: float = 1.2  # camera travel over the clip, scene units (0: the camera only rotates)
    pan: float = 0.72  # sideways sweep of the look-at point on the back wall, scene units
    shake_rotation_deg: float = 1.0  # peak rotational shake per axis
    shake_translation: float = 0.03  # peak translational shake per axis, scene units
    # Rotational hand shake added on top, RMS per axis, degrees: band-limited noise between 1
    # and 8 Hz. 0.9 makes a strong-shake clip like ../shared/clips/strong-shake-5.mp4.
    hand_shake_deg: float = 0.0
    roll_deg: float = 0.0  # the camera held rolled by this much about its optical axis throughout
    moving_object: bool = False
    push: float = 0.0  # forward travel towards the back wall over the clip, scene units
    # "fixed": the reference room (four boxes, even light); "random": a room drawn from the seed
    # (2-8 boxes, wall depth, light direction, exposure and white balance, 0-2 moving boxes)
    layout: Literal["fixed", "random"] = "fixed"
    supersample: int = 2  # colour is the mean of supersample^2 rays per pixel
    seed: int = 0


@dataclass
class SyntheticClip:
    frames: np.ndarray  # [T, H, W, 3] uint8
    depth: np.ndarray  # [T, H, W] float32 z-depth at pixel centres
    dynamic_mask: np.ndarray  # [T, H, W] bool, pixels showing the moving object
    K: np.ndarray  # [3, 3] float64
    c2w: np.ndarray  # [T, 4, 4] float64, the shaky path the frames were rendered from
    smooth_c2w: np.ndarray  # [T, 4, 4] float64, the same path without shake
    fps: float


@dataclass
class _Rect:
    """The rectangle ``origin + s * edge_a + t * edge_b`` for ``s, t`` in [0, 1]."""

    origin: np.ndarray
    edge_a: np.ndarray
    edge_b: np.ndarray
    texture: int
    texels_per_unit: float
    velocity: np.ndarray | None = None  # scene units per frame for a moving box
    shade: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))  # light on this face, RGB

    @property
    def moving(self) -> bool:
        return self.velocity is not None


def procedural_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Photo-like float32 RGB texture: fractal colour noise under many random marks.

    The marks give corners and edges at every scale, which feature matching needs.
    """
    tex = np.zeros((size, size, 3), np.float32)
    for octave in range(2, int(np.log2(size))):
        cells = 2**octave
        noise = rng.random((cells, cells, 3), dtype=np.float32)
        tex += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) / (1.6 ** (octave - 2))
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    tex = 0.25 + 0.5 * tex * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    canvas = (tex * 255).astype(np.uint8)
    # Log-uniform sizes: many small marks and a few large ones, like detail in a photograph.
    radii = np.exp(rng.uniform(np.log(2), np.log(size / 16), 2 * size)).astype(int)
    for r in radii:
        x, y = (int(v) for v in rng.integers(0, size, 2))
        # Marks vary mostly in brightness around the local colour: like photographs, the
        # texture keeps its fine detail in luma, which survives 4:2:0 video coding.
        base = canvas[y, x].astype(float)
        color = tuple(int(c) for c in np.clip(base * rng.uniform(0.3, 1.7) + rng.uniform(-20, 20, 3), 0, 255))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(canvas, (x, y), int(r), color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(
                canvas, (x, y), (x + int(r), y + int(rng.integers(1, 2 * r + 2))), color, -1, cv2.LINE_AA
            )
        else:
            end = (x + int(rng.integers(-3 * r, 3 * r + 1)), y + int(rng.integers(-3 * r, 3 * r + 1)))
            cv2.line(canvas, (x, y), end, color, max(1, int(r) // 4), cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _box(
    corner: np.ndarray, size: np.ndarray, texture: int, velocity: np.ndarray | None = None
) -> list[_Rect]:
    """Six faces of an axis-aligned box."""
    sx, sy, sz = (np.array([size[0], 0, 0]), np.array([0, size[1], 0]), np.array([0, 0, size[2]]))
    c, far = corner, corner + size
    faces = [(c, sx, sy), (c, sz, sy), (c, sx, sz), (far, -sx, -sy), (far, -sz, -sy), (far, -sx, -sz)]
    return [_Rect(o, a, b, texture, 48.0, velocity) for o, a, b in faces]


def _room(textures: list[int], wall_z: float) -> list[_Rect]:
    """The back wall at ``wall_z`` and the floor; both far larger than any view, so every ray hits."""
    wall = _Rect(
        np.array([-30.0, -30.0, wall_z]),
        np.array([60.0, 0, 0]),
        np.array([0, 30.0 + FLOOR_Y, 0]),
        textures[0],
        40.0,
    )
    floor = _Rect(
        np.array([-30.0, FLOOR_Y, -5.0]),
        np.array([60.0, 0, 0]),
        np.array([0, 0, wall_z + 5]),
        textures[1],
        40.0,
    )
    return [wall, floor]


def _build_scene(rng: np.random.Generator, config: SyntheticConfig) -> tuple[list[_Rect], list[np.ndarray]]:
    if config.layout == "random":
        return _random_scene(rng)
    textures = [procedural_texture(rng, 1024), procedural_texture(rng, 1024)]
    textures += [procedural_texture(rng, 256) for _ in range(4)]
    rects = _room([0, 1], 9.0)
    for i, (x, z, w, h, d) in enumerate(
        [
            (-2.6, 4.0, 1.0, 1.6, 0.9),
            (-0.4, 6.0, 1.4, 2.4, 1.0),
            (1.5, 3.2, 0.8, 0.9, 0.8),
            (2.8, 5.5, 1.1, 3.0, 0.7),
        ]
    ):
        rects += _box(np.array([x, FLOOR_Y - h, z]), np.array([w, h, d]), 2 + i)
    if config.moving_object:
        rects += _box(np.array([-1.6, FLOOR_Y - 1.2, 2.4]), np.array([0.6, 1.2, 0.6]), 2, MOVING_VELOCITY)
    return rects, textures


def _random_scene(rng: np.random.Generator) -> tuple[list[_Rect], list[np.ndarray]]:
    """A room drawn from ``rng``: its boxes, their textures, moving boxes and the light.

    The light is a directional one plus ambient, per face (Lambertian, so every view of a face
    agrees, as multi-view training needs), under one exposure and white balance per clip.
    """
    wall_z = rng.uniform(7.0, 12.0)
    textures = [procedural_texture(rng, 1024), procedural_texture(rng, 1024)]
    textures += [procedural_texture(rng, 256) for _ in range(6)]
    rects = _room([0, 1], wall_z)
    for _ in range(rng.integers(2, 9)):
        w, h, d = rng.uniform([0.5, 0.5, 0.5], [1.6, 3.2, 1.4])
        x, z = rng.uniform(-3.5, 3.5 - w), rng.uniform(2.8, wall_z - d - 0.3)
        rects += _box(np.array([x, FLOOR_Y - h, z]), np.array([w, h, d]), int(rng.integers(2, len(textures))))
    for _ in range(rng.choice(3, p=[0.5, 0.3, 0.2])):
        w, h = rng.uniform(0.4, 0.9), rng.uniform(0.6, 1.6)
        velocity = np.array([rng.uniform(-0.07, 0.07), rng.uniform(-0.04, 0.0), rng.uniform(-0.03, 0.03)])
        corner = np.array([rng.uniform(-2.5, 2.0), FLOOR_Y - h, rng.uniform(2.2, 4.0)])
        rects += _box(corner, np.array([w, h, w]), int(rng.integers(2, len(textures))), velocity)
    light = rng.normal(size=3) * [1.0, 0.3, 1.0] + [0.0, -1.0, -0.5]  # mostly from above and behind
    light /= np.linalg.norm(light)
    ambient, exposure = rng.uniform(0.35, 0.7), rng.uniform(0.7, 1.3)
    balance = (1.0 + rng.uniform(-0.12, 0.12, 3)).astype(np.float32)
    for rect in rects:
        normal = np.cross(rect.edge_a, rect.edge_b)
        lit = abs(normal @ light) / np.linalg.norm(normal)  # either side of a face faces the light
        rect.shade = (exposure * (ambient + (1 - ambient) * lit) * balance).astype(np.float32)
    return rects, textures


def random_config(seed: int, **fixed) -> SyntheticConfig:
    """A ``layout="random"`` clip's settings drawn from ``seed``: the camera's motion (dolly,
    pan, push-in, or a rotation-only pan), the field of view and the shake, from gentle to
    strong; ``fixed`` sets any field outright (size, frames, fps)."""
    rng = np.random.default_rng([seed, 1])
    motion = rng.choice(["dolly", "pan", "push", "orbit"])
    travel = rng.uniform(0.4, 1.6)
    strong = rng.random() < 0.25
    drawn = {
        "dolly": travel if motion in ("dolly", "orbit") else 0.0,
        "pan": rng.uniform(-1.5, 1.5) if motion in ("pan", "orbit") else rng.uniform(-0.4, 0.4),
        "push": travel if motion == "push" else 0.0,
        "hfov_deg": rng.uniform(45.0, 75.0),
        "shake_rotation_deg": rng.uniform(1.5, 3.0) if strong else rng.uniform(0.2, 1.2),
        "shake_translation": rng.uniform(0.0, 0.05),
        "moving_object": False,  # the random layout draws its own moving boxes
    }
    return SyntheticConfig(**{**drawn, **fixed, "layout": "random", "seed": seed})


def _cast(
    rects: list[_Rect],
    textures: list[np.ndarray],
    origin: np.ndarray,
    rays: np.ndarray,
    time: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray ``origin + lam * ray``.

    Returns colour ``[R, 3]``, ``lam`` ``[R]`` (z-depth when rays have unit camera z) and
    whether the hit is on the moving object ``[R]``.
    """
    best = np.full(len(rays), np.inf)
    hit_rect = np.full(len(rays), -1)
    hit_st = np.zeros((len(rays), 2))
    for index, rect in enumerate(rects):
        o = rect.origin + (rect.velocity * time if rect.moving else 0.0)
        normal = np.cross(rect.edge_a, rect.edge_b)
        denom = rays @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ((o - origin) @ normal) / denom
        p = origin + lam[:, None] * rays - o
        s = p @ rect.edge_a / (rect.edge_a @ rect.edge_a)
        t = p @ rect.edge_b / (rect.edge_b @ rect.edge_b)
        hit = (lam > 1e-6) & (lam < best) & (s >= 0) & (s <= 1) & (t >= 0) & (t <= 1)
        best[hit], hit_rect[hit] = lam[hit], index
        hit_st[hit] = np.stack([s[hit], t[hit]], -1)
    if (hit_rect < 0).any():
        raise RuntimeError("synthetic scene has a ray that hits nothing; the camera left the room")
    colour = np.zeros((len(rays), 3), np.float32)
    for index, rect in enumerate(rects):
        sel = hit_rect == index
        if not sel.any():
            continue
        tex = textures[rect.texture]
        size = tex.shape[0]
        u = hit_st[sel, 0] * np.linalg.norm(rect.edge_a) * rect.texels_per_unit
        v = hit_st[sel, 1] * np.linalg.norm(rect.edge_b) * rect.texels_per_unit
        colour[sel] = _sample_wrapped(tex, np.mod(u, size), np.mod(v, size)) * rect.shade
    moving = np.array([rects[i].moving for i in range(len(rects))])[hit_rect]
    return colour, best, moving


def _sample_wrapped(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrap-around lookup of ``[n]`` texel coordinates (texel centres at integers)."""
    width = 1024  # cv2.remap wants maps under 32767 on each side: fold the list into rows
    n = len(u)
    pad = -n % width
    maps = [np.pad(c, (0, pad)).astype(np.float32).reshape(-1, width) for c in (u, v)]
    out = cv2.remap(texture, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1, 3)[:n]


def _shake(rng: np.random.Generator, num_frames: int, fps: float, amplitude: float) -> np.ndarray:
    """``[T, 3]`` handheld-like jitter: per axis, three sinusoids of 1.5-7 Hz with random phases."""
    t = np.arange(num_frames) / fps
    freqs = rng.uniform(1.5, 7.0, (3, 3))
    phases = rng.uniform(0, 2 * np.pi, (3, 3))
    weights = rng.uniform(0.5, 1.0, (3, 3))
    waves = np.sin(2 * np.pi * freqs[None] * t[:, None, None] + phases[None]) * weights[None]
    return amplitude * waves.sum(-1) / weights.sum(-1)[None]


def _hand_shake(rng: np.random.Generator, num_frames: int, fps: float, rms: float) -> np.ndarray:
    """``[T, 3]`` hand-tremor-like jitter: per axis, white noise kept only between
    ``HAND_BAND_HZ``, scaled to an RMS of exactly ``rms``."""
    bins = num_frames // 2 + 1
    spectrum = rng.normal(size=(bins, 3)) + 1j * rng.normal(size=(bins, 3))
    freqs = np.fft.rfftfreq(num_frames, 1 / fps)
    spectrum[(freqs < HAND_BAND_HZ[0]) | (freqs > HAND_BAND_HZ[1])] = 0
    waves = np.fft.irfft(spectrum, n=num_frames, axis=0)
    if not waves.any():
        raise ValueError(
            f"hand shake: {num_frames} frames at {fps:g} fps hold no frequency between "
            f"{HAND_BAND_HZ[0]:g} and {HAND_BAND_HZ[1]:g} Hz; make the clip longer"
        )
    return rms * waves / np.sqrt((waves**2).mean(0))


def intended_path(config: SyntheticConfig) -> np.ndarray:
    """``[T, 4, 4]`` smooth camera-to-world path: a sideways dolly with a slow pan, and
    ``push`` forward, rolled by ``roll_deg`` about the optical axis (level at 0).

    Every translation scales with ``dolly`` or ``push``, so with both 0 the camera only rotates.
    """
    s = np.linspace(-0.5, 0.5, config.num_frames)
    forward = 0.25 * config.dolly * s + config.push * (s + 0.5)
    eyes = np.stack([config.dolly * s, -0.2 + 0.08 * config.dolly * s**2, forward], -1)
    targets = np.stack([config.pan * s, 0.3 + 0 * s, 9.0 + 0 * s], -1)
    up = torch.from_numpy(WORLD_UP)
    level = look_at(torch.from_numpy(eyes), torch.from_numpy(targets), up)
    roll = axis_angle_to_matrix(torch.tensor([0.0, 0.0, np.deg2rad(config.roll_deg)], dtype=torch.float64))
    return (level @ make_pose(roll, torch.zeros(3, dtype=torch.float64))).numpy()


def generate(config: SyntheticConfig, progress: bool | None = None) -> SyntheticClip:
    """Render a clip; ``progress=None`` shows a bar only on a terminal."""
    rng = np.random.default_rng(config.seed)
    scene = _build_scene(rng, config)
    smooth = intended_path(config)
    rot = np.deg2rad(_shake(rng, config.num_frames, config.fps, config.shake_rotation_deg))
    trans = _shake(rng, config.num_frames, config.fps, config.shake_translation)
    if config.hand_shake_deg > 0:  # drawn last: clips without it stay as they were
        rot += np.deg2rad(_hand_shake(rng, config.num_frames, config.fps, config.hand_shake_deg))
    shake = make_pose(axis_angle_to_matrix(torch.from_numpy(rot)), torch.from_numpy(trans)).numpy()
    c2w = smooth @ shake  # the shake acts in the camera's own frame, like a hand holding it
    frames, depth, dynamic = _render(scene, config, c2w, np.arange(config.num_frames), progress)
    K = intrinsics_from_fov(config.width, config.height, config.hfov_deg).numpy()
    return SyntheticClip(frames, depth, dynamic, K, c2w, smooth, config.fps)


def render_views(config: SyntheticConfig, c2w: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The clip's scene seen from any cameras ``c2w [V, 4, 4]`` at frame times ``times [V]``
    (which place the moving object): ground truth for re-rendered views, ``[V, H, W, 3]`` uint8."""
    return render_views_and_geometry(config, c2w, times)[0]


def render_views_and_geometry(
    config: SyntheticConfig, c2w: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``render_views``, their ``[V, H, W]`` z-depth, and the ``[V, H, W]`` masks of the
    pixels showing the moving object: what a test needs to tell where a view's pixels came
    from and where a moving object may leave a ghost."""
    scene = _build_scene(np.random.default_rng(config.seed), config)
    return _render(scene, config, c2w, times, progress=False)


def _render(
    scene: tuple[list[_Rect], list[np.ndarray]],
    config: SyntheticConfig,
    c2w: np.ndarray,
    times: np.ndarray,
    progress: bool | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rects, textures = scene
    w, h, ss = config.width, config.height, config.supersample
    K = intrinsics_from_fov(w, h, config.hfov_deg).numpy()
    K_inv = np.linalg.inv(K)
    sub = (np.arange(ss) + 0.5) / ss
    sub_u = (np.arange(w)[:, None] + sub[None]).reshape(-1)
    sub_v = (np.arange(h)[:, None] + sub[None]).reshape(-1)
    fine = np.stack(np.meshgrid(sub_u, sub_v, indexing="xy"), -1).reshape(-1, 2)
    centre = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5, indexing="xy"), -1).reshape(-1, 2)

    def camera_rays(uv: np.ndarray) -> np.ndarray:
        return np.concatenate([uv, np.ones((len(uv), 1))], -1) @ K_inv.T  # camera z = 1

    fine_rays, centre_rays = camera_rays(fine), camera_rays(centre)
    count = len(c2w)
    frames = np.zeros((count, h, w, 3), np.uint8)
    depth = np.zeros((count, h, w), np.float32)
    dynamic = np.zeros((count, h, w), bool)
    for i in tqdm(range(count), desc="synthetic frames", disable=None if progress is None else not progress):
        R, origin = c2w[i, :3, :3], c2w[i, :3, 3]
        colour, _, _ = _cast(rects, textures, origin, fine_rays @ R.T, times[i])
        colour = colour.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
        frames[i] = np.clip(colour * 255 + 0.5, 0, 255).astype(np.uint8)
        _, lam, moving = _cast(rects, textures, origin, centre_rays @ R.T, times[i])
        depth[i] = lam.reshape(h, w)
        dynamic[i] = moving.reshape(h, w)
    return frames, depth, dynamic


def write_clip(
    clip: SyntheticClip, out_dir: str | os.PathLike, config: SyntheticConfig | None = None
) -> Path:
    """Write ``video.mp4``, ``cameras.json`` (poses float64) and ``depth.npz``, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_video(out / "video.mp4", clip.frames, clip.fps)
    num_frames, height, width = clip.depth.shape
    poses = ClipPoses(width, height, clip.K, clip.c2w, np.arange(num_frames), "ground_truth")
    extra = {"smooth_c2w": clip.smooth_c2w.tolist(), "config": asdict(config) if config else None}
    write_cameras(out / "cameras.json", poses, clip.fps, extra)
    with atomic_path(out / "depth.npz") as tmp:
        np.savez_compressed(tmp, depth=clip.depth, dynamic_mask=np.packbits(clip.dynamic_mask, axis=-1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description="Render a synthetic shaky clip with exact ground truth (video, poses, depth).",
    )
    parser.add_argument("out_dir", help="folder to write into (created if missing)")
    defaults = SyntheticConfig()
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--frames", type=int, default=defaults.num_frames, help="number of frames")
    parser.add_argument("--fps", type=float, default=defaults.fps)
    parser.add_argument(
        "--shake-deg", type=float, default=defaults.shake_rotation_deg, help="peak rotational shake"
    )
    parser.add_argument("--shake-translation", type=float, default=defaults.shake_translation)
    parser.add_argument(
        "--hand-shake-deg",
        type=float,
        default=defaults.hand_shake_deg,
        help="strong-shake mode: rotational hand shake at 1-8 Hz added on top, RMS per axis in "
        "degrees (0.9 is like ../shared/clips/strong-shake-5.mp4; 0: none)",
    )
    parser.add_argument("--moving-object", action="store_true", help="add a box that crosses the scene")
    parser.add_argument(
        "--layout",
        choices=["fixed", "random"],
        default="fixed",
        help="fixed: the reference room and dolly; random: a room, light and camera motion drawn "
        "from --seed (the shake and moving-object options are then drawn too, all but "
        "--hand-shake-deg)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.width % 2 or args.height % 2 or args.width < 16 or args.height < 16:
        parser.error("--width and --height must be even and at least 16 (H.264 needs even sizes)")
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    if args.hand_shake_deg < 0:
        parser.error("--hand-shake-deg must be 0 or more")
    size = {"width": args.width, "height": args.height, "num_frames": args.frames, "fps": args.fps}
    size["hand_shake_deg"] = args.hand_shake_deg
    if args.layout == "random":
        config = random_config(args.seed, **size)
    else:
        config = SyntheticConfig(
            **size,
            shake_rotation_deg=args.shake_deg,
            shake_translation=args.shake_translation,
            moving_object=args.moving_object,
            seed=args.seed,
        )
    try:
        clip = generate(config, progress=False if args.quiet else None)
    except ValueError as err:  # a setting generate() refuses, before any rendering
        parser.error(str(err))
    out = write_clip(clip, args.out_dir, config)
    print(f"wrote {out / 'video.mp4'}, {out / 'cameras.json'}, {out / 'depth.npz'}")


if __name__ == "__main__":
    main()
