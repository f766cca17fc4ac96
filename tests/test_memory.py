"""common.memory: freed heap goes back to the system."""

import subprocess
import sys

import pytest

# 2000 heap blocks of 100 kB (under glibc's mmap threshold), each followed by a small live one
# that pins the heap above it; freeing the large ones leaves about 200 MB resident.
FRAGMENT = """
import numpy as np
from common.memory import release_free_heap
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1e3
big, small = [], []
for _ in range(2000):
    big.append(np.ones(100_000 // 8))
    small.append(np.ones(4))
big.clear()
freed = rss_mb()
release_free_heap()
print(freed, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
def test_release_free_heap_returns_the_freed_blocks():
    result = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True, check=True)
    freed, released = map(float, result.stdout.split())
    assert freed - released > 150, (freed, released)  # of the 200 MB freed
