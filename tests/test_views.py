"""Held-out view PSNR: pairs finetuning never sees, and the score of rendering into them."""

import numpy as np
import pytest
import torch

from data_prep.schema import ClipPoses
from data_prep.synthetic import SyntheticConfig, generate
from infer.finetune import FinetuneConfig, finetune_windows, window_pairs
from infer.views import heldout_pairs, view_psnr
from model.network import GaussianPredictor, NetworkConfig


def test_heldout_pairs_are_near_never_compared_in_either_order_and_repeat_with_the_seed():
    config = FinetuneConfig(steps_per_frame=0.25, min_steps=10, batch=3, neighbours=2, max_offset=6)
    used = set(window_pairs(finetune_windows(60, config)))
    pairs = heldout_pairs(60, config, number=40, seed=1)
    assert len(pairs) == 40 and pairs == sorted(set(pairs))
    assert all(0 < abs(s - t) <= 6 and 0 <= min(s, t) and max(s, t) < 60 for s, t in pairs)
    assert not any((s, t) in used or (t, s) in used for s, t in pairs)
    assert (
        heldout_pairs(60, config, number=40, seed=1) == pairs != heldout_pairs(60, config, number=40, seed=2)
    )
    everything = heldout_pairs(60, config, number=10**6)
    near_used = {tuple(sorted(p)) for p in used if abs(p[0] - p[1]) <= 6}  # consistency pairs reach further
    assert len(everything) == 60 * 12 - 2 * sum(range(1, 7)) - 2 * len(near_used)


@pytest.fixture(scope="module")
def clip():
    return generate(SyntheticConfig(width=96, height=64, num_frames=24, seed=3), progress=False)


def test_view_psnr_scores_the_render_against_the_target_frame_where_it_covers_it(clip):
    frames, c2w = clip.frames.copy(), clip.c2w.copy()
    frames[5], c2w[5] = frames[4], c2w[4]  # frame 5: frame 4 again, from the same camera
    frames[6], c2w[6] = 255 - frames[4], c2w[4]  # frame 6: its negative
    c2w[7] = c2w[4] @ np.diag([-1.0, 1.0, -1.0, 1.0])  # frame 7's camera looks the other way
    poses = ClipPoses(96, 64, clip.K, c2w, np.arange(24), "ground truth")
    torch.manual_seed(0)
    net = GaussianPredictor(NetworkConfig(decoder_channels=(8, 16, 32, 64, 128)))
    itself, same, negative, behind = view_psnr(
        net,
        frames,
        poses,
        [(4, 4), (4, 5), (4, 6), (4, 7)],
        pad=0.1,
        backend="torch",
        device=torch.device("cpu"),
    )
    # a fresh network renders its input at about 27 dB (NetworkConfig.footprint)
    assert 20 < itself < 40 and same == pytest.approx(itself, abs=1e-9)
    assert negative < itself - 15
    assert np.isnan(behind)  # nothing of the source is in front of that camera
