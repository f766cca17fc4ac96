"""How well a finetuned network explains views it was not finetuned on.

Finetuning compares each source frame with a few neighbours (``window_pairs``). The pairs it
never compares, in either direction, are held out: rendering the source's Gaussians from the
held-out neighbour's camera and comparing with that frame measures the reconstruction, not
its memory of the training pairs. This is the held-out view PSNR of the prior-against-scratch
benchmark (``bench/prior.py``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from data_prep.schema import ClipPoses
from infer.canvas import pad_canvas
from infer.finetune import FinetuneConfig, finetune_windows, window_pairs
from model.cameras import relative_pose
from model.network import GaussianPredictor
from model.render import Backend, render

MIN_ALPHA = 0.5  # the finetuning's own rule for a render hole (static_pair_mask)


def heldout_pairs(count: int, config: FinetuneConfig, *, number: int, seed: int = 0) -> list[tuple[int, int]]:
    """Up to ``number`` (source, target) pairs of posed frames at most ``config.max_offset``
    apart that finetuning with ``config`` never compares, in either order; drawn with ``seed``
    and returned sorted."""
    used = set(window_pairs(finetune_windows(count, config)))
    candidates = [
        (s, t)
        for s in range(count)
        for t in range(max(0, s - config.max_offset), min(count, s + config.max_offset + 1))
        if t != s and (s, t) not in used and (t, s) not in used
    ]
    return sorted(random.Random(seed).sample(candidates, min(number, len(candidates))))


@torch.no_grad()
def view_psnr(
    net: GaussianPredictor,
    frames: np.ndarray,  # [T, H, W, 3] uint8, the posed frames
    poses: ClipPoses,  # poses of those frames, in order
    pairs: list[tuple[int, int]],
    *,
    pad: float,
    backend: Backend = "auto",
    device: torch.device,
) -> list[float]:
    """PSNR (dB) per pair of the source's render from the target's camera against the target
    frame, over the pixels the render covers (alpha above ``MIN_ALPHA``); NaN where it covers
    none. The source is seen on the canvas padded by ``pad``, as in finetuning."""
    net = net.to(device).eval()
    c2w = torch.from_numpy(poses.c2w).float().to(device)
    K = torch.from_numpy(poses.K).float().to(device)
    height, width = frames.shape[1:3]
    scores = []
    for s, t in pairs:
        images = torch.from_numpy(frames[[s, t]]).to(device).permute(0, 3, 1, 2).float().div(255)
        padded, valid, K_pad = pad_canvas(images[:1], K[None], pad)
        out = net(padded, K_pad, valid)
        view = relative_pose(c2w[s][None, None], c2w[t][None, None])  # [1, 1, 4, 4]
        rendered = render(out.gaussians, view, K[None, None], width, height, backend=backend)
        covered = (rendered.alpha[0, 0] > MIN_ALPHA).float()  # [1, H, W]
        count = covered.sum().item()
        error = ((rendered.color[0, 0] - images[1]) ** 2 * covered).sum().item() / max(3 * count, 1)
        scores.append(-10 * math.log10(max(error, 1e-10)) if count else math.nan)
    return scores
