"""The padded input canvas: the network sees each frame inside a larger, partly empty image.

Padding every side by a share of the frame (GaVS-style scene extrapolation uses about 12%;
here at least that, and more where a segment's smoothed path needs it) gives the network
room to predict Gaussians beyond the frame edge, which the re-rendered,
stabilized view needs where it looks past the original frame. The validity channel marks the
padding, exactly as the border bands of pretraining do, and ``K`` moves with the origin. The
padding repeats the frame's edge pixels (as pretraining's bands do): a fresh network then
starts from stretched edges rather than black, and its colour residuals refine them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from common.config import ConfigError
from model.cameras import pad_intrinsics


@dataclass
class CanvasConfig:
    pad: float = 0.12
    """Share of the frame's height and width added on each side, at least; finetuning, the
    coverage bound of the smoothed path and rendering all use the canvas."""
    max_pad: float = 0.3
    """The most the canvas grows to, per 3D segment, where the smoothed path needs more than
    pad to stay covered (in steps of 0.01); the path is bent only where even this falls
    short. Finetuning and rendering cost grows with the canvas's area. max_pad=pad: a fixed
    canvas."""

    def __post_init__(self) -> None:
        if not 0 <= self.pad <= self.max_pad:
            raise ConfigError(f"canvas: need 0 <= pad <= max_pad, got pad {self.pad}, max_pad {self.max_pad}")

    def fixed(self, pad: float) -> CanvasConfig:
        """The canvas fixed at ``pad``: what a segment's finetuning and rendering use."""
        return CanvasConfig(pad=pad, max_pad=pad)


def pad_amounts(height: int, width: int, fraction: float) -> tuple[int, int]:
    """Rows and columns added on each side."""
    return round(height * fraction), round(width * fraction)


def pad_canvas(images: Tensor, K: Tensor, fraction: float) -> tuple[Tensor, Tensor, Tensor]:
    """``images [B, 3, H, W]``, ``K [B, 3, 3]`` -> padded images (edges replicated), validity
    ``[B, 1, H', W']`` and the padded canvas's ``K``."""
    B, _, H, W = images.shape
    rows, cols = pad_amounts(H, W, fraction)
    padded = F.pad(images, (cols, cols, rows, rows), mode="replicate")
    valid = F.pad(images.new_ones(B, 1, H, W), (cols, cols, rows, rows))
    return padded, valid, pad_intrinsics(K, cols, rows)
