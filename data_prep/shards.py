"""WebDataset shard writing with count and size limits, atomically per shard.

Each shard is written under a temporary name and renamed when it is closed, so an interrupted
run never leaves a truncated ``.tar`` that a reader would take for a finished one. Tar headers
carry a fixed mtime, so the same samples always give byte-identical shards.
"""

from __future__ import annotations

import os
from pathlib import Path

import webdataset as wds

from common.atomic import partial_path, replace
from data_prep.schema import FRAME_FIELD


class ShardWriter:
    """Writes encoded samples to ``{prefix}-{index:06d}.tar`` under ``out_dir``."""

    def __init__(
        self, out_dir: str | os.PathLike, prefix: str = "train", max_count: int = 64, max_bytes: float = 1e9
    ) -> None:
        if max_count < 1 or max_bytes <= 0:
            raise ValueError("shards need max_count >= 1 and max_bytes > 0")
        self.out_dir, self.prefix = Path(out_dir), prefix
        self.max_count, self.max_bytes = max_count, max_bytes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self._stream = self._tar = self._tmp = None

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tmp = partial_path(self.out_dir / name)
        self._stream = open(self._tmp, "wb")  # closed in _close or abort
        self._tar = wds.TarWriter(self._stream, encoder=False, mtime=0.0)
        self.shards.append({"name": name, "samples": 0, "frames": 0, "bytes": 0})

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._stream.close()
        current = self.shards[-1]
        final = self.out_dir / current["name"]
        replace(self._tmp, final)
        current["bytes"] = final.stat().st_size
        self._tar = self._stream = self._tmp = None

    def write(self, fields: dict) -> None:
        size = sum(len(v) for k, v in fields.items() if not k.startswith("__"))
        current = self.shards[-1] if self._tar is not None else None
        if current is not None and (
            current["samples"] >= self.max_count or current["bytes"] + size > self.max_bytes
        ):
            self._close()
            current = None
        if current is None:
            self._open()
            current = self.shards[-1]
        self._tar.write(fields)
        current["samples"] += 1
        current["frames"] += sum(1 for k in fields if FRAME_FIELD.match(k))
        current["bytes"] += size

    def close(self) -> list[dict]:
        """Finish the last shard; returns per-shard statistics for the manifest."""
        self._close()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (finished shards stay)."""
        if self._tar is not None:
            self._tar.close()
            self._stream.close()
            Path(self._tmp).unlink(missing_ok=True)
            self.shards.pop()
            self._tar = self._stream = self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
