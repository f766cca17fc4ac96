"""The pretraining objective for one batch: predict from the source, render every view, compare.

The network sees the source frame (with its border band blanked when the item has one) and
predicts Gaussians in the source camera's frame. They are rendered in one batched call into
the source camera and into each target camera (``source_to_target`` is exactly the view
matrix there). Supervision is the complete frames, so blanked borders must be extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from model.losses import offset_regulariser, photometric_loss, scale_regulariser, sparse_depth_loss
from model.losses.perceptual import LPIPS
from model.network import GaussianPredictor, NetworkOutput
from model.render import Backend, RenderOutput, render


@dataclass
class LossConfig:
    source_weight: float = 1.0
    target_weight: float = 1.0
    depth_weight: float = 0.1
    scale_weight: float = 0.01
    offset_weight: float = 0.01
    render_backend: Backend = "auto"
    # LPIPS on the target views, only with local weights: a torchvision state dict for the
    # net and the LPIPS release's linear weights for it
    lpips_weight: float = 0.0
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_backbone: str | None = None
    lpips_linear: str | None = None


def perceptual_loss(config: LossConfig) -> LPIPS | None:
    """The LPIPS module the config asks for, or None; a clear error when its weights are missing."""
    if config.lpips_weight <= 0:
        return None
    if not config.lpips_backbone or not config.lpips_linear:
        raise ValueError(
            "loss.lpips_weight > 0 needs loss.lpips_backbone and loss.lpips_linear (local files)"
        )
    for path in (config.lpips_backbone, config.lpips_linear):
        if not Path(path).is_file():
            raise ValueError(f"LPIPS weights {path}: no such file")
    return LPIPS.from_files(config.lpips_net, config.lpips_backbone, config.lpips_linear)


def render_views(
    net: GaussianPredictor, batch: dict[str, Tensor], backend: str = "auto"
) -> tuple[NetworkOutput, RenderOutput]:
    """Predict from each source and render into its own camera (view 0) and its targets (views 1..)."""
    source = batch["source"]
    B, _, H, W = source.shape
    out = net(source, batch["source_K"], batch["source_valid"])
    identity = torch.eye(4, device=source.device, dtype=torch.float32).expand(B, 1, 4, 4)
    viewmats = torch.cat([identity, batch["source_to_target"].float()], 1)
    Ks = torch.cat([batch["source_K"][:, None], batch["target_K"]], 1).float()
    return out, render(out.gaussians, viewmats, Ks, W, H, backend=backend)


def training_losses(
    net: GaussianPredictor, batch: dict[str, Tensor], config: LossConfig, perceptual: LPIPS | None = None
) -> dict[str, Tensor]:
    """Weighted loss terms and their sum (``total``) for a collated batch of training items."""
    return loss_terms(*render_views(net, batch, config.render_backend), batch, config, perceptual)


def loss_terms(
    out: NetworkOutput,
    rendered: RenderOutput,
    batch: dict[str, Tensor],
    config: LossConfig,
    perceptual: LPIPS | None = None,
) -> dict[str, Tensor]:
    """The weighted terms for predictions already made and rendered (validation reuses the renders)."""
    source_loss = photometric_loss(rendered.color[:, 0], batch["source_full"])
    targets = batch["targets"]
    target_loss = photometric_loss(rendered.color[:, 1:].flatten(0, 1), targets.flatten(0, 1))
    depth_loss = sparse_depth_loss(
        out.depth[:, :1], batch["points_uv"], batch["points_depth"], batch["points_valid"]
    )
    terms = {
        "source": config.source_weight * source_loss,
        "target": config.target_weight * target_loss,
        "depth": config.depth_weight * depth_loss,
        "scale": config.scale_weight * scale_regulariser(out.scale, out.depth, batch["source_K"][:, 0, 0]),
        "offset": config.offset_weight * offset_regulariser(out.offset, out.depth),
    }
    if perceptual is not None:
        renders = rendered.color[:, 1:].flatten(0, 1)
        terms["lpips"] = config.lpips_weight * perceptual(renders, targets.flatten(0, 1)).mean()
    terms["total"] = sum(terms.values())
    return terms
