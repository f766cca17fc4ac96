"""Every optical flow a 3D segment needs, computed once, in parallel, and kept compactly.

Finetuning draws its windows from a seeded generator, so every frame pair it will compare is
known before its first step (``finetune.finetune_windows``); the dynamic masks need the
consecutive pairs. ``PairFlows`` computes DIS flow (OpenCV's medium preset, as prep uses) for
each unordered pair in both directions, on a pool of threads (OpenCV releases the GIL), with
the forward-backward trust mask of each direction (prep's occlusion test), and keeps one row
per direction: the flow as float16 and the mask as one byte a pixel. float16 rounds a flow by
at most 2^-11 of its size, under 0.05 px below 100 px of motion, a tenth of DIS's own error.

Rows stay in memory up to ``memory_mb``; beyond it they go to a temporary file in the work
folder and are read back with ``pread``, so the page cache holds them and the process's
resident memory does not grow with the clip. The file goes when the store is closed.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from data_prep.priors import occlusion


def unordered(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The distinct frame pairs ``(a, b)``, ``a < b``, that ``pairs`` name in either direction."""
    return sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})


def consecutive(count: int) -> list[tuple[int, int]]:
    return [(t, t + 1) for t in range(count - 1)]


class PairFlows:
    """DIS flow and trust masks of the given frame pairs, both directions, computed up front.

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        pairs: frame pairs in either order; each is computed both ways.
        scratch: folder for the temporary file when the rows exceed ``memory_mb``.
    """

    file: int | None = None  # the temporary file's descriptor; a class default, so close() works
    # even when the constructor stopped before opening it

    def __init__(
        self,
        frames: np.ndarray,
        pairs: Iterable[tuple[int, int]],
        *,
        scratch: Path | None = None,
        memory_mb: float = 256.0,
        threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.height, self.width = frames.shape[1:3]
        self.flow_bytes = self.height * self.width * 2 * 2  # float16 (u, v)
        self.row_bytes = self.flow_bytes + self.height * self.width  # + the trust mask
        wanted = unordered(pairs)
        self.rows = {p: i for i, p in enumerate(d for a, b in wanted for d in ((a, b), (b, a)))}
        total = len(self.rows) * self.row_bytes
        self.memory: np.ndarray | None = None
        if total <= memory_mb * 2**20 or scratch is None:
            self.memory = np.empty((len(self.rows), self.row_bytes), np.uint8)
        else:
            scratch.mkdir(parents=True, exist_ok=True)
            self.file, name = tempfile.mkstemp(prefix="flows-", suffix=".bin", dir=scratch)
            os.unlink(name)  # nameless: it goes with the descriptor, even when the process dies
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        local = threading.local()

        def compute(pair: tuple[int, int]) -> None:
            if not hasattr(local, "dis"):  # a DIS object is not safe to share between threads
                local.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            a, b = pair
            ab, ba = local.dis.calc(gray[a], gray[b], None), local.dis.calc(gray[b], gray[a], None)
            self._put((a, b), ab, ~occlusion(ab[None], ba[None])[0])
            self._put((b, a), ba, ~occlusion(ba[None], ab[None])[0])

        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            done = pool.map(compute, wanted)
            for _ in tqdm(done, total=len(wanted), desc="flows", unit="pair", disable=not progress):
                pass

    def _put(self, pair: tuple[int, int], flow: np.ndarray, trusted: np.ndarray) -> None:
        row = np.concatenate([flow.astype(np.float16).view(np.uint8).ravel(), trusted.view(np.uint8).ravel()])
        index = self.rows[pair]
        if self.memory is not None:
            self.memory[index] = row
        else:
            os.pwrite(self.file, row.tobytes(), index * self.row_bytes)

    def _row(self, pair: tuple[int, int]) -> np.ndarray:
        try:
            index = self.rows[pair]
        except KeyError:
            raise KeyError(f"flow {pair[0]} -> {pair[1]} was not computed") from None
        if self.memory is not None:
            return self.memory[index]
        return np.frombuffer(os.pread(self.file, self.row_bytes, index * self.row_bytes), np.uint8)

    def flow(self, a: int, b: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """Flow a -> b ``[H, W, 2]``, in pixels (``float16``: as stored, half the memory)."""
        raw = self._row((a, b))[: self.flow_bytes]
        return raw.view(np.float16).reshape(self.height, self.width, 2).astype(dtype)

    def trusted(self, a: int, b: int) -> np.ndarray:
        """``[H, W]`` True where flow a -> b passes the forward-backward test and lands inside."""
        return self._row((a, b))[self.flow_bytes :].view(bool).reshape(self.height, self.width).copy()

    def pair(self, a: int, b: int) -> tuple[Tensor, Tensor]:
        """Flow a -> b ``[H, W, 2]`` and its trust mask ``[H, W]``, as tensors."""
        return torch.from_numpy(self.flow(a, b)), torch.from_numpy(self.trusted(a, b))

    def close(self) -> None:
        if self.file is not None:
            os.close(self.file)
            self.file = None

    def __enter__(self) -> PairFlows:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
