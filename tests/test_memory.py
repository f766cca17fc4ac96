"""Memory: freed heap goes back to the system, and a finetuned segment's data goes with it."""

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest

from infer.flows import PairFlows

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


def test_a_segments_flows_go_when_their_store_does():
    """Reference counting alone frees it: a long clip finetunes segment after segment, and a
    cache kept alive by a reference cycle would hold each one's frames and flows until the
    cycle collector ran (measured: the finetune stage's peak grew 0.31 MB a frame)."""
    frames = np.random.default_rng(0).integers(0, 255, (3, 36, 64, 3), dtype=np.uint8)
    cache = PairFlows(frames, [(0, 1)])
    cache.pair(0, 1)
    alive = weakref.ref(cache)
    gc.disable()
    try:
        del cache
        assert alive() is None
    finally:
        gc.enable()


def test_shot_scores_hold_two_analysis_frames_not_the_clip():
    import tracemalloc

    from data_prep.shots import content_scores

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (300, 108, 192, 3), dtype=np.uint8)  # the default working size
    expected = [np.abs(a - b).mean() for a, b in zip(_hsv(frames[1:]), _hsv(frames[:-1]), strict=True)]
    tracemalloc.start()
    scores = content_scores(frames)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(scores, expected)
    # a clip's worth of 160x90 int16 HSV frames is 26 MB here; two of them, 0.2 MB
    assert peak < 2e6, peak


def _hsv(frames: np.ndarray) -> list[np.ndarray]:
    import cv2

    small = [cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA) for f in frames]
    return [cv2.cvtColor(f, cv2.COLOR_RGB2HSV_FULL).astype(np.int16) for f in small]
