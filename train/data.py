"""Training items from clip shards: a source frame and nearby target views, ready to batch.

Shards are read through ``data_prep.schema.decode``. In epoch mode the shards are split
across nodes (DDP ranks) and dataloader workers and shuffled; in epoch-less mode each worker
draws shards at random, forever. Clips are shuffled in a buffer. Each clip yields
``items_per_clip`` items:

- a source frame and ``num_targets`` targets within ``window`` frames of it;
- one random crop (a share of the frame between ``min_crop`` and 1, the same for the source
  and the targets) resized to ``size``, with every ``K`` updated to match;
- border-extrapolation training: with probability ``border_probability``, a band of
  ``border_fraction`` of the width or height along one side of the source is blanked and
  marked invalid, while the targets stay complete, so the network learns to predict
  Gaussians beyond what it sees;
- the source's sparse SfM observations in the crop's pixels, padded to ``max_points``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import webdataset as wds

from data_prep.schema import ClipSample, decode, to_tensors
from model.cameras import crop_intrinsics, relative_pose, resize_intrinsics


@dataclass
class DataConfig:
    shards: str = ""  # brace pattern, path or URL of training shards
    size: tuple[int, int] = (96, 160)  # (height, width) fed to the network
    num_targets: int = 2
    window: int = 6  # targets are at most this many frames from the source
    items_per_clip: int = 4
    min_crop: float = 0.7  # crops keep at least this share of each side
    border_probability: float = 0.5
    border_fraction: float = 0.12
    max_points: int = 256
    shuffle_buffer: int = 64
    seed: int = 0


def _crop_resize(frames: torch.Tensor, K: torch.Tensor, box: tuple[int, int, int, int],
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Crop ``frames [V, 3, H, W]`` to ``box`` (left, top, width, height), resize to ``size``."""
    left, top, width, height = box
    crop = frames[:, :, top : top + height, left : left + width]
    out = F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=True)
    K = resize_intrinsics(crop_intrinsics(K, left, top), (width, height), (size[1], size[0]))
    return out, K


def clip_items(
    sample: ClipSample, config: DataConfig, rng: random.Random
) -> Iterator[dict[str, torch.Tensor]]:
    """Training items from one decoded clip."""
    count = len(sample.frames)
    if count < 2:
        return
    tensors = to_tensors(sample)
    frames, Ks, c2w, observations = tensors["frames"], tensors["K"], tensors["c2w"], tensors["observations"]
    height, width = frames.shape[-2:]
    for _ in range(config.items_per_clip):
        source = rng.randrange(count)
        nearby = [
            t
            for t in range(max(0, source - config.window), min(count, source + config.window + 1))
            if t != source
        ]
        targets = [rng.choice(nearby) for _ in range(config.num_targets)]
        share = rng.uniform(config.min_crop, 1.0)
        crop_w, crop_h = max(8, round(width * share)), max(8, round(height * share))
        box = (rng.randrange(width - crop_w + 1), rng.randrange(height - crop_h + 1), crop_w, crop_h)
        views = [source, *targets]
        images, K = _crop_resize(frames[views], Ks[views], box, config.size)
        valid = torch.ones(1, *config.size)
        if rng.random() < config.border_probability:
            side = rng.choice(("left", "right", "top", "bottom"))
            band_w = round(config.size[1] * config.border_fraction)
            band_h = round(config.size[0] * config.border_fraction)
            bands = {
                "left": (slice(None), slice(0, band_w)),
                "right": (slice(None), slice(-band_w, None)),
                "top": (slice(0, band_h), slice(None)),
                "bottom": (slice(-band_h, None), slice(None)),
            }
            band = bands[side]
            valid[(0, *band)] = 0
        source_image = images[0] * valid

        # sparse observations of the source frame, moved into the crop's pixels
        uv = torch.zeros(config.max_points, 2)
        depth = torch.zeros(config.max_points)
        point_valid = torch.zeros(config.max_points, dtype=torch.bool)
        if len(observations):
            mine = observations[observations[:, 0] == source]
            scale = torch.tensor([config.size[1] / crop_w, config.size[0] / crop_h])
            moved = (mine[:, 1:3] - torch.tensor([box[0], box[1]])) * scale
            limit = torch.tensor([config.size[1], config.size[0]])
            inside = ((moved >= 0) & (moved < limit)).all(-1)
            moved, z = moved[inside][: config.max_points], mine[inside, 3][: config.max_points]
            uv[: len(moved)], depth[: len(moved)], point_valid[: len(moved)] = moved, z, True
        yield {
            "source": source_image,  # the network's input: the border band blanked
            "source_full": images[0],  # the supervision: the whole source frame
            "source_valid": valid,
            "source_K": K[0],
            "targets": images[1:],
            "target_K": K[1:],
            "source_to_target": relative_pose(c2w[source].expand(len(targets), 4, 4), c2w[targets]),
            "points_uv": uv,
            "points_depth": depth,
            "points_valid": point_valid,
        }


def training_stream(config: DataConfig, epochless: bool = True) -> wds.WebDataset:
    """The shuffled, split, decoded stream of training items (not yet batched)."""
    if not config.shards:
        raise ValueError("data.shards is empty: point it at the training shards (a brace pattern or URL)")
    rng = random.Random(config.seed)

    def items(samples):
        for raw in samples:
            yield from clip_items(decode(raw), config, rng)

    dataset = wds.WebDataset(
        config.shards,
        resampled=epochless,
        shardshuffle=not epochless and 100,
        nodesplitter=wds.split_by_node,
        workersplitter=wds.split_by_worker,
        seed=config.seed,
        empty_check=False,
    )
    return dataset.shuffle(config.shuffle_buffer, rng=random.Random(config.seed)).compose(items)
