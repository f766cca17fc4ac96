"""Training items from clip shards: a source frame and nearby target views, ready to batch.

Shards are read through ``data_prep.schema.decode``. Each process (DDP rank) owns every
``world``-th shard of the sorted list, so ranks never read the same shard. Within a rank,
epoch-less mode (training) has each dataloader worker draw its rank's shards at random,
forever; single-pass mode (validation, tests) splits them across workers. Clips are shuffled
in a buffer. Every random choice is seeded from (seed, segment, rank, worker), so a stream
restarted at the same segment repeats itself exactly: that is how training resumes with the
same data. Each clip yields ``items_per_clip`` items:

- a source frame and ``num_targets`` targets within ``window`` frames of it;
- one random crop (a share of the frame between ``min_crop`` and 1, the same for the source
  and the targets) resized to ``size``, with every ``K`` updated to match;
- border-extrapolation training: with probability ``border_probability``, a band of
  ``border_fraction`` of the width or height along one side of the source is replaced by
  its last real row or column (edge replication, like the stabilizer's padded canvas) and
  marked invalid, while the targets stay complete, so the network learns to predict
  Gaussians beyond what it sees;
- the source's sparse SfM observations in the crop's pixels, padded to ``max_points``.
"""

from __future__ import annotations

import glob
import json
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import DataLoader

from data_prep.build import MANIFEST
from data_prep.locations import LocationError, beside, is_remote, read_url, shard_samples
from data_prep.schema import SCHEMA_VERSION, ClipSample, SchemaError, decode, iterate_clips, to_tensors
from model.cameras import crop_intrinsics, relative_pose, resize_intrinsics
from model.losses import frame_points


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


