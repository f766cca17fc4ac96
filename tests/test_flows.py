"""The clip's flows: computed once, both ways, the same on any thread count and in any store."""

import os

import cv2
import numpy as np
import pytest
import torch

from data_prep.priors import occlusion
from data_prep.schema import ClipPoses
from data_prep.synthetic import SyntheticConfig, generate
from infer.finetune import ClipFinetuner, FinetuneConfig, finetune_windows, window_pairs
from infer.flows import PairFlows, unordered
from model.network import GaussianPredictor, NetworkConfig

PAIRS = [(0, 1), (3, 1), (2, 5), (1, 0)]  # (1, 0) repeats (0, 1) the other way round


@pytest.fixture(scope="module")
def clip():
    return generate(SyntheticConfig(width=96, height=64, num_frames=8, seed=2), progress=False)


def dis(frames: np.ndarray, a: int, b: int) -> np.ndarray:
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(gray[a], gray[b], None)


def test_each_pair_is_computed_both_ways_once_and_matches_dis_within_float16_rounding(clip):
    flows = PairFlows(clip.frames, PAIRS)
    assert unordered(PAIRS) == [(0, 1), (1, 3), (2, 5)]
    assert len(flows.rows) == 6
    for a, b in unordered(PAIRS):
        exact_ab, exact_ba = dis(clip.frames, a, b), dis(clip.frames, b, a)
        for (x, y), exact, reverse in (((a, b), exact_ab, exact_ba), ((b, a), exact_ba, exact_ab)):
            # float16 keeps 11 significant bits: a relative error of at most 2^-11, plus the
            # absolute step of subnormals near zero
            np.testing.assert_allclose(flows.flow(x, y), exact, rtol=2**-11, atol=2**-14)
            # the trust mask comes from the exact flows: prep's forward-backward test exactly
            np.testing.assert_array_equal(flows.trusted(x, y), ~occlusion(exact[None], reverse[None])[0])
    with pytest.raises(KeyError, match="0 -> 5"):
        flows.flow(0, 5)


def test_a_file_store_holds_the_same_rows_nameless_and_the_thread_count_changes_nothing(clip, tmp_path):
    in_memory = PairFlows(clip.frames, PAIRS, threads=1)
    on_disk = PairFlows(clip.frames, PAIRS, scratch=tmp_path, memory_mb=0, threads=2)
    assert in_memory.memory is not None and on_disk.memory is None
    assert os.listdir(tmp_path) == []  # unlinked at once: nothing is left if the process dies
    for pair in in_memory.rows:
        flow, trusted = on_disk.pair(*pair)
        assert flow.dtype == torch.float32 and trusted.dtype == torch.bool
        assert torch.equal(flow, in_memory.pair(*pair)[0]) and torch.equal(trusted, in_memory.pair(*pair)[1])
    descriptor = on_disk.file
    on_disk.close()
    with pytest.raises(OSError):
        os.fstat(descriptor)


def test_windows_come_from_the_seed_and_their_pairs_are_all_a_step_compares(clip):
    config = FinetuneConfig(min_steps=5, steps_per_frame=0, batch=3, neighbours=2, max_offset=3)
    windows = finetune_windows(len(clip.frames), config)
    assert windows == finetune_windows(len(clip.frames), config) and len(windows) == 5
    assert windows != finetune_windows(len(clip.frames), FinetuneConfig(**{**config.__dict__, "seed": 1}))
    for sources, targets in windows:
        assert all(0 < abs(t - s) <= 3 for s, row in zip(sources, targets, strict=True) for t in row)
    poses = ClipPoses(96, 64, clip.K, clip.c2w, np.arange(len(clip.frames)), "ground truth")
    torch.manual_seed(0)
    net = GaussianPredictor(NetworkConfig(backbone="resnet18", decoder_channels=(8, 16, 32, 64, 128)))
    tuner = ClipFinetuner(
        net.train(), clip.frames, poses, config, pad=0.12, backend="cpu", device=torch.device("cpu")
    )
    tuner.compute_flows(first_step=3)  # a run resumed after three steps
    assert set(tuner.flows.rows) == {
        d for a, b in unordered(window_pairs(windows[3:])) for d in ((a, b), (b, a))
    }
    for step in (3, 4):  # a step asks only for flows computed up front (KeyError otherwise)
        assert torch.isfinite(tuner.step(step)["total"])
