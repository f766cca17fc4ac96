"""LPIPS (Zhang et al., CVPR 2018), used only when the user supplies its weights.

The distance between two images is, summed over five layers of a frozen ImageNet network,
the spatial mean of ``sum_c w_c * (f0_c - f1_c)^2``, where ``f`` are the layer's features
normalised to unit length over channels and ``w`` are the paper's learned per-channel
weights. Both the backbone (a torchvision ``vgg16``/``alexnet`` state dict) and the linear
weights (the LPIPS release's ``lin{k}.model.1.weight`` file) are read from local files;
nothing is downloaded.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torchvision import models

# features taken after these ReLUs (slices of torchvision's ``features``), and their widths
LAYERS = {
    "vgg": ((4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
    "alex": ((2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
}
# LPIPS's input scaling, for images in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in LAYERS:
            raise ValueError(f"LPIPS net must be one of {sorted(LAYERS)}, got {net!r}")
        self.net = net
        ends, widths = LAYERS[net]
        features = (models.vgg16 if net == "vgg" else models.alexnet)(weights=None).features
        self.backbone = features[: ends[-1]]
        self.ends = ends
        self.linear = nn.ParameterList([nn.Parameter(torch.ones(c)) for c in widths])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_files(cls, net: str, backbone: str | os.PathLike, linear: str | os.PathLike) -> LPIPS:
        """``backbone``: torchvision's state dict for the net; ``linear``: LPIPS's weights for it."""
        module = cls(net)
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        missing = set(module.backbone.state_dict()) - set(features)
        if missing:
            raise ValueError(f"{backbone}: not a torchvision {net} state dict (no {sorted(missing)[0]!r})")
        module.backbone.load_state_dict({k: features[k] for k in module.backbone.state_dict()})
        lins = torch.load(linear, map_location="cpu", weights_only=True)
        for k, weight in enumerate(module.linear):
            key = f"lin{k}.model.1.weight"
            if key not in lins or lins[key].numel() != weight.numel():
                raise ValueError(f"{linear}: not LPIPS {net} linear weights (bad or missing {key!r})")
            weight.data.copy_(lins[key].reshape(-1))
        return module

    def train(self, mode: bool = True) -> LPIPS:  # always frozen, always in eval mode
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-image distance of ``[B, 3, H, W]`` images in [0, 1] -> ``[B]``."""
        distance = x.new_zeros(x.shape[0])
        h = torch.cat([x, y]) * 2 - 1
        h = (h - self.shift) / self.scale
        start = 0
        for end, weight in zip(self.ends, self.linear, strict=True):
            h = self.backbone[start:end](h)
            start = end
            unit = h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            a, b = unit.chunk(2)
            distance = distance + ((a - b).pow(2) * weight.view(1, -1, 1, 1)).sum(1).mean((1, 2))
        return distance