def _crop_resize(
    frames: torch.Tensor, K: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
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
        source_image = images[0]
        if rng.random() < config.border_probability:
            side = rng.choice(("left", "right", "top", "bottom"))
            band_w = round(config.size[1] * config.border_fraction)
            band_h = round(config.size[0] * config.border_fraction)
            H, W = config.size
            kept_and_pad = {  # the part that stays, and F.pad's (left, right, top, bottom)
                "left": ((slice(None), slice(band_w, None)), (band_w, 0, 0, 0)),
                "right": ((slice(None), slice(0, W - band_w)), (0, band_w, 0, 0)),
                "top": ((slice(band_h, None), slice(None)), (0, 0, band_h, 0)),
                "bottom": ((slice(0, H - band_h), slice(None)), (0, 0, 0, band_h)),
            }
            kept, pad = kept_and_pad[side]
            valid = F.pad(valid[(slice(None), *kept)], pad)
            # the band repeats the last real row or column, as the stabilizer's padded canvas does
            source_image = F.pad(images[0][(slice(None), *kept)][None], pad, mode="replicate")[0]

        # sparse observations of the source frame, moved into the crop's pixels
        uv, depth, point_valid = frame_points(
            observations,
            source,
            max_points=config.max_points,
            origin=(box[0], box[1]),
            scale=(config.size[1] / crop_w, config.size[0] / crop_h),
            size=(config.size[1], config.size[0]),
        )
        yield {
            "source": source_image,  # the network's input: the border band edge-replicated
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


def rank_shards(pattern: str, rank: int = 0, world: int = 1) -> list[str]:
    """This rank's shards: every ``world``-th of the sorted expansion of ``pattern``.

    ``pattern`` is a brace pattern (``train-{000000..000099}.tar``), a glob, or a URL
    (``http(s)://`` or ``pipe:COMMAND``, braces allowed). Local patterns must match existing
    files.
    """
    if not pattern:
        raise ValueError("data.shards is empty: point it at the training shards (a brace pattern or URL)")
    remote = is_remote(pattern) or ("://" in pattern and not pattern.startswith("file://"))
    if not remote and any(c in pattern for c in "*?["):
        urls = sorted(glob.glob(pattern))
    else:
        urls = sorted(wds.shardlists.expand_urls(pattern))
        if not remote:
            urls = [u for u in urls if Path(u.removeprefix("file://")).is_file()]
    if not urls:
        raise ValueError(f"no shards match {pattern!r}")
    if len(urls) < world:
        raise ValueError(
            f"{len(urls)} shards for {world} processes: each process needs shards of its own; "
            "rebuild with smaller shards (gavs-prep build shard_max_clips=...)"
        )
    return urls[rank::world]


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def _worker_id() -> int:
    return _worker()[0]


def _seed(*parts: int) -> int:
    """One 32-bit seed from several integers, the same in every process (unlike ``hash`` of a str)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def training_stream(
    config: DataConfig, rank: int = 0, world: int = 1, segment: int = 0, resampled: bool = True
) -> wds.DataPipeline:
    """The shuffled, decoded stream of this rank's training items (not yet batched).

    Every item carries ``shard``, the URL it came from, so callers can account for what they read.
    """
    urls = rank_shards(config.shards, rank, world)
    base_seed = _seed(config.seed, segment, rank)
    if resampled:
        shards = [wds.ResampledShards(urls, seed=base_seed, worker_seed=_worker_id, deterministic=True)]
    else:
        shards = [wds.SimpleShardList(urls), wds.detshuffle(len(urls), seed=base_seed), wds.split_by_worker]

    def shuffled(samples):
        rng = random.Random(_seed(base_seed, *_worker(), 0))
        yield from wds.shuffle(config.shuffle_buffer, initial=config.shuffle_buffer, rng=rng)(samples)

    def items(samples):
        rng = random.Random(_seed(base_seed, *_worker(), 1))
        for raw in samples:
            for item in clip_items(decode(raw), config, rng):
                yield {**item, "shard": raw["__url__"]}

    return wds.DataPipeline(*shards, shard_samples, shuffled, items)


def _manifest_beside(url: str) -> dict | None:
    """The dataset manifest in the shard's folder, or None where there is none (or a remote
    one cannot be fetched: the shards' own reads report what is wrong with the location)."""
    where = beside(url, MANIFEST)
    if where is None or (not is_remote(where) and not Path(where).is_file()):
        return None
    try:
        return json.loads(read_url(where))
    except LocationError:
        if is_remote(where):
            return None
        raise


def check_shards(config: DataConfig, rank: int = 0, world: int = 1) -> None:
    """Fail before training starts if this rank's first shard is unreadable or of another schema."""
    first = rank_shards(config.shards, rank, world)[0]
    manifest = _manifest_beside(first)
    if manifest is not None and manifest.get("schema_version") != SCHEMA_VERSION:
        where = beside(first, MANIFEST)
        raise SchemaError(
            f"{where}: schema version {manifest.get('schema_version')}, this trainer reads {SCHEMA_VERSION}"
        )
    next(iterate_clips([first]), None)


def manifest_summary(pattern: str) -> dict | None:
    """The dataset's manifest without its per-shard and per-rejection lists (for model cards)."""
    full = _manifest_beside(rank_shards(pattern)[0])
    if full is None:
        return None
    return {
        "shards": pattern,
        **{k: full[k] for k in ("schema_version", "totals", "pose_methods", "versions") if k in full},
    }


def _ignore_stop_signals(worker_id: int) -> None:
    """Dataloader workers leave SIGTERM/SIGUSR1 to the training process, which stops them after
    its checkpoint; a launcher that signals the whole process group must not kill them first."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class BatchStream:
    """Batches of one rank's items that can restart at any position.

    The stream is cut into segments of ``segment_batches``; each segment is a fresh
    ``training_stream`` seeded by its index. Restarting at position ``p`` rebuilds segment
    ``p // segment_batches`` and skips the rest, so a resumed run sees the same batches as
    an uninterrupted one while skipping at most one segment's worth.
    """

    def __init__(
        self,
        config: DataConfig,
        batch_size: int,
        num_workers: int,
        segment_batches: int,
        rank: int = 0,
        world: int = 1,
        position: int = 0,
    ) -> None:
        self.config, self.batch_size, self.num_workers = config, batch_size, num_workers
        self.segment_batches, self.rank, self.world = segment_batches, rank, world
        self.position = position
        self.shards_read: dict[str, int] = {}
        self._iterator: Iterator | None = None

    def _open(self) -> Iterator:
        segment, skip = divmod(self.position, self.segment_batches)
        stream = training_stream(self.config, self.rank, self.world, segment)
        loader = DataLoader(
            stream,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            worker_init_fn=_ignore_stop_signals,
        )
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator)
        return iterator

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict:
        if self._iterator is None or self.position % self.segment_batches == 0:
            self._iterator = self._open()
        batch = next(self._iterator)
        self.position += 1
        for shard in batch.pop("shard"):
            self.shards_read[shard] = self.shards_read.get(shard, 0) + 1
        return batch
