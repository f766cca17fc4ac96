"""Hard-cut detection, so that no clip spans a cut.

The score is PySceneDetect's content measure: the mean absolute difference of hue,
saturation and value between consecutive frames (0-255 scale). A cut is declared as in its
AdaptiveDetector: the score must reach a floor (15) and stand out against its neighbours
(at least 3x the mean score of the 2 frames on either side), and shots are at least
``min_frames`` long. The adaptive test keeps fast handheld motion, whose scores are high
but not isolated, from reading as cuts. We compute it ourselves because the scenedetect
package requires the GUI build of OpenCV, which conflicts with the headless build this
project installs.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

MIN_CONTENT = 15.0
ADAPTIVE_RATIO = 3.0
NEIGHBOURS = 2
MIN_SHOT_FRAMES = 8
ANALYSIS_WIDTH = 160  # the score is computed on frames downsized to this width


def content_scores(frames: np.ndarray) -> np.ndarray:
    """``[T-1]`` mean |dHSV| between frame t and t+1, two frames at a time: a clip's worth of
    analysis frames (130 kB each at the default working size) would otherwise be held at once."""
    height, width = frames.shape[1:3]
    size = (ANALYSIS_WIDTH, max(2, round(height * ANALYSIS_WIDTH / width)))

    def hsv(frame: np.ndarray) -> np.ndarray:
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).astype(np.int16)

    scores, previous = np.zeros(max(len(frames) - 1, 0)), hsv(frames[0])
    for t in range(1, len(frames)):
        current = hsv(frames[t])
        scores[t - 1] = np.abs(current - previous).mean()
        previous = current
    return scores


def detect_shots(frames: np.ndarray, min_frames: int = MIN_SHOT_FRAMES) -> list[tuple[int, int]]:
    """Shots as ``(start, end)`` frame ranges (end exclusive) covering the whole video."""
    if len(frames) < 2:
        return [(0, len(frames))]
    scores = content_scores(frames)
    cuts = []
    for i, score in enumerate(scores):
        around = np.r_[scores[max(0, i - NEIGHBOURS) : i], scores[i + 1 : i + 1 + NEIGHBOURS]]
        stands_out = len(around) == 0 or score >= ADAPTIVE_RATIO * max(around.mean(), 1e-6)
        t = i + 1  # the cut is before frame t
        if score >= MIN_CONTENT and stands_out and t - (cuts[-1] if cuts else 0) >= min_frames:
            cuts.append(t)
    bounds = [0, *cuts, len(frames)]
    return list(itertools.pairwise(bounds))


def clip_windows(shots: list[tuple[int, int]], length: int, stride: int) -> list[tuple[int, int]]:
    """Fixed-length windows ``(start, end)`` with ``stride`` inside each shot; none spans a cut."""
    windows = []
    for start, end in shots:
        windows += [(s, s + length) for s in range(start, end - length + 1, stride)]
    return windows
