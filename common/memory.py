"""This process's memory: its peak, for reports and training logs, and handing freed heap back."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from pathlib import Path


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GB: Linux's VmHWM, which starts afresh
    at exec (``ru_maxrss`` also keeps the peak of the process that spawned it), or
    ``ru_maxrss`` where /proc has none (kB, bytes on macOS)."""
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1e6, 3)
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1e9 if sys.platform == "darwin" else 1e6), 3)


def release_free_heap() -> None:
    """Hand the heap that freed objects left behind back to the system (glibc's
    ``malloc_trim``; nothing elsewhere). Frame-sized blocks freed between small live ones stay
    mapped otherwise, and a long stream's resident size creeps up with them."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
