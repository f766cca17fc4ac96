"""The reconstruction network: one frame in, L layers of 3D Gaussians per pixel out.

In the spirit of Flash3D and GaVS:

- a timm encoder (any backbone name, ``features_only``) over the frame, its validity mask
  (0 on padding) and an optional depth-prior channel;
- a U-Net decoder back to full resolution;
- per-pixel heads for each of ``layers`` Gaussians: depth, 3D offset, opacity, scale,
  rotation and colour.

Parameterisation (depths in the scene's normalised units, median depth 1):
- layer 0 predicts inverse depth in ``[1/max_depth, 1/min_depth]``. Each deeper layer adds a
  positive increment (softplus), so it always lies behind the one before.
- means are the pixel's ray at that depth plus an offset, scaled by depth.
- scales are multiples of the pixel footprint ``depth / focal``.
- colour is a residual on the input pixel's colour in logit space.

The heads' weights start at zero and their biases at chosen values. A fresh network
therefore predicts a fronto-parallel sheet at depth 1 with the input's colours, pixel-sized
footprints and an opaque first layer, which renders the input back from the source camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.cameras import pixel_centers, unproject
from model.gaussians import Gaussians

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNELS_PER_LAYER = 1 + 3 + 1 + 3 + 4 + 3  # depth, offset, opacity, scale, rotation, colour


@dataclass
class NetworkConfig:
    backbone: str = "resnet18"  # any timm name, including "hf-hub:org/name" with a local cache
    pretrained: bool = False  # load the backbone's weights: from pretrained_path, else timm's cache
    pretrained_path: str | None = None  # a local .safetensors/.pth file; nothing is downloaded
    layers: int = 2
    decoder_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    min_depth: float = 0.1
    max_depth: float = 100.0
    footprint: float = 0.4  # initial scale in pixel footprints: a fresh net renders its input at ~27 dB
    max_offset: float = 0.2  # offsets are tanh-bounded to this fraction of the depth


@dataclass
class NetworkOutput:
    gaussians: Gaussians  # [B, L*H*W] in the source camera's frame, no extra features
    depth: Tensor  # [B, L, H, W]
    opacity: Tensor  # [B, L, H, W]
    scale: Tensor  # [B, L, 3, H, W]
    offset: Tensor  # [B, L, 3, H, W], in scene units


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ELU(inplace=True))


class GaussianPredictor(nn.Module):
    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        in_chans = 4  # RGB and the validity mask
        overlay = {"file": str(Path(config.pretrained_path))} if config.pretrained_path else None
        self.encoder = timm.create_model(
            config.backbone,
            pretrained=config.pretrained or config.pretrained_path is not None,
            pretrained_cfg_overlay=overlay,
            features_only=True,
            in_chans=in_chans,
        )
        skips = list(self.encoder.feature_info.channels())
        reductions = list(self.encoder.feature_info.reduction())
        widths = list(config.decoder_channels)[-len(skips) :]
        # Decoder: from the deepest feature up, fuse each skip, then up to full resolution.
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        c = skips[-1]
        for i in range(len(skips) - 1, -1, -1):
            width = widths[i]
            self.up.append(_block(c, width))
            self.fuse.append(_block(width + (skips[i - 1] if i > 0 else 0), width))
            c = width
        self.final_scale = reductions[0]
        self.head_in = _block(c + in_chans, c)
        self.head = nn.Conv2d(c, CHANNELS_PER_LAYER * config.layers, 1)
        self._initialise_head()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _initialise_head(self) -> None:
        cfg = self.config
        nn.init.zeros_(self.head.weight)
        bias = torch.zeros(cfg.layers, CHANNELS_PER_LAYER)
        # inverse depth of 1 for layer 0; deeper layers start 50% of the depth further back
        lo, hi = 1 / cfg.max_depth, 1 / cfg.min_depth
        bias[0, 0] = torch.logit(torch.tensor((1.0 - lo) / (hi - lo)))
        bias[1:, 0] = torch.log(torch.expm1(torch.tensor(0.5)))
        bias[0, 4], bias[1:, 4] = 3.0, -3.0  # opacity: 0.95 in front, 0.05 behind
        bias[:, 8] = 1.0  # rotation: identity quaternion (w, x, y, z)
        self.head.bias.data.copy_(bias.reshape(-1))

    def forward(self, image: Tensor, K: Tensor, valid: Tensor | None = None) -> NetworkOutput:
        """``image [B, 3, H, W]`` in [0, 1], ``K [B, 3, 3]`` of that (padded) image."""
        B, _, H, W = image.shape
        head_input = self._trunk(image, valid)  # under the caller's autocast, if any
        # Heads and geometry stay in float32 under mixed precision: bf16's 8-bit mantissa would
        # put a Gaussian's depth, and so its pixel position, off by more than a pixel.
        with torch.autocast(image.device.type, enabled=False):
            raw = self.head(head_input).view(B, self.config.layers, CHANNELS_PER_LAYER, H, W)
            return self._gaussians(raw, image.float(), K.float())

    def first_layer_depth(self, image: Tensor, valid: Tensor | None = None) -> Tensor:
        """``[B, H, W]``: ``forward(image, K, valid).depth[:, 0]``, to the bit, without the
        Gaussians. The whole head runs: its one channel alone would be summed in another order."""
        head_input = self._trunk(image, valid)
        with torch.autocast(image.device.type, enabled=False):
            return self._depth0(self.head(head_input)[:, 0])

    def _trunk(self, image: Tensor, valid: Tensor | None) -> Tensor:
        """``[B, C, H, W]`` float32: what the 1x1 head reads (its input layer's output). The
        encoder and decoder run under the caller's autocast; the head's input layer does not."""
        valid = torch.ones_like(image[:, :1]) if valid is None else valid
        x = torch.cat([(image - self.mean) / self.std, valid], 1)
        features = self.encoder(x)
        h = features[-1]
        for step, (up, fuse) in enumerate(zip(self.up, self.fuse, strict=True)):
            level = len(features) - 1 - step
            h = up(h)
            if level > 0:
                skip = features[level - 1]
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = fuse(torch.cat([h, skip], 1))
            else:
                h = fuse(h)
        h = F.interpolate(h, size=image.shape[-2:], mode="bilinear", align_corners=False)
        with torch.autocast(image.device.type, enabled=False):
            return self.head_in(torch.cat([h.float(), x.float()], 1))

    def _depth0(self, raw: Tensor) -> Tensor:
        """First-layer depth from its raw channel: inverse depth sigmoid-bounded to the range."""
        lo, hi = 1 / self.config.max_depth, 1 / self.config.min_depth
        return 1.0 / (lo + (hi - lo) * torch.sigmoid(raw))

    def _gaussians(self, raw: Tensor, image: Tensor, K: Tensor) -> NetworkOutput:
        cfg = self.config
        B, L, _, H, W = raw.shape
        depth0 = self._depth0(raw[:, :1, 0])
        increments = F.softplus(raw[:, 1:, 0]) * depth0  # relative: deeper layers behind
        depth = torch.cat([depth0, depth0 + torch.cumsum(increments, 1)], 1)  # [B, L, H, W]
        focal = K[:, 0, 0].view(B, 1, 1, 1)
        footprint = depth / focal
        offset = torch.tanh(raw[:, :, 1:4]) * cfg.max_offset * depth[:, :, None]
        opacity = torch.sigmoid(raw[:, :, 4])
        scale = torch.exp(raw[:, :, 5:8]) * cfg.footprint * footprint[:, :, None]
        # F.normalize's norm over this strided channel axis is many times slower on the CPU
        # than the same x / max(|x|, eps) written out (docs/BENCHMARKS.md, the render stage)
        quats = raw[:, :, 8:12]
        quats = quats / quats.square().sum(2, keepdim=True).sqrt().clamp(min=1e-12)
        base = torch.logit(image.clamp(1e-3, 1 - 1e-3))[:, None]
        colors = torch.sigmoid(base + raw[:, :, 12:15])

        uv = (
            pixel_centers(H, W, device=raw.device, dtype=raw.dtype)
            .reshape(1, 1, H * W, 2)
            .expand(B, L, -1, -1)
        )
        rays = unproject(uv, torch.ones_like(uv[..., 0]), K[:, None].expand(B, L, 3, 3))  # [B, L, HW, 3]
        means = rays * depth.reshape(B, L, H * W, 1) + offset.reshape(B, L, 3, H * W).transpose(-1, -2)

        def per_gaussian(t: Tensor, width: int) -> Tensor:  # [B, L, C, H, W] -> [B, L*H*W, C]
            return t.reshape(B, L, width, H * W).transpose(-1, -2).reshape(B, L * H * W, width)

        gaussians = Gaussians(
            means=means.reshape(B, L * H * W, 3),
            quats=per_gaussian(quats, 4),
            scales=per_gaussian(scale, 3),
            opacities=opacity.reshape(B, L * H * W),
            colors=per_gaussian(colors, 3),
        )
        return NetworkOutput(gaussians, depth, opacity, scale, offset)
