"""Atomic writes: everything goes to a temporary name beside the destination and is renamed
onto it only when complete, so a failure or an interrupt never leaves a half-written file or
folder under the real name."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(final: str | os.PathLike) -> Path:
    """The temporary name for ``final``: hidden, beside it, with the same suffix (libraries
    that pick a format by suffix, such as NumPy, OpenCV, matplotlib and PyAV, still see it)."""
    final = Path(final)
    return final.with_name(f".{final.stem}.partial{final.suffix}")


def remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace(tmp: Path, final: str | os.PathLike) -> Path:
    """Rename ``tmp`` onto ``final``; a folder already at ``final`` is replaced whole."""
    final = Path(final)
    if tmp.is_dir() and final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@contextmanager
def atomic_path(final: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write ``final`` under (an empty folder with ``folder``);
    rename it onto ``final`` when the block succeeds, remove it when the block raises."""
    tmp = partial_path(final)
    remove(tmp)
    if folder:
        tmp.mkdir(parents=True)
    try:
        yield tmp
        replace(tmp, final)
    finally:
        if tmp.exists():
            remove(tmp)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)
