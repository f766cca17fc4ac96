"""Validation: fixed held-out batches, PSNR/SSIM of the source (with its border band) and targets.

The batches are drawn once, from the validation shards in order with seed 0, so numbers
from different steps and different runs compare directly.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from model.losses.perceptual import LPIPS
from model.losses.photometric import dssim
from model.network import GaussianPredictor
from train.data import DataConfig, training_stream
from train.objective import LossConfig, loss_terms, render_views


def validation_batches(config: DataConfig, shards: str, batch_size: int, count: int) -> list[dict]:
    """``count`` batches from ``shards``, the same on every call."""
    stream = training_stream(dataclasses.replace(config, shards=shards, seed=0), resampled=False)
    batches = []
    for batch in DataLoader(stream, batch_size=batch_size):
        batch.pop("shard")
        batches.append(batch)
        if len(batches) == count:
            break
    if not batches:
        raise ValueError(f"validation.shards {shards!r} hold no items")
    return batches


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-image PSNR in dB over ``mask`` (all pixels when None), ``[B, 3, H, W]`` -> ``[B]``."""
    error = (pred - target) ** 2
    if mask is None:
        mse = error.mean((1, 2, 3))
    else:
        mask = mask.expand_as(error)
        mse = (error * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp(min=1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


@torch.no_grad()
def validate(
    net: GaussianPredictor,
    batches: list[dict],
    device: torch.device,
    loss: LossConfig,
    grid_items: int = 4,
    perceptual: LPIPS | None = None,
) -> tuple[dict[str, float], Tensor]:
    """Mean metrics (and the training objective, ``loss``) over the batches, and an image grid:
    input | render | target | render."""
    was_training = net.training
    net.eval()
    sums: dict[str, list[Tensor]] = {
        "loss": [],
        "psnr_source": [],
        "psnr_target": [],
        "ssim_source": [],
        "ssim_target": [],
        "psnr_border": [],
    }
    rows = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out, rendered = render_views(net, batch, loss.render_backend)
        sums["loss"].append(loss_terms(out, rendered, batch, loss, perceptual)["total"].reshape(1))
        color = rendered.color.clamp(0, 1)
        source, targets = batch["source_full"], batch["targets"]
        sums["psnr_source"].append(psnr(color[:, 0], source))
        sums["ssim_source"].append(1 - 2 * dssim(color[:, 0], source).mean((1, 2, 3)))
        flat_render, flat_target = color[:, 1:].flatten(0, 1), targets.flatten(0, 1)
        sums["psnr_target"].append(psnr(flat_render, flat_target))
        sums["ssim_target"].append(1 - 2 * dssim(flat_render, flat_target).mean((1, 2, 3)))
        band = 1 - batch["source_valid"]
        has_band = band.flatten(1).amax(1) > 0
        if has_band.any():
            sums["psnr_border"].append(psnr(color[has_band, 0], source[has_band], band[has_band]))
        if len(rows) < grid_items:
            for i in range(len(source)):
                rows.append([batch["source"][i], color[i, 0], targets[i, 0], color[i, 1]])
    metrics = {k: torch.cat(v).mean().item() for k, v in sums.items() if v}
    net.train(was_training)
    grid = make_grid([image.cpu() for row in rows[:grid_items] for image in row], nrow=4, padding=2)
    return metrics, grid
