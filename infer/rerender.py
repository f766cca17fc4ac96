"""Stages 4-6 of gavs-stabilize: each frame's Gaussians rendered at its smoothed pose, composed
at the output size.

Each posed frame goes through the network on its padded canvas; its Gaussians, in the source
camera's frame, are rendered from the smoothed camera (``relative_pose(original, smoothed)``)
with the source pixel coordinates and origin labels as features, and ``infer.compose`` turns
the render into the output frame (detail transfer, inpainting, attribution). Unposed frames
are copied through, resized to the output size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from infer.canvas import pad_canvas
from infer.compose import ORIGINS, compose, origin_features
from infer.posing import PosedClip
from model.cameras import relative_pose
from model.network import GaussianPredictor
from model.render import render


@dataclass
class RenderConfig:
    batch: int = 4  # frames per network and render call
    full_resolution: bool = True  # output at the input's size by detail transfer; else the working size
    min_alpha: float = 0.5  # output pixels with less render opacity are inpainted
    inpaint_radius: int = 3  # pixels, at the output size


@dataclass
class Rendered:
    frames: np.ndarray  # [T, H, W, 3] uint8 at the output size
    origin_shares: np.ndarray  # [T, 4] per ORIGINS entry; unposed frames count as source


def gaussian_origins(valid: Tensor, layers: int) -> Tensor:
    """``[B, layers * H * W]`` origin index (``ORIGINS``) of each Gaussian of a padded canvas
    with validity ``valid [B, 1, H, W]``: the first layer of the frame's own pixels shows the
    source; the padding and the deeper layers are the network's extrapolation."""
    first = torch.where(valid.flatten(1) > 0, 0, 2)
    return torch.cat([first, torch.full_like(first, 2).repeat(1, layers - 1)], 1)


@torch.no_grad()
def render_stabilized(net: GaussianPredictor, clip: PosedClip, smoothed: np.ndarray, pad: float,
                      config: RenderConfig, backend: str, device: torch.device, progress: bool,
                      full_frames: np.ndarray | None = None) -> Rendered:  # fmt: skip
    """Every frame at its smoothed pose (posed frames) or as it was (unposed ones).

    ``full_frames`` are the input frames at the output size (detail transfer); without them
    the output has the working size.
    """
    ids = clip.poses.frame_ids
    h, w = clip.frames.shape[1:3]
    out_h, out_w = full_frames.shape[1:3] if full_frames is not None else (h, w)
    frames = np.empty((len(clip.frames), out_h, out_w, 3), np.uint8)
    for index, frame in enumerate(full_frames if full_frames is not None else clip.frames):
        frames[index] = frame if frame.shape[:2] == (out_h, out_w) else cv2.resize(frame, (out_w, out_h))
    shares = np.zeros((len(clip.frames), len(ORIGINS)))
    shares[:, 0] = 1.0
    K = torch.from_numpy(clip.poses.K).float().to(device)
    original = torch.from_numpy(clip.poses.c2w).float().to(device)
    target = torch.from_numpy(smoothed).float().to(device)
    bar = tqdm(range(0, len(ids), config.batch), desc="render", disable=not progress, dynamic_ncols=True)
    for start in bar:
        batch = slice(start, start + config.batch)
        images = torch.from_numpy(clip.frames[ids[batch]]).permute(0, 3, 1, 2).float().div(255).to(device)
        B = len(images)
        padded, valid, K_pad = pad_canvas(images, K.expand(B, 3, 3), pad)
        out = net(padded, K_pad, valid)
        gaussians = replace(
            out.gaussians, features=origin_features(gaussian_origins(valid, net.config.layers))
        )
        viewmats = relative_pose(original[batch], target[batch])  # source camera -> smoothed camera
        Ks = K.expand(B, 3, 3)
        result = render(gaussians, viewmats[:, None], Ks[:, None], w, h, backend=backend)
        source = None
        if full_frames is not None:
            source = torch.from_numpy(full_frames[ids[batch]]).permute(0, 3, 1, 2).float().div(255).to(device)
        composed = compose(result.color[:, 0], result.alpha[:, 0], result.depth[:, 0], result.features[:, 0],
                           Ks, torch.linalg.inv(viewmats), source, config.min_alpha,
                           config.inpaint_radius)  # fmt: skip
        frames[ids[batch]] = composed.frames
        shares[ids[batch]] = composed.origin_shares
    return Rendered(frames, shares)
